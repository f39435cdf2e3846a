//! The public path side by side: the client on the public
//! `norgopolis-client` 0.6 crate (`compat-bench`) calling the module on the
//! public `norgopolis-module` 2.0.3 crate (`compat-module`), once through
//! the public `norgopolis-server` 0.1.4 and once through ours
//! (`--listen-tcp`), in the same run, interleaved repetition by
//! repetition, so the ratios are not skewed by the load of the moment.
//!
//! The public server and the fixtures are built outside the workspace
//! (`make build-public build-compat`, see [`PublicBins::find`]).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::{
    cpu::Usage,
    direct::DirectModule,
    figures::{mib, rate, us},
    place::{rss_kib, Place},
    reach::{self, Ends, Reach, StubServer},
    stats::median,
};

/// The port the public server always listens on (it has no option for it).
pub const PUBLIC_PORT: u16 = 62020;
/// The module's name on both servers.
const MODULE: &str = "compat";
/// Characters of the 64 B and 64 KiB echo arguments (see `payload`).
const SMALL: usize = crate::payload::SMALL_CHARS;
const LARGE: usize = crate::payload::LARGE_CHARS;

/// The binaries on the public crates.
pub struct PublicBins {
    /// `norgopolis-server` 0.1.4 from the registry.
    pub server: PathBuf,
    /// The client-side load generator on `norgopolis-client` 0.6.
    pub bench: PathBuf,
    /// The module on `norgopolis-module` 2.0.3.
    pub module: PathBuf,
}

impl PublicBins {
    /// Finds them under `<root>/target` (`public-norgopolis/bin` and
    /// `compat/release`), naming the make target that builds what is missing.
    pub fn find(root: &Path) -> anyhow::Result<PublicBins> {
        let target = root.join("target");
        let bins = PublicBins {
            server: target.join("public-norgopolis/bin/norgopolis-server"),
            bench: target.join("compat/release/compat-bench"),
            module: target.join("compat/release/compat-module"),
        };
        for (path, make) in [
            (&bins.server, "make build-public"),
            (&bins.bench, "make build-compat PROFILE=release"),
            (&bins.module, "make build-compat PROFILE=release"),
        ] {
            ensure!(
                path.is_file(),
                "{} is missing: run `{make}`",
                path.display()
            );
        }
        Ok(bins)
    }
}

/// How much to measure per repetition.
#[derive(Debug, Clone, Copy)]
pub struct PublicPlan {
    /// Repetitions, each measuring both servers.
    pub reps: usize,
    /// Timed sequential 64 B calls.
    pub small_calls: u64,
    /// Timed sequential 64 KiB calls.
    pub large_calls: u64,
    /// Timed calls per client with [`CLIENTS`] clients.
    pub concurrent_calls: u64,
    /// Items of the stream.
    pub stream_items: u64,
}

/// Clients of the concurrency row.
pub const CLIENTS: usize = 8;

/// One figure, per repetition, for both servers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SideBySide {
    /// What was measured.
    pub what: String,
    /// Unit of the figures.
    pub unit: String,
    /// Whether a lower figure is better (latency) or higher (rate).
    pub lower_is_better: bool,
    /// The public server's figure in each repetition.
    pub public: Vec<f64>,
    /// Ours, in the same repetitions.
    pub ours: Vec<f64>,
    /// The goal for ours ÷ public, if there is one.
    pub goal: Option<f64>,
    /// For rows with a goal: the best figure any server could give in each
    /// repetition, from the ends measured alone (see `reach`).
    pub best: Vec<f64>,
}

impl SideBySide {
    fn new(what: &str, unit: &str, lower_is_better: bool, goal: Option<f64>) -> Self {
        SideBySide {
            what: what.into(),
            unit: unit.into(),
            lower_is_better,
            goal,
            ..Default::default()
        }
    }

    /// Ours ÷ public in each repetition.
    pub fn ratios(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.public)
            .map(|(o, p)| o / p)
            .collect()
    }

    /// One figure in this row's unit.
    fn figure(&self, v: f64) -> String {
        match self.unit.as_str() {
            "µs" => us(v),
            "ms" => format!("{v:.2} ms"),
            unit => format!("{} {unit}", rate(v)),
        }
    }

    /// The best any server could do ÷ public, in each repetition.
    pub fn best_ratios(&self) -> Vec<f64> {
        self.best
            .iter()
            .zip(&self.public)
            .map(|(b, p)| b / p)
            .collect()
    }

    /// Whether the median ratio meets the goal.
    pub fn met(&self) -> Option<bool> {
        let r = median(self.ratios());
        self.goal
            .map(|g| if self.lower_is_better { r <= g } else { r >= g })
    }
}

/// Everything the side-by-side run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PublicRun {
    /// One entry per figure.
    pub rows: Vec<SideBySide>,
    /// RSS after the run, KiB: public server, ours.
    pub rss_kib: (u64, u64),
    /// 1-minute load average before and after.
    pub load: (f64, f64),
    /// The ends measured alone, per repetition.
    #[serde(skip)]
    pub ends: Vec<Ends>,
    /// Cores the best throughput was computed for.
    pub cores: usize,
}

/// What `compat-bench echo` prints.
#[derive(Debug, Deserialize)]
struct EchoFigures {
    p50_us: f64,
    per_s: f64,
    /// The client's CPU per call.
    cpu_us: f64,
}

/// What `compat-bench stream` prints.
#[derive(Debug, Deserialize)]
struct StreamFigures {
    first_item_ms: f64,
    items_per_s: f64,
}

/// The public server, started on [`PUBLIC_PORT`] with a modules folder of
/// its own; stopped with its module on drop (the public module never exits
/// by itself, and the public server does not stop it).
struct PublicServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl PublicServer {
    fn start(bins: &PublicBins) -> anyhow::Result<PublicServer> {
        if std::net::TcpStream::connect(("127.0.0.1", PUBLIC_PORT)).is_ok() {
            bail!("port {PUBLIC_PORT} is taken (a norgopolis server running?): the public server cannot listen elsewhere");
        }
        let dir = tempfile::Builder::new().prefix("np-public-").tempdir()?;
        // It runs a module by its file name, found in --path.
        std::os::unix::fs::symlink(&bins.module, dir.path().join(MODULE))?;
        let mut child = Command::new(&bins.server)
            .arg("--path")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bins.server.display()))?;
        let mut ready = String::new();
        if let Some(out) = child.stdout.take() {
            use std::io::BufRead;
            std::io::BufReader::new(out).read_line(&mut ready)?;
        }
        let server = PublicServer { child, _dir: dir };
        ensure!(
            ready.trim() == "ready",
            "the public server did not print ready: {ready:?}"
        );
        // "ready" comes before it binds: wait for the port.
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", PUBLIC_PORT)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("the public server never listened on {PUBLIC_PORT}")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The module's process (started by the first call).
    fn module_pid(&self) -> anyhow::Result<u32> {
        norgopolis_tests::children_of(self.pid())
            .first()
            .copied()
            .ok_or_else(|| anyhow!("the public server has no module process"))
    }
}

impl Drop for PublicServer {
    fn drop(&mut self) {
        for module in norgopolis_tests::children_of(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-9", &module.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our server with the same module and the TCP listener on a free port.
struct OurServer {
    place: Place,
    server: norgopolis_tests::ServerProc,
    port: u16,
}

impl OurServer {
    async fn start(bins: &PublicBins) -> anyhow::Result<OurServer> {
        let place = Place::new()?;
        std::os::unix::fs::symlink(&bins.module, place.sandbox.modules.join(MODULE))?;
        let server = place.start_server_with(&["--listen-tcp", "127.0.0.1:0"])?;
        let channel = place.sandbox.channel().await?;
        let address = norgopolis_tests::status(&channel).await.tcp_address;
        let port = address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| anyhow!("our server reports no TCP address ({address:?})"))?;
        Ok(OurServer {
            place,
            server,
            port,
        })
    }

    /// The module's process, loaded if it is not yet.
    async fn module_pid(&self) -> anyhow::Result<u32> {
        let client = self.place.client().await?;
        let reply = client.load(MODULE, None).await;
        client.detach().await;
        reply?
            .module
            .map(|m| m.pid)
            .ok_or_else(|| anyhow!("our server reports no process for {MODULE}"))
    }
}

/// Runs `compat-bench` against `port` and parses its JSON line.
fn drive<T: for<'de> Deserialize<'de>>(
    bins: &PublicBins,
    port: u16,
    args: &[String],
) -> anyhow::Result<T> {
    let out = Command::new(&bins.bench)
        .arg(&args[0])
        .args(["127.0.0.1", &port.to_string(), MODULE])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .context("running compat-bench")?;
    ensure!(
        out.status.success(),
        "compat-bench {args:?} on port {port} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "compat-bench printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn strings(args: &[&dyn ToString]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Measures both servers, repetition by repetition, alternating which goes
/// first.
pub async fn measure(bins: &PublicBins, plan: PublicPlan) -> anyhow::Result<PublicRun> {
    let load_start = crate::machine::load_average();
    let public = PublicServer::start(bins)?;
    let ours = OurServer::start(bins).await?;
    let ports = [PUBLIC_PORT, ours.port];
    let pids = [public.pid(), ours.server.pid];
    let stub = StubServer::start(&std::env::current_exe()?)?;
    let module = DirectModule::start(&bins.module).await?;
    let cores = crate::machine::Machine::probe().cores;
    let mut ends = Vec::with_capacity(plan.reps);
    let mut rows = SideRows::new(&plan);
    for rep in 0..plan.reps {
        crate::step(&format!("public path side by side, repetition {}", rep + 1));
        let order = if rep % 2 == 0 {
            [PUBLIC, OURS]
        } else {
            [OURS, PUBLIC]
        };
        for side in order {
            let port = ports[side];
            // Warm first (the module starts on the first call), so that the
            // CPU readings cover calls only.
            tokio::task::block_in_place(|| {
                drive::<EchoFigures>(bins, port, &strings(&[&"echo", &SMALL, &0, &300, &1]))
            })?;
            let module = if side == PUBLIC {
                public.module_pid()?
            } else {
                ours.module_pid().await?
            };
            tokio::task::block_in_place(|| {
                rows.measure(bins, port, side, [pids[side], module], &plan)
            })?;
        }
        let alone = measure_ends(bins, &stub, &module, &plan).await?;
        rows.put_reach(alone.reach(cores));
        ends.push(alone);
    }
    module.stop().await;
    drop(stub);
    let rss = (rss_kib(public.pid())?, rss_kib(ours.server.pid)?);
    ours.place.stop_any_server().await?;
    drop(ours);
    drop(public);
    Ok(PublicRun {
        rows: rows.into_rows(),
        rss_kib: rss,
        load: (load_start, crate::machine::load_average()),
        ends,
        cores,
    })
}

/// The public client against the stub, and the public module called
/// directly, with the calls of a side's repetition.
async fn measure_ends(
    bins: &PublicBins,
    stub: &StubServer,
    module: &DirectModule,
    plan: &PublicPlan,
) -> anyhow::Result<Ends> {
    crate::step("public path: the client and the module alone");
    let mut ends = Ends::default();
    let sizes = [(SMALL, plan.small_calls), (LARGE, plan.large_calls)];
    for (i, (chars, calls)) in sizes.into_iter().enumerate() {
        let before = Usage::of(stub.pid());
        let e: EchoFigures = tokio::task::block_in_place(|| {
            drive(
                bins,
                stub.port,
                &strings(&[&"echo", &chars, &30, &calls, &1]),
            )
        })?;
        let after = Usage::of(stub.pid());
        ends.client_p50_us[i] = e.p50_us;
        ends.stub_cpu_us[i] = after.cpu_us_per_call_since(&before, calls + 30);
        let payload = crate::payload::string_of(chars);
        (ends.module_p50_us[i], ends.caller_cpu_us[i]) =
            reach::module_alone(module, &payload, calls as usize).await?;
    }
    let e: EchoFigures = tokio::task::block_in_place(|| {
        drive(
            bins,
            stub.port,
            &strings(&[&"echo", &SMALL, &50, &plan.concurrent_calls, &CLIENTS]),
        )
    })?;
    ends.many_cpu_us[0] = e.cpu_us;
    let payload = crate::payload::string_of(SMALL);
    ends.many_cpu_us[1] =
        reach::module_cpu_under_load(module, &payload, CLIENTS, plan.concurrent_calls).await?;
    Ok(ends)
}

/// Index of the public server's side in [`measure`]'s pairs.
const PUBLIC: usize = 0;
/// Index of our server's side.
const OURS: usize = 1;

/// The rows of the side-by-side table, filled repetition by repetition.
struct SideRows {
    small: SideBySide,
    large: SideBySide,
    many: SideBySide,
    /// Client, server, module, sequential calls.
    cpu: [SideBySide; 3],
    /// Client, server, module, [`CLIENTS`] clients at once.
    cpu_many: [SideBySide; 3],
    first: SideBySide,
    items: SideBySide,
}

impl SideRows {
    fn new(plan: &PublicPlan) -> SideRows {
        SideRows {
            small: SideBySide::new("p50, 64 B echo", "µs", true, Some(0.6)),
            large: SideBySide::new("p50, 64 KiB echo", "µs", true, Some(0.6)),
            many: SideBySide::new(
                &format!("{CLIENTS} concurrent clients, 64 B echo"),
                "calls/s",
                false,
                Some(2.0),
            ),
            cpu: [
                SideBySide::new("CPU per 64 B call: client", "µs", true, None),
                SideBySide::new("CPU per 64 B call: server", "µs", true, None),
                SideBySide::new("CPU per 64 B call: module", "µs", true, None),
            ],
            cpu_many: ["client", "server", "module"].map(|who| {
                let what = format!("CPU per 64 B call, {CLIENTS} clients: {who}");
                SideBySide::new(&what, "µs", true, None)
            }),
            first: SideBySide::new(
                &format!("first item of a {}-item stream", plan.stream_items),
                "ms",
                true,
                None,
            ),
            items: SideBySide::new(
                &format!("{}-item stream", plan.stream_items),
                "items/s",
                false,
                None,
            ),
        }
    }

    /// One side's figures of one repetition; `processes` are its server
    /// and module, whose CPU is read around the 64 B calls.
    fn measure(
        &mut self,
        bins: &PublicBins,
        port: u16,
        side: usize,
        processes: [u32; 2],
        plan: &PublicPlan,
    ) -> anyhow::Result<()> {
        let put = |row: &mut SideBySide, v: f64| {
            if side == PUBLIC {
                row.public.push(v)
            } else {
                row.ours.push(v)
            }
        };
        let before = processes.map(Usage::of);
        let e: EchoFigures = drive(
            bins,
            port,
            &strings(&[&"echo", &SMALL, &0, &plan.small_calls, &1]),
        )?;
        let after = processes.map(Usage::of);
        // The client (its own reading), then the server and the module.
        let put_cpu = |rows: &mut [SideBySide; 3],
                       client_us: f64,
                       [before, after]: [[Usage; 2]; 2],
                       calls: u64| {
            put(&mut rows[0], client_us);
            for i in 0..2 {
                put(
                    &mut rows[i + 1],
                    after[i].cpu_us_per_call_since(&before[i], calls),
                );
            }
        };
        put(&mut self.small, e.p50_us);
        put_cpu(&mut self.cpu, e.cpu_us, [before, after], plan.small_calls);
        let e: EchoFigures = drive(
            bins,
            port,
            &strings(&[&"echo", &LARGE, &30, &plan.large_calls, &1]),
        )?;
        put(&mut self.large, e.p50_us);
        let before = processes.map(Usage::of);
        let e: EchoFigures = drive(
            bins,
            port,
            &strings(&[&"echo", &SMALL, &50, &plan.concurrent_calls, &CLIENTS]),
        )?;
        let after = processes.map(Usage::of);
        put(&mut self.many, e.per_s);
        // The server's and module's readings count the warm-up calls too:
        // 50 per client.
        let made = (plan.concurrent_calls + 50) * CLIENTS as u64;
        put_cpu(&mut self.cpu_many, e.cpu_us, [before, after], made);
        let s: StreamFigures = drive(bins, port, &strings(&[&"stream", &plan.stream_items, &3]))?;
        put(&mut self.first, s.first_item_ms);
        put(&mut self.items, s.items_per_s);
        Ok(())
    }

    /// The best figures any server could give in this repetition.
    fn put_reach(&mut self, reach: Reach) {
        self.small.best.push(reach.small_p50_us);
        self.large.best.push(reach.large_p50_us);
        self.many.best.push(reach.many_per_s);
    }

    /// The rows in the table's order.
    fn into_rows(self) -> Vec<SideBySide> {
        [self.small, self.large, self.many, self.first, self.items]
            .into_iter()
            .chain(self.cpu)
            .chain(self.cpu_many)
            .collect()
    }
}

/// One figure of the ends alone, at 64 B and 64 KiB.
type EndsFigure = fn(&Ends) -> [f64; 2];

impl PublicRun {
    /// The side-by-side table with each repetition's ratio.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "\n### Public client and module: public norgopolis-server 0.1.4 vs ours (--listen-tcp), interleaved\n\n\
             Load average {} at the start, {} at the end. Ratio = ours ÷ public per repetition. \
             Reach = the best any server could give ÷ public (the ends alone, below).\n\n\
             | Measurement | Public server (median) | Ours (median) | Ratio (median) | Ratios per repetition | Goal | Reach (median) |\n\
             |---|---|---|---|---|---|---|\n",
            self.load.0, self.load.1
        );
        for row in &self.rows {
            out += &row.markdown_line();
        }
        out += &format!(
            "\nRSS after the run: public server {}, ours {} (each with the module loaded).\n",
            mib(self.rss_kib.0 as f64),
            mib(self.rss_kib.1 as f64)
        );
        out += &self.ends_markdown();
        out
    }

    /// What the ends cost alone, the medians over repetitions.
    fn ends_markdown(&self) -> String {
        let m = |f: &dyn Fn(&Ends) -> f64| median(self.ends.iter().map(f));
        let mut out = format!(
            "\nThe ends alone (medians of {} repetitions): the public client against a stub that \
             answers at once, the public module called directly over its pipes. The best p50 \
             = both p50s less the CPU the stub and the direct caller spent per call; the best \
             throughput = {} cores ÷ (client + module CPU per call with {CLIENTS} callers).\n\n\
             | Ends alone | 64 B | 64 KiB |\n|---|---|---|\n",
            self.ends.len(),
            self.cores
        );
        let pairs: [(&str, EndsFigure); 4] = [
            ("client against the stub, p50", |e| e.client_p50_us),
            ("stub's CPU per call", |e| e.stub_cpu_us),
            ("module called directly, p50", |e| e.module_p50_us),
            ("direct caller's CPU per call", |e| e.caller_cpu_us),
        ];
        for (what, f) in pairs {
            out += &format!(
                "| {what} | {} | {} |\n",
                us(m(&|e| f(e)[0])),
                us(m(&|e| f(e)[1]))
            );
        }
        out += &format!(
            "\nCPU per 64 B call with {CLIENTS} callers: client {}, module {}.\n",
            us(m(&|e| e.many_cpu_us[0])),
            us(m(&|e| e.many_cpu_us[1]))
        );
        out += &self.budget_markdown();
        out
    }

    /// What a server may spend per call and still meet each goal, beside
    /// what the bare ends' helpers spend (the stub plus the direct caller:
    /// about what the least a router must do costs).
    fn budget_markdown(&self) -> String {
        let m = |f: &dyn Fn(&Ends) -> f64| median(self.ends.iter().map(f));
        let mut out = String::from(
            "\n| Goal | A server that costs nothing | One as lean as the stub plus the direct caller | Budget for the server at the goal | Server CPU per call, public · ours |\n\
             |---|---|---|---|---|\n",
        );
        for (i, row) in self.rows.iter().take(2).enumerate() {
            let (Some(goal), false) = (row.goal, row.best.is_empty()) else {
                continue;
            };
            let public = median(row.public.clone());
            let nothing = median(row.best.clone());
            let lean = m(&|e| e.client_p50_us[i] + e.module_p50_us[i]);
            out += &format!(
                "| {}: ≤ {goal}× ({}) | {} ({:.2}×) | {} ({:.2}×) | {} of CPU on the call's path | {} |\n",
                row.what,
                us(goal * public),
                us(nothing),
                nothing / public,
                us(lean),
                lean / public,
                us(goal * public - nothing),
                if i == 0 { self.server_cpu(": server") } else { "—".into() },
            );
        }
        if let Some(row) = self.rows.get(2).filter(|r| !r.best.is_empty()) {
            let goal = row.goal.unwrap_or(1.0);
            let public = median(row.public.clone());
            let nothing = median(row.best.clone());
            let ends_cpu = m(&|e| e.many_cpu_us[0] + e.many_cpu_us[1]);
            let budget = self.cores as f64 * 1e6 / (goal * public) - ends_cpu;
            out += &format!(
                "| {}: ≥ {goal}× ({}) | {} ({:.2}×) | — | {} of CPU per call | {} |\n",
                row.what,
                row.figure(goal * public),
                row.figure(nothing),
                nothing / public,
                us(budget),
                self.server_cpu("clients: server"),
            );
        }
        out
    }

    /// The medians of the server CPU row whose name ends with `suffix`:
    /// "public · ours".
    fn server_cpu(&self, suffix: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.what.ends_with(suffix))
            .map(|r| {
                format!(
                    "{} · {}",
                    us(median(r.public.clone())),
                    us(median(r.ours.clone()))
                )
            })
            .unwrap_or_else(|| "—".into())
    }
}

impl SideBySide {
    /// This row of the side-by-side table.
    fn markdown_line(&self) -> String {
        let ratios = self.ratios();
        let goal = match (self.goal, self.met()) {
            (Some(g), Some(met)) => format!(
                "{} {g}× {}",
                if self.lower_is_better { "≤" } else { "≥" },
                if met { "✅" } else { "❌" }
            ),
            _ => "—".into(),
        };
        let reach = if self.best.is_empty() {
            "—".into()
        } else {
            format!(
                "{:.2} ({})",
                median(self.best_ratios()),
                self.figure(median(self.best.clone()))
            )
        };
        format!(
            "| {} | {} | {} | {:.2} | {} | {goal} | {reach} |\n",
            self.what,
            self.figure(median(self.public.clone())),
            self.figure(median(self.ours.clone())),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" · "),
        )
    }
}
