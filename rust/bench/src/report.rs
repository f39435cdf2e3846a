//! The results of one run: JSON for machines, a markdown table for people,
//! with the targets and the public norgopolis 0.1.4 beside ours.

use serde::Serialize;

use crate::{
    cold::Cold,
    cpu::PerCall,
    memory::{Growth, Loaded},
    routed::Concurrent,
    series::Streamed,
    stats::Latency,
};

/// The machine the figures were taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to us.
    pub cores: usize,
    /// CPU model name.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started and when it ended: other
    /// builds on a shared machine show up here.
    pub load_start: f64,
    /// See `load_start`.
    pub load_end: f64,
}

impl Machine {
    /// Reads the machine's description (load average at the end left 0).
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            load_start: load_average(),
            load_end: 0.0,
        }
    }
}

/// The 1-minute load average (0 when unknown).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

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

pub(crate) fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

pub(crate) fn rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn mib(kib: f64) -> String {
    format!("{:.1} MB", kib * 1024.0 / 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

pub(crate) fn latency(l: &Latency) -> String {
    format!(
        "p50 {} · p99 {} · {} calls/s",
        us(l.p50_us),
        us(l.p99_us),
        rate(l.per_s)
    )
}

fn cpu(costs: &[PerCall]) -> String {
    let parts: Vec<String> = costs
        .iter()
        .map(|c| format!("{} {:.0} µs ({:.1})", c.process, c.cpu_us, c.switches))
        .collect();
    let total: f64 = costs.iter().map(|c| c.cpu_us).sum();
    format!("{} · total {total:.0} µs", parts.join(" · "))
}

impl Results {
    /// The markdown table (plus a line naming the machine).
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |what: &str, figure: String, target: String, public: &str| {
            rows.push([what.into(), figure, target, public.into()]);
        };
        row(
            "Floor: raw Unix socket ping-pong 64 B (blocking / tokio)",
            format!(
                "p50 {} / {}",
                us(self.floor_blocking.b64.p50_us),
                us(self.floor_tokio.b64.p50_us)
            ),
            "—".into(),
            "",
        );
        row(
            "Floor: raw Unix socket ping-pong 64 KiB (blocking / tokio)",
            format!(
                "p50 {} / {}",
                us(self.floor_blocking.kib64.p50_us),
                us(self.floor_tokio.kib64.p50_us)
            ),
            "—".into(),
            "",
        );
        row(
            "Module hop alone: gRPC over stdio, no router, 64 B",
            latency(&self.module_direct.b64),
            "—".into(),
            "",
        );
        row(
            "Module hop alone: gRPC over stdio, no router, 64 KiB",
            latency(&self.module_direct.kib64),
            "—".into(),
            "",
        );
        row(
            "Module hop, lean transport model (framed MessagePack over stdio), 64 B",
            latency(&self.module_lean.b64),
            "—".into(),
            "",
        );
        row(
            "Module hop, lean transport model, 64 KiB",
            latency(&self.module_lean.kib64),
            "—".into(),
            "",
        );
        let ds = &self.module_direct_stream;
        row(
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
        row(
            "CPU per 64 B call, no router (context switches)",
            cpu(&self.cpu_direct),
            "—".into(),
            "",
        );
        row(
            "CPU per 64 B call, lean transport model (context switches)",
            cpu(&self.cpu_lean),
            "—".into(),
            "",
        );
        for (cost, path) in [
            (&self.cpu_routed_grpc, GRPC_GRPC),
            (&self.cpu_routed, LEAN_GRPC),
            (&self.cpu_routed_lean, LEAN_LEAN),
        ] {
            row(
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
            row(
                &format!("Rust client, warm echo 64 B{path}"),
                latency(&sizes.b64),
                format!("p50 ≤ 130 µs {}", verdict(sizes.b64.p50_us <= 130.0)),
                public_b64,
            );
            row(
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
                    row(
                        &format!("Lua in Neovim (callbacks), warm echo 64 B{transport}"),
                        latency(&sizes.b64),
                        format!("p50 ≤ 200 µs {}", verdict(sizes.b64.p50_us <= 200.0)),
                        "",
                    );
                    row(
                        &format!("Lua in Neovim (callbacks), warm echo 64 KiB{transport}"),
                        latency(&sizes.kib64),
                        "—".into(),
                        "",
                    );
                }
                if let Some(c) = &self.cpu_lua {
                    row(
                        "CPU of Neovim per 64 B call from Lua (context switches)",
                        format!("{:.0} µs ({:.1})", c.cpu_us, c.switches),
                        "—".into(),
                        "",
                    );
                }
            }
            None => row("Lua in Neovim", "skipped".into(), "".into(), ""),
        }
        for (c, path, public) in [
            (&self.concurrent_grpc, GRPC_GRPC, ""),
            (&self.concurrent, LEAN_GRPC, ""),
            (&self.concurrent_lean, LEAN_LEAN, ""),
        ] {
            row(
                &format!("{} concurrent Rust clients, echo 64 B{path}", c.clients),
                format!("{} calls/s", rate(c.per_s)),
                format!("≥ 30,000 calls/s {}", verdict(c.per_s >= 30_000.0)),
                public,
            );
        }
        let s = &self.stream;
        row(
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
        row(
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
        let cc = &self.cold_cli;
        row(
            "Cold start → first result, CLI",
            format!("{:.1} ms (exit {:.1} ms)", cc.first_result_ms, cc.exit_ms),
            format!("≤ 30 ms {}", verdict(cc.first_result_ms <= 30.0)),
            "",
        );
        if let (Some(cn), Some(bare)) = (&self.cold_nvim, &self.nvim_bare) {
            row(
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
        row(
            "Server RSS idle",
            mib(self.idle_kib as f64),
            format!("≤ 8 MB {}", verdict(self.idle_kib as f64 * 1024.0 <= 8e6)),
            "",
        );
        let l = &self.loaded;
        let per_module = l.module_kib.iter().sum::<u64>() as f64 / l.module_kib.len().max(1) as f64;
        row(
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
        row(
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
        rows.extend(crate::sdks::table_rows(&self.sdks));

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
        for r in rows {
            out.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
        out.push_str(&self.lua_to_rust());
        out.push_str(&self.public.markdown());
        out.push_str(&crate::scaling::markdown(&self.scaling));
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(us(85.4), "85 µs");
        assert_eq!(us(1240.0), "1.24 ms");
        assert_eq!(mib(5175.78), "5.3 MB");
    }
}
