//! Calls through the router with the Rust client: sequential round trips,
//! concurrent clients, a long stream, and load for memory growth.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::StreamExt;
use norgopolis_client::Client;
use serde::Serialize;

use crate::{
    place::Place,
    series::{sequential, stream_series, Plan, Streamed},
    stats::{median, Latency},
};

/// One echo call; returns the size of what came back.
pub async fn echo(client: &Client, module: &str, payload: &[u8]) -> anyhow::Result<usize> {
    let mut stream = client.invoke_raw(module, "echo", payload.to_vec()).await?;
    let mut size = 0;
    while let Some(item) = stream.next().await {
        size += item?.len();
    }
    Ok(size)
}

/// Sequential echo calls to `module` with `payload`.
pub async fn echo_series(
    client: &Client,
    module: &str,
    payload: &[u8],
    plan: Plan,
) -> anyhow::Result<Latency> {
    let size = echo(client, module, payload).await?;
    ensure!(
        size == payload.len(),
        "echo returned {size} bytes, sent {}",
        payload.len()
    );
    sequential(plan, || async {
        echo(client, module, payload).await?;
        Ok(())
    })
    .await
}

/// Throughput of several clients calling at once.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrent {
    /// Clients (each its own connection and session).
    pub clients: usize,
    /// Median over repetitions of total calls per second.
    pub per_s: f64,
    /// Repetitions.
    pub reps: usize,
    /// Calls per client per repetition.
    pub calls_per_client: usize,
}

/// Attaches `n` clients (calling over gRPC if `grpc`, else lean).
pub async fn clients(place: &Place, n: usize, grpc: bool) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(if grpc {
            place.grpc_client().await?
        } else {
            place.client().await?
        });
    }
    Ok(out)
}

/// Every client makes `calls` sequential echo calls to `module`, all
/// clients at once; returns the wall time.
pub async fn burst(
    clients: &[Client],
    module: &str,
    payload: &[u8],
    calls: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = c.clone();
            let payload = payload.to_vec();
            let module = module.to_string();
            tokio::spawn(async move {
                for _ in 0..calls {
                    echo(&c, &module, &payload).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.context("client task")??;
    }
    Ok(start.elapsed())
}

/// Concurrent throughput against `module`: `reps` bursts of `calls` per
/// client.
pub async fn concurrent(
    clients: &[Client],
    module: &str,
    payload: &[u8],
    reps: usize,
    calls: usize,
) -> anyhow::Result<Concurrent> {
    burst(clients, module, payload, calls / 10 + 1).await?;
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let wall = burst(clients, module, payload, calls).await?;
        rates.push((clients.len() * calls) as f64 / wall.as_secs_f64());
    }
    Ok(Concurrent {
        clients: clients.len(),
        per_s: median(rates),
        reps,
        calls_per_client: calls,
    })
}

/// Streams `<module>.count(items)` `reps` times.
pub async fn stream(
    client: &Client,
    module: &str,
    items: u64,
    reps: usize,
) -> anyhow::Result<Streamed> {
    let args = norgopolis_proto::msgpack::encode(&items)?;
    stream_series(items, reps, || async {
        let s = client.invoke_raw(module, "count", args.clone()).await?;
        Ok(s.map(|item| item.map(drop).map_err(anyhow::Error::from))
            .boxed())
    })
    .await
}
