//! A connection flood for the denial-of-service tests: opens `COUNT` idle
//! connections to the server and holds them.
//!
//! ```text
//! np-flood http2 ADDR|SOCKET COUNT   # HTTP/2 handshakes, then nothing (pings are answered)
//! np-flood lean SOCKET COUNT         # the lean hello, then nothing
//! ```
//!
//! Prints `opened N failed F` once every attempt is made; then each
//! `report` line on stdin is answered with `open N closed C` (connections
//! the server has closed so far). Exits when stdin closes.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpStream, UnixStream},
};

/// Bound on one connection attempt: a full listen queue must not stall us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
enum Mode {
    Http2,
    Lean,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, target, count] = args.as_slice() else {
        bail!("usage: np-flood http2|lean ADDR|SOCKET COUNT");
    };
    let mode = match mode.as_str() {
        "http2" => Mode::Http2,
        "lean" => Mode::Lean,
        other => bail!("unknown mode {other:?}"),
    };
    let count: usize = count.parse().context("COUNT")?;
    raise_open_file_limit();

    let closed = Arc::new(AtomicUsize::new(0));
    // HTTP/2 connections close when their last request handle goes.
    let mut handles = Vec::with_capacity(count);
    let (mut opened, mut failed) = (0, 0);
    for _ in 0..count {
        match tokio::time::timeout(CONNECT_TIMEOUT, open(target, mode, closed.clone())).await {
            Ok(Ok(handle)) => {
                handles.push(handle);
                opened += 1;
            }
            _ => failed += 1,
        }
    }
    println!("opened {opened} failed {failed}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "report" {
            let c = closed.load(Ordering::Relaxed);
            println!("open {} closed {c}", opened - c);
        }
    }
    drop(handles);
    Ok(())
}

/// What keeps one connection open.
enum Handle {
    Http2(#[allow(dead_code)] hyper::client::conn::http2::SendRequest<String>),
    Lean,
}

async fn open(target: &str, mode: Mode, closed: Arc<AtomicUsize>) -> anyhow::Result<Handle> {
    if target.starts_with('/') {
        let stream = UnixStream::connect(PathBuf::from(target)).await?;
        start(stream, mode, closed).await
    } else {
        let stream = TcpStream::connect(target).await?;
        start(stream, mode, closed).await
    }
}

async fn start<IO>(mut io: IO, mode: Mode, closed: Arc<AtomicUsize>) -> anyhow::Result<Handle>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match mode {
        Mode::Http2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await?;
            tokio::spawn(async move {
                let _ = conn.await;
                closed.fetch_add(1, Ordering::Relaxed);
            });
            Ok(Handle::Http2(send))
        }
        Mode::Lean => {
            io.write_all(&norgopolis_proto::lean_frame::hello_bytes())
                .await?;
            tokio::spawn(async move {
                // The server's hello, then nothing until it closes.
                let mut buf = [0u8; 256];
                while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
                closed.fetch_add(1, Ordering::Relaxed);
            });
            Ok(Handle::Lean)
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
