//! External modules: a process that is already running (a service, a
//! script, a Neovim) registers itself as a module over the server's socket
//! and serves calls over that connection until it leaves.
//!
//! The connection opens as a lean client's (hello both ways), then sends
//! one `PROVIDE` frame naming the module. Once registered, the server
//! calls it exactly as it calls a spawned lean module over its pipes (the
//! same calling end, credit, pings and cancellation), so callers see no
//! difference. The server never spawns, signals or restarts it: stopping
//! it (unload, shutdown) closes its connection, and when the connection
//! ends its calls in flight fail as `Unavailable` and the name is free.

use std::{path::PathBuf, sync::Arc, time::Duration};

use norgopolis_catalog::locate::Located;
use norgopolis_proto::lean_frame::{FrameError, FrameReader, Outgoing};
use tokio::{
    io::AsyncRead,
    sync::{mpsc, oneshot, watch, Semaphore},
    task::JoinHandle,
};
use tonic::Status;

use super::{
    failures::FailureLog,
    host::ModuleHost,
    instance::{Instance, InstanceOptions, Parts, Provided},
    process::supervisor::ExitInfo,
    transport::conn_end::{ConnEnd, ConnTask},
    transport::lean_pipe::{self as lean, Ends},
    transport::module_conn::ModuleConn,
    transport::stdio::CloseSignal,
};

/// An external module's connection, as reasons name it.
const SOCKET: Ends = Ends {
    reads: "its connection",
    writes: "its connection",
};

/// A lean client connection that asked to serve as a module.
pub struct Offer<R> {
    /// The module name it asked for (not validated yet).
    pub name: String,
    /// The functions it said it serves (may be empty).
    pub functions: Vec<String>,
    /// Its process id, from the socket's credentials.
    pub pid: Option<u32>,
    /// Its frames, read past the `PROVIDE`.
    pub frames: FrameReader<R>,
    /// Queues frames for `writer`.
    pub out: mpsc::UnboundedSender<Outgoing>,
    /// Writes the connection.
    pub writer: JoinHandle<Result<(), FrameError>>,
}

/// Registers `offer` as a module; `answer` (the `PROVIDE`'s `END`) is
/// queued before any call can reach the module, so the provider learns it
/// is registered before its first call arrives. On refusal nothing is
/// queued: the caller answers with the error.
pub async fn register<R>(
    host: &ModuleHost,
    offer: Offer<R>,
    answer: Outgoing,
) -> Result<Arc<Instance>, Status>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Offer {
        name,
        functions,
        pid,
        frames,
        out,
        writer,
    } = offer;
    let pid = pid.unwrap_or(0);
    let connect = |options: &InstanceOptions| {
        let _ = out.send(answer);
        let close = CloseSignal::default();
        let (client, conn) = lean::drive(
            &name,
            frames,
            out.clone(),
            writer,
            close.clone(),
            options.ping,
            options.max_message_size,
            &SOCKET,
        );
        tracing::info!(module = %name, pid, "external module registered");
        instance(
            name.clone(),
            pid,
            functions,
            ModuleConn::Lean(client),
            conn,
            close,
            options,
        )
    };
    host.provide(&name, connect).await
}

/// The instance of an external module: a running process that registered
/// itself as `name` over the socket, served over `client`. It is never
/// spawned, signalled or restarted: stopping it closes its connection,
/// and it is gone when the connection ends.
fn instance(
    name: String,
    pid: u32,
    functions: Vec<String>,
    client: ModuleConn,
    conn: ConnTask,
    close: CloseSignal,
    options: &InstanceOptions,
) -> Arc<Instance> {
    let (parts, ends) = Parts::new(options);
    tokio::spawn(supervise(Watched {
        name: name.clone(),
        pid,
        conn,
        stop: ends.stop,
        close: close.clone(),
        exit: ends.exit,
        failure: ends.failure,
        slots: parts.slots.clone(),
        ping_timeout: options.ping.timeout,
        failures: options.failures.clone(),
    }));
    let located = located(&name, pid);
    parts.assemble(
        name,
        located,
        pid,
        client,
        close,
        Some(Provided { functions }),
    )
}

/// Where `Status` and `list` say an external module comes from.
fn located(name: &str, pid: u32) -> Located {
    Located {
        name: name.to_string(),
        exec: PathBuf::new(),
        args: Vec::new(),
        manifest: None,
        origin: PathBuf::from(format!("external (pid {pid})")),
    }
}

/// Everything an external module's supervisor owns.
struct Watched {
    pub name: String,
    pub pid: u32,
    pub conn: ConnTask,
    pub stop: oneshot::Receiver<()>,
    pub close: CloseSignal,
    pub exit: watch::Sender<Option<ExitInfo>>,
    pub failure: watch::Sender<Option<String>>,
    pub slots: Arc<Semaphore>,
    pub ping_timeout: Duration,
    pub failures: Arc<FailureLog>,
}

/// Drives the connection until it ends or the server stops the module;
/// then reports how it ended (the instance's "exit"). A provider that
/// breaks the protocol or stops answering pings is marked failed and its
/// connection closed; it is never signalled.
async fn supervise(mut w: Watched) {
    let end = tokio::select! {
        end = &mut w.conn => end,
        // Asked (or the instance is gone): closing our end is all we do.
        _ = &mut w.stop => {
            w.close.raise();
            (&mut w.conn).await;
            ConnEnd::Asked
        }
    };
    let pid = w.pid;
    let info = match end {
        ConnEnd::Asked => format!("the server closed the connection of its provider (pid {pid})"),
        ConnEnd::Closed(why) => format!("its provider (pid {pid}) left: {why}"),
        ConnEnd::Unanswered => fail(
            &w,
            format!(
                "its provider (pid {pid}) stopped answering (no reply to a ping within {} ms)",
                w.ping_timeout.as_millis()
            ),
        ),
        ConnEnd::Garbled(why) | ConnEnd::Broken(why) | ConnEnd::Flooded(why) => fail(
            &w,
            format!("its provider (pid {pid}) broke the lean protocol ({why})"),
        ),
    };
    tracing::info!(module = %w.name, pid, "external module gone: {info}");
    w.close.raise();
    w.slots.close();
    // The connection's tasks (and with them the socket) go now.
    drop(w.conn);
    let _ = w.exit.send(Some(info));
}

/// Marks the module failed: callers are refused with `reason`; the
/// connection is closed. Returns what its end is reported as.
fn fail(w: &Watched, reason: String) -> String {
    w.failures.record(&w.name, w.pid, &reason);
    let _ = w.failure.send(Some(reason));
    w.slots.close();
    w.close.raise();
    format!(
        "the server closed the connection of its provider (pid {})",
        w.pid
    )
}
