//! `communication.Forwarder`: the public protocol's call path.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use norgopolis_proto::communication::{
    forwarder_server::Forwarder, Invocation, InvocationOverride, MessagePack, OverrideStatus,
};
use tonic::{Request, Response, Status};

use crate::{lifetime::Lifetime, modules::ModuleHost};

/// Routes calls to modules and streams their results back item by item.
pub struct ForwarderService {
    /// Module table.
    pub host: Arc<ModuleHost>,
    /// Call accounting.
    pub lifetime: Lifetime,
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<MessagePack, Status>> + Send>>;

#[tonic::async_trait]
impl Forwarder for ForwarderService {
    type ForwardStream = ResultStream;

    async fn forward(
        &self,
        request: Request<Invocation>,
    ) -> Result<Response<ResultStream>, Status> {
        let inv = request.into_inner();
        norgopolis_common::validate_module_name(&inv.module)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        let (instance, inner, in_flight) = self
            .host
            .invoke(&inv.module, inv.function_name, args)
            .await?;
        // The guards live in the stream: the call counts as in flight until
        // the caller has the last item or goes away (dropping the stream,
        // which also cancels the module's call).
        let state = (inner, instance, in_flight, call, false);
        let stream = futures::stream::unfold(
            state,
            |(mut inner, instance, in_flight, call, done)| async move {
                if done {
                    return None;
                }
                match inner.message().await {
                    Ok(Some(item)) => Some((
                        Ok(MessagePack { data: item.data }),
                        (inner, instance, in_flight, call, false),
                    )),
                    Ok(None) => None,
                    Err(status) => {
                        let status = instance.explain(status).await;
                        Some((Err(status), (inner, instance, in_flight, call, true)))
                    }
                }
            },
        );
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
