//! Wiring: bind, serve both services, wait for the exit decision, shut down
//! in bounded time.

use std::{sync::Arc, time::Duration, time::Instant};

use anyhow::Context;
use norgopolis_proto::{
    communication::forwarder_server::ForwarderServer, v1::control_server::ControlServer,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    attach::AttachConfig, control::ControlService, events::EventHub, forwarder::ForwarderService,
    lifetime::Lifetime, listener::Bound, modules::ModuleHost, ready::ReadyPipe, settings::Settings,
};

/// Longest we wait for open calls and sessions to finish once exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the server until the lifetime task decides to exit.
pub async fn run(settings: Settings, mut ready: ReadyPipe) -> anyhow::Result<()> {
    let bound = match Bound::acquire(&settings.places, settings.lock_wait).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            ready.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    let host = Arc::new(
        ModuleHost::new(
            settings.modules_dirs.clone(),
            settings.places.socket.clone(),
            settings.max_message_size,
            settings.module_grace,
        )
        .context("cannot start the module spawner")?,
    );
    let lifetime = Lifetime::start(settings.linger, settings.idle_timeout);
    let hub = Arc::new(EventHub::default());

    let forwarder = ForwarderService {
        host: host.clone(),
        lifetime: lifetime.clone(),
    };
    let control = ControlService {
        host: host.clone(),
        lifetime: lifetime.clone(),
        hub,
        attach: AttachConfig {
            keepalive_interval: settings.keepalive_interval,
            client_timeout: settings.client_timeout,
        },
        started: Instant::now(),
        socket: bound.socket().display().to_string(),
        log_path: settings.log_path.display().to_string(),
    };

    spawn_signal_handlers(lifetime.clone())?;
    let mut exit = lifetime.exit_watch();
    let shutdown_signal = async move {
        let _ = exit.wait_for(Option::is_some).await;
    };
    let size = settings.max_message_size;
    let serve = tonic::transport::Server::builder()
        .add_service(
            ForwarderServer::new(forwarder)
                .max_decoding_message_size(size)
                .max_encoding_message_size(size),
        )
        .add_service(
            ControlServer::new(control)
                .max_decoding_message_size(size)
                .max_encoding_message_size(size),
        )
        .serve_with_incoming_shutdown(bound.incoming(), shutdown_signal);

    tracing::info!(
        pid = std::process::id(),
        socket = %bound.socket().display(),
        dirs = ?settings.modules_dirs,
        "norgopolis-server {} listening",
        norgopolis_common::VERSION
    );
    ready.ready();

    let mut exit = lifetime.exit_watch();
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result.context("server failed")?,
        _ = exit.wait_for(Option::is_some) => {
            // Stop accepting at once; give open calls a bounded moment.
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut serve).await.is_err() {
                tracing::warn!("calls still open after {} s; exiting anyway", DRAIN_TIMEOUT.as_secs());
            }
        }
    }
    // Unlink the socket first so new clients start a fresh server instead of
    // knocking on a closing one, then stop the modules.
    drop(bound);
    host.stop_all().await;
    tracing::info!("norgopolis-server exited cleanly");
    Ok(())
}

fn spawn_signal_handlers(lifetime: Lifetime) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        lifetime.shutdown(format!("received {name}"));
    });
    Ok(())
}
