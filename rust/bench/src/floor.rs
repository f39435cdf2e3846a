//! The floor: a raw Unix-socket ping-pong between two processes.
//!
//! The peer is this same binary re-run as `norgopolis-bench peer`: it
//! connects to our listener and sends back every message (a 4-byte length,
//! then the bytes) with plain blocking reads and writes. We measure once
//! with blocking I/O (the kernel's cost alone) and once through tokio (plus
//! one runtime wake-up per hop, as every norgopolis hop has).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream as StdStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    series::Plan,
    stats::{Latency, Rep},
};

/// Raw ping-pong figures for one message size.
pub struct Floor {
    /// Blocking reads and writes on both ends.
    pub blocking: Latency,
    /// Our end through tokio.
    pub tokio: Latency,
}

/// Runs the peer side until the connection closes (`norgopolis-bench peer`).
pub fn peer(socket: &Path) -> anyhow::Result<()> {
    let mut stream = StdStream::connect(socket).context("peer connect")?;
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return Ok(()); // The bench closed its end.
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        stream.read_exact(&mut buf)?;
        stream.write_all(&buf)?;
    }
}

/// Measures ping-pong with `payload` against a freshly started peer.
pub async fn measure(dir: &Path, payload: &[u8], plan: Plan) -> anyhow::Result<Floor> {
    let socket = dir.join(format!("floor-{}.sock", payload.len()));
    let listener = tokio::net::UnixListener::bind(&socket).context("floor bind")?;
    let mut child = spawn_peer(&socket)?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .context("the ping-pong peer did not connect")??;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let message = framed(payload);

    let blocking = {
        let message = message.clone();
        let len = payload.len();
        let stream = stream.try_clone()?;
        tokio::task::spawn_blocking(move || blocking_series(stream, &message, len, plan)).await??
    };
    stream.set_nonblocking(true)?;
    let mut stream = tokio::net::UnixStream::from_std(stream)?;
    let mut reps = Vec::with_capacity(plan.reps);
    let mut back = vec![0u8; payload.len()];
    for _ in 0..plan.warmup {
        stream.write_all(&message).await?;
        stream.read_exact(&mut back).await?;
    }
    for _ in 0..plan.reps {
        let mut samples = Vec::with_capacity(plan.calls);
        let start = Instant::now();
        for _ in 0..plan.calls {
            let t = Instant::now();
            stream.write_all(&message).await?;
            stream.read_exact(&mut back).await?;
            samples.push(t.elapsed());
        }
        reps.push(Rep::from_samples(&mut samples, start.elapsed()));
    }
    drop(stream);
    let _ = child.wait();
    let _ = std::fs::remove_file(&socket);
    Ok(Floor {
        blocking,
        tokio: Latency::from_reps(&reps, plan.calls),
    })
}

fn spawn_peer(socket: &Path) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("peer")
        .arg(socket)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the ping-pong peer")
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut message = (payload.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(payload);
    message
}

fn blocking_series(
    mut stream: StdStream,
    message: &[u8],
    len: usize,
    plan: Plan,
) -> anyhow::Result<Latency> {
    let mut back = vec![0u8; len];
    let mut once = |stream: &mut StdStream| -> std::io::Result<Duration> {
        let t = Instant::now();
        stream.write_all(message)?;
        stream.read_exact(&mut back)?;
        Ok(t.elapsed())
    };
    for _ in 0..plan.warmup {
        once(&mut stream)?;
    }
    let mut reps = Vec::with_capacity(plan.reps);
    for _ in 0..plan.reps {
        let mut samples = Vec::with_capacity(plan.calls);
        let start = Instant::now();
        for _ in 0..plan.calls {
            samples.push(once(&mut stream)?);
        }
        reps.push(Rep::from_samples(&mut samples, start.elapsed()));
    }
    Ok(Latency::from_reps(&reps, plan.calls))
}
