//! Find or spawn: attach to a running server, or start one
//! under the spawn lock so that any number of concurrent clients end up on
//! exactly one server.
//!
//! The upgrade handover: a client that may spawn and finds a server of an
//! older norgopolis (its Welcome's version, [`norgopolis_common::version`])
//! takes the spawn lock, asks that server to retire (`Control/Retire`),
//! waits for its lock to come free (the server lets its calls in flight
//! finish, at most 5 s, and stops its modules first), and starts its own
//! server before letting go of the spawn lock. Clients of the old server
//! are refused as "retiring" meanwhile; they wait on the spawn lock and so
//! find the newer server rather than starting an old one. A client retires
//! at most one server per connect and only when the binary it would start
//! says it is newer, so two installs can never push each other out in a
//! loop. An older client that finds a newer server attaches to it as long
//! as the protocol version matches (otherwise `ProtocolMismatch`, naming
//! both versions and what to do).

use std::{io, path::PathBuf, time::Duration};

use norgopolis_common::{places::SOCKET_ENV, version, Places};
use norgopolis_proto::v1::{control_client::ControlClient, RetireRequest};
use tokio::time::Instant;

use crate::{
    exit::{lock_is_held, wait_for_server_exit},
    find_server_binary, http2,
    session::{self, AttachFailure, Session},
    spawn::{binary_version, lock_spawn, spawn_server, SpawnLock, SpawnRequest},
    trust::ConnectFailure,
    ClientError, ConnectOptions,
};

/// Longest a newer client waits for a retiring server to be gone: its
/// calls' 5 s, its connections' 3 s and its modules' stop, with room.
const RETIRE_WAIT: Duration = Duration::from_secs(30);

/// Rounds of "attach, else lock, attach, spawn, attach". More than one is
/// only needed when the server we reach (or start) is already on its way out.
const ROUNDS: usize = 3;

/// Attaches to the server for `opts`, starting one if needed.
pub(crate) async fn find_or_spawn(
    opts: &ConnectOptions,
) -> Result<(PathBuf, Session), ClientError> {
    let places = match &opts.socket {
        Some(s) => Places::for_socket(s.clone()),
        None => Places::from_env()?,
    };
    let socket = places.socket.clone();
    // The server falls back to the same default; only a socket chosen by
    // option or variable has to be handed on.
    let explicit_socket =
        opts.socket.is_some() || std::env::var_os(SOCKET_ENV).is_some_and(|v| !v.is_empty());

    let mut last = io::Error::other("no attempt made");
    let mut retired_one = false;
    for _round in 0..ROUNDS {
        let mut vacated = None;
        match try_attach(&places, opts).await {
            Ok(s) if !retired_one && worth_retiring(&s, opts).await => {
                retired_one = true;
                match take_over(&places, opts, s).await? {
                    Handover::Attached(s) => return Ok((socket, s)),
                    Handover::Vacated(lock) => vacated = Some(lock),
                }
            }
            Ok(s) => return Ok((socket, s)),
            Err(AttachFailure::Fatal(e)) => return Err(e),
            Err(AttachFailure::Retry(e)) => last = e,
        }
        if !opts.spawn {
            return Err(ClientError::Connect {
                socket,
                source: last,
            });
        }
        let lock = match vacated {
            Some(lock) => lock,
            None => {
                tracing::debug!(reason = %last, "no usable server; taking the spawn lock");
                places.ensure_dir()?;
                let lock =
                    lock_spawn(&places.spawn_lock, Instant::now() + opts.spawn_timeout * 2).await?;
                // Whoever held the lock before us may just have started a server.
                match try_attach(&places, opts).await {
                    Ok(s) => return Ok((socket, s)),
                    Err(AttachFailure::Fatal(e)) => return Err(e),
                    Err(AttachFailure::Retry(_)) => {}
                }
                lock
            }
        };
        let binary = find_server_binary(opts.server_binary.as_deref())?;
        let spawned = spawn_server(SpawnRequest {
            binary: &binary,
            socket: explicit_socket.then_some(socket.as_path()),
            extra_args: &opts.server_args,
            deadline: Instant::now() + opts.spawn_timeout,
        })
        .await;
        match spawned {
            Ok(pid) => tracing::debug!(pid, "norgopolis server started"),
            Err(spawn_err) => {
                // A server may be up regardless (e.g. one that another user
                // of the socket started without the lock); prefer it to an error.
                return match try_attach(&places, opts).await {
                    Ok(s) => Ok((socket, s)),
                    Err(_) => Err(unreachable_server(&places).unwrap_or(spawn_err)),
                };
            }
        }
        match try_attach(&places, opts).await {
            Ok(s) => return Ok((socket, s)),
            Err(AttachFailure::Fatal(e)) => return Err(e),
            Err(AttachFailure::Retry(e)) => last = e,
        }
        // The lock is released here, after the attach, so that the next
        // client finds the server this round started.
        drop(lock);
        tracing::debug!(reason = %last, "the server we started is not usable; trying again");
    }
    Err(ClientError::Spawn {
        message: format!(
            "started a server at {} but could not attach to it: {last}",
            socket.display()
        ),
        log_path: norgopolis_common::places::log_path().ok(),
    })
}

/// Whether the server `session` is attached to should make way for ours:
/// we may start servers, it is older than we are, and the binary we would
/// start is newer than it (asked only in that rare case).
async fn worth_retiring(session: &Session, opts: &ConnectOptions) -> bool {
    let theirs = &session.welcome.server_version;
    if !opts.spawn || !version::is_older(theirs, version()) {
        return false;
    }
    let Ok(binary) = find_server_binary(opts.server_binary.as_deref()) else {
        return false;
    };
    match binary_version(&binary).await {
        Some(v) if version::is_older(theirs, &v) => true,
        found => {
            tracing::warn!(
                running = %theirs,
                binary = %binary.display(),
                binary_version = ?found,
                "an older norgopolis server runs, but the server binary is not newer; keeping it"
            );
            false
        }
    }
}

/// How a handover ended.
enum Handover {
    /// Another client was faster (or the server cannot retire): use this.
    Attached(Session),
    /// The old server is gone; start ours while holding this lock.
    Vacated(SpawnLock),
}

/// Asks the older server `old` to retire and waits until it is gone,
/// holding the spawn lock so that its clients wait for our server.
async fn take_over(
    places: &Places,
    opts: &ConnectOptions,
    old: Session,
) -> Result<Handover, ClientError> {
    places.ensure_dir()?;
    let lock = lock_spawn(&places.spawn_lock, Instant::now() + opts.spawn_timeout * 2).await?;
    // Another newer client may have done it while we waited for the lock.
    drop(old);
    let old = match try_attach(places, opts).await {
        Ok(s) if version::is_older(&s.welcome.server_version, version()) => s,
        Ok(s) => return Ok(Handover::Attached(s)),
        Err(AttachFailure::Fatal(e)) => return Err(e),
        Err(AttachFailure::Retry(_)) => return Ok(Handover::Vacated(lock)),
    };
    let (pid, theirs) = (old.welcome.server_pid, old.welcome.server_version.clone());
    tracing::info!(
        server_pid = pid,
        server_version = %theirs,
        ours = version(),
        "asking an older norgopolis server to retire"
    );
    let request = RetireRequest {
        successor_version: version().to_string(),
        pid: std::process::id(),
    };
    match ControlClient::new(old.channel.clone())
        .retire(request)
        .await
    {
        Ok(_) => {}
        // A server from before the handover, or one that disagrees about
        // the order of versions: keep using it.
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unimplemented | tonic::Code::FailedPrecondition
            ) =>
        {
            tracing::warn!(
                server_pid = pid,
                "the older server does not retire: {}",
                s.message()
            );
            return Ok(Handover::Attached(old));
        }
        Err(s) => return Err(s.into()),
    }
    drop(old);
    if !wait_for_server_exit(&places.socket, RETIRE_WAIT).await? {
        return Err(ClientError::Spawn {
            message: format!(
                "the norgopolis {theirs} server (pid {pid}) was asked to make way for \
                 norgopolis {} but still runs after {} s (`kill {pid}` ends it)",
                version(),
                RETIRE_WAIT.as_secs()
            ),
            log_path: norgopolis_common::places::log_path().ok(),
        });
    }
    Ok(Handover::Vacated(lock))
}

/// A server that holds the lock but whose socket is gone (and did not come
/// back: it re-creates a deleted one within a second or so) keeps any new
/// server from starting; that, not the new server's silence, is the cause
/// to report.
fn unreachable_server(places: &Places) -> Option<ClientError> {
    if places.socket.exists() || !lock_is_held(places) {
        return None;
    }
    let pid = std::fs::read_to_string(&places.pid_file).unwrap_or_default();
    let pid = pid.trim();
    let pid = if pid.is_empty() { "?" } else { pid };
    Some(ClientError::Spawn {
        message: format!(
            "a norgopolis server (pid {pid}) holds {} but its socket {} is gone and was not \
             bound again; that server may be stopped or stuck (`kill {pid}` ends it, and the \
             next client starts a fresh one)",
            places.server_lock.display(),
            places.socket.display()
        ),
        log_path: norgopolis_common::places::log_path().ok(),
    })
}

async fn try_attach(places: &Places, opts: &ConnectOptions) -> Result<Session, AttachFailure> {
    let deadline = Instant::now() + opts.spawn_timeout;
    let channel = match http2::connect(&places.socket).await {
        Ok(c) => c,
        Err(ConnectFailure::NoServer(e)) => return Err(AttachFailure::Retry(e)),
        Err(ConnectFailure::Fatal(e)) => return Err(AttachFailure::Fatal(e)),
    };
    session::attach(channel, &places.socket, opts, deadline).await
}

#[cfg(test)]
mod tests {
    //! The real server cannot be made to speak another protocol version, so
    //! these use a stand-in that answers only the handshake.

    use std::{os::unix::fs::PermissionsExt, path::Path, pin::Pin, time::Duration};

    use futures::StreamExt;
    use norgopolis_proto::v1::{
        control_server::{Control, ControlServer},
        server_message, ClientMessage, ListModulesReply, ListModulesRequest, LoadReply,
        LoadRequest, PublishReply, PublishRequest, RetireReply, ServerMessage, ShutdownReply,
        ShutdownRequest, StatusReply, StatusRequest, UnloadReply, UnloadRequest, Welcome,
    };
    use tokio_stream::{wrappers::UnixListenerStream, Stream};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    #[derive(Clone, Copy)]
    enum Answer {
        /// Refuses like a newer server: FailedPrecondition naming both versions.
        Refuse,
        /// Welcomes us with another version number.
        WelcomeOtherVersion,
        /// Welcomes us properly, but speaks gRPC only (as tonic's server).
        Welcome,
    }

    struct StandIn(Answer);

    type Replies = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

    #[tonic::async_trait]
    impl Control for StandIn {
        type AttachStream = Replies;

        async fn attach(
            &self,
            request: Request<Streaming<ClientMessage>>,
        ) -> Result<Response<Replies>, Status> {
            let mut incoming = request.into_inner();
            let hello = incoming.message().await?;
            assert!(hello.is_some(), "the client sends Hello first");
            match self.0 {
                Answer::Refuse => Err(Status::failed_precondition(format!(
                    "client speaks protocol {PROTOCOL}, server speaks 99",
                    PROTOCOL = norgopolis_proto::PROTOCOL_VERSION
                ))),
                Answer::WelcomeOtherVersion | Answer::Welcome => {
                    let protocol_version = match self.0 {
                        Answer::Welcome => norgopolis_proto::PROTOCOL_VERSION,
                        _ => 99,
                    };
                    let welcome = ServerMessage {
                        kind: Some(server_message::Kind::Welcome(Welcome {
                            protocol_version,
                            session_id: 1,
                            server_pid: 1,
                            server_version: "future".into(),
                            keepalive_interval_ms: 1000,
                        })),
                    };
                    // Keep the stream open, as a real session would.
                    let replies =
                        futures::stream::iter([Ok(welcome)]).chain(futures::stream::pending());
                    Ok(Response::new(Box::pin(replies)))
                }
            }
        }
        async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn list_modules(
            &self,
            _: Request<ListModulesRequest>,
        ) -> Result<Response<ListModulesReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn load(&self, _: Request<LoadRequest>) -> Result<Response<LoadReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn unload(&self, _: Request<UnloadRequest>) -> Result<Response<UnloadReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn shutdown(
            &self,
            _: Request<ShutdownRequest>,
        ) -> Result<Response<ShutdownReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn publish(
            &self,
            _: Request<PublishRequest>,
        ) -> Result<Response<PublishReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
        async fn retire(&self, _: Request<RetireRequest>) -> Result<Response<RetireReply>, Status> {
            Err(Status::unimplemented("stand-in"))
        }
    }

    /// Runs the stand-in on `socket`; returns options whose "server binary"
    /// only leaves a mark if it is ever started.
    fn stand_in(dir: &Path, answer: Answer) -> (ConnectOptions, PathBuf) {
        // The client trusts only a socket in a directory private to us.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.join("s.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlServer::new(StandIn(answer)))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let mark = dir.join("spawned");
        let bin = dir.join("fake-server");
        std::fs::write(&bin, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = ConnectOptions::new("rust")
            .socket(&socket)
            .server_binary(&bin)
            .spawn_timeout(Duration::from_secs(20));
        (opts, mark)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusing_newer_server_is_a_protocol_mismatch_and_nothing_is_spawned() {
        let tmp = tempfile::tempdir().unwrap();
        let (opts, mark) = stand_in(tmp.path(), Answer::Refuse);
        let err = find_or_spawn(&opts).await.err().expect("must fail");
        match &err {
            ClientError::ProtocolMismatch { ours, theirs } => {
                assert_eq!(*ours, norgopolis_proto::PROTOCOL_VERSION);
                assert!(theirs.contains("99"), "{theirs}");
            }
            other => panic!("expected a protocol mismatch, got {other:?}"),
        }
        assert!(err.to_string().contains("99"), "{err}");
        assert!(!mark.exists(), "a server was spawned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_welcome_with_another_version_is_a_protocol_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let (opts, mark) = stand_in(tmp.path(), Answer::WelcomeOtherVersion);
        let err = find_or_spawn(&opts).await.err().expect("must fail");
        assert!(
            matches!(&err, ClientError::ProtocolMismatch { theirs, .. }
                if theirs == "protocol version 99 (norgopolis future)"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("version {}", norgopolis_proto::PROTOCOL_VERSION)),
            "{msg}"
        );
        // Both norgopolis versions, and what to do.
        assert!(msg.contains(norgopolis_common::version()), "{msg}");
        assert!(msg.contains("norgopolis future"), "{msg}");
        assert!(msg.contains("restart this Neovim"), "{msg}");
        assert!(!mark.exists(), "a server was spawned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_go_over_grpc_where_the_server_does_not_speak_lean() {
        let tmp = tempfile::tempdir().unwrap();
        let (opts, mark) = stand_in(tmp.path(), Answer::Welcome);
        // tonic's server drops a connection that opens with the lean hello.
        let client = crate::Client::connect(opts).await.expect("attach");
        assert!(client.is_attached());
        assert!(
            !client.is_lean(),
            "no lean connection to a gRPC-only server"
        );
        assert!(!mark.exists(), "a server was spawned");
    }
}
