//! One running module: its connection (gRPC, or the lean transport when
//! its manifest asks for it), counters and call slots, and how a spawned
//! module is started (spawned, connected, handed to its supervisor).
//!
//! The supervisor (`process::supervisor`) owns the process and its
//! connection. A module that breaks the protocol on stdout (a stray print)
//! or stops answering pings is marked failed, its callers get
//! `Unavailable` with the reason, and its process group is killed; the
//! host's next call starts it fresh. An external module's instance is
//! built in `external`.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use norgopolis_catalog::{locate::Located, manifest::Transport};
use norgopolis_proto::{module_communication as mc, v1::ModuleStatus};
use tokio::{
    process::{Child, ChildStdin, ChildStdout},
    sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tonic::Status;

use super::{
    failures::FailureLog,
    idle::Activity,
    process::spawner::{SpawnRequest, Spawner},
    process::stderr,
    process::supervisor::{describe, signal_group, supervise, ExitInfo, Supervised},
    transport::conn_end::{ConnEnd, ConnTask, Ping},
    transport::http2 as conn,
    transport::lean_pipe as lean,
    transport::module_conn::{ModuleConn, ModuleStream},
    transport::stdio::{CloseSignal, ModuleIo},
};

/// The `kind` `Status` shows for an external module.
pub const EXTERNAL_KIND: &str = "external";

/// How module processes are run; shared by every instance of a host.
#[derive(Clone)]
pub struct InstanceOptions {
    /// Largest message to or from a module, in bytes.
    pub max_message_size: usize,
    /// Time a module gets after stdin closes, and again after SIGTERM.
    pub grace: Duration,
    /// Idle unload for modules whose manifest does not say (`None`: never).
    pub idle_unload: Option<Duration>,
    /// Ping interval and timeout on the module connection.
    pub ping: Ping,
    /// Calls one module runs at once; more wait in line.
    pub max_concurrent_calls: u32,
    /// Stderr lines a second a module may log (0: unlimited).
    pub stderr_lines_per_second: u32,
    /// Where failures are remembered for `Status`.
    pub failures: Arc<FailureLog>,
    /// Each module's configuration, looked up at its start.
    pub module_configs: Arc<crate::config::module_config::ModuleConfigs>,
}

impl Default for InstanceOptions {
    fn default() -> Self {
        use crate::config::limits::defaults;
        InstanceOptions {
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            grace: defaults::MODULE_GRACE,
            idle_unload: None,
            ping: Ping {
                interval: defaults::MODULE_PING_INTERVAL,
                timeout: defaults::MODULE_PING_TIMEOUT,
            },
            max_concurrent_calls: defaults::MAX_CALLS_PER_MODULE,
            stderr_lines_per_second: defaults::STDERR_LINES_PER_SECOND,
            failures: Arc::default(),
            module_configs: Arc::default(),
        }
    }
}

/// A running (or just ended) module process.
pub struct Instance {
    /// Module name.
    pub name: String,
    /// Where it was loaded from.
    pub located: Located,
    /// Process id.
    pub pid: u32,
    /// Its calls, for idle unload (see `idle.rs`).
    pub activity: Arc<Activity>,
    started: Instant,
    client: ModuleConn,
    calls_served: AtomicU64,
    in_flight: AtomicU32,
    queued: AtomicU32,
    slots: Arc<Semaphore>,
    /// Paused calls that gave their slot back, at most as many as slots:
    /// every open call buffers results at the router, and the module
    /// connection bounds how many such buffers it tolerates.
    paused: Arc<Semaphore>,
    max_concurrent_calls: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
    failure: watch::Receiver<Option<String>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// Tells whether the module closed its stdout.
    close: CloseSignal,
    /// Set for an external module: what it said of itself.
    pub provided: Option<Provided>,
}

/// What an external module said of itself when it registered.
#[derive(Debug, Clone, Default)]
pub struct Provided {
    /// The functions it serves, if it said (empty otherwise).
    pub functions: Vec<String>,
}

/// The channels between an instance and its supervisor, and its slots.
pub(super) struct Parts {
    /// Call slots, closed by the supervisor when the module is gone.
    pub(super) slots: Arc<Semaphore>,
    exit: watch::Receiver<Option<ExitInfo>>,
    failure: watch::Receiver<Option<String>>,
    stop: oneshot::Sender<()>,
    max_concurrent_calls: u32,
}

/// The supervisor's ends of [`Parts`].
pub(super) struct SupervisorEnds {
    /// Fires when the server asks the module to stop.
    pub(super) stop: oneshot::Receiver<()>,
    /// Where the supervisor reports how the module ended.
    pub(super) exit: watch::Sender<Option<ExitInfo>>,
    /// Where the supervisor reports why the module failed.
    pub(super) failure: watch::Sender<Option<String>>,
}

impl Parts {
    /// The parts of a new instance and its supervisor's ends.
    pub(super) fn new(options: &InstanceOptions) -> (Parts, SupervisorEnds) {
        let (exit_tx, exit) = watch::channel(None);
        let (failure_tx, failure) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let parts = Parts {
            slots: Arc::new(Semaphore::new(options.max_concurrent_calls as usize)),
            exit,
            failure,
            stop: stop_tx,
            max_concurrent_calls: options.max_concurrent_calls,
        };
        let ends = SupervisorEnds {
            stop: stop_rx,
            exit: exit_tx,
            failure: failure_tx,
        };
        (parts, ends)
    }

    /// The instance, once its connection is up.
    pub(super) fn assemble(
        self,
        name: String,
        located: Located,
        pid: u32,
        client: ModuleConn,
        close: CloseSignal,
        provided: Option<Provided>,
    ) -> Arc<Instance> {
        Arc::new(Instance {
            name,
            located,
            pid,
            activity: Arc::default(),
            started: Instant::now(),
            client,
            calls_served: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            slots: self.slots,
            paused: Arc::new(Semaphore::new(self.max_concurrent_calls as usize)),
            max_concurrent_calls: self.max_concurrent_calls,
            exit: self.exit,
            failure: self.failure,
            stop: Mutex::new(Some(self.stop)),
            close,
            provided,
        })
    }
}

/// A call holding one of the module's slots; dropping it ends the call.
pub struct InFlight {
    inst: Arc<Instance>,
    slot: Option<OwnedSemaphorePermit>,
    /// Held instead of `slot` while the call is paused.
    paused: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// Gives the call's slot to callers waiting in line while the call is
    /// paused (its caller stopped reading, so the module is held back by
    /// flow control and runs no further for it). When as many paused calls
    /// as the module has slots already gave theirs back, this one keeps it;
    /// the answer says whether the slot was given back.
    pub fn release_slot(&mut self) -> bool {
        if self.slot.is_none() {
            return true;
        }
        if let Ok(paused) = self.inst.paused.clone().try_acquire_owned() {
            self.paused = Some(paused);
            self.slot = None;
            return true;
        }
        false
    }

    /// Takes a slot again before a paused call goes on, waiting in line
    /// like a new call (bounded by `deadline`).
    pub async fn retake_slot(&mut self, deadline: Option<Instant>) -> Result<(), Status> {
        if self.paused.is_some() {
            self.slot = Some(self.inst.wait_for_slot(deadline).await?);
            self.paused = None;
        }
        Ok(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inst.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.inst.calls_served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a caller waiting in line while it exists.
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    /// Spawns the module and connects to it over its stdio.
    pub async fn start(
        located: Located,
        spawner: &Spawner,
        socket: &std::path::Path,
        options: &InstanceOptions,
    ) -> Result<Arc<Self>, Status> {
        let name = located.name.clone();
        let transport = located
            .manifest
            .as_ref()
            .map(|m| m.transport)
            .unwrap_or_default();
        let (child, stdin, stdout) = spawn(&located, transport, spawner, socket, options).await?;
        let pid = child.id().unwrap_or(0);
        let close = CloseSignal::default();
        let (client, conn_task) =
            match connect(&name, transport, stdin, stdout, &close, options).await {
                Ok(c) => c,
                Err((problem, exiting)) => {
                    let reason = abandon(child, pid, problem, exiting, options.grace).await;
                    options.failures.record(&name, pid, &reason);
                    return Err(Status::unavailable(format!("module '{name}' {reason}")));
                }
            };

        let (parts, ends) = Parts::new(options);
        tokio::spawn(supervise(Supervised {
            name: name.clone(),
            pid,
            child,
            conn: conn_task,
            stop: ends.stop,
            close: close.clone(),
            exit: ends.exit,
            failure: ends.failure,
            slots: parts.slots.clone(),
            grace: options.grace,
            ping_timeout: options.ping.timeout,
            failures: options.failures.clone(),
        }));
        tracing::info!(module = %name, pid, path = %located.exec.display(), "module started");
        Ok(parts.assemble(name, located, pid, client, close, None))
    }

    /// Whether this is an external module (registered over the socket, not
    /// spawned by us): idle unloading and restarts leave it alone.
    pub fn is_external(&self) -> bool {
        self.provided.is_some()
    }

    /// Whether the process is running, healthy and not being stopped.
    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
            && self.failure.borrow().is_none()
            && self.stop.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Whether the server asked this process to stop (unload, shutdown), as
    /// opposed to the module ending by itself.
    pub fn stop_requested(&self) -> bool {
        self.stop.lock().map(|s| s.is_none()).unwrap_or(true)
    }

    /// Waits until the process has exited; returns how it ended.
    pub async fn wait_exit(&self) -> ExitInfo {
        let mut exit = self.exit.clone();
        let ended = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        // The supervisor always reports before dropping the sender.
        ended.unwrap_or_else(|| "exit status unknown".into())
    }

    /// Starts a call once one of the module's slots is free (callers wait
    /// in line, first come first served); the stream yields the module's
    /// items as they come. With a deadline, the wait and the start are
    /// bounded by it, and the module is told the time left.
    ///
    /// A `nested` call (made by a module while it serves a call) never
    /// waits in line: its caller may hold the very slots it would wait for
    /// (a chain cycling back into a busy module), so it takes a free slot
    /// if there is one and otherwise runs beyond the limit. Nested calls
    /// are bounded by the outer calls they serve, which are limited.
    pub async fn invoke_until(
        self: &Arc<Self>,
        function: String,
        args: Vec<u8>,
        deadline: Option<Instant>,
        nested: bool,
    ) -> Result<(ModuleStream, InFlight), Status> {
        let slot = if nested {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(tokio::sync::TryAcquireError::NoPermits) => None,
                Err(tokio::sync::TryAcquireError::Closed) => return Err(self.gone()),
            }
        } else {
            Some(self.wait_for_slot(deadline).await?)
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            inst: self.clone(),
            slot,
            paused: None,
        };
        let mut client = match &self.client {
            ModuleConn::Grpc(client) => client.clone(),
            ModuleConn::Lean(client) => {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    return Err(Status::deadline_exceeded(format!(
                        "deadline exceeded before module '{}' answered",
                        self.name
                    )));
                }
                return match client.invoke(function, args, left) {
                    Ok(stream) => Ok((ModuleStream::Lean(stream), guard)),
                    Err(closed) => Err(self.explain(Status::unavailable(closed.to_string())).await),
                };
            }
        };
        let mut request = tonic::Request::new(mc::Invocation {
            function_name: function,
            args: Some(mc::MessagePack { data: args }),
        });
        if let Some(d) = deadline {
            request.set_timeout(d.saturating_duration_since(Instant::now()));
        }
        let call = client.invoke(request);
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, call).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "deadline exceeded before module '{}' answered",
                        self.name
                    )))
                }
            },
            None => call.await,
        };
        match result {
            Ok(response) => Ok((ModuleStream::Grpc(Box::new(response.into_inner())), guard)),
            Err(status) => Err(self.explain(status).await),
        }
    }

    async fn wait_for_slot(
        &self,
        deadline: Option<Instant>,
    ) -> Result<OwnedSemaphorePermit, Status> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        let acquire = self.slots.clone().acquire_owned();
        let acquired = match deadline {
            Some(d) => tokio::time::timeout_at(d, acquire).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "deadline exceeded while waiting in line for module '{}' \
                     (all {} of its call slots busy; max_calls_per_module)",
                    self.name, self.max_concurrent_calls
                ))
            })?,
            None => acquire.await,
        };
        // The semaphore closes when the process ends or fails.
        acquired.map_err(|_| self.gone())
    }

    /// The error for callers of a module that is no longer usable.
    fn gone(&self) -> Status {
        if let Some(reason) = self.failure.borrow().clone() {
            return Status::unavailable(format!("module '{}' failed: {reason}", self.name));
        }
        match self.exit.borrow().clone() {
            Some(info) => Status::unavailable(format!("module '{}' exited ({info})", self.name)),
            None => Status::unavailable(format!("module '{}' is stopping", self.name)),
        }
    }

    /// Turns a transport failure into a clear error when the module died or
    /// was marked failed.
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
        let mut failure = self.failure.clone();
        // The connection breaks a moment before the supervisor has judged
        // the failure or reaped the exit.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            tokio::select! {
                _ = exit.wait_for(Option::is_some) => {}
                _ = failure.wait_for(Option::is_some) => {}
            }
        })
        .await;
        if self.failure.borrow().is_some() || self.exit.borrow().is_some() {
            return self.gone();
        }
        if self.close.stdout_closed() {
            // Still running, but nothing it answers can reach us.
            return Status::unavailable(format!("module '{}' closed its stdout", self.name));
        }
        if std::error::Error::source(&status).is_some() {
            return Status::unavailable(format!(
                "module '{}' connection failed: {}",
                self.name,
                status.message()
            ));
        }
        status
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
        let failure = self.failure.borrow().clone();
        let state = match (&failure, &exit, self.is_alive()) {
            (Some(_), _, _) => "failed",
            (None, Some(_), _) => "exited",
            (None, None, true) => "running",
            (None, None, false) => "stopping",
        };
        ModuleStatus {
            name: self.name.clone(),
            pid: self.pid,
            state: state.into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            calls_served: self.calls_served.load(Ordering::Relaxed),
            calls_in_flight: self.in_flight.load(Ordering::Relaxed),
            calls_queued: self.queued.load(Ordering::Relaxed),
            restarts: 0,
            last_exit: exit.unwrap_or_default(),
            path: self.located.origin.display().to_string(),
            failure: failure.unwrap_or_default(),
            kind: if self.is_external() {
                EXTERNAL_KIND.into()
            } else {
                String::new()
            },
        }
    }
}

/// Spawns the module's process with its configuration and sends its
/// stderr to the log; returns the process and its stdin and stdout.
async fn spawn(
    located: &Located,
    transport: Transport,
    spawner: &Spawner,
    socket: &std::path::Path,
    options: &InstanceOptions,
) -> Result<(Child, ChildStdin, ChildStdout), Status> {
    let name = &located.name;
    let config = options
        .module_configs
        .json_for(name)
        .map_err(|e| Status::failed_precondition(format!("cannot start module '{name}': {e}")))?;
    let mut child = spawner
        .spawn(SpawnRequest {
            name: name.clone(),
            exec: located.exec.clone(),
            args: located.args.clone(),
            cwd: located.exec.parent().map(|p| p.to_path_buf()),
            socket: socket.to_path_buf(),
            transport,
            config,
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
        signal_group(pid, libc::SIGKILL);
        return Err(Status::internal(format!(
            "module '{name}': stdio pipes missing"
        )));
    };
    tokio::spawn(stderr::drain(
        name.clone(),
        stderr,
        options.stderr_lines_per_second,
    ));
    Ok((child, stdin, stdout))
}

/// Opens the module's declared transport on its pipes. On failure: the
/// problem, and whether the module is probably exiting (then how it
/// exited says more).
async fn connect(
    name: &str,
    transport: Transport,
    stdin: ChildStdin,
    stdout: ChildStdout,
    close: &CloseSignal,
    options: &InstanceOptions,
) -> Result<(ModuleConn, ConnTask), (String, bool)> {
    match transport {
        Transport::Grpc => {
            let io = ModuleIo::new(stdin, stdout, close.clone());
            match conn::connect(io, close.clone(), options.ping, options.max_message_size).await {
                Ok((client, mut task)) => {
                    await_greeting(
                        close,
                        &mut task,
                        // As patient as with a running module's pings.
                        options.ping.interval + options.ping.timeout,
                    )
                    .await
                    .map(|()| (ModuleConn::Grpc(client), task))
                }
                Err(e) => Err((format!("cannot be talked to over its stdio ({e})"), true)),
            }
        }
        Transport::Lean => lean::connect(
            name,
            stdin,
            stdout,
            close.clone(),
            options.ping,
            options.max_message_size,
        )
        .await
        .map(|(client, task)| (ModuleConn::Lean(client), task))
        .map_err(|e| {
            let exiting = matches!(e, lean::HelloError::Ended | lean::HelloError::Io(_));
            (format!("declares transport = \"lean\" but {e}"), exiting)
        }),
    }
}

/// Kills a module that could not be connected to and returns why it
/// failed. Usually the module died at once; say how. Either way nothing
/// can reach it, so it must not stay behind. A module that wrote the
/// wrong thing is still running: the problem is the reason, not how it
/// ends once killed.
async fn abandon(
    mut child: Child,
    pid: u32,
    problem: String,
    exiting: bool,
    grace: Duration,
) -> String {
    let reason = if exiting {
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => format!("exited at start ({})", describe(status)),
            _ => problem,
        }
    } else {
        problem
    };
    signal_group(pid, libc::SIGKILL);
    tokio::spawn(async move {
        let _ = child.wait().await;
        super::process::guardian::forget(pid);
    });
    reason
}

/// Waits until the module greets on its stdout the way an HTTP/2 server
/// does, driving the connection meanwhile, so that a program that does not
/// speak the protocol fails its load with the reason instead of being
/// reported loaded. On failure: the problem, and whether the module is
/// probably exiting (then how it exited says more).
async fn await_greeting(
    close: &CloseSignal,
    conn: &mut ConnTask,
    patience: Duration,
) -> Result<(), (String, bool)> {
    tokio::select! {
        // The connection may read the greeting and the end of stdout in one
        // poll: a module that greeted and then died has started (and
        // crashed), so its end is handed on to the running-module path.
        end = &mut *conn => {
            if close.has_greeted() {
                *conn = Box::pin(std::future::ready(end));
                return Ok(());
            }
            Err(match end {
            ConnEnd::Closed(_) | ConnEnd::Asked => (
                "closed its stdout before answering the HTTP/2 handshake".to_string(),
                true,
            ),
            ConnEnd::Broken(why) | ConnEnd::Garbled(why) | ConnEnd::Flooded(why) => (
                format!("wrote something that is not HTTP/2 to stdout ({why})"),
                false,
            ),
            ConnEnd::Unanswered => (
                format!("did not answer the HTTP/2 handshake within {} ms", patience.as_millis()),
                false,
            ),
        })
        },
        greeted = tokio::time::timeout(patience, close.greeted()) => match greeted {
            Ok(true) => Ok(()),
            Ok(false) => Err((
                "wrote something that is not HTTP/2 to stdout first; it does not speak \
                 the module protocol (gRPC over its stdio), or a stray print broke it"
                    .to_string(),
                false,
            )),
            Err(_) => Err((
                format!(
                    "did not answer the HTTP/2 handshake within {} ms; does it speak \
                     the module protocol (gRPC over its stdio)?",
                    patience.as_millis()
                ),
                false,
            )),
        },
    }
}
