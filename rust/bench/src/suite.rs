//! The full run, phase by phase, in the order the figures are taken: the
//! public path, the module hop without the router, calls through the
//! router, cold starts, scaling.

use anyhow::Context;
use norgopolis_client::Client;

use crate::{
    cold,
    cold::Cold,
    cpu::{self, PerCall},
    direct, floor, lean_model, machine, memory,
    memory::{Growth, Loaded},
    nvim::{self, NvimSetup},
    nvim_setup,
    payload::{string_of, LARGE_CHARS, SMALL_CHARS},
    place::{self, Place, LEAN_MODULE},
    public,
    report::{Results, Sizes},
    routed::{self, Concurrent},
    scaling, sdks,
    series::Streamed,
    step, Args, Sizing, CONCURRENT_CLIENTS, STREAM_ITEMS,
};

/// The two payloads every echo is measured with.
struct Payloads {
    /// 64 bytes of MessagePack.
    small: Vec<u8>,
    /// 64 KiB.
    large: Vec<u8>,
}

/// Everything `make bench` measures, into one [`Results`].
pub(crate) async fn run(args: &Args) -> anyhow::Result<Results> {
    let mut machine = machine::Machine::probe();
    let size = Sizing::new(args.quick);
    let payloads = Payloads {
        small: string_of(SMALL_CHARS),
        large: string_of(LARGE_CHARS),
    };
    let nvim = nvim_setup(args)?;
    let root = args.root.clone().unwrap_or_else(nvim::default_root);
    let public = public::measure(&public::PublicBins::find(&root)?, size.public).await?;

    let place = Place::new()?;
    let hop = measure_hop(&place, &size, &payloads).await?;
    let routed = measure_routed(&place, &size, &payloads, nvim.as_ref()).await?;
    let cold = measure_cold(&size, nvim.as_ref()).await?;

    step("scaling: 1 to 256 clients, 1 to 32 modules");
    let scaling = scaling::measure(size.scaling_calls).await?;

    machine.load_end = machine::load_average();
    let lua = routed.lua;
    Ok(Results {
        machine,
        quick: args.quick,
        floor_blocking: hop.floor_blocking,
        floor_tokio: hop.floor_tokio,
        module_direct: hop.module_direct,
        module_direct_stream: hop.module_direct_stream,
        cpu_direct: hop.cpu_direct,
        module_lean: hop.module_lean,
        cpu_lean: hop.cpu_lean,
        cpu_routed: routed.cpu_routed,
        cpu_routed_grpc: routed.cpu_routed_grpc,
        rust: routed.rust,
        rust_grpc: routed.rust_grpc,
        rust_lean: routed.rust_lean,
        cpu_routed_lean: routed.cpu_routed_lean,
        concurrent_lean: routed.concurrent_lean,
        stream_lean: routed.stream_lean,
        lua: lua.as_ref().map(|l| l.grpc_module.clone()),
        lua_lean: lua.as_ref().map(|l| l.lean_module.clone()),
        cpu_lua: lua.map(|l| l.cost),
        concurrent: routed.concurrent,
        concurrent_grpc: routed.concurrent_grpc,
        stream: routed.stream,
        cold_cli: cold.cli,
        cold_nvim: cold.nvim,
        nvim_bare: cold.nvim_bare,
        idle_kib: routed.idle_kib,
        loaded: routed.loaded,
        growth: routed.growth,
        sdks: routed.sdks,
        public,
        scaling,
    })
}

/// The floor and the module hop, no router.
struct Hop {
    floor_blocking: Sizes,
    floor_tokio: Sizes,
    module_direct: Sizes,
    module_direct_stream: Streamed,
    cpu_direct: Vec<PerCall>,
    module_lean: Sizes,
    cpu_lean: Vec<PerCall>,
}

async fn measure_hop(place: &Place, size: &Sizing, p: &Payloads) -> anyhow::Result<Hop> {
    let (small, large) = (&p.small, &p.large);
    step("raw socket ping-pong (the floor)");
    let floor_small = floor::measure(&place.dir(), small, size.floor_small).await?;
    let floor_large = floor::measure(&place.dir(), large, size.floor_large).await?;

    step("gRPC over the echo module's stdio, no router");
    let module = direct::DirectModule::start(&norgopolis_tests::bin("echo")).await?;
    let module_direct = Sizes {
        b64: module.echo_series(small, size.small).await?,
        kib64: module.echo_series(large, size.large).await?,
    };
    let me = std::process::id();
    let cpu_direct = cpu::per_sequential_call(
        &[("client", me), ("module", module.pid())],
        size.small.calls,
        || module.call("echo", small),
    )
    .await?;
    let module_direct_stream = module.stream(STREAM_ITEMS, size.stream_reps).await?;
    module.stop().await;

    step("lean transport model, no router");
    let lean = lean_model::LeanModule::start().await?;
    let module_lean = Sizes {
        b64: lean.echo_series(small, size.small).await?,
        kib64: lean.echo_series(large, size.large).await?,
    };
    let cpu_lean = cpu::per_sequential_call(
        &[("client", me), ("module", lean.pid())],
        size.small.calls,
        || lean.call("echo", small),
    )
    .await?;
    lean.stop().await;
    Ok(Hop {
        floor_blocking: Sizes {
            b64: floor_small.blocking,
            kib64: floor_large.blocking,
        },
        floor_tokio: Sizes {
            b64: floor_small.tokio,
            kib64: floor_large.tokio,
        },
        module_direct,
        module_direct_stream,
        cpu_direct,
        module_lean,
        cpu_lean,
    })
}

/// Calls through the router, from Rust and from Lua, and the server's memory.
struct Routed {
    idle_kib: u64,
    loaded: Loaded,
    rust_grpc: Sizes,
    cpu_routed_grpc: Vec<PerCall>,
    rust: Sizes,
    cpu_routed: Vec<PerCall>,
    concurrent_grpc: Concurrent,
    concurrent: Concurrent,
    concurrent_lean: Concurrent,
    stream: Streamed,
    rust_lean: Sizes,
    cpu_routed_lean: Vec<PerCall>,
    stream_lean: Streamed,
    sdks: Vec<sdks::SdkRow>,
    lua: Option<LuaWarm>,
    growth: Growth,
}

async fn measure_routed(
    place: &Place,
    size: &Sizing,
    p: &Payloads,
    nvim: Option<&NvimSetup>,
) -> anyhow::Result<Routed> {
    let small = &p.small;
    step("server idle and with 4 modules");
    let server = place.start_server()?;
    let idle_kib = place::rss_kib(server.pid)?;
    let client = place.client().await?;
    let loaded = memory::load_all(&client, server.pid).await?;
    let echo_pid = loaded.pids.first().copied().unwrap_or(0);
    let pids = |module: u32| {
        [
            ("client", std::process::id()),
            ("server", server.pid),
            ("module", module),
        ]
    };

    step("Rust client over gRPC (the public protocol), sequential echo");
    let grpc_client = place.grpc_client().await?;
    let rust_grpc = echo_sizes(&grpc_client, "echo", size, p).await?;
    let cpu_routed_grpc = echo_cpu(&grpc_client, "echo", &pids(echo_pid), size, small).await?;
    grpc_client.detach().await;

    step("Rust client, sequential echo");
    let rust = echo_sizes(&client, "echo", size, p).await?;
    let cpu_routed = echo_cpu(&client, "echo", &pids(echo_pid), size, small).await?;
    let [concurrent_grpc, concurrent, concurrent_lean] = concurrency(place, size, small).await?;
    step("10,000-item stream");
    let stream = routed::stream(&client, "echo", STREAM_ITEMS, size.stream_reps).await?;

    step("Rust client, the same calls to echo over the lean transport");
    let rust_lean = echo_sizes(&client, LEAN_MODULE, size, p).await?;
    let lean_pid = client
        .call::<_, u32>(LEAN_MODULE, "pid", &())
        .await
        .context("pid of the lean module")?
        .first()
        .copied()
        .unwrap_or(0);
    let cpu_routed_lean = echo_cpu(&client, LEAN_MODULE, &pids(lean_pid), size, small).await?;
    let stream_lean = routed::stream(&client, LEAN_MODULE, STREAM_ITEMS, size.stream_reps).await?;
    sdks::install(place, &nvim::default_root())?;
    let sdk_rows =
        sdks::measure(&client, small, size.small, STREAM_ITEMS, size.stream_reps).await?;

    let lua = match nvim {
        Some(setup) => Some(lua_warm(place, size, setup)?),
        None => None,
    };

    step("memory growth over many calls");
    let growth = memory::growth(
        place,
        server.pid,
        small,
        CONCURRENT_CLIENTS,
        size.growth_calls,
    )
    .await?;
    client.detach().await;
    place.stop_any_server().await?;
    drop(server);
    Ok(Routed {
        idle_kib,
        loaded,
        rust_grpc,
        cpu_routed_grpc,
        rust,
        cpu_routed,
        concurrent_grpc,
        concurrent,
        concurrent_lean,
        stream,
        rust_lean,
        cpu_routed_lean,
        stream_lean,
        sdks: sdk_rows,
        lua,
        growth,
    })
}

/// Sequential echo of both payloads to `module`.
async fn echo_sizes(
    client: &Client,
    module: &str,
    size: &Sizing,
    p: &Payloads,
) -> anyhow::Result<Sizes> {
    Ok(Sizes {
        b64: routed::echo_series(client, module, &p.small, size.small).await?,
        kib64: routed::echo_series(client, module, &p.large, size.large).await?,
    })
}

/// CPU per small echo to `module` of each process in `procs`.
async fn echo_cpu(
    client: &Client,
    module: &str,
    procs: &[(&str, u32)],
    size: &Sizing,
    small: &[u8],
) -> anyhow::Result<Vec<PerCall>> {
    cpu::per_sequential_call(procs, size.small.calls, || {
        routed::echo(client, module, small)
    })
    .await
}

/// Concurrent clients over gRPC, over lean to a gRPC module, and over lean
/// to a lean module.
async fn concurrency(
    place: &Place,
    size: &Sizing,
    small: &[u8],
) -> anyhow::Result<[Concurrent; 3]> {
    step("8 concurrent clients");
    let mut all = Vec::new();
    for (grpc, module) in [(true, "echo"), (false, "echo"), (false, LEAN_MODULE)] {
        let clients = routed::clients(place, CONCURRENT_CLIENTS, grpc).await?;
        all.push(
            routed::concurrent(
                &clients,
                module,
                small,
                size.concurrent_reps,
                size.concurrent_calls,
            )
            .await?,
        );
        for c in clients {
            c.detach().await;
        }
    }
    all.try_into()
        .map_err(|_| anyhow::anyhow!("three concurrency runs expected"))
}

/// Lua in headless Neovim: echo to a gRPC module and to a lean one.
struct LuaWarm {
    grpc_module: Sizes,
    cost: PerCall,
    lean_module: Sizes,
}

fn lua_warm(place: &Place, size: &Sizing, setup: &NvimSetup) -> anyhow::Result<LuaWarm> {
    step("Lua in headless Neovim, sequential echo");
    let (small, large) = (size.lua_small, size.lua_large_calls);
    let warm = tokio::task::block_in_place(|| nvim::warm(setup, place, "echo", small, large))?;
    step("Lua in headless Neovim, the same calls over the lean transport");
    let lean = tokio::task::block_in_place(|| nvim::warm(setup, place, LEAN_MODULE, small, large))?;
    Ok(LuaWarm {
        grpc_module: Sizes {
            b64: warm.b64,
            kib64: warm.kib64,
        },
        cost: warm.cost,
        lean_module: Sizes {
            b64: lean.b64,
            kib64: lean.kib64,
        },
    })
}

/// Cold starts: no server, then the first result.
struct ColdStarts {
    cli: Cold,
    nvim: Option<Cold>,
    nvim_bare: Option<Cold>,
}

async fn measure_cold(size: &Sizing, nvim: Option<&NvimSetup>) -> anyhow::Result<ColdStarts> {
    let cold_place = Place::new()?;
    step("cold start, CLI");
    let cli = cold::cli(&cold_place, size.cold_reps).await?;
    let (nvim, nvim_bare) = match nvim {
        Some(setup) => {
            step("cold start, fresh Neovim");
            let bare = cold::nvim(&cold_place, setup, size.cold_reps, true).await?;
            let cold = cold::nvim(&cold_place, setup, size.cold_reps, false).await?;
            (Some(cold), Some(bare))
        }
        None => (None, None),
    };
    Ok(ColdStarts {
        cli,
        nvim,
        nvim_bare,
    })
}
