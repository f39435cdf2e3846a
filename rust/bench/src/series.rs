//! Timing a call repeated in sequence.

use std::{future::Future, time::Instant};

use anyhow::ensure;
use futures::{stream::BoxStream, StreamExt};
use serde::Serialize;

use crate::stats::{median, millis, Latency, Rep};

/// Repetitions and calls of one measured series.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Untimed calls first.
    pub warmup: usize,
    /// Timed repetitions.
    pub reps: usize,
    /// Calls per repetition.
    pub calls: usize,
}

/// Runs `call` `plan.warmup` times untimed, then `plan.reps` timed
/// repetitions of `plan.calls` calls each, one after the other.
pub async fn sequential<F, Fut>(plan: Plan, mut call: F) -> anyhow::Result<Latency>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..plan.warmup {
        call().await?;
    }
    let mut reps = Vec::with_capacity(plan.reps);
    for _ in 0..plan.reps {
        let mut samples = Vec::with_capacity(plan.calls);
        let start = Instant::now();
        for _ in 0..plan.calls {
            let t = Instant::now();
            call().await?;
            samples.push(t.elapsed());
        }
        reps.push(Rep::from_samples(&mut samples, start.elapsed()));
    }
    Ok(Latency::from_reps(&reps, plan.calls))
}

/// A long stream's speed.
#[derive(Debug, Clone, Serialize)]
pub struct Streamed {
    /// Items per stream.
    pub items: u64,
    /// Median over repetitions of items per second.
    pub items_per_s: f64,
    /// Median over repetitions of the time from the call to its first item.
    pub first_item_ms: f64,
    /// Repetitions.
    pub reps: usize,
}

/// Runs the stream `start` makes `reps + 1` times (the first untimed),
/// checking it yields `items` items.
pub async fn stream_series<'a, F, Fut>(
    items: u64,
    reps: usize,
    mut start: F,
) -> anyhow::Result<Streamed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<BoxStream<'a, anyhow::Result<()>>>>,
{
    let mut rates = Vec::with_capacity(reps);
    let mut firsts = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        let mut stream = start().await?;
        let mut first = None;
        let mut n = 0u64;
        while let Some(item) = stream.next().await {
            item?;
            first.get_or_insert_with(|| t.elapsed());
            n += 1;
        }
        let wall = t.elapsed();
        ensure!(n == items, "the stream yielded {n} items, expected {items}");
        if rep > 0 {
            rates.push(n as f64 / wall.as_secs_f64());
            firsts.push(millis(first.unwrap_or(wall)));
        }
    }
    Ok(Streamed {
        items,
        items_per_s: median(rates),
        first_item_ms: median(firsts),
        reps,
    })
}
