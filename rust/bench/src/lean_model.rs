//! A model of the lean module transport, to measure what the module hop
//! costs without HTTP/2 and gRPC and without the router.
//!
//! Frames are the real ones (`norgopolis_proto::lean_frame`, the codec the server
//! and the SDK share), without the hello, pings and cancels: router to
//! module `CALL`, module to router `ITEM`, then `END`. The peer is this binary re-run
//! as `norgopolis-bench lean-peer`, built like an SDK module: the default
//! multi-threaded runtime, the connection on a worker task, each call in a
//! task of its own whose items pass through a channel to one writer task
//! that flushes when nothing more is queued. The router side likewise has
//! a reader task that hands items to the waiting call. So the figure
//! includes the task hand-offs a real implementation would have.

use std::{
    collections::HashMap,
    os::fd::AsFd,
    process::Stdio,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{bail, Context};
use norgopolis_proto::lean_frame::{write_frames, Frame, FrameReader, Incoming, Outgoing};
use tokio::{
    net::unix::pipe,
    process::{Child, ChildStdin, Command},
    sync::{mpsc, oneshot},
};

use crate::{
    series::{sequential, Plan},
    stats::Latency,
};

/// Largest frame either side reads.
const LIMIT: usize = 64 << 20;

/// The module side (`norgopolis-bench lean-peer`): echoes every CALL's
/// arguments back as one ITEM, then END, until stdin closes.
pub fn peer() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::spawn(async {
            // Non-blocking pipes driven by tokio, as the SDK does (tokio's
            // own stdin/stdout read and write on the blocking pool).
            let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
            let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
            let (tx, rx) = mpsc::unbounded_channel();
            let out = tokio::spawn(write_frames(rx, pipe::Sender::from_file(stdout)?));
            let mut input = FrameReader::new(pipe::Receiver::from_file(stdin)?, LIMIT);
            while let Some(incoming) = input.next().await? {
                let Incoming::Frame(Frame::Call { id, args, .. }) = incoming else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    // Decode and encode, as the SDK does for `echo`.
                    let value =
                        norgopolis_proto::msgpack::decode_value(&args).unwrap_or(rmpv::Value::Nil);
                    let data = norgopolis_proto::msgpack::encode(&value).unwrap_or_default();
                    let _ = tx.send(Outgoing::Frame(Frame::Item { id, data }));
                    let _ = tx.send(Outgoing::Frame(Frame::End { id }));
                });
            }
            drop(tx);
            out.await??;
            anyhow::Ok(())
        })
        .await?
    })
}

/// Items of one call as they arrive, then `None` at END.
type CallItems = mpsc::UnboundedSender<Option<Vec<u8>>>;

/// The router side of a lean connection to a started peer.
pub struct LeanModule {
    child: Child,
    out: mpsc::UnboundedSender<Outgoing>,
    calls: Arc<Mutex<HashMap<u32, CallItems>>>,
    next: AtomicU32,
    _reader: oneshot::Receiver<()>,
}

impl LeanModule {
    /// Starts the peer on pipes.
    pub async fn start() -> anyhow::Result<LeanModule> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("lean-peer")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the lean peer")?;
        let stdin: ChildStdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(rx, stdin));
        let calls: Arc<Mutex<HashMap<u32, CallItems>>> = Arc::default();
        let table = Arc::clone(&calls);
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(async move {
            let mut input = FrameReader::new(stdout, LIMIT);
            while let Ok(Some(Incoming::Frame(frame))) = input.next().await {
                let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
                match frame {
                    Frame::Item { id, data } => {
                        if let Some(tx) = table.get(&id) {
                            let _ = tx.send(Some(data));
                        }
                    }
                    Frame::End { id } => {
                        if let Some(tx) = table.remove(&id) {
                            let _ = tx.send(None);
                        }
                    }
                    _ => {}
                }
            }
            let _ = done_tx.send(());
        });
        Ok(LeanModule {
            child,
            out,
            calls,
            next: AtomicU32::new(1),
            _reader: done,
        })
    }

    /// One call; returns the items' total size.
    pub async fn call(&self, function: &str, args: &[u8]) -> anyhow::Result<usize> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let call = Frame::Call {
            id,
            function: function.into(),
            args: args.to_vec(),
            deadline_ms: None,
        };
        if self.out.send(Outgoing::Frame(call)).is_err() {
            bail!("lean peer gone");
        }
        let mut size = 0;
        loop {
            match rx.recv().await {
                Some(Some(item)) => size += item.len(),
                Some(None) => return Ok(size),
                None => bail!("lean peer gone"),
            }
        }
    }

    /// Sequential echo calls with `payload`.
    pub async fn echo_series(&self, payload: &[u8], plan: Plan) -> anyhow::Result<Latency> {
        let size = self.call("echo", payload).await?;
        anyhow::ensure!(size == payload.len(), "echo returned {size} bytes");
        sequential(plan, || async {
            self.call("echo", payload).await?;
            Ok(())
        })
        .await
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Closes the peer's stdin and waits for it.
    pub async fn stop(mut self) {
        drop(self.out);
        let exited =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
