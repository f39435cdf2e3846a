//! `norgopolis-bench drive`: steady load on a running server, for profilers
//! (`perf record -p`, `valgrind --tool=callgrind` on the server or module).

use std::{path::Path, time::Instant};

use norgopolis_client::{Client, ConnectOptions};

use crate::{cpu, payload::string_of, routed};

/// Makes `calls` echo calls of `bytes` MessagePack bytes from `clients`
/// clients at once and prints the rate and this process's CPU per call.
pub async fn drive(
    socket: &Path,
    calls: usize,
    bytes: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let payload = string_of(bytes.saturating_sub(if bytes > 0xffff { 5 } else { 2 }));
    let opts = ConnectOptions::new("bench").socket(socket).spawn(false);
    let mut all = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        all.push(Client::connect(opts.clone()).await?);
    }
    let per_client = calls / all.len();
    let start = Instant::now();
    let costs = cpu::per_call(
        &[("client", std::process::id())],
        per_client * all.len(),
        || async {
            routed::burst(&all, &payload, per_client).await?;
            Ok(())
        },
    )
    .await?;
    let wall = start.elapsed();
    println!(
        "{} calls in {:.3} s: {:.0} calls/s; client CPU {:.1} µs/call, {:.1} switches/call",
        per_client * all.len(),
        wall.as_secs_f64(),
        (per_client * all.len()) as f64 / wall.as_secs_f64(),
        costs[0].cpu_us,
        costs[0].switches
    );
    for c in all {
        c.detach().await;
    }
    Ok(())
}
