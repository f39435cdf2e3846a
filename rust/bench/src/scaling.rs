//! How the server scales: p50 and throughput of 64 B echo calls at 1, 8,
//! 64 and 256 concurrent clients, with 1, 8 and 32 modules loaded, and the
//! server's RSS at each step. Every client is its own connection and
//! session; client `i` calls module `i mod modules`, so with more modules
//! the calls spread over more processes.

use std::time::{Duration, Instant};

use anyhow::Context;
use norgopolis_client::Client;
use serde::Serialize;

use crate::{
    figures::{mib, rate, us},
    place::{rss_kib, Place},
    routed,
    stats::{micros, percentile},
};

/// Clients at each step.
pub const CLIENTS: [usize; 4] = [1, 8, 64, 256];
/// Modules loaded at each step.
pub const MODULES: [usize; 3] = [1, 8, 32];

/// One step of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Modules loaded.
    pub modules: usize,
    /// Clients calling at once.
    pub clients: usize,
    /// Median latency of all calls, µs.
    pub p50_us: f64,
    /// Calls per second, all clients together.
    pub per_s: f64,
    /// Server RSS after the step, KiB.
    pub server_kib: u64,
}

/// Measures every step; `calls` is the total per step (spread over the
/// clients, at least 8 each).
pub async fn measure(calls: usize) -> anyhow::Result<Vec<Step>> {
    let payload = crate::payload::string_of(crate::payload::SMALL_CHARS);
    let mut steps = Vec::new();
    for modules in MODULES {
        crate::step(&format!("scaling with {modules} modules"));
        let place = Place::new()?;
        let names: Vec<String> = (0..modules).map(|i| format!("scale{i}")).collect();
        let echo = norgopolis_tests::bin("echo");
        for name in &names {
            place.sandbox.add_lean_module(name, &echo, &[]);
        }
        // Room for the most clients, each with its session and connections.
        place.sandbox.write_config(&format!(
            "max_sessions = {}\nmax_connections = {}\n",
            CLIENTS[CLIENTS.len() - 1] * 2,
            CLIENTS[CLIENTS.len() - 1] * 8
        ));
        let server = place.start_server()?;
        let mut clients: Vec<Client> = Vec::new();
        for n in CLIENTS {
            while clients.len() < n {
                clients.push(place.client().await?);
            }
            let per_client = (calls / n).max(8);
            let assigned: Vec<(Client, String)> = clients
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), names[i % modules].clone()))
                .collect();
            // Warm: every module started, every connection used once.
            burst(&assigned, &payload, 1).await?;
            let start = Instant::now();
            let mut samples = burst(&assigned, &payload, per_client).await?;
            let wall = start.elapsed();
            samples.sort_unstable();
            steps.push(Step {
                modules,
                clients: n,
                p50_us: micros(percentile(&samples, 50.0)),
                per_s: samples.len() as f64 / wall.as_secs_f64(),
                server_kib: rss_kib(server.pid)?,
            });
        }
        for c in clients {
            c.detach().await;
        }
        place.stop_any_server().await?;
        drop(server);
    }
    Ok(steps)
}

/// Each client makes `calls` sequential calls to its module, all at once;
/// returns every call's latency.
async fn burst(
    clients: &[(Client, String)],
    payload: &[u8],
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tasks: Vec<_> = clients
        .iter()
        .map(|(client, module)| {
            let (client, module, payload) = (client.clone(), module.clone(), payload.to_vec());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(calls);
                for _ in 0..calls {
                    let t = Instant::now();
                    routed::echo(&client, &module, &payload).await?;
                    samples.push(t.elapsed());
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("client task")??);
    }
    Ok(all)
}

/// The table, with each step's growth over the one before (clients ×k
/// against p50 ×, throughput ×, RSS +).
pub fn markdown(steps: &[Step]) -> String {
    let mut out = String::from(
        "\n### Scaling: 64 B echo, lean client and modules\n\n\
         | Modules | Clients | p50 | Calls/s | Server RSS | vs previous step: clients × · p50 × · RSS + |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut previous: Option<&Step> = None;
    for s in steps {
        let growth = match previous.filter(|p| p.modules == s.modules) {
            Some(p) => format!(
                "×{} · ×{:.2} · {:+.2} MB",
                s.clients / p.clients.max(1),
                s.p50_us / p.p50_us,
                (s.server_kib as f64 - p.server_kib as f64) * 1024.0 / 1e6
            ),
            None => "—".into(),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {growth} |\n",
            s.modules,
            s.clients,
            us(s.p50_us),
            rate(s.per_s),
            mib(s.server_kib as f64)
        );
        previous = Some(s);
    }
    out
}
