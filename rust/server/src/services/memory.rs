//! Giving memory back to the system after a burst.
//!
//! glibc keeps freed memory in its heaps: after hundreds of callers
//! vanish mid-stream (each had a read buffer and a batch of results on its
//! way), the server's RSS would stay where the burst left it. When callers
//! leave, a trim is scheduled; bursts of departures share one.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// How long departures are gathered before one trim.
const GATHER: Duration = Duration::from_millis(250);

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Schedules a `malloc_trim` shortly, unless one is scheduled already.
/// Call it when a caller's connection ends.
pub fn trim_soon() {
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(GATHER).await;
        SCHEDULED.store(false, Ordering::Release);
        // It walks the heaps: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it
    // takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
