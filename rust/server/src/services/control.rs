//! `norgopolis.v1.Control`: sessions, status, module management, shutdown.

use std::{path::Path, sync::Arc, time::Instant};

use norgopolis_proto::{
    v1::{
        control_server::Control, ClientMessage, ListModulesReply, ListModulesRequest, LoadReply,
        LoadRequest, PublishReply, PublishRequest, RetireReply, RetireRequest, ShutdownReply,
        ShutdownRequest, StatusReply, StatusRequest, UnloadReply, UnloadRequest,
    },
    PROTOCOL_VERSION,
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    accept::client_conn::Connections,
    modules::ModuleHost,
    sessions::attach::{attach, AttachConfig},
    sessions::events::{EventHub, SERVER_MODULE},
    sessions::lifetime::{Lifetime, RETIRE_DRAIN},
};

/// Event (module `norgopolis`) sent to every session when the server
/// begins to retire for a newer version: `{successor, pid}`.
pub const RETIRING_TOPIC: &str = "server.retiring";

/// The control service; one per server.
pub struct ControlService {
    /// Module table.
    pub host: Arc<ModuleHost>,
    /// Session and call accounting.
    pub lifetime: Lifetime,
    /// Event delivery.
    pub hub: Arc<EventHub>,
    /// Session timing.
    pub attach: AttachConfig,
    /// When the server started.
    pub started: Instant,
    /// Socket path, for Status.
    pub socket: String,
    /// Log path, for Status.
    pub log_path: String,
    /// Open client connections, for Status.
    pub connections: Arc<Connections>,
    /// The compatibility TCP listener's address ("" when off), for Status.
    pub tcp_address: String,
}

#[tonic::async_trait]
impl Control for ControlService {
    type AttachStream = crate::sessions::events::SessionStream;

    async fn attach(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        attach(
            request.into_inner(),
            &self.lifetime,
            &self.hub,
            &self.attach,
        )
        .await
        .map(Response::new)
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let counts = self.lifetime.counts().await;
        Ok(Response::new(StatusReply {
            pid: std::process::id(),
            version: norgopolis_common::version().into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            socket: self.socket.clone(),
            sessions: counts.sessions,
            calls_in_flight: counts.calls,
            modules: self.host.statuses(),
            modules_dirs: self
                .host
                .dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            log_path: self.log_path.clone(),
            protocol_version: PROTOCOL_VERSION,
            recent_failures: self.host.recent_failures(),
            tcp_address: self.tcp_address.clone(),
            connections: self.connections.open(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
        }))
    }

    async fn list_modules(
        &self,
        _: Request<ListModulesRequest>,
    ) -> Result<Response<ListModulesReply>, Status> {
        Ok(Response::new(ListModulesReply {
            modules: self.host.list(),
            dirs: self
                .host
                .dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
        }))
    }

    async fn load(&self, request: Request<LoadRequest>) -> Result<Response<LoadReply>, Status> {
        let r = request.into_inner();
        let path = (!r.path.is_empty()).then(|| Path::new(&r.path));
        let (inst, already) = self.host.load(&r.name, path).await?;
        Ok(Response::new(LoadReply {
            module: Some(inst.status()),
            already_loaded: already,
        }))
    }

    async fn unload(
        &self,
        request: Request<UnloadRequest>,
    ) -> Result<Response<UnloadReply>, Status> {
        let name = request.into_inner().name;
        norgopolis_common::validate_module_name(&name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(UnloadReply {
            was_loaded: self.host.unload(&name).await,
        }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownReply>, Status> {
        let reason = request.into_inner().reason;
        let reason = if reason.is_empty() {
            "shutdown requested".to_string()
        } else {
            format!("shutdown requested: {reason}")
        };
        self.lifetime.shutdown(reason);
        Ok(Response::new(ShutdownReply {}))
    }

    async fn retire(
        &self,
        request: Request<RetireRequest>,
    ) -> Result<Response<RetireReply>, Status> {
        let r = request.into_inner();
        let ours = norgopolis_common::version();
        // Only for a newer version: an older client must never push a newer
        // server out (and two clients can never retire each other's servers
        // in turn).
        if !norgopolis_common::version::is_older(ours, &r.successor_version) {
            return Err(Status::failed_precondition(format!(
                "retire refused: this server is norgopolis {ours}, not older than {:?}",
                r.successor_version
            )));
        }
        let calls = self.lifetime.counts().await.calls;
        let first = self.lifetime.successor().is_none();
        if first {
            // The event first, so every session has it before its Goodbye.
            self.hub.announce(
                RETIRING_TOPIC,
                vec![
                    ("successor", r.successor_version.as_str().into()),
                    ("pid", std::process::id().into()),
                ],
            );
        }
        if self.lifetime.retire(&r.successor_version) {
            tracing::info!(
                successor = %r.successor_version,
                requested_by = r.pid,
                calls,
                "retiring: a newer norgopolis takes over"
            );
        }
        Ok(Response::new(RetireReply {
            pid: std::process::id(),
            calls_in_flight: calls,
            drain_limit_ms: RETIRE_DRAIN.as_millis() as u64,
        }))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let r = request.into_inner();
        if r.topic.is_empty() {
            return Err(Status::invalid_argument("event topic is empty"));
        }
        if r.module == SERVER_MODULE {
            return Err(Status::permission_denied(format!(
                "events from module '{SERVER_MODULE}' are reserved for the server"
            )));
        }
        Ok(Response::new(PublishReply {
            delivered: self.hub.publish(&r.module, &r.topic, r.payload),
        }))
    }
}
