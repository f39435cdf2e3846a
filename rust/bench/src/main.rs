//! `norgopolis-bench`: what `make bench` runs.
//!
//! One run measures the router against its baselines (a raw Unix-socket
//! ping-pong, the echo module spoken to directly with no router, and a
//! model of the proposed lean module transport), from
//! the Rust client and from Lua in headless Neovim, warm and cold, and the
//! server's memory; it prints a markdown table and writes JSON. Every server
//! runs in a temp dir on its own socket. Built in release mode next to the
//! binaries it measures (it finds them beside itself).

mod cold;
mod cpu;
mod direct;
mod drive;
mod figures;
mod floor;
mod lean_model;
mod machine;
mod memory;
mod notes;
mod nvim;
mod payload;
mod place;
mod public;
mod reach;
mod report;
mod routed;
mod scaling;
mod sdks;
mod series;
mod stats;
mod suite;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    nvim::NvimSetup,
    payload::{string_of, SMALL_CHARS},
    place::Place,
    series::Plan,
};

/// Benchmarks of the norgopolis router.
#[derive(Debug, Parser)]
#[command(name = "norgopolis-bench")]
struct Args {
    /// Fewer repetitions and calls: a smoke run, not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Repository root (for the Lua scripts and the plugin).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Neovim binary (default: <root>/.deps/nvim/bin/nvim).
    #[arg(long)]
    nvim: Option<PathBuf>,
    /// Native library to load in Neovim (default: libnorgopolis_nvim.so beside this binary).
    #[arg(long)]
    native: Option<PathBuf>,
    /// Leave out everything that needs Neovim.
    #[arg(long)]
    skip_nvim: bool,
    /// Measure only the modules on the Rust, Python and Lua SDKs (prints
    /// their rows; writes no JSON).
    #[arg(long)]
    only_sdks: bool,
    /// Measure only the notes module on a generated workspace (prints its
    /// rows; writes target/bench/notes.json beside --out).
    #[arg(long)]
    only_notes: bool,
    /// Notes in the generated workspace of --only-notes.
    #[arg(long, default_value_t = 10_000)]
    notes: usize,
    /// Measure only the public path side by side: the public client and
    /// module through the public norgopolis-server 0.1.4 and through ours
    /// (prints its table; writes no JSON).
    #[arg(long)]
    only_public: bool,
    /// Measure only the scaling table (1 to 256 clients, 1 to 32 modules;
    /// prints it; writes no JSON).
    #[arg(long)]
    only_scaling: bool,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The far end of the raw-socket ping-pong (started by the bench itself).
    #[command(hide = true)]
    Peer { socket: PathBuf },
    /// A `Forwarder` that answers every call at once (started by the bench:
    /// the public client measured without a router).
    #[command(hide = true)]
    StubForwarder,
    /// The module side of the lean transport model (started by the bench).
    #[command(hide = true)]
    LeanPeer,
    /// Writes the notes bench's workspace (about 5 KB per note) into DIR.
    GenerateNotes {
        /// Folder to write into (created).
        dir: PathBuf,
        /// How many notes.
        #[arg(long, default_value_t = 10_000)]
        notes: usize,
    },
    /// Load for a profiler: sequential echo calls to a running server.
    Drive {
        /// The server's socket.
        #[arg(long)]
        socket: PathBuf,
        /// How many calls.
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Argument size in MessagePack bytes (64 or 65541).
        #[arg(long, default_value_t = 64)]
        bytes: usize,
        /// Clients calling at once.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Module to call (echo's `echo` function must be there).
        #[arg(long, default_value = "echo")]
        module: String,
        /// Instead of echo calls, stream `count(N)` 15 times and print the
        /// median items/s and time to the first item.
        #[arg(long)]
        stream: Option<u64>,
        /// With --stream: print when the headers and some items arrive, per
        /// repetition.
        #[arg(long, requires = "stream")]
        timeline: bool,
    },
}

/// How much of everything to do.
struct Sizing {
    small: Plan,
    large: Plan,
    floor_small: Plan,
    floor_large: Plan,
    lua_small: Plan,
    lua_large_calls: usize,
    concurrent_reps: usize,
    concurrent_calls: usize,
    stream_reps: usize,
    cold_reps: usize,
    growth_calls: usize,
    public: public::PublicPlan,
    scaling_calls: usize,
}

impl Sizing {
    fn new(quick: bool) -> Sizing {
        let d = if quick { 10 } else { 1 };
        let reps = if quick { 3 } else { 5 };
        let plan = |warmup: usize, calls: usize| Plan {
            warmup: warmup / d,
            reps,
            calls: calls / d,
        };
        Sizing {
            small: plan(1000, 3000),
            large: plan(200, 600),
            floor_small: plan(2000, 10_000),
            floor_large: plan(500, 2000),
            lua_small: plan(500, 2000),
            lua_large_calls: 500 / d,
            concurrent_reps: reps,
            concurrent_calls: 1500 / d,
            stream_reps: reps,
            cold_reps: reps,
            growth_calls: 100_000 / d,
            public: public::PublicPlan {
                reps: 3,
                small_calls: 2000 / d as u64,
                large_calls: 300 / d as u64,
                concurrent_calls: 500 / d as u64,
                stream_items: STREAM_ITEMS,
            },
            scaling_calls: 16_384 / d,
        }
    }
}

const CONCURRENT_CLIENTS: usize = 8;
const STREAM_ITEMS: u64 = 10_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.command {
        Some(Internal::Peer { socket }) => return floor::peer(socket),
        Some(Internal::LeanPeer) => return lean_model::peer(),
        Some(Internal::StubForwarder) => return reach::stub_forwarder(),
        Some(Internal::GenerateNotes { dir, notes }) => {
            let g = notes::generate(dir, *notes)?;
            println!("{} notes, {} bytes in {}", g.notes, g.bytes, dir.display());
            return Ok(());
        }
        Some(Internal::Drive {
            socket,
            calls,
            bytes,
            clients,
            module,
            stream,
            timeline,
        }) => {
            return runtime.block_on(async {
                match stream {
                    Some(items) if *timeline => drive::stream_timeline(socket, *items).await,
                    Some(items) => drive::stream(socket, *items).await,
                    None => drive::drive(socket, *calls, *bytes, *clients, module).await,
                }
            })
        }
        None => {}
    }
    // On a worker, not in `block_on`: the calls then run where the runtime
    // wakes them, as in the Neovim plugin (and not with an extra thread
    // hand-off per call, as in a `main` that awaits calls directly).
    if args.only_notes {
        let size = Sizing::new(args.quick);
        let nvim = nvim_setup(&args)?;
        let (count, reps, calls) = (args.notes, size.stream_reps, size.lua_small.calls / 4);
        let results = runtime.block_on(async move {
            tokio::spawn(async move { notes::measure(nvim.as_ref(), count, reps, calls).await })
                .await?
        })?;
        print!("{}", notes::markdown(&results));
        let out = args.out.with_file_name("notes.json");
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("results written to {}", out.display());
        return Ok(());
    }
    if args.only_public {
        let root = args.root.clone().unwrap_or_else(nvim::default_root);
        let plan = Sizing::new(args.quick).public;
        let run = runtime.block_on(async {
            tokio::spawn(
                async move { public::measure(&public::PublicBins::find(&root)?, plan).await },
            )
            .await?
        })?;
        print!("{}", run.markdown());
        return Ok(());
    }
    if args.only_scaling {
        let calls = Sizing::new(args.quick).scaling_calls;
        let steps = runtime.block_on(async { tokio::spawn(scaling::measure(calls)).await? })?;
        print!("{}", scaling::markdown(&steps));
        return Ok(());
    }
    if args.only_sdks {
        let rows = runtime.block_on(async { tokio::spawn(only_sdks(args.quick)).await? })?;
        print!("{}", sdks::markdown(&rows));
        return Ok(());
    }
    let results = runtime.block_on(async {
        let args = std::sync::Arc::new(args);
        let task_args = std::sync::Arc::clone(&args);
        let results = tokio::spawn(async move { suite::run(&task_args).await }).await??;
        anyhow::Ok((results, args))
    });
    let (results, args) = results?;
    print!("{}", results.markdown());
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

/// The SDK rows alone, on a server of their own.
async fn only_sdks(quick: bool) -> anyhow::Result<Vec<sdks::SdkRow>> {
    let size = Sizing::new(quick);
    let place = Place::new()?;
    sdks::install(&place, &nvim::default_root())?;
    let server = place.start_server()?;
    let client = place.client().await?;
    let rows = sdks::measure(
        &client,
        &string_of(SMALL_CHARS),
        size.small,
        STREAM_ITEMS,
        size.stream_reps,
    )
    .await;
    client.detach().await;
    place.stop_any_server().await?;
    drop(server);
    rows
}

pub(crate) fn step(what: &str) {
    eprintln!("bench: {what}");
}

fn nvim_setup(args: &Args) -> anyhow::Result<Option<NvimSetup>> {
    if args.skip_nvim {
        return Ok(None);
    }
    let root = args.root.clone().unwrap_or_else(nvim::default_root);
    let setup = NvimSetup {
        nvim: args
            .nvim
            .clone()
            .unwrap_or_else(|| root.join(".deps/nvim/bin/nvim")),
        native: args
            .native
            .clone()
            .unwrap_or_else(|| norgopolis_tests::bin_dir().join("libnorgopolis_nvim.so")),
        root,
    };
    Ok(Some(setup.resolve()?))
}
