//! How the server scales: p50 and throughput of 64 B echo calls at 1, 8,
//! 64 and 256 concurrent clients, with 1, 8 and 32 modules loaded, and the
//! server's RSS at each step. Every client is its own connection and
//! session; client `i`'s `k`-th call goes to module `(i + k) mod modules`,
//! so every loaded module takes calls at every step and a row's steps
//! differ only in the number of clients. (With client `i` always calling
//! module `i mod modules`, 8 clients used 8 of 32 modules and 64 clients
//! all 32: that step mixed more clients with more busy processes.)

use std::time::{Duration, Instant};

use anyhow::Context;
use norgopolis_client::Client;
use serde::Serialize;

use crate::{
    figures::{mib, rate, us},
    place::{rss_kib, Place},
    routed,
    stats::{median, micros, percentile},
};

/// Clients at each step.
pub const CLIENTS: [usize; 4] = [1, 8, 64, 256];
/// Modules loaded at each step.
pub const MODULES: [usize; 3] = [1, 8, 32];
/// Passes over a row's steps. A row's steps take turns (1, 8, 64, 256
/// clients, then again), so a step and the one before it are measured
/// minutes apart at most, under the same load of the moment; each step's
/// growth is the median of its per-pass ratios.
const PASSES: usize = 3;

/// One step of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Modules loaded.
    pub modules: usize,
    /// Clients calling at once.
    pub clients: usize,
    /// Median over [`PASSES`] of the calls' median latency, µs.
    pub p50_us: f64,
    /// Median over [`PASSES`] of the calls per second, all clients
    /// together.
    pub per_s: f64,
    /// This step's p50 ÷ the previous step's, in each pass (empty for a
    /// row's first step).
    pub p50_growth: Vec<f64>,
    /// Server RSS after the step's first pass, KiB.
    pub server_kib: u64,
}

/// One pass's figures of one step.
#[derive(Debug, Clone, Copy)]
struct Run {
    p50_us: f64,
    per_s: f64,
}

/// Measures every step; `calls` is the total per pass of a step (spread
/// over the clients, at least 64 each).
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
        // Room for the most clients, each with its session and connections,
        // and all their calls on one module at once: the table is about
        // how the server scales, not about its limits (past
        // max_calls_per_module, calls wait in line, which cost 6-12% of
        // the throughput with 256 clients on one module).
        let most = CLIENTS[CLIENTS.len() - 1];
        place.sandbox.write_config(&format!(
            "max_sessions = {}\nmax_connections = {}\nmax_calls_per_module = {most}\n",
            most * 2,
            most * 8
        ));
        let server = place.start_server()?;
        let mut clients: Vec<Client> = Vec::new();
        let mut runs = vec![Vec::new(); CLIENTS.len()];
        let mut rss = vec![0; CLIENTS.len()];
        for pass in 0..PASSES {
            for (k, n) in CLIENTS.into_iter().enumerate() {
                while clients.len() < n {
                    clients.push(place.client().await?);
                }
                let assigned = assign(&clients[..n], &names);
                if pass == 0 {
                    // Warm: every module started, every connection used.
                    burst(&assigned, &payload, modules).await?;
                }
                let start = Instant::now();
                let mut samples = burst(&assigned, &payload, (calls / n).max(64)).await?;
                let wall = start.elapsed();
                samples.sort_unstable();
                runs[k].push(Run {
                    p50_us: micros(percentile(&samples, 50.0)),
                    per_s: samples.len() as f64 / wall.as_secs_f64(),
                });
                if pass == 0 {
                    rss[k] = rss_kib(server.pid)?;
                }
            }
        }
        for (k, n) in CLIENTS.into_iter().enumerate() {
            let p50_growth = match k {
                0 => Vec::new(),
                _ => (runs[k].iter().zip(&runs[k - 1]))
                    .map(|(now, before)| now.p50_us / before.p50_us)
                    .collect(),
            };
            steps.push(Step {
                modules,
                clients: n,
                p50_us: median(runs[k].iter().map(|r| r.p50_us)),
                per_s: median(runs[k].iter().map(|r| r.per_s)),
                p50_growth,
                server_kib: rss[k],
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

/// Each client with the modules in the order it calls them: client `i`
/// starts at module `i mod modules` and goes round.
fn assign(clients: &[Client], names: &[String]) -> Vec<(Client, Vec<String>)> {
    clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut order = names.to_vec();
            order.rotate_left(i % names.len());
            (c.clone(), order)
        })
        .collect()
}

async fn burst(
    clients: &[(Client, Vec<String>)],
    payload: &[u8],
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tasks: Vec<_> = clients
        .iter()
        .map(|(client, modules)| {
            let (client, modules, payload) = (client.clone(), modules.clone(), payload.to_vec());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(calls);
                for module in modules.iter().cycle().take(calls) {
                    let t = Instant::now();
                    routed::echo(&client, module, &payload).await?;
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
    let mut out = format!(
        "\n### Scaling: 64 B echo, lean client and modules\n\n\
         The steps of a row take turns, {PASSES} passes; p50 and calls/s are medians over the \
         passes, and each step's p50 growth is the median of its per-pass ratios (listed), \
         ✅ when no more than the growth in clients (linear).\n\n\
         | Modules | Clients | p50 | Calls/s | Server RSS | vs previous step: clients × · p50 × (per pass) · RSS + |\n\
         |---|---|---|---|---|---|\n"
    );
    let mut previous: Option<&Step> = None;
    for s in steps {
        let growth = match previous.filter(|p| p.modules == s.modules) {
            Some(p) => {
                let factor = s.clients / p.clients.max(1);
                let p50 = median(s.p50_growth.iter().copied());
                format!(
                    "×{factor} · ×{p50:.2} ({}) {} · {:+.2} MB",
                    s.p50_growth
                        .iter()
                        .map(|g| format!("{g:.2}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    if p50 <= factor as f64 { "✅" } else { "❌" },
                    (s.server_kib as f64 - p.server_kib as f64) * 1024.0 / 1e6
                )
            }
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
