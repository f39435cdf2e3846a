//! This Neovim's connection to the server: attached lazily by the first
//! request, shared by all later ones, dropped (ending the lease) on
//! `detach`, on the server's goodbye, or when Neovim exits.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use norgopolis_client::{Client, ClientError, ConnectOptions, SessionEvent};
use rmpv::Value as Mp;

use crate::bridge::{ErrorInfo, Kind, Outbox};

/// Connection settings from the Lua config (see `config.lua`).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Socket path; `None` = `$NORGOPOLIS_SOCKET` or the runtime dir.
    pub socket: Option<String>,
    /// Server binary; `None` = the client crate's lookup.
    pub server: Option<String>,
    /// Extra arguments for a server we spawn.
    pub server_args: Vec<String>,
    /// Deadline for spawning and handshakes.
    pub spawn_timeout: Option<Duration>,
    /// Name shown in the server's session list.
    pub client_name: Option<String>,
}

impl Settings {
    fn options(&self, spawn: bool) -> ConnectOptions {
        let mut opts = ConnectOptions::new("nvim").spawn(spawn);
        if let Some(socket) = &self.socket {
            opts = opts.socket(socket);
        }
        if let Some(server) = &self.server {
            opts = opts.server_binary(server);
        }
        opts = opts.server_args(self.server_args.iter().cloned());
        if let Some(t) = self.spawn_timeout {
            opts = opts.spawn_timeout(t);
        }
        opts.client_name(
            self.client_name
                .clone()
                .unwrap_or_else(|| format!("nvim {}", std::process::id())),
        )
    }
}

/// The shared, lazily attached client.
pub struct Connection {
    settings: Mutex<Settings>,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Mirror of the attached client for synchronous reads from Lua.
    current: Mutex<Option<Client>>,
    outbox: Outbox,
}

impl Connection {
    /// A connection that has not attached yet.
    pub fn new(outbox: Outbox) -> Arc<Self> {
        Arc::new(Connection {
            settings: Mutex::default(),
            client: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            outbox,
        })
    }

    /// Replaces the settings; they apply to the next attach.
    pub fn configure(&self, settings: Settings) {
        *lock(&self.settings) = settings;
    }

    /// The attached client, attaching (and spawning a server) if needed.
    /// Concurrent callers wait for one attach rather than racing.
    pub async fn client(self: &Arc<Self>) -> Result<Client, ErrorInfo> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| c.is_attached()) {
            return Ok(client.clone());
        }
        let opts = lock(&self.settings).options(true);
        let client = Client::connect(opts).await.map_err(error_info)?;
        self.watch(&client);
        *slot = Some(client.clone());
        *lock(&self.current) = Some(client.clone());
        self.outbox
            .send(0, Kind::Event(session_notice("attached", &client)));
        Ok(client)
    }

    /// The attached client if there is one, else a short-lived probe that
    /// neither spawns a server nor keeps one alive (for health checks).
    pub async fn existing_or_probe(self: &Arc<Self>) -> Result<Client, ErrorInfo> {
        if let Some(client) = self
            .client
            .lock()
            .await
            .as_ref()
            .filter(|c| c.is_attached())
        {
            return Ok(client.clone());
        }
        let opts = lock(&self.settings)
            .options(false)
            .keeps_server_alive(false);
        Client::connect(opts).await.map_err(error_info)
    }

    /// Ends the session (the lease) now; the next request attaches again.
    pub async fn detach(&self) -> bool {
        let client = self.client.lock().await.take();
        lock(&self.current).take();
        match client {
            Some(client) => {
                client.detach().await;
                true
            }
            None => false,
        }
    }

    /// Takes the session without waiting, so that dropping it while Neovim
    /// exits closes the connection. `None` if there is none, or an attach
    /// is still under way (it is then simply cut off with the runtime).
    pub fn take_now(&self) -> Option<Client> {
        lock(&self.current).take();
        self.client.try_lock().ok().and_then(|mut slot| slot.take())
    }

    /// The attached client, if any, without waiting.
    pub fn current(&self) -> Option<Client> {
        lock(&self.current).clone().filter(Client::is_attached)
    }

    /// Forwards events to Lua and forgets the client once its session is
    /// over, so the next request attaches afresh (after a server retired for
    /// a newer norgopolis, to the newer server, with a new watch).
    fn watch(self: &Arc<Self>, client: &Client) {
        let mut events = client.subscribe();
        let session = client.session_id();
        // Compared by identity: a client whose call was sent again across a
        // handover has moved to a new session (whose id may even be equal,
        // on the new server), which this watch does not follow.
        let watched = client.identity();
        let weak = Arc::downgrade(self);
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let mut reason = None;
            loop {
                match events.recv().await {
                    Ok(SessionEvent::Event(e)) => {
                        let mut fields = vec![
                            ("type", Mp::from("event")),
                            ("module", Mp::from(e.module.as_str())),
                            ("topic", Mp::from(e.topic.as_str())),
                            ("seq", Mp::from(e.seq)),
                        ];
                        // A payload Lua cannot hold still announces the
                        // event: subscribers learn that it happened and why
                        // its payload is missing.
                        match crate::convert::decode_checked(&e.payload, 1) {
                            Ok(payload) => fields.push(("payload", payload)),
                            Err(err) => fields.push((
                                "payload_error",
                                Mp::from(format!(
                                    "the payload of {}/{} cannot be converted to Lua: {err}",
                                    e.module, e.topic
                                )),
                            )),
                        }
                        outbox.send(0, Kind::Event(map(fields)));
                    }
                    Ok(SessionEvent::Goodbye(r)) => reason = Some(r),
                    Ok(SessionEvent::Closed) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            let Some(conn) = weak.upgrade() else { return };
            {
                let mut slot = conn.client.lock().await;
                if slot.as_ref().is_some_and(|c| watched.is(c)) {
                    slot.take();
                }
            }
            {
                let mut current = lock(&conn.current);
                if current.as_ref().is_some_and(|c| watched.is(c)) {
                    current.take();
                }
            }
            let mut fields = vec![
                ("type", Mp::from("detached")),
                ("session_id", Mp::from(session)),
            ];
            if let Some(r) = reason {
                fields.push(("reason", Mp::from(r)));
            }
            outbox.send(0, Kind::Event(map(fields)));
        });
    }
}

/// The `attached` event: `type` and the session's fields.
fn session_notice(kind: &str, client: &Client) -> Mp {
    let mut fields = vec![("type", Mp::from(kind))];
    fields.extend(session_fields(client));
    map(fields)
}

/// What Lua gets for a session: `{ session_id, server_pid, server_version,
/// socket, transport }` (`transport`: how calls travel, "lean" or "grpc").
pub fn session_info(client: &Client) -> Mp {
    map(session_fields(client))
}

/// The one list of a session's fields, for [`session_info`] and the
/// `attached` event alike.
fn session_fields(client: &Client) -> Vec<(&'static str, Mp)> {
    vec![
        ("session_id", Mp::from(client.session_id())),
        ("transport", Mp::from(transport_name(client))),
        ("server_pid", Mp::from(client.server_pid())),
        ("server_version", Mp::from(client.server_version())),
        (
            "socket",
            Mp::from(client.socket().to_string_lossy().into_owned()),
        ),
    ]
}

fn transport_name(client: &Client) -> &'static str {
    if client.is_lean() {
        "lean"
    } else {
        "grpc"
    }
}

/// A MessagePack map with string keys.
pub fn map(fields: Vec<(&str, Mp)>) -> Mp {
    Mp::Map(fields.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
}

/// The Lua error for a client error: gRPC code name and message; spawn
/// failures name the log.
pub fn error_info(e: ClientError) -> ErrorInfo {
    ErrorInfo::new(e.code_name(), e.message())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
