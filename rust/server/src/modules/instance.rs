//! One running module process: its gRPC channel, counters and supervisor.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use norgopolis_proto::{module_communication as mc, v1::ModuleStatus};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStderr},
    sync::{oneshot, watch},
};
use tonic::{transport::Endpoint, Status};

use super::{
    locate::Located,
    spawner::{SpawnRequest, Spawner},
    stdio::{CloseSignal, ModuleIo},
};

/// How a module process ended, in words ("exit status 3", "signal 9 (SIGKILL)").
pub type ExitInfo = String;

/// A running (or just ended) module process.
pub struct Instance {
    /// Module name.
    pub name: String,
    /// Where it was loaded from.
    pub located: Located,
    /// Process id.
    pub pid: u32,
    started: Instant,
    client: mc::invoker_client::InvokerClient<tonic::transport::Channel>,
    calls_served: AtomicU64,
    in_flight: AtomicU32,
    exit: watch::Receiver<Option<ExitInfo>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

/// Decrements the in-flight count when a call ends.
pub struct InFlight(Arc<Instance>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.calls_served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Instance {
    /// Spawns the module and connects to it over its stdio.
    pub async fn start(
        located: Located,
        spawner: &Spawner,
        socket: &std::path::Path,
        max_message_size: usize,
        grace: Duration,
    ) -> Result<Arc<Self>, Status> {
        let name = located.name.clone();
        let mut child = spawner
            .spawn(SpawnRequest {
                name: name.clone(),
                exec: located.exec.clone(),
                args: located.args.clone(),
                cwd: located.exec.parent().map(|p| p.to_path_buf()),
                socket: socket.to_path_buf(),
            })
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot start module '{name}' ({}): {e}",
                    located.exec.display()
                ))
            })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Status::internal(format!(
                "module '{name}': stdio pipes missing"
            )));
        };
        tokio::spawn(drain_stderr(name.clone(), stderr));

        let close = CloseSignal::default();
        let (exit_tx, exit) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(supervise(
            name.clone(),
            pid,
            child,
            stop_rx,
            close.clone(),
            exit_tx,
            grace,
        ));

        let io = Mutex::new(Some(ModuleIo::new(stdin, stdout, close)));
        let connector = tower::service_fn(move |_uri| {
            let io = io.lock().ok().and_then(|mut slot| slot.take());
            async move {
                io.map(TokioIo::new).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "module connection is closed",
                    )
                })
            }
        });
        let channel = Endpoint::from_static("http://module.local")
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot talk to module '{name}' over its stdio: {e}"
                ))
            })?;
        let client = mc::invoker_client::InvokerClient::new(channel)
            .max_decoding_message_size(max_message_size)
            .max_encoding_message_size(max_message_size);
        tracing::info!(module = %name, pid, path = %located.exec.display(), "module started");
        Ok(Arc::new(Instance {
            name,
            located,
            pid,
            started: Instant::now(),
            client,
            calls_served: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            exit,
            stop: Mutex::new(Some(stop_tx)),
        }))
    }

    /// Whether the process is still running and not being stopped.
    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none() && self.stop.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Starts a call; the stream yields the module's items as they come.
    pub async fn invoke(
        self: &Arc<Self>,
        function: String,
        args: Vec<u8>,
    ) -> Result<(tonic::Streaming<mc::MessagePack>, InFlight), Status> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone());
        let mut client = self.client.clone();
        let request = mc::Invocation {
            function_name: function,
            args: Some(mc::MessagePack { data: args }),
        };
        match client.invoke(request).await {
            Ok(response) => Ok((response.into_inner(), guard)),
            Err(status) => Err(self.explain(status).await),
        }
    }

    /// Turns a transport failure into a clear error when the module died.
    pub async fn explain(&self, status: Status) -> Status {
        let transport = std::error::Error::source(&status).is_some()
            || matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Unavailable
            );
        if !transport {
            return status;
        }
        let mut exit = self.exit.clone();
        // The pipe breaks a moment before the exit is reaped.
        let exited =
            tokio::time::timeout(Duration::from_millis(500), exit.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| v.clone()));
        match exited {
            Some(info) => Status::unavailable(format!("module '{}' exited ({info})", self.name)),
            None if std::error::Error::source(&status).is_some() => Status::unavailable(format!(
                "module '{}' connection failed: {}",
                self.name,
                status.message()
            )),
            None => status,
        }
    }

    /// Asks the module to stop (stdin closed, then SIGTERM, then SIGKILL) and
    /// waits until it has exited.
    pub async fn stop(&self) {
        if let Some(tx) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
    }

    /// A snapshot for `Status`.
    pub fn status(&self) -> ModuleStatus {
        let exit = self.exit.borrow().clone();
        let state = match (&exit, self.is_alive()) {
            (Some(_), _) => "exited",
            (None, true) => "running",
            (None, false) => "stopping",
        };
        ModuleStatus {
            name: self.name.clone(),
            pid: self.pid,
            state: state.into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            calls_served: self.calls_served.load(Ordering::Relaxed),
            calls_in_flight: self.in_flight.load(Ordering::Relaxed),
            restarts: 0,
            last_exit: exit.unwrap_or_default(),
            path: self.located.origin.display().to_string(),
        }
    }
}

async fn drain_stderr(name: String, stderr: ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!("[{name}] {line}");
    }
}

/// Waits for the process; on a stop request closes stdin, then escalates.
async fn supervise(
    name: String,
    pid: u32,
    mut child: Child,
    stop: oneshot::Receiver<()>,
    close: CloseSignal,
    exit: watch::Sender<Option<ExitInfo>>,
    grace: Duration,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = stop => {
            close.raise();
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::info!(module = %name, "did not exit after stdin closed; sending SIGTERM");
                    signal_group(pid, libc::SIGTERM);
                    match tokio::time::timeout(grace, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            tracing::warn!(module = %name, "ignored SIGTERM; sending SIGKILL");
                            signal_group(pid, libc::SIGKILL);
                            child.wait().await
                        }
                    }
                }
            }
        }
    };
    // Whatever the module left behind in its group goes with it.
    signal_group(pid, libc::SIGKILL);
    let info = match status {
        Ok(s) => describe(s),
        Err(e) => format!("wait failed: {e}"),
    };
    tracing::info!(module = %name, pid, "module exited ({info})");
    close.raise();
    let _ = exit.send(Some(info));
}

fn signal_group(pid: u32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill has no memory effects; the group id is the module's pid
        // (process_group(0)), which we have not reaped yet or just reaped.
        unsafe { libc::kill(-(pid as libc::pid_t), signal) };
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("?");
        format!("killed by signal {sig} ({name})")
    } else {
        status.to_string()
    }
}
