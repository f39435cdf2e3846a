//! A model of the proposed lean module transport, to measure what the
//! module hop would cost without HTTP/2 and gRPC.
//!
//! Frames on the module's stdin/stdout: `u32 length` (of what follows),
//! `u32 call id`, `u8 kind`, payload. Router to module: `CALL` (payload:
//! `u8` name length, function name, MessagePack arguments). Module to
//! router: `ITEM` (MessagePack), then `END`. The peer is this binary re-run
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
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::unix::pipe,
    process::{Child, ChildStdin, Command},
    sync::{mpsc, oneshot},
};

use crate::{
    series::{sequential, Plan},
    stats::Latency,
};

const CALL: u8 = 1;
const ITEM: u8 = 2;
const END: u8 = 3;

/// One frame: call id, kind, payload.
type Frame = (u32, u8, Vec<u8>);

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let len = match r.read_u32_le().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if len < 5 {
        return Err(std::io::Error::other("short frame"));
    }
    let id = r.read_u32_le().await?;
    let kind = r.read_u8().await?;
    let mut payload = vec![0; len - 5];
    r.read_exact(&mut payload).await?;
    Ok(Some((id, kind, payload)))
}

fn put_frame(out: &mut Vec<u8>, (id, kind, payload): &Frame) {
    out.extend_from_slice(&(payload.len() as u32 + 5).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(*kind);
    out.extend_from_slice(payload);
}

/// Writes queued frames, one write per burst.
async fn writer<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Frame>,
    w: W,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(w);
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        put_frame(&mut buf, &frame);
        while let Ok(more) = rx.try_recv() {
            put_frame(&mut buf, &more);
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    Ok(())
}

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
            let out = tokio::spawn(writer(rx, pipe::Sender::from_file(stdout)?));
            let mut input = BufReader::new(pipe::Receiver::from_file(stdin)?);
            while let Some((id, kind, payload)) = read_frame(&mut input).await? {
                if kind != CALL {
                    continue;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let name_len = payload.first().copied().unwrap_or(0) as usize;
                    let args = payload.get(1 + name_len..).unwrap_or_default();
                    // Decode and encode, as the SDK does for `echo`.
                    let value =
                        norgopolis_proto::msgpack::decode_value(args).unwrap_or(rmpv::Value::Nil);
                    let item = norgopolis_proto::msgpack::encode(&value).unwrap_or_default();
                    let _ = tx.send((id, ITEM, item));
                    let _ = tx.send((id, END, Vec::new()));
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
    out: mpsc::UnboundedSender<Frame>,
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
        tokio::spawn(writer(rx, stdin));
        let calls: Arc<Mutex<HashMap<u32, CallItems>>> = Arc::default();
        let table = Arc::clone(&calls);
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(async move {
            let mut input = BufReader::new(stdout);
            while let Ok(Some((id, kind, payload))) = read_frame(&mut input).await {
                let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
                match kind {
                    ITEM => {
                        if let Some(tx) = table.get(&id) {
                            let _ = tx.send(Some(payload));
                        }
                    }
                    END => {
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
        let mut payload = Vec::with_capacity(1 + function.len() + args.len());
        payload.push(function.len() as u8);
        payload.extend_from_slice(function.as_bytes());
        payload.extend_from_slice(args);
        if self.out.send((id, CALL, payload)).is_err() {
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
