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
    module: &str,
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
            routed::burst(&all, module, &payload, per_client).await?;
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

/// Streams `echo.count(items)` 15 times, printing the medians of the rate
/// and of the time to the first item.
pub async fn stream(socket: &Path, items: u64) -> anyhow::Result<()> {
    let opts = ConnectOptions::new("bench").socket(socket).spawn(false);
    let client = Client::connect(opts).await?;
    let s = routed::stream(&client, "echo", items, 15).await?;
    println!(
        "{items} items x {}: median {:.0} items/s, first item {:.2} ms",
        s.reps, s.items_per_s, s.first_item_ms
    );
    client.detach().await;
    Ok(())
}

/// Diagnostic: when the response headers and the first few items arrive.
pub async fn stream_timeline(socket: &Path, items: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    let opts = ConnectOptions::new("bench").socket(socket).spawn(false);
    let client = Client::connect(opts).await?;
    let args = norgopolis_proto::msgpack::encode(&items)?;
    for _ in 0..8 {
        let t = Instant::now();
        let mut s = client.invoke_raw("echo", "count", args.clone()).await?;
        let headers = t.elapsed();
        let mut marks = Vec::new();
        let mut n = 0u64;
        while let Some(item) = s.next().await {
            item?;
            n += 1;
            if n == 1 || n == 2 || n == 100 || n == 1000 || n == items {
                marks.push(format!("#{n} {:.2}", t.elapsed().as_secs_f64() * 1e3));
            }
        }
        println!(
            "headers {:.2} ms; {}",
            headers.as_secs_f64() * 1e3,
            marks.join(", ")
        );
    }
    client.detach().await;
    Ok(())
}
