//! One front end's session: handshake, keepalive, events, goodbye.

use std::{sync::Arc, time::Duration};

use norgopolis_proto::{
    v1::{
        client_message, server_message::Kind, ClientMessage, Goodbye, Hello, Pong, ServerMessage,
        Welcome,
    },
    PROTOCOL_VERSION,
};
use tonic::{Status, Streaming};

use tokio::sync::watch;

use crate::{
    sessions::events::{session_queue, EventHub, Queued, SessionSender, SessionStream},
    sessions::lifetime::{ExitReason, Lifetime, Refused, SessionGuard, RETIRE_DRAIN},
};

/// How long a client has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings the session handler needs.
pub struct AttachConfig {
    /// Interval clients are told to ping at.
    pub keepalive_interval: Duration,
    /// Silence after which a session is dropped.
    pub client_timeout: Duration,
}

/// Runs the handshake and returns the outgoing stream; the session lives in
/// a task until the client's stream ends, it falls silent, or we exit.
pub async fn attach(
    mut inbound: Streaming<ClientMessage>,
    lifetime: &Lifetime,
    hub: &Arc<EventHub>,
    config: &AttachConfig,
) -> Result<SessionStream, Status> {
    let hello = read_hello(&mut inbound).await?;
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version mismatch: client speaks norgopolis.v{}, server {} speaks norgopolis.v{}",
            hello.protocol_version,
            norgopolis_common::version(),
            PROTOCOL_VERSION
        )));
    }
    let guard = lifetime
        .open_session(hello.keeps_server_alive)
        .await
        .map_err(|e| match e {
            Refused::ShuttingDown | Refused::Retiring(_) => Status::unavailable(e.to_string()),
            Refused::TooManySessions(_) => Status::resource_exhausted(e.to_string()),
        })?;
    let id = guard.id();
    tracing::info!(
        session = id,
        kind = %hello.client_kind,
        name = %hello.client_name,
        pid = hello.pid,
        keeps_alive = hello.keeps_server_alive,
        "session attached"
    );
    let (tx, rx) = session_queue();
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        session_id: id,
        server_pid: std::process::id(),
        server_version: norgopolis_common::version().into(),
        keepalive_interval_ms: config.keepalive_interval.as_millis() as u64,
    };
    tx.send(Queued::own(message(Kind::Welcome(welcome))))
        .await
        .map_err(|_| Status::cancelled("client left during the handshake"))?;
    hub.join(id, tx.clone());

    tokio::spawn(run_session(Session {
        inbound,
        tx,
        hub: hub.clone(),
        exit: lifetime.exit_watch(),
        retiring: lifetime.retire_watch(),
        timeout: config.client_timeout,
        guard,
    }));
    Ok(rx)
}

/// A session once welcomed, as its task owns it.
struct Session {
    inbound: Streaming<ClientMessage>,
    tx: SessionSender,
    hub: Arc<EventHub>,
    exit: watch::Receiver<Option<ExitReason>>,
    retiring: watch::Receiver<Option<String>>,
    /// Silence after which the session is dropped.
    timeout: Duration,
    /// Counts the session with the lifetime task while it lives; last, so
    /// that it is let go of after everything else.
    guard: SessionGuard,
}

/// Serves a session until the client's stream ends, it falls silent, the
/// server retires (then until the client ends its half) or exits.
async fn run_session(mut s: Session) {
    let id = s.guard.id();
    let mut retired = false;
    let why = loop {
        tokio::select! {
            next = tokio::time::timeout(s.timeout, s.inbound.message()) => match next {
                Ok(Ok(Some(ClientMessage { kind: Some(client_message::Kind::Ping(p)) }))) => {
                    let _ = s.tx.try_send(Queued::own(message(Kind::Pong(Pong { nonce: p.nonce }))));
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => break "client detached".to_string(),
                // A client that exits or dies without detaching (Neovim
                // quitting, a killed script) shows up as a broken stream.
                Ok(Err(e)) => break connection_lost(&e),
                Err(_) => {
                    let reason = format!("no keepalive for {} s", s.timeout.as_secs());
                    let _ = s.tx.try_send(Queued::own(message(Kind::Goodbye(Goodbye { reason: reason.clone() }))));
                    break reason;
                }
            },
            successor = s.retiring.wait_for(Option::is_some) => {
                // Told at once (after the `server.retiring` event), so
                // that the client's next call goes to the successor; its
                // calls in flight here go on.
                let successor = successor.ok().and_then(|s| s.clone()).unwrap_or_default();
                let reason = norgopolis_common::version::retiring_message(&successor);
                let _ = s.tx.try_send(Queued::own(message(Kind::Goodbye(Goodbye { reason: reason.clone() }))));
                retired = true;
                break reason;
            }
            reason = s.exit.wait_for(Option::is_some) => {
                let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                // The reserved `server.shutdown` event, then the Goodbye.
                let _ = s.tx.try_send(Queued::own(s.hub.shutdown_event(&reason)));
                let _ = s.tx.try_send(Queued::own(message(Kind::Goodbye(Goodbye {
                    reason: format!("server shutting down: {reason}"),
                }))));
                break reason;
            }
        }
    };
    s.hub.leave(id);
    if retired {
        // The session (and so the retirement) lasts until the client
        // ends its half: it has then seen the goodbye, and its calls no
        // longer come here, so none can be cut off by our exit. Bounded
        // like the calls in flight.
        let _ = tokio::time::timeout(RETIRE_DRAIN, async {
            while let Ok(Some(_)) = s.inbound.message().await {}
        })
        .await;
    }
    tracing::info!(session = id, "session ended: {why}");
}

async fn read_hello(inbound: &mut Streaming<ClientMessage>) -> Result<Hello, Status> {
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(ClientMessage {
            kind: Some(client_message::Kind::Hello(h)),
        }))) => Ok(h),
        Ok(Ok(Some(_))) => Err(Status::invalid_argument(
            "the first Attach message must be a Hello",
        )),
        Ok(Ok(None)) => Err(Status::cancelled("client left before saying Hello")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no Hello within {} s of Attach",
            HELLO_TIMEOUT.as_secs()
        ))),
    }
}

fn message(kind: Kind) -> ServerMessage {
    ServerMessage { kind: Some(kind) }
}

/// Why a session's stream broke, for the log: a closed connection is the
/// usual way a front end leaves, anything else is shown as it came.
fn connection_lost(e: &Status) -> String {
    let source = std::error::Error::source(e).map(ToString::to_string);
    let text = source.as_deref().unwrap_or(e.message());
    if text.contains("error reading a body from connection") || text.contains("connection closed") {
        "client closed its connection without detaching (it exited)".into()
    } else {
        format!("client connection lost ({})", e.message())
    }
}
