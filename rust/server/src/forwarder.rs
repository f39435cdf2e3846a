//! `communication.Forwarder`: the public protocol's call path.
//!
//! Each call is checked against its connection's call limit, counted by the
//! lifetime task, bounded by its deadline (the caller's `grpc-timeout`, or
//! the server's `call_timeout`) from start to last item, and streams the
//! module's items back one for one. A caller that goes away, or a deadline
//! that passes, drops the module call, which cancels it in the module.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use norgopolis_proto::communication::{
    forwarder_server::Forwarder, Invocation, InvocationOverride, MessagePack, OverrideStatus,
};
use tokio::time::Instant;
use tonic::{metadata::MetadataMap, Request, Response, Status};

use crate::{
    lifetime::{CallGuard, Lifetime},
    modules::{InFlight, Instance, ModuleHost, ModuleStream},
    serve::{Conn, ConnCall},
};

/// Routes calls to modules and streams their results back item by item.
pub struct ForwarderService {
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
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<MessagePack, Status>> + Send>>;

/// What keeps a call going; dropped as a whole when the call ends.
struct Active {
    inner: ModuleStream,
    instance: Arc<Instance>,
    _in_flight: InFlight,
    _call: CallGuard,
    _conn_call: Option<ConnCall>,
}

#[tonic::async_trait]
impl Forwarder for ForwarderService {
    type ForwardStream = ResultStream;

    async fn forward(
        &self,
        request: Request<Invocation>,
    ) -> Result<Response<ResultStream>, Status> {
        let timeout = caller_timeout(request.metadata()).map_err(Status::invalid_argument)?;
        let (timeout, set_by) = match (timeout, self.call_timeout) {
            (Some(t), Some(s)) if s < t => (Some(s), "the server's call_timeout"),
            (Some(t), _) => (Some(t), "the caller's deadline"),
            (None, Some(s)) => (Some(s), "the server's call_timeout"),
            (None, None) => (None, ""),
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let conn = request.extensions().get::<Conn>().cloned();
        let inv = request.into_inner();
        norgopolis_common::validate_module_name(&inv.module)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conn_call = match &conn {
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
        let args = inv.args.map(|a| a.data).unwrap_or_default();
        let args = if args.is_empty() {
            norgopolis_proto::msgpack::NIL.to_vec()
        } else {
            args
        };
        let module = inv.module;
        let expired = move |what: &str| {
            Status::deadline_exceeded(format!(
                "{what}: {set_by} of {} ms passed",
                timeout.unwrap_or_default().as_millis()
            ))
        };
        let instance = match deadline {
            Some(d) => tokio::time::timeout_at(d, self.host.get(&module))
                .await
                .map_err(|_| expired(&format!("module '{module}' did not start in time")))??,
            None => self.host.get(&module).await?,
        };
        let nested = conn
            .as_ref()
            .is_some_and(|c| c.is_from_module(|pid| self.host.is_module_pid(pid)));
        let (inner, in_flight) = instance
            .invoke_until(inv.function_name, args, deadline, nested)
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::DeadlineExceeded {
                    expired(s.message())
                } else {
                    s
                }
            })?;
        let active = Active {
            inner,
            instance,
            _in_flight: in_flight,
            _call: call,
            _conn_call: conn_call,
        };
        let limit = self.max_message_size;
        // The guards live in the stream: the call counts as in flight until
        // the caller has the last item or goes away (dropping the stream,
        // which also cancels the module's call). On an error or a passed
        // deadline they are dropped at once, not when the caller gets round
        // to dropping the stream.
        let stream = futures::stream::unfold(Some(active), move |state| async move {
            let mut active = state?;
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, active.inner.message()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let status = expired(&format!(
                            "call to module '{}' cancelled",
                            active.instance.name
                        ));
                        return Some((Err(status), None));
                    }
                },
                None => active.inner.message().await,
            };
            match next {
                Ok(Some(item)) => Some((Ok(MessagePack { data: item.data }), Some(active))),
                Ok(None) => None,
                Err(status) => {
                    let status = clarify(
                        active.instance.explain(status).await,
                        &active.instance.name,
                        limit,
                    );
                    Some((Err(status), None))
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn r#override(
        &self,
        request: Request<InvocationOverride>,
    ) -> Result<Response<OverrideStatus>, Status> {
        let r = request.into_inner();
        Err(Status::unimplemented(format!(
            "Override ({}.{}) is not supported by this norgopolis server",
            r.module, r.function_name
        )))
    }
}

/// The caller's `grpc-timeout`, if any ("100m" = 100 ms; units H M S m u n).
fn caller_timeout(metadata: &MetadataMap) -> Result<Option<Duration>, String> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "grpc-timeout is not text".to_string())?;
    parse_grpc_timeout(text)
        .map(Some)
        .ok_or_else(|| format!("bad grpc-timeout {text:?}"))
}

fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
    }
}
