//! Routing one call to its module, whatever transport the caller came in
//! on (gRPC's `communication.Forwarder` or a lean client connection).
//!
//! A call is checked against its connection's call limit, counted by the
//! lifetime task, bounded by its deadline (the caller's, or the server's
//! `call_timeout` if sooner) from start to last item, and its module's
//! items are handed on one for one. Dropping a [`RoutedCall`] (the caller
//! went away) cancels the call in the module.

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::Status;

use crate::{
    accept::client_conn::{Conn, ConnCall},
    modules::{Busy, InFlight, Instance, ModuleHost, ModuleStream},
    sessions::lifetime::{CallGuard, Lifetime},
};

/// The longest deadline a caller may set; anything longer is a wire value
/// out of range (2^64-1 ms overflows the clock), not a wish to wait.
const MAX_DEADLINE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Starts calls at modules; shared by every connection.
pub struct Router {
    /// Module table.
    pub host: Arc<ModuleHost>,
    /// Call accounting.
    pub lifetime: Lifetime,
    /// Deadline for calls whose caller set none.
    pub call_timeout: Option<Duration>,
    /// Most calls in flight on one connection.
    pub max_calls_per_session: u32,
    /// Largest message, for clearer errors about oversized results.
    pub max_message_size: usize,
    /// How long a paused call that kept its module slot waits for its
    /// caller to read before it is cancelled.
    pub stall_timeout: Duration,
}

/// A call on its way.
pub struct RoutedCall {
    /// `None` once the call has ended.
    active: Option<Active>,
    instance: Arc<Instance>,
    deadline: Option<Instant>,
    /// The deadline's length and who set it, for the error when it passes.
    timeout: Option<(Duration, &'static str)>,
    max_message_size: usize,
    stall_timeout: Duration,
    /// An error [`RoutedCall::take_ready`] took from the module, for
    /// [`RoutedCall::next`] to explain and report.
    early_error: Option<Status>,
}

/// What [`RoutedCall::take_ready`] found.
pub enum Ready {
    /// A result the module had already sent.
    Item(Vec<u8>),
    /// The call ended well.
    Ended,
    /// Nothing yet, or an error (left for [`RoutedCall::next`]).
    NotYet,
}

/// The module's results and what keeps the call counted; dropping it ends
/// the counts and cancels the module's call if it is still running.
struct Active {
    inner: ModuleStream,
    in_flight: InFlight,
    _busy: Busy,
    _call: CallGuard,
    _conn_call: Option<ConnCall>,
}

impl Router {
    /// Admits and starts a call of `module.function` from `conn` (if the
    /// transport knows its connection); `caller_timeout` is how long the
    /// caller waits, if it said.
    pub async fn start(
        &self,
        conn: Option<&Conn>,
        module: &str,
        function: String,
        args: Vec<u8>,
        caller_timeout: Option<Duration>,
    ) -> Result<RoutedCall, Status> {
        if let Some(t) = caller_timeout.filter(|t| *t > MAX_DEADLINE) {
            return Err(Status::invalid_argument(format!(
                "the call's deadline of {} ms is out of range: at most {} ms (about 10 years)",
                t.as_millis(),
                MAX_DEADLINE.as_millis()
            )));
        }
        let timeout = match (caller_timeout, self.call_timeout) {
            (Some(t), Some(s)) if s < t => Some((s, "the server's call_timeout")),
            (Some(t), _) => Some((t, "the caller's deadline")),
            (None, Some(s)) => Some((s, "the server's call_timeout")),
            (None, None) => None,
        };
        let deadline = timeout.map(|(t, _)| Instant::now() + t);
        norgopolis_common::validate_module_name(module)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conn_call = match conn {
            Some(conn) => Some(conn.begin_call(self.max_calls_per_session).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "too many calls in flight on this connection: the limit is {} \
                     (max_calls_per_session in config.toml)",
                    self.max_calls_per_session
                ))
            })?),
            None => None,
        };
        let call = self
            .lifetime
            .begin_call()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let args = if args.is_empty() {
            norgopolis_proto::msgpack::NIL.to_vec()
        } else {
            args
        };
        let (instance, busy) = self.instance(module, deadline, timeout).await?;
        check_args(&instance, module, &function, &args).map_err(Status::invalid_argument)?;
        let nested = conn.is_some_and(|c| c.is_from_module(|pid| self.host.is_module_pid(pid)));
        let (inner, in_flight) = instance
            .invoke_until(function, args, deadline, nested)
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::DeadlineExceeded {
                    expired(timeout, s.message())
                } else {
                    s
                }
            })?;
        Ok(RoutedCall {
            active: Some(Active {
                inner,
                in_flight,
                _busy: busy,
                _call: call,
                _conn_call: conn_call,
            }),
            instance,
            deadline,
            timeout,
            max_message_size: self.max_message_size,
            stall_timeout: self.stall_timeout,
            early_error: None,
        })
    }
}

impl Router {
    /// The running instance of `module` (started if needed, within the
    /// deadline), with the call counted as its activity.
    async fn instance(
        &self,
        module: &str,
        deadline: Option<Instant>,
        timeout: Option<(Duration, &'static str)>,
    ) -> Result<(Arc<Instance>, Busy), Status> {
        // An instance retired for idleness between the lookup and the
        // count is not looked up again: the next lookup starts a new one.
        for _ in 0..3 {
            let instance = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.host.get(module))
                    .await
                    .map_err(|_| {
                        expired(timeout, &format!("module '{module}' did not start in time"))
                    })??,
                None => self.host.get(module).await?,
            };
            if let Some(busy) = instance.activity.begin() {
                return Ok((instance, busy));
            }
        }
        Err(Status::unavailable(format!(
            "module '{module}' was unloaded for idleness again and again while this call started"
        )))
    }
}

/// Refuses arguments that do not fit the function's declared signature
/// before the module sees them; the error says where and how.
fn check_args(
    instance: &Instance,
    module: &str,
    function: &str,
    args: &[u8],
) -> Result<(), String> {
    let Some(ty) = instance
        .located
        .manifest
        .as_ref()
        .and_then(|m| m.args_type(function))
    else {
        return Ok(());
    };
    ty.check_msgpack(args)
        .map_err(|e| format!("{e} (module '{module}' function '{function}' takes {ty})"))
}

impl RoutedCall {
    /// The next result; `None` after the last. An error (the module's, or
    /// a passed deadline) is the call's end: `None` follows it.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, Status>> {
        // The call is let go as soon as it ends, not when the caller gets
        // round to dropping it: a finished call no longer counts, and one
        // past its deadline is cancelled in the module at once.
        let inner = &mut self.active.as_mut()?.inner;
        let next = match (self.early_error.take(), self.deadline) {
            (Some(status), _) => Err(status),
            (None, Some(d)) => match tokio::time::timeout_at(d, inner.message()).await {
                Ok(next) => next,
                Err(_) => {
                    let what = format!("call to module '{}' cancelled", self.instance.name);
                    return self.end(Some(expired(self.timeout, &what)));
                }
            },
            (None, None) => inner.message().await,
        };
        match next {
            Ok(Some(item)) => Some(Ok(item.data)),
            Ok(None) => self.end(None),
            Err(status) => {
                let status = self.instance.explain(status).await;
                let status = clarify(status, &self.instance.name, self.max_message_size);
                self.end(Some(status))
            }
        }
    }

    /// Takes a result the module has already sent, without waiting: what
    /// is here when the call starts can leave with the response headers
    /// (a one-result call is usually all here), with no task to pump it.
    pub fn take_ready(&mut self) -> Ready {
        let Some(active) = self.active.as_mut() else {
            return Ready::Ended;
        };
        if self.early_error.is_some() {
            return Ready::NotYet;
        }
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // Cancel-safe: both transports keep what they read in the stream.
        let polled = std::pin::pin!(active.inner.message()).poll(&mut cx);
        match polled {
            Poll::Pending => Ready::NotYet,
            Poll::Ready(Ok(Some(item))) => Ready::Item(item.data),
            Poll::Ready(Ok(None)) => {
                self.end(None);
                Ready::Ended
            }
            Poll::Ready(Err(status)) => {
                self.early_error = Some(status);
                Ready::NotYet
            }
        }
    }

    /// Waits for `room` (the caller's flow control) before a result is
    /// handed on. A caller that has no room is not reading: meanwhile the
    /// call gives its module slot to callers waiting in line and takes one
    /// again (in line) before it goes on, so a stalled caller holds back
    /// only its own calls. When too many calls of the module are paused to
    /// give this one's slot back, it keeps the slot for at most
    /// `stall_timeout` and is then cancelled, so stalled callers cannot
    /// hold the module's slots for ever. The wait is bounded by the call's
    /// deadline too; an error ends the call.
    pub async fn wait_for_room<T>(&mut self, room: impl Future<Output = T>) -> Result<T, Status> {
        let mut room = std::pin::pin!(room);
        // The usual case: room at once, and the slot stays.
        if let Poll::Ready(ready) = futures::poll!(room.as_mut()) {
            return Ok(ready);
        }
        let Some(active) = self.active.as_mut() else {
            return Err(Status::internal("the call has ended"));
        };
        let gave_back = active.in_flight.release_slot();
        let stall = (!gave_back).then(|| Instant::now() + self.stall_timeout);
        let bound = match (self.deadline, stall) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        let waited = match bound {
            Some(b) => tokio::time::timeout_at(b, room).await.ok(),
            None => Some(room.await),
        };
        let stalled = stall.is_some_and(|s| bound == Some(s));
        if waited.is_none() && stalled {
            let status = Status::resource_exhausted(format!(
                "call to module '{}' cancelled: its caller read nothing for {} ms while the \
                 module's slots were held by paused calls (stall_timeout in config.toml)",
                self.instance.name,
                self.stall_timeout.as_millis()
            ));
            self.end(None);
            return Err(status);
        }
        let Some(ready) = waited else {
            let what = format!(
                "call to module '{}' cancelled while its caller was not reading",
                self.instance.name
            );
            let status = expired(self.timeout, &what);
            self.end(None);
            return Err(status);
        };
        let retaken = active.in_flight.retake_slot(self.deadline).await;
        if let Err(status) = retaken {
            let status = if status.code() == tonic::Code::DeadlineExceeded {
                expired(self.timeout, status.message())
            } else {
                status
            };
            self.end(None);
            return Err(status);
        }
        Ok(ready)
    }

    fn end(&mut self, error: Option<Status>) -> Option<Result<Vec<u8>, Status>> {
        self.active = None;
        error.map(Err)
    }
}

/// The error text for call arguments over the message size limit, the
/// same on both transports.
pub fn oversized_arguments(len: Option<usize>, limit: usize) -> String {
    let size = len.map_or_else(|| "too large".to_string(), |len| format!("{len} bytes"));
    format!(
        "the call's arguments are {size}, over the message size limit of {limit} bytes \
         (max_message_size in config.toml)"
    )
}

/// Runs a call's work, turning a panic in it (a bug of ours) into an
/// `Internal` error for its caller instead of a call that never ends.
pub async fn unless_panicked<T>(
    work: impl Future<Output = T>,
    on_panic: impl FnOnce(Status) -> T,
) -> T {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(done) => done,
        Err(_) => on_panic(Status::internal(
            "the call failed inside the server (a bug; the server log has the details)",
        )),
    }
}

/// The error for a call whose deadline passed while `what` happened.
fn expired(timeout: Option<(Duration, &'static str)>, what: &str) -> Status {
    let (length, set_by) = timeout.unwrap_or((Duration::ZERO, "the deadline"));
    Status::deadline_exceeded(format!(
        "{what}: {set_by} of {} ms passed",
        length.as_millis()
    ))
}

/// Rewords tonic's size errors on module results so the caller learns
/// which limit it hit.
fn clarify(status: Status, module: &str, limit: usize) -> Status {
    let oversized = status.message().contains("message length too large");
    if oversized {
        return Status::resource_exhausted(format!(
            "module '{module}' sent a result larger than the message size limit of {limit} bytes \
             (max_message_size in config.toml)"
        ));
    }
    status
}
