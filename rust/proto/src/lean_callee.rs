//! The answering end of a lean connection: a module towards the router, and
//! the router towards a lean client. Both run each call in a task of its
//! own, abort it on `CANCEL`, and let it send only as many results as the
//! caller's credit allows; this is their shared table of calls in flight.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::Semaphore, task::AbortHandle};
use tonic::Code;

use crate::lean_frame::{Frame, Outgoing, INITIAL_CREDIT};

/// Most results a caller may allow one call ahead; credit beyond this is
/// ignored, so a confused caller cannot overflow a count.
const MAX_CREDIT: usize = 1 << 20;

/// A call in flight: how to stop it, and the results it may still send.
struct Entry {
    abort: AbortHandle,
    credit: Arc<Semaphore>,
}

/// Calls in flight on one connection, by the caller's id; cheap to clone.
#[derive(Clone, Default)]
pub struct CallTable {
    calls: Arc<Mutex<HashMap<u32, Entry>>>,
}

impl CallTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Entry>> {
        // Plain map operations cannot leave it inconsistent on a panic.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers call `id`: `spawn` starts its task, given the credit the
    /// task must take a permit of before each result. The table is held
    /// while it spawns, so the task cannot finish (and unregister) first.
    pub fn start(&self, id: u32, spawn: impl FnOnce(Arc<Semaphore>) -> AbortHandle) {
        let credit = Arc::new(Semaphore::new(INITIAL_CREDIT as usize));
        let mut calls = self.lock();
        let abort = spawn(credit.clone());
        calls.insert(id, Entry { abort, credit });
    }

    /// Whether call `id` is in flight.
    pub fn is_running(&self, id: u32) -> bool {
        self.lock().contains_key(&id)
    }

    /// Unregisters a call that is ending by itself. Do it before sending
    /// its last frame, so a `CANCEL` crossing that frame finds nothing.
    pub fn finished(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// Stops call `id` (a `CANCEL`); `false` if it is not running.
    pub fn cancel(&self, id: u32) -> bool {
        let entry = self.lock().remove(&id);
        entry.map(|e| e.abort.abort()).is_some()
    }

    /// Lets call `id` send `items` more results (a `CREDIT`); a call that
    /// has ended needs none.
    pub fn grant(&self, id: u32, items: u32) {
        if let Some(entry) = self.lock().get(&id) {
            let room = MAX_CREDIT.saturating_sub(entry.credit.available_permits());
            entry.credit.add_permits((items as usize).min(room));
        }
    }

    /// Stops every call (the connection is ending).
    pub fn cancel_all(&self) {
        for (_, entry) in self.lock().drain() {
            entry.abort.abort();
        }
    }
}

/// The frame failing call `id` with `code` and `message`.
pub fn error_frame(id: u32, code: Code, message: impl Into<String>) -> Outgoing {
    Outgoing::Frame(Frame::Error {
        id,
        code: code as i32,
        message: message.into(),
    })
}

/// Runs call `id`'s `work` (which returns its last frame), ending it with
/// `DeadlineExceeded` when `deadline`, the time its caller still waits,
/// passes first. The caller cancels at its deadline too; this stops the
/// work even if that `CANCEL` is late.
pub async fn within_deadline(
    id: u32,
    function: &str,
    deadline: Option<Duration>,
    work: impl Future<Output = Outgoing>,
) -> Outgoing {
    match deadline {
        Some(left) => tokio::time::timeout(left, work).await.unwrap_or_else(|_| {
            error_frame(
                id,
                Code::DeadlineExceeded,
                format!("function '{function}' ran past the caller's deadline"),
            )
        }),
        None => work.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_aborts_grant_adds_credit_and_ended_calls_are_ignored() {
        let table = CallTable::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let credit_seen = Arc::new(Mutex::new(None));
        let seen = credit_seen.clone();
        table.start(1, |credit| {
            *seen.lock().unwrap() = Some(credit);
            tokio::spawn(async move {
                std::future::pending::<()>().await;
                let _ = tx.send(1);
            })
            .abort_handle()
        });
        let credit = credit_seen.lock().unwrap().clone().unwrap();
        assert_eq!(credit.available_permits(), INITIAL_CREDIT as usize);
        table.grant(1, 10);
        assert_eq!(credit.available_permits(), INITIAL_CREDIT as usize + 10);
        // More than the cap is capped, not overflowed.
        table.grant(1, u32::MAX);
        assert_eq!(credit.available_permits(), MAX_CREDIT);
        assert!(table.cancel(1));
        assert!(
            rx.await.is_err(),
            "the cancelled task was dropped unfinished"
        );
        assert!(!table.cancel(1), "a call is cancelled once");
        table.grant(1, 5);
        table.finished(1);
    }
}
