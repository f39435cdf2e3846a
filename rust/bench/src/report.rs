//! The results of one run: JSON for machines, a markdown table for people,
//! with the targets and the public norgopolis 0.1.4 beside ours.

use serde::Serialize;

use crate::{
    cold::Cold,
    cpu::PerCall,
    figures::{cpu, latency, mib, rate, us, verdict},
    machine::Machine,
    memory::{Growth, Loaded},
    routed::Concurrent,
    series::Streamed,
    stats::Latency,
};

/// A latency pair for two message sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// 64-byte MessagePack argument.
    pub b64: Latency,
    /// 64 KiB argument.
    pub kib64: Latency,
}

/// Everything one `make bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Where.
    pub machine: Machine,
    /// Whether this was a shortened run (`--quick`).
    pub quick: bool,
    /// Raw Unix-socket ping-pong, blocking I/O on both ends.
    pub floor_blocking: Sizes,
    /// Raw Unix-socket ping-pong, our end through tokio.
    pub floor_tokio: Sizes,
    /// gRPC over the echo module's stdio, no router.
    pub module_direct: Sizes,
    /// A 10,000-item stream from the echo module, no router.
    pub module_direct_stream: Streamed,
    /// CPU per 64 B call, module spoken to directly.
    pub cpu_direct: Vec<PerCall>,
    /// The lean transport model: the module hop without HTTP/2 or gRPC.
    pub module_lean: Sizes,
    /// CPU per 64 B call over the lean transport model.
    pub cpu_lean: Vec<PerCall>,
    /// CPU per 64 B call through the router (Rust client, lean).
    pub cpu_routed: Vec<PerCall>,
    /// The same with the client calling over gRPC.
    pub cpu_routed_grpc: Vec<PerCall>,
    /// Rust client (lean) through the router.
    pub rust: Sizes,
    /// Rust client calling over gRPC (the public protocol all the way).
    pub rust_grpc: Sizes,
    /// Rust client through the router to echo over the lean transport.
    pub rust_lean: Sizes,
    /// CPU per 64 B call through the router, module over the lean transport.
    pub cpu_routed_lean: Vec<PerCall>,
    /// 8 concurrent Rust clients, module over the lean transport.
    pub concurrent_lean: Concurrent,
    /// A 10,000-item stream from echo over the lean transport.
    pub stream_lean: Streamed,
    /// Lua in headless Neovim through the router (absent with --skip-nvim).
    pub lua: Option<Sizes>,
    /// The same through a lean-transport module.
    pub lua_lean: Option<Sizes>,
    /// CPU of the Neovim process per 64 B call from Lua.
    pub cpu_lua: Option<PerCall>,
    /// 8 concurrent Rust clients.
    pub concurrent: Concurrent,
    /// 8 concurrent Rust clients calling over gRPC.
    pub concurrent_grpc: Concurrent,
    /// A 10,000-item stream.
    pub stream: Streamed,
    /// No server, then the CLI's first result.
    pub cold_cli: Cold,
    /// No server, then a fresh Neovim's first result.
    pub cold_nvim: Option<Cold>,
    /// A fresh Neovim printing a line, no plugin (what Neovim costs anyway).
    pub nvim_bare: Option<Cold>,
    /// Server RSS right after start, KiB.
    pub idle_kib: u64,
    /// With 4 modules loaded.
    pub loaded: Loaded,
    /// Over 100,000 calls.
    pub growth: Growth,
    /// Modules on the Rust, Python and Lua SDKs.
    pub sdks: Vec<crate::sdks::SdkRow>,
    /// The public client and module through the public server and ours.
    pub public: crate::public::PublicRun,
    /// p50, throughput and RSS from 1 to 256 clients, 1 to 32 modules.
    pub scaling: Vec<crate::scaling::Step>,
}

/// Row suffixes naming the transports client → server and server → module.
const GRPC_GRPC: &str = " · gRPC client, gRPC module";
const LEAN_GRPC: &str = " · lean client, gRPC module";
const LEAN_LEAN: &str = " · lean client, lean module";

/// The table's rows as written: measurement, ours, target, public 0.1.4.
#[derive(Default)]
struct Rows(Vec<[String; 4]>);

impl Rows {
    fn row(&mut self, what: &str, figure: String, target: String, public: &str) {
        self.0.push([what.into(), figure, target, public.into()]);
    }
}

impl Results {
    /// The markdown table (plus a line naming the machine).
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut t = Rows::default();
        self.hop_rows(&mut t);
        self.routed_rows(&mut t);
        self.stream_rows(&mut t);
        self.footprint_rows(&mut t);
        t.0.extend(crate::sdks::table_rows(&self.sdks));

        let mut out =
            format!(
            "Machine: {} cores, {} (kernel {}); load average {:.2} at start, {:.2} at end.{}\n\n",
            m.cores,
            m.cpu,
            m.kernel,
            m.load_start,
            m.load_end,
            if self.quick { " Quick run (--quick)." } else { "" }
        );
        out.push_str("| Measurement | Ours | Target | Public norgopolis 0.1.4 |\n");
        out.push_str("|---|---|---|---|\n");
        for r in t.0 {
            out.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
        out.push_str(&self.lua_to_rust());
        out.push_str(&self.public.markdown());
        out.push_str(&crate::scaling::markdown(&self.scaling));
        out
    }

    /// The socket floor and the module hop without the router.
    fn hop_rows(&self, t: &mut Rows) {
        t.row(
            "Floor: raw Unix socket ping-pong 64 B (blocking / tokio)",
            format!(
                "p50 {} / {}",
                us(self.floor_blocking.b64.p50_us),
                us(self.floor_tokio.b64.p50_us)
            ),
            "—".into(),
            "",
        );
        t.row(
            "Floor: raw Unix socket ping-pong 64 KiB (blocking / tokio)",
            format!(
                "p50 {} / {}",
                us(self.floor_blocking.kib64.p50_us),
                us(self.floor_tokio.kib64.p50_us)
            ),
            "—".into(),
            "",
        );
        t.row(
            "Module hop alone: gRPC over stdio, no router, 64 B",
            latency(&self.module_direct.b64),
            "—".into(),
            "",
        );
        t.row(
            "Module hop alone: gRPC over stdio, no router, 64 KiB",
            latency(&self.module_direct.kib64),
            "—".into(),
            "",
        );
        t.row(
            "Module hop, lean transport model (framed MessagePack over stdio), 64 B",
            latency(&self.module_lean.b64),
            "—".into(),
            "",
        );
        t.row(
            "Module hop, lean transport model, 64 KiB",
            latency(&self.module_lean.kib64),
            "—".into(),
            "",
        );
        let ds = &self.module_direct_stream;
        t.row(
            &format!(
                "Module hop alone: stream of {} items",
                rate(ds.items as f64)
            ),
            format!(
                "{} items/s · first item {:.2} ms",
                rate(ds.items_per_s),
                ds.first_item_ms
            ),
            "—".into(),
            "",
        );
        t.row(
            "CPU per 64 B call, no router (context switches)",
            cpu(&self.cpu_direct),
            "—".into(),
            "",
        );
        t.row(
            "CPU per 64 B call, lean transport model (context switches)",
            cpu(&self.cpu_lean),
            "—".into(),
            "",
        );
    }

    /// Calls through the router: CPU, Rust and Lua clients, concurrency.
    fn routed_rows(&self, t: &mut Rows) {
        for (cost, path) in [
            (&self.cpu_routed_grpc, GRPC_GRPC),
            (&self.cpu_routed, LEAN_GRPC),
            (&self.cpu_routed_lean, LEAN_LEAN),
        ] {
            t.row(
                &format!("CPU per 64 B call through the router{path} (context switches)"),
                cpu(cost),
                "—".into(),
                "",
            );
        }
        for (sizes, path, public_b64, public_kib64) in [
            (&self.rust_grpc, GRPC_GRPC, "", ""),
            (&self.rust, LEAN_GRPC, "", ""),
            (&self.rust_lean, LEAN_LEAN, "", ""),
        ] {
            t.row(
                &format!("Rust client, warm echo 64 B{path}"),
                latency(&sizes.b64),
                format!("p50 ≤ 130 µs {}", verdict(sizes.b64.p50_us <= 130.0)),
                public_b64,
            );
            t.row(
                &format!("Rust client, warm echo 64 KiB{path}"),
                latency(&sizes.kib64),
                format!("p50 ≤ 400 µs {}", verdict(sizes.kib64.p50_us <= 400.0)),
                public_kib64,
            );
        }
        match &self.lua {
            Some(l) => {
                let lean = self.lua_lean.as_ref().map(|l| (l, LEAN_LEAN));
                for (sizes, transport) in std::iter::once((l, LEAN_GRPC)).chain(lean) {
                    t.row(
                        &format!("Lua in Neovim (callbacks), warm echo 64 B{transport}"),
                        latency(&sizes.b64),
                        format!("p50 ≤ 200 µs {}", verdict(sizes.b64.p50_us <= 200.0)),
                        "",
                    );
                    t.row(
                        &format!("Lua in Neovim (callbacks), warm echo 64 KiB{transport}"),
                        latency(&sizes.kib64),
                        "—".into(),
                        "",
                    );
                }
                if let Some(c) = &self.cpu_lua {
                    t.row(
                        "CPU of Neovim per 64 B call from Lua (context switches)",
                        format!("{:.0} µs ({:.1})", c.cpu_us, c.switches),
                        "—".into(),
                        "",
                    );
                }
            }
            None => t.row("Lua in Neovim", "skipped".into(), "".into(), ""),
        }
        for (c, path, public) in [
            (&self.concurrent_grpc, GRPC_GRPC, ""),
            (&self.concurrent, LEAN_GRPC, ""),
            (&self.concurrent_lean, LEAN_LEAN, ""),
        ] {
            t.row(
                &format!("{} concurrent Rust clients, echo 64 B{path}", c.clients),
                format!("{} calls/s", rate(c.per_s)),
                format!("≥ 30,000 calls/s {}", verdict(c.per_s >= 30_000.0)),
                public,
            );
        }
    }

    /// Streams through the router.
    fn stream_rows(&self, t: &mut Rows) {
        let s = &self.stream;
        t.row(
            &format!("Stream of {} items{LEAN_GRPC}", rate(s.items as f64)),
            format!(
                "{} items/s · first item {:.2} ms",
                rate(s.items_per_s),
                s.first_item_ms
            ),
            format!(
                "≥ 200,000 items/s {} · ≤ 1 ms {}",
                verdict(s.items_per_s >= 200_000.0),
                verdict(s.first_item_ms <= 1.0)
            ),
            "no streaming (buffered)",
        );
        let sl = &self.stream_lean;
        t.row(
            &format!("Stream of {} items{LEAN_LEAN}", rate(sl.items as f64)),
            format!(
                "{} items/s · first item {:.2} ms",
                rate(sl.items_per_s),
                sl.first_item_ms
            ),
            format!(
                "≥ 200,000 items/s {} · ≤ 1 ms {}",
                verdict(sl.items_per_s >= 200_000.0),
                verdict(sl.first_item_ms <= 1.0)
            ),
            "",
        );
    }

    /// Cold starts and memory.
    fn footprint_rows(&self, t: &mut Rows) {
        let cc = &self.cold_cli;
        t.row(
            "Cold start → first result, CLI",
            format!("{:.1} ms (exit {:.1} ms)", cc.first_result_ms, cc.exit_ms),
            format!("≤ 30 ms {}", verdict(cc.first_result_ms <= 30.0)),
            "",
        );
        if let (Some(cn), Some(bare)) = (&self.cold_nvim, &self.nvim_bare) {
            t.row(
                "Cold start → first result, fresh Neovim",
                format!(
                    "{:.1} ms (in Lua {:.1} ms; bare Neovim {:.1} ms)",
                    cn.first_result_ms,
                    cn.inside_ms.unwrap_or(f64::NAN),
                    bare.first_result_ms
                ),
                format!("≤ 60 ms {}", verdict(cn.first_result_ms <= 60.0)),
                "",
            );
        }
        t.row(
            "Server RSS idle",
            mib(self.idle_kib as f64),
            format!("≤ 8 MB {}", verdict(self.idle_kib as f64 * 1024.0 <= 8e6)),
            "",
        );
        let l = &self.loaded;
        let per_module = l.module_kib.iter().sum::<u64>() as f64 / l.module_kib.len().max(1) as f64;
        t.row(
            &format!("RSS with {} modules loaded", l.modules),
            format!(
                "server {} · {} per module",
                mib(l.server_kib as f64),
                mib(per_module)
            ),
            "—".into(),
            "",
        );
        let g = &self.growth;
        t.row(
            &format!("Server RSS growth over {} calls", rate(g.calls as f64)),
            format!(
                "{:+.2} MB ({} → {})",
                g.growth_kib as f64 * 1024.0 / 1e6,
                mib(g.before_kib as f64),
                mib(g.after_kib as f64)
            ),
            format!("≤ 1 MB {}", verdict(g.growth_kib as f64 * 1024.0 <= 1e6)),
            "",
        );
    }

    /// Lua's 64 B p50 over the Rust client's, same transports, same run.
    fn lua_to_rust(&self) -> String {
        let mut out = String::new();
        for (lua, rust, path) in [
            (&self.lua, &self.rust, LEAN_GRPC),
            (&self.lua_lean, &self.rust_lean, LEAN_LEAN),
        ] {
            if let Some(lua) = lua {
                let ratio = lua.b64.p50_us / rust.b64.p50_us;
                out += &format!(
                    "
Lua ÷ Rust client, 64 B p50{path}: {ratio:.2} (goal ≤ 1.5 {})",
                    verdict(ratio <= 1.5)
                );
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }
}
