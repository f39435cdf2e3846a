//! Hand-over from the background runtime to Neovim's main loop.
//!
//! Background tasks push [`Delivery`]s into a channel and poke a libuv async
//! handle; the handle's callback runs on the main thread, drains the channel
//! (sends coalesce, so one wake-up may carry many deliveries), turns them
//! into Lua values and passes them as one batch to the Lua sink. Lua is
//! touched on the main thread only. A wake-up converts at most
//! [`MAX_PER_TURN`] deliveries and pokes the handle again for the rest, so
//! a stream that piled up while the editor was busy (10,000 results) is
//! handed over across many turns of the main loop instead of one long one.

use std::{
    cell::RefCell,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use mlua::{Function, Lua, Table, Value};
use nvim_oxi::libuv::AsyncHandle;
use rmpv::Value as Mp;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::convert::Codec;

/// An error as the Lua side sees it: `{ code = "NotFound", message = "…" }`.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// gRPC-style code name ("NotFound", "Unavailable", "Cancelled", …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error from a code name and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What a background task reports for request `id`.
#[derive(Debug)]
pub enum Kind {
    /// One streamed item (already decoded off the main thread).
    Value(Mp),
    /// The request finished: its result (nil for streams) or its error.
    Done(Result<Mp, ErrorInfo>),
    /// A server event or session notice, not tied to a request (id 0).
    Event(Mp),
}

/// One report for the main loop.
#[derive(Debug)]
pub struct Delivery {
    /// Request id (0 for events).
    pub id: u64,
    /// What happened.
    pub kind: Kind,
}

/// The sending half: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: UnboundedSender<Delivery>,
    wake: AsyncHandle,
    closed: Arc<AtomicBool>,
}

impl Outbox {
    /// Queues a delivery and wakes the main loop. Does nothing once closed
    /// (Neovim is exiting): nobody is left to tell, and the libuv loop the
    /// async handle belongs to is being torn down.
    pub fn send(&self, id: u64, kind: Kind) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if self.tx.send(Delivery { id, kind }).is_ok() {
            let _ = self.wake.send();
        }
    }

    /// Stops all further deliveries.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Most deliveries converted per turn of the main loop.
pub const MAX_PER_TURN: usize = 256;

/// Registry key of the Lua function receiving batches.
const SINK_KEY: &str = "norgopolis.sink";

/// Installs the async handle. Must run on the main thread (at load time).
pub fn install(lua: &Lua, codec: Rc<Codec>) -> mlua::Result<Outbox> {
    let (tx, rx) = unbounded_channel();
    let rx = RefCell::new(rx);
    let lua = lua.clone();
    // The callback pokes its own handle when it left deliveries queued.
    let again: Rc<RefCell<Option<AsyncHandle>>> = Rc::default();
    let again_in_callback = again.clone();
    let closed: Arc<AtomicBool> = Arc::default();
    let closed_in_callback = closed.clone();
    let wake = AsyncHandle::new(move || {
        // A panic must not unwind into libuv's C frames.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut rx = rx.borrow_mut();
            drain(&lua, &codec, &mut rx);
            if !rx.is_empty() && !closed_in_callback.load(Ordering::Acquire) {
                if let Some(handle) = again_in_callback.borrow().as_ref() {
                    let _ = handle.send();
                }
            }
        }));
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| mlua::Error::runtime(format!("cannot create libuv async handle: {e}")))?;
    *again.borrow_mut() = Some(wake.clone());
    Ok(Outbox { tx, wake, closed })
}

/// Sets the Lua function that receives delivery batches.
pub fn set_sink(lua: &Lua, sink: Function) -> mlua::Result<()> {
    lua.set_named_registry_value(SINK_KEY, sink)
}

fn drain(lua: &Lua, codec: &Codec, rx: &mut UnboundedReceiver<Delivery>) {
    let Ok(batch) = lua.create_table() else {
        return;
    };
    let mut n = 0;
    while n < MAX_PER_TURN {
        let Ok(delivery) = rx.try_recv() else { break };
        let entry = match to_lua(lua, codec, delivery) {
            Ok(entry) => entry,
            Err(_) => continue,
        };
        n += 1;
        let _ = batch.raw_set(n, entry);
    }
    if n == 0 {
        return;
    }
    if let Ok(sink) = lua.named_registry_value::<Function>(SINK_KEY) {
        // The sink only schedules; if it fails there is no caller to tell.
        let _ = sink.call::<()>(batch);
    }
}

/// `{ id = 1, kind = "value", value = v }`, `{ id = 1, kind = "done",
/// err = {code, message} | nil, result = v }` or `{ id = 0, kind = "event",
/// value = v }`.
fn to_lua(lua: &Lua, codec: &Codec, d: Delivery) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("id", d.id)?;
    match d.kind {
        Kind::Value(v) => {
            t.raw_set("kind", "value")?;
            match codec.decode(&v, 0) {
                Ok(value) => t.raw_set("value", value)?,
                Err(e) => {
                    // The stream goes on; this item becomes an error entry
                    // that the Lua side reports through on_done.
                    t.raw_set("kind", "bad_value")?;
                    t.raw_set(
                        "err",
                        error_table(
                            lua,
                            &ErrorInfo::new(
                                "Internal",
                                format!("cannot convert a result to Lua: {e}"),
                            ),
                        )?,
                    )?;
                }
            }
        }
        Kind::Done(Ok(v)) => {
            t.raw_set("kind", "done")?;
            match codec.decode(&v, 0) {
                Ok(value) => t.raw_set("result", value)?,
                Err(e) => t.raw_set(
                    "err",
                    error_table(
                        lua,
                        &ErrorInfo::new("Internal", format!("cannot convert a result to Lua: {e}")),
                    )?,
                )?,
            }
        }
        Kind::Done(Err(err)) => {
            t.raw_set("kind", "done")?;
            t.raw_set("err", error_table(lua, &err)?)?;
        }
        Kind::Event(v) => {
            t.raw_set("kind", "event")?;
            if let Ok(value) = codec.decode(&v, 0) {
                t.raw_set("value", value)?;
            }
        }
    }
    Ok(t)
}

/// The Lua error table for an [`ErrorInfo`].
pub fn error_table(lua: &Lua, err: &ErrorInfo) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set("code", err.code.as_str())?;
    t.raw_set("message", err.message.as_str())?;
    Ok(Value::Table(t))
}
