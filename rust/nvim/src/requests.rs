//! The background runtime and the requests running on it.
//!
//! Every Lua-visible operation becomes a tokio task with a numeric id. The
//! task reports through a [`Reporter`], which guarantees exactly one final
//! `Done` per id: if the task is aborted (cancel, exit) or panics, dropping
//! the reporter sends the matching error.

use std::{
    cell::RefCell,
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use rmpv::Value as Mp;
use tokio::{runtime::Runtime, task::AbortHandle};

use crate::bridge::{ErrorInfo, Kind, Outbox};

type TaskMap = Arc<Mutex<HashMap<u64, AbortHandle>>>;

/// Owns the runtime (main thread only) and the table of running requests.
pub struct Requests {
    runtime: RefCell<Option<Runtime>>,
    outbox: Outbox,
    tasks: TaskMap,
    next_id: AtomicU64,
}

impl Requests {
    /// Starts the background runtime.
    pub fn new(outbox: Outbox) -> std::io::Result<Self> {
        // One worker: a call is I/O only, and a second worker only bounces
        // its tasks between threads (Lua 64 B echo p50 452 -> 377 us and
        // Neovim's CPU per call 207 -> 168 us on the 2-core benchmark
        // machine; `make bench`). Not current-thread: it must run while
        // the main thread is in Lua.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("norgopolis-nvim")
            .enable_all()
            .build()?;
        Ok(Requests {
            runtime: RefCell::new(Some(runtime)),
            outbox,
            tasks: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Starts a request and returns its id. Errors once [`Requests::close`]
    /// ran (Neovim is exiting).
    pub fn spawn<F, Fut>(&self, work: F) -> Result<u64, ErrorInfo>
    where
        F: FnOnce(Reporter) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = self.runtime.borrow();
        let Some(runtime) = runtime.as_ref() else {
            return Err(ErrorInfo::new(
                "Unavailable",
                "norgopolis is closed (Neovim is exiting)",
            ));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reporter = Reporter {
            id,
            outbox: self.outbox.clone(),
            tasks: self.tasks.clone(),
            finished: false,
        };
        let fut = work(reporter);
        // Insert before the task can finish and remove itself.
        let mut tasks = lock(&self.tasks);
        let join = runtime.spawn(fut);
        tasks.insert(id, join.abort_handle());
        Ok(id)
    }

    /// Cancels a running request; its `Done` reports `Cancelled`. Returns
    /// whether it was still running.
    pub fn cancel(&self, id: u64) -> bool {
        match lock(&self.tasks).remove(&id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Number of requests still running.
    pub fn in_flight(&self) -> usize {
        lock(&self.tasks).len()
    }

    /// Stops everything: Neovim is exiting and must not be held up by
    /// calls in flight. Aborts every request and drops the runtime without
    /// waiting for it (no `block_on`, not even at exit): its connection
    /// closes with it, which cancels the calls at the server and ends this
    /// Neovim's session there (a lease ends when its connection does).
    /// Nothing reaches Lua afterwards. Idempotent.
    pub fn close(&self) {
        for (_, task) in lock(&self.tasks).drain() {
            task.abort();
        }
        self.outbox.close();
        if let Some(runtime) = self.runtime.borrow_mut().take() {
            runtime.shutdown_background();
        }
    }
}

/// A std mutex poisoned by a panicking task still holds a usable map.
fn lock(tasks: &TaskMap) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
    tasks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A task's link back to Lua; sends exactly one `Done`.
pub struct Reporter {
    id: u64,
    outbox: Outbox,
    tasks: TaskMap,
    finished: bool,
}

impl Reporter {
    /// Delivers one streamed item.
    pub fn value(&self, value: Mp) {
        self.outbox.send(self.id, Kind::Value(value));
    }

    /// Delivers the final result.
    pub fn finish(mut self, result: Result<Mp, ErrorInfo>) {
        self.finished = true;
        lock(&self.tasks).remove(&self.id);
        self.outbox.send(self.id, Kind::Done(result));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        lock(&self.tasks).remove(&self.id);
        let err = if std::thread::panicking() {
            ErrorInfo::new(
                "Internal",
                format!(
                    "norgopolis-nvim: the request's task panicked (a bug; please report it): {}",
                    crate::panics::last().unwrap_or_default()
                ),
            )
        } else {
            ErrorInfo::new("Cancelled", "the call was cancelled")
        };
        self.outbox.send(self.id, Kind::Done(Err(err)));
    }
}
