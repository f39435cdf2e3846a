//! `compat-bench`: load from a client built on the public
//! `norgopolis-client` 0.6 crate (TCP host and port), so that `make bench`
//! measures the public server and ours from the very same client code.
//!
//! ```text
//! compat-bench echo   HOST PORT MODULE CHARS WARMUP CALLS CLIENTS
//! compat-bench stream HOST PORT MODULE ITEMS REPS
//! ```
//!
//! `echo`: every one of CLIENTS connections makes WARMUP untimed, then
//! CALLS timed sequential `echo` calls with a string of CHARS `x`, all
//! connections at once; prints `{"p50_us", "p99_us", "per_s"}` over all
//! timed calls (`per_s` counts every client's calls over the wall time)
//! and `cpu_us`, this process's CPU time per timed call.
//! `stream`: `count({n: ITEMS})` once untimed, then REPS times; prints the
//! medians `{"first_item_ms", "items_per_s"}`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use norgopolis_client::{ConnectionHandle, MessagePack};
use serde_json::json;

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv).await {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("compat-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(argv: &[String]) -> anyhow::Result<serde_json::Value> {
    let number = |i: usize| -> anyhow::Result<u64> {
        let text = argv
            .get(i)
            .context("missing argument (see --help in the source)")?;
        text.parse()
            .with_context(|| format!("argument {} ({text:?}) is not a number", i + 1))
    };
    match argv.first().map(String::as_str) {
        Some("echo") if argv.len() == 8 => {
            let (host, port, module) = (&argv[1], &argv[2], &argv[3]);
            let chars = number(4)? as usize;
            let (warmup, calls, clients) = (number(5)?, number(6)?, number(7)? as usize);
            echo(host, port, module, chars, warmup, calls, clients).await
        }
        Some("stream") if argv.len() == 6 => {
            let (host, port, module) = (&argv[1], &argv[2], &argv[3]);
            stream(host, port, module, number(4)?, number(5)?).await
        }
        _ => bail!(
            "usage: compat-bench echo HOST PORT MODULE CHARS WARMUP CALLS CLIENTS\n       \
             compat-bench stream HOST PORT MODULE ITEMS REPS"
        ),
    }
}

/// One call; returns how many items came back.
async fn call(
    conn: &mut ConnectionHandle,
    module: &str,
    function: &str,
    args: &MessagePack,
) -> anyhow::Result<u64> {
    let response = conn
        .invoke_raw(module.into(), function.into(), Some(args.clone()))
        .await?;
    let mut items = response.into_inner();
    let mut n = 0;
    while items.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn echo(
    host: &str,
    port: &str,
    module: &str,
    chars: usize,
    warmup: u64,
    calls: u64,
    clients: usize,
) -> anyhow::Result<serde_json::Value> {
    let args = MessagePack::encode("x".repeat(chars))?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut conn = norgopolis_client::connect(&host.into(), &port.into()).await?;
        for _ in 0..warmup {
            ensure!(call(&mut conn, module, "echo", &args).await? == 1);
        }
        conns.push(conn);
    }
    let cpu_before = own_cpu_ns();
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (module, args) = (module.to_string(), args.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(calls as usize);
                for _ in 0..calls {
                    let t = Instant::now();
                    call(&mut conn, &module, "echo", &args).await?;
                    samples.push(t.elapsed());
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let wall = start.elapsed();
    let cpu_ns = own_cpu_ns().saturating_sub(cpu_before);
    samples.sort_unstable();
    Ok(json!({
        "cpu_us": cpu_ns as f64 / 1e3 / samples.len().max(1) as f64,
        "p50_us": micros(percentile(&samples, 50.0)),
        "p99_us": micros(percentile(&samples, 99.0)),
        "per_s": samples.len() as f64 / wall.as_secs_f64(),
    }))
}

async fn stream(
    host: &str,
    port: &str,
    module: &str,
    items: u64,
    reps: u64,
) -> anyhow::Result<serde_json::Value> {
    let args = MessagePack::encode(json!({ "n": items }))?;
    let mut conn = norgopolis_client::connect(&host.into(), &port.into()).await?;
    let (mut firsts, mut rates) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let t = Instant::now();
        let response = conn
            .invoke_raw(module.into(), "count".into(), Some(args.clone()))
            .await?;
        let mut stream = response.into_inner();
        let mut first = None;
        let mut n = 0;
        while stream.message().await?.is_some() {
            first.get_or_insert_with(|| t.elapsed());
            n += 1;
        }
        let wall = t.elapsed();
        ensure!(n == items, "the stream yielded {n} items, expected {items}");
        if rep > 0 {
            firsts.push(first.unwrap_or(wall).as_secs_f64() * 1e3);
            rates.push(n as f64 / wall.as_secs_f64());
        }
    }
    Ok(json!({
        "first_item_ms": median(firsts),
        "items_per_s": median(rates),
    }))
}

/// Nanoseconds this process's threads have run (schedstat), 0 if unknown.
fn own_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Nearest-rank percentile of sorted samples (zero when empty).
fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
