//! Find or spawn (design §4): attach to a running server, or start one
//! under the spawn lock so that any number of concurrent clients end up on
//! exactly one server.

use std::{io, path::PathBuf};

use norgopolis_common::{places::SOCKET_ENV, Places};
use tokio::time::Instant;

use crate::{
    locate::find_server_binary,
    session::{self, AttachFailure, Session},
    spawn::{lock_spawn, spawn_server, SpawnRequest},
    transport::{self, ConnectFailure},
    ClientError, ConnectOptions,
};

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
    for _round in 0..ROUNDS {
        match try_attach(&places, opts).await {
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
        tracing::debug!(reason = %last, "no usable server; taking the spawn lock");
        places.ensure_dir()?;
        let lock = lock_spawn(&places.spawn_lock, Instant::now() + opts.spawn_timeout * 2).await?;
        // Whoever held the lock before us may just have started a server.
        match try_attach(&places, opts).await {
            Ok(s) => return Ok((socket, s)),
            Err(AttachFailure::Fatal(e)) => return Err(e),
            Err(AttachFailure::Retry(_)) => {}
        }
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
                    Err(_) => Err(spawn_err),
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

async fn try_attach(places: &Places, opts: &ConnectOptions) -> Result<Session, AttachFailure> {
    let deadline = Instant::now() + opts.spawn_timeout;
    let channel = match transport::connect(&places.socket).await {
        Ok(c) => c,
        Err(ConnectFailure::NoServer(e)) => return Err(AttachFailure::Retry(e)),
        Err(ConnectFailure::Fatal(source)) => {
            return Err(AttachFailure::Fatal(ClientError::Connect {
                socket: places.socket.clone(),
                source,
            }))
        }
    };
    session::attach(channel, &places.socket, opts, deadline).await
}
