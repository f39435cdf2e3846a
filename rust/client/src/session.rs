//! The Attach stream: handshake, keepalive and the event feed.

use std::{
    io,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use norgopolis_proto::{
    v1::{
        client_message, control_client::ControlClient, server_message, ClientMessage, Event, Hello,
        Ping, ServerMessage, Welcome,
    },
    PROTOCOL_VERSION,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
    time::{timeout_at, Instant},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::{http2::Connection, ClientError, ConnectOptions};

/// What a session reports to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// An event published through the server.
    Event(Event),
    /// The server is ending the session (e.g. it is shutting down).
    Goodbye(String),
    /// The session is over; no more events will come.
    Closed,
}

/// How many events a slow subscriber may fall behind before it lags.
const EVENT_BUFFER: usize = 256;
/// Keepalive interval if the server names none.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a detach waits for the server to acknowledge the stream's end.
const DETACH_GRACE: Duration = Duration::from_secs(2);

/// Why an attach did not produce a session.
pub(crate) enum AttachFailure {
    /// The server is absent, exiting or refused us for now: worth another
    /// try, possibly with a new server.
    Retry(io::Error),
    /// Trying again would not help.
    Fatal(ClientError),
}

/// A running session: the task that keeps it alive and the means to end it.
pub(crate) struct Session {
    pub channel: Connection,
    pub welcome: Welcome,
    pub events: broadcast::Sender<SessionEvent>,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<()>,
    pub attached: Arc<AtomicBool>,
    /// Set when the server says goodbye because it retires for a newer
    /// norgopolis: the client then attaches again on its next call.
    pub retired: Arc<AtomicBool>,
}

/// Sends Hello and waits (until `deadline`) for Welcome; then starts the
/// keepalive task on the current runtime.
pub(crate) async fn attach(
    channel: Connection,
    socket: &Path,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Session, AttachFailure> {
    let (tx, rx) = mpsc::channel(8);
    let hello = ClientMessage {
        kind: Some(client_message::Kind::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_kind: opts.client_kind.clone(),
            client_name: opts.client_name.clone(),
            pid: std::process::id(),
            keeps_server_alive: opts.keeps_server_alive,
        })),
    };
    // The receiver is alive, and the buffer empty: this cannot fail.
    let _ = tx.try_send(hello);
    let mut control = ControlClient::new(channel.clone());
    let timed_out = || {
        AttachFailure::Fatal(ClientError::Call {
            code: Code::DeadlineExceeded,
            message: format!(
                "the norgopolis server at {} did not answer the handshake in time",
                socket.display()
            ),
        })
    };
    let response = timeout_at(deadline, control.attach(ReceiverStream::new(rx)))
        .await
        .map_err(|_| timed_out())?
        .map_err(|s| classify(s, socket))?;
    let mut stream = response.into_inner();
    let first = timeout_at(deadline, stream.message())
        .await
        .map_err(|_| timed_out())?
        .map_err(|s| classify(s, socket))?;
    let welcome = match first.and_then(|m| m.kind) {
        Some(server_message::Kind::Welcome(w)) => w,
        None => return Err(AttachFailure::Retry(eof())),
        Some(server_message::Kind::Goodbye(g)) => {
            return Err(AttachFailure::Retry(io::Error::other(format!(
                "the server said goodbye: {}",
                g.reason
            ))))
        }
        Some(other) => {
            return Err(AttachFailure::Fatal(ClientError::Call {
                code: Code::Internal,
                message: format!("expected Welcome as the server's first message, got {other:?}"),
            }))
        }
    };
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Err(AttachFailure::Fatal(ClientError::ProtocolMismatch {
            ours: PROTOCOL_VERSION,
            theirs: format!(
                "protocol version {} (norgopolis {})",
                welcome.protocol_version, welcome.server_version
            ),
        }));
    }
    tracing::debug!(
        session = welcome.session_id,
        server_pid = welcome.server_pid,
        "attached to norgopolis server"
    );
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let (stop, stop_rx) = oneshot::channel();
    let attached = Arc::new(AtomicBool::new(true));
    let retired = Arc::new(AtomicBool::new(false));
    let interval = match welcome.keepalive_interval_ms {
        0 => DEFAULT_KEEPALIVE,
        ms => Duration::from_millis(ms),
    };
    let task = tokio::spawn(run(
        tx,
        stream,
        events.clone(),
        stop_rx,
        interval,
        Flags {
            attached: attached.clone(),
            retired: retired.clone(),
        },
    ));
    Ok(Session {
        channel,
        welcome,
        events,
        stop,
        task,
        attached,
        retired,
    })
}

/// Sorts a handshake failure into "try again / start a server" or "give up".
fn classify(status: tonic::Status, socket: &Path) -> AttachFailure {
    match status.code() {
        Code::FailedPrecondition => AttachFailure::Fatal(ClientError::ProtocolMismatch {
            ours: PROTOCOL_VERSION,
            theirs: status.message().to_string(),
        }),
        // Unavailable: refusing ("shutting down") or gone; the others are
        // how a connection dropped mid-handshake surfaces.
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal => {
            AttachFailure::Retry(io::Error::other(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            )))
        }
        Code::Unimplemented => AttachFailure::Fatal(ClientError::Call {
            code: Code::Unimplemented,
            message: format!(
                "the server at {} does not speak the norgopolis.v1 protocol (an older norgopolis?): {}",
                socket.display(),
                status.message()
            ),
        }),
        _ => AttachFailure::Fatal(status.into()),
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the session before the handshake completed",
    )
}

/// What a session's task reports through shared flags.
struct Flags {
    attached: Arc<AtomicBool>,
    retired: Arc<AtomicBool>,
}

/// Keeps the session alive until it is stopped or the server ends it.
async fn run(
    tx: mpsc::Sender<ClientMessage>,
    mut stream: Streaming<ServerMessage>,
    events: broadcast::Sender<SessionEvent>,
    mut stop: oneshot::Receiver<()>,
    interval: Duration,
    flags: Flags,
) {
    // Twice per interval, so a late tick never misses the server's deadline.
    let period = (interval / 2).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    let mut stopped = false;
    loop {
        tokio::select! {
            _ = &mut stop => {
                stopped = true;
                break;
            }
            _ = ticker.tick() => {
                nonce += 1;
                let ping = ClientMessage {
                    kind: Some(client_message::Kind::Ping(Ping { nonce })),
                };
                // A full queue already holds a ping; skipping one is fine.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(ping) {
                    break;
                }
            }
            msg = stream.message() => match msg {
                Ok(Some(m)) => match m.kind {
                    Some(server_message::Kind::Event(e)) => {
                        let _ = events.send(SessionEvent::Event(e));
                    }
                    Some(server_message::Kind::Goodbye(g)) => {
                        tracing::debug!(reason = %g.reason, "server said goodbye");
                        if norgopolis_common::version::is_retiring(&g.reason) {
                            // Our calls go to the successor from now on; ending
                            // the stream tells the retiring server so.
                            flags.retired.store(true, Ordering::SeqCst);
                            let _ = events.send(SessionEvent::Goodbye(g.reason));
                            break;
                        }
                        let _ = events.send(SessionEvent::Goodbye(g.reason));
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "session stream ended");
                    break;
                }
            },
        }
    }
    flags.attached.store(false, Ordering::SeqCst);
    // Ending our half of the stream is what tells the server we left.
    drop(tx);
    if stopped {
        // Wait for the server to close its half, so that after `detach()`
        // the server has really let the session go.
        let _ = tokio::time::timeout(DETACH_GRACE, async {
            while let Ok(Some(_)) = stream.message().await {}
        })
        .await;
    }
    let _ = events.send(SessionEvent::Closed);
}
