//! The checker's end of a module: the process, and lean frames over its
//! stdin/stdout, read one at a time with a bound on every wait.

use std::{path::Path, process::Stdio, time::Duration};

use norgopolis_proto::lean_frame::{self as lean, Frame, FrameReader, Incoming};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::Mutex,
};

use norgopolis_catalog::locate::Located;

/// How long any single answer may take before the check fails; generous,
/// so that only a module that never answers fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Results taken before the checker grants as many more (as the router does).
const CREDIT_BATCH: u32 = 32;

/// A running module under test.
pub struct ModuleConn {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: FrameReader<ChildStdout>,
    next_id: u32,
    /// The module's last stderr lines, shown when a check fails.
    pub stderr: std::sync::Arc<Mutex<Vec<String>>>,
}

/// How a call ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its results, as MessagePack bytes.
    pub items: Vec<Vec<u8>>,
    /// `None` on `END`, else the `ERROR`'s code and message.
    pub error: Option<(i32, String)>,
}

impl Outcome {
    /// Whether the function is missing (`NotFound`), for skipping checks.
    pub fn lacking(&self) -> bool {
        matches!(&self.error, Some((5, _)))
    }
}

impl ModuleConn {
    /// Starts `module` as the router would, asking it to speak lean.
    pub fn spawn(module: &Located, socket: Option<&Path>) -> std::io::Result<Self> {
        let mut cmd = Command::new(&module.exec);
        cmd.args(&module.args)
            .env(norgopolis_common::places::MODULE_ENV, &module.name)
            .env(
                norgopolis_common::places::TRANSPORT_ENV,
                lean::TRANSPORT_LEAN,
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(socket) = socket {
            cmd.env(norgopolis_common::places::SOCKET_ENV, socket);
        }
        if let Some(dir) = module.exec.parent() {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("the module's pipes are missing"));
        };
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut kept = kept.lock().await;
                if kept.len() == 20 {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        Ok(ModuleConn {
            child,
            stdin: Some(stdin),
            frames: FrameReader::new(stdout, usize::MAX),
            next_id: 1,
            stderr: lines,
        })
    }

    /// A fresh call id.
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Writes `frame` to the module's stdin.
    pub async fn send(&mut self, frame: Frame) -> Result<(), String> {
        let mut buf = Vec::new();
        lean::encode(&frame, &mut buf).map_err(|e| e.to_string())?;
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        stdin
            .write_all(&buf)
            .await
            .map_err(|e| format!("writing to its stdin failed: {e}"))?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    /// The first 13 bytes the module writes, within `wait`.
    pub async fn hello(&mut self, wait: Duration) -> Result<Vec<u8>, String> {
        tokio::time::timeout(wait, self.frames.read_prefix(lean::HEADER_LEN + 4))
            .await
            .map_err(|_| format!("said nothing within {} s", wait.as_secs()))?
            .map_err(|e| e.to_string())
    }

    /// The next frame, within `wait`; `Ok(None)` when nothing came in time.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Frame>, String> {
        match tokio::time::timeout(wait, self.frames.next()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(Incoming::Frame(frame)))) => Ok(Some(frame)),
            Ok(Ok(Some(Incoming::Oversized { .. }))) => Err("an oversized frame".into()),
            Ok(Ok(None)) => Err("it closed its stdout".into()),
            Ok(Err(e)) => Err(format!("it broke the protocol: {e}")),
        }
    }

    /// The next frame; failing after [`PATIENCE`].
    pub async fn next(&mut self) -> Result<Frame, String> {
        self.next_within(PATIENCE)
            .await?
            .ok_or_else(|| format!("no answer within {} s", PATIENCE.as_secs()))
    }

    /// Calls `function` and collects its results, granting credit as they
    /// are taken. Frames of other calls are ignored.
    pub async fn call(
        &mut self,
        function: &str,
        args: Vec<u8>,
        deadline_ms: Option<u64>,
    ) -> Result<Outcome, String> {
        let id = self.id();
        self.send(Frame::Call {
            id,
            function: function.into(),
            args,
            deadline_ms,
        })
        .await?;
        self.collect(id).await
    }

    /// The rest of call `id`, granting credit as items are taken.
    pub async fn collect(&mut self, id: u32) -> Result<Outcome, String> {
        let mut items = Vec::new();
        let mut taken = 0;
        loop {
            match self.next().await? {
                Frame::Item { id: i, data } if i == id => {
                    items.push(data);
                    taken += 1;
                    if taken == CREDIT_BATCH {
                        taken = 0;
                        self.send(Frame::Credit {
                            id,
                            items: CREDIT_BATCH,
                        })
                        .await?;
                    }
                }
                Frame::End { id: i } if i == id => return Ok(Outcome { items, error: None }),
                Frame::Error {
                    id: i,
                    code,
                    message,
                } if i == id => {
                    return Ok(Outcome {
                        items,
                        error: Some((code, message)),
                    })
                }
                _ => {}
            }
        }
    }

    /// Closes the module's stdin (the router's way of asking it to stop)
    /// and waits up to `wait` for it to exit.
    pub async fn close_and_wait(
        &mut self,
        wait: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        self.stdin = None;
        tokio::time::timeout(wait, self.child.wait())
            .await
            .map_err(|_| format!("still running {} s after its stdin closed", wait.as_secs()))?
            .map_err(|e| e.to_string())
    }
}
