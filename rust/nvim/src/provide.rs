//! This Neovim as an external module: `provide(name, functions)` registers
//! a connection as module `name` (`norgopolis_client::provide::register`)
//! and serves the router's calls on it from the background runtime.
//!
//! Calls go to Lua as values of the provide request (`{ type = "call",
//! call, fn, args }`, and `{ type = "cancel", call }` when a caller goes
//! away); the Lua functions run on the main loop and answer through
//! `provide_reply`, whose items wait here for the caller's credit, so Lua
//! never waits on a slow caller. A call's deadline is kept here too: past
//! it the caller is answered and Lua's later replies are dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use norgopolis_client::{code_name, provide::register, Code, ConnectOptions};
use norgopolis_proto::{
    lean_callee::{error_frame, within_deadline, CallTable},
    lean_frame::{self, Frame, FrameError, Incoming, Outgoing},
};
use rmpv::Value as Mp;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    bridge::ErrorInfo,
    conn::{error_info, map},
    convert,
    requests::Reporter,
};

/// A Lua function's answer for one call.
pub enum Reply {
    /// One result (MessagePack).
    Item(Vec<u8>),
    /// The call succeeded after its items.
    End,
    /// The call failed.
    Error {
        /// gRPC code.
        code: Code,
        /// Message for the caller.
        message: String,
    },
}

/// One provider's calls in flight, by the router's call id: where Lua's
/// replies go.
#[derive(Default)]
pub struct Calls(Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>);

impl Calls {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Reply>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, call: u32) {
        self.lock().remove(&call);
    }
}

/// This Neovim's providers, by request id.
#[derive(Default, Clone)]
pub struct Providers(Arc<Mutex<HashMap<u64, Arc<Calls>>>>);

impl Providers {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Calls>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers provider request `id`'s calls.
    pub fn add(&self, id: u64, calls: Arc<Calls>) {
        self.lock().insert(id, calls);
    }

    /// Forgets provider request `id` (it ended).
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Hands Lua's `reply` for `call` of provider `id` on; `false` when the
    /// call is over (its caller went away, its deadline passed, or the
    /// provider stopped): Lua then stops answering it.
    pub fn reply(&self, id: u64, call: u32, reply: Reply) -> bool {
        let Some(calls) = self.lock().get(&id).cloned() else {
            return false;
        };
        let last = !matches!(reply, Reply::Item(_));
        let mut open = calls.lock();
        let sent = open.get(&call).is_some_and(|tx| tx.send(reply).is_ok());
        if last {
            open.remove(&call);
        }
        sent
    }
}

/// The code named `name` ("NotFound", "not_found", …), if it is one.
pub fn code_from_name(name: &str) -> Option<Code> {
    let wanted = name.replace('_', "").to_ascii_lowercase();
    (1..=16)
        .map(Code::from_i32)
        .find(|code| code_name(*code).to_ascii_lowercase() == wanted)
}

/// Stops a task when dropped (the provider's writer: our end of the socket).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops every call when the provider ends, however it ends.
struct CancelAll(CallTable);

impl Drop for CancelAll {
    fn drop(&mut self) {
        self.0.cancel_all();
    }
}

/// Registers module `name` at `options`' socket and serves its calls until
/// the connection ends (returning why) or the request is cancelled
/// (`stop()`: the task is dropped, which closes the connection).
pub async fn serve(
    options: ConnectOptions,
    name: String,
    functions: Vec<String>,
    calls: Arc<Calls>,
    reporter: &Reporter,
) -> Result<Mp, ErrorInfo> {
    let registered = register(&options, &name, functions)
        .await
        .map_err(error_info)?;
    reporter.value(map(vec![
        ("type", Mp::from("registered")),
        (
            "socket",
            Mp::from(registered.socket.to_string_lossy().into_owned()),
        ),
    ]));
    let (out, rx) = mpsc::unbounded_channel();
    let mut writer = AbortOnDrop(tokio::spawn(lean_frame::write_frames(
        rx,
        registered.writer,
    )));
    let table = CallTable::default();
    let _stop = CancelAll(table.clone());
    let mut frames = registered.frames;
    let closed = || {
        ErrorInfo::new(
            "Unavailable",
            format!(
                "the router closed the connection of module '{name}' (unloaded, or the server exited)"
            ),
        )
    };
    loop {
        let incoming = tokio::select! {
            incoming = frames.next() => incoming,
            _ = &mut writer.0 => return Err(closed()),
        };
        let frame = match incoming {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::Oversized { id, .. })) => {
                let _ = out.send(error_frame(
                    id,
                    Code::ResourceExhausted,
                    "arguments too large",
                ));
                continue;
            }
            Ok(None) | Err(FrameError::Truncated) | Err(FrameError::Io(_)) => return Err(closed()),
            Err(e) => {
                return Err(ErrorInfo::new(
                    "Internal",
                    format!("the router broke the lean protocol: {e}"),
                ))
            }
        };
        match frame {
            Frame::Call {
                id,
                function,
                args,
                deadline_ms,
            } => {
                let call = IncomingCall {
                    id,
                    function,
                    deadline: deadline_ms.map(Duration::from_millis),
                };
                start(call, &args, &name, &out, &table, &calls, reporter);
            }
            Frame::Cancel { id } => {
                if table.cancel(id) {
                    calls.forget(id);
                    reporter.value(map(vec![
                        ("type", Mp::from("cancel")),
                        ("call", Mp::from(id)),
                    ]));
                }
            }
            Frame::Credit { id, items } => table.grant(id, items),
            Frame::Ping { nonce } => {
                let _ = out.send(Outgoing::Frame(Frame::Pong { nonce }));
            }
            other => {
                return Err(ErrorInfo::new(
                    "Internal",
                    format!(
                        "the router sent a {} frame, which only modules send",
                        other.kind_name()
                    ),
                ))
            }
        }
    }
}

/// A `CALL` as the router sent it, before it is registered and handed to
/// Lua.
struct IncomingCall {
    id: u32,
    function: String,
    deadline: Option<Duration>,
}

/// Registers a call, hands it to Lua, and forwards Lua's replies to the
/// router within the caller's credit and deadline.
fn start(
    call: IncomingCall,
    args: &[u8],
    module: &str,
    out: &mpsc::UnboundedSender<Outgoing>,
    table: &CallTable,
    calls: &Arc<Calls>,
    reporter: &Reporter,
) {
    let IncomingCall {
        id,
        function,
        deadline,
    } = call;
    let args = match convert::decode_checked(args, 1) {
        Ok(args) => args,
        Err(e) => {
            let message = format!("module '{module}' (in Neovim) cannot take these arguments: {e}");
            let _ = out.send(error_frame(id, Code::InvalidArgument, message));
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    calls.lock().insert(id, tx);
    let name = function.clone();
    let out = out.clone();
    let registered = table.clone();
    let open = calls.clone();
    table.start(id, |credit| {
        tokio::spawn(async move {
            let items = out.clone();
            let pump = async move {
                while let Some(reply) = rx.recv().await {
                    match reply {
                        Reply::Item(data) => {
                            // Lua never waits: its items wait here for room.
                            match credit.acquire().await {
                                Ok(permit) => permit.forget(),
                                Err(_) => {
                                    return error_frame(id, Code::Internal, "flow control closed")
                                }
                            }
                            let _ = items.send(Outgoing::Frame(Frame::Item { id, data }));
                        }
                        Reply::End => return Outgoing::Frame(Frame::End { id }),
                        Reply::Error { code, message } => return error_frame(id, code, message),
                    }
                }
                error_frame(id, Code::Internal, "the Neovim provider dropped the call")
            };
            let last = within_deadline(id, &name, deadline, pump).await;
            registered.finished(id);
            open.forget(id);
            let _ = out.send(last);
        })
        .abort_handle()
    });
    reporter.value(map(vec![
        ("type", Mp::from("call")),
        ("call", Mp::from(id)),
        ("fn", Mp::from(function)),
        ("args", args),
    ]));
}
