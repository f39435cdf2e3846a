//! Wiring: bind, serve both services, wait for the exit decision, shut down
//! in bounded time.

use std::{sync::Arc, time::Duration, time::Instant};

use anyhow::Context;
use norgopolis_proto::v1::control_server::ControlServer;
use tokio::signal::unix::{signal, SignalKind};
use tonic::service::Routes;

use crate::{
    accept::admission::Admission,
    accept::client_conn::Connections,
    accept::connection::{serve, ServeOptions},
    accept::fds::FdBudget,
    accept::tcp_listener::TcpCompat,
    accept::unix_listener::Bound,
    config::settings::Settings,
    modules::{spawn_autostart, FailureLog, InstanceOptions, ModuleHost, Ping, RestartPolicy},
    services::control::ControlService,
    services::grpc_calls::{ForwarderService, SizedForwarder},
    services::router::Router,
    sessions::attach::AttachConfig,
    sessions::events::EventHub,
    sessions::lifetime::Lifetime,
    startup::ready::ReadyPipe,
};

/// Longest we wait for open calls and sessions to finish once exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the server until the lifetime task decides to exit.
pub async fn run(settings: Settings, mut ready: ReadyPipe) -> anyhow::Result<()> {
    let budget = open_file_budget();
    let bound = match Bound::acquire(&settings.places, settings.lock_wait).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            ready.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    let tcp = match settings.listen_tcp {
        Some(addr) => match TcpCompat::bind(addr).await {
            Ok(t) => Some(t),
            Err(e) => {
                ready.fail(&format!("{e:#}"));
                return Err(e);
            }
        },
        None => None,
    };
    let host = Arc::new(
        ModuleHost::new(
            settings.modules_dirs.clone(),
            settings.places.socket.clone(),
            InstanceOptions {
                max_message_size: settings.max_message_size,
                grace: settings.module_grace,
                idle_unload: settings.idle_unload,
                ping: Ping {
                    interval: settings.module_ping_interval,
                    timeout: settings.module_ping_timeout,
                },
                max_concurrent_calls: settings.max_calls_per_module,
                stderr_lines_per_second: settings.stderr_lines_per_second,
                failures: Arc::new(FailureLog::default()),
                module_configs: Arc::new(settings.module_configs.clone()),
            },
        )
        .context("cannot start the module spawner")?,
    );
    let lifetime = Lifetime::start(
        settings.linger,
        settings.idle_timeout,
        settings.max_sessions,
    );
    let connections = Arc::new(Connections::default());
    host.set_restart_policy(RestartPolicy::with_base(settings.restart_backoff));
    let hub: Arc<EventHub> = host.events();

    let router = Arc::new(Router {
        host: host.clone(),
        lifetime: lifetime.clone(),
        call_timeout: settings.call_timeout,
        max_calls_per_session: settings.max_calls_per_session,
        max_message_size: settings.max_message_size,
        stall_timeout: settings.stall_timeout,
    });
    let forwarder = Arc::new(ForwarderService {
        router: router.clone(),
    });
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
        connections: connections.clone(),
        tcp_address: tcp
            .as_ref()
            .map(|t| t.local.to_string())
            .unwrap_or_default(),
    };

    spawn_signal_handlers(lifetime.clone())?;
    let size = settings.max_message_size;
    let forwarder_server = || SizedForwarder::new(forwarder.clone(), size);
    let unix_routes = Routes::new(forwarder_server()).add_service(
        ControlServer::new(control)
            .max_decoding_message_size(size)
            .max_encoding_message_size(size),
    );
    // A little above the call limit, so callers over it get a clear error.
    let max_streams = settings.max_calls_per_session.saturating_add(32);
    let keepalive = settings.keepalive_interval.max(Duration::from_secs(10)) * 2;
    let unix_cap = budget.unix_connections(settings.max_connections);
    if unix_cap < settings.max_connections {
        tracing::warn!(
            "max_connections is {} but the open-file limit ({}) allows {unix_cap}",
            settings.max_connections,
            budget.limit
        );
    }
    let unix = serve(
        bound.incoming(),
        unix_routes,
        ServeOptions {
            transport: "unix",
            max_streams,
            keepalive,
            lean: Some(router.clone()),
            admission: Admission::new("unix", "max_connections", unix_cap),
            first_call_timeout: settings.first_call_timeout,
        },
        connections.clone(),
        lifetime.exit_watch(),
    );
    let tcp_address = tcp.as_ref().map(|t| t.local);
    let tcp = async {
        if let Some(tcp) = tcp {
            // The public protocol only: no sessions, control or shutdown.
            let routes = Routes::new(forwarder_server());
            let options = ServeOptions {
                transport: "tcp",
                max_streams,
                keepalive,
                lean: None,
                admission: Admission::new(
                    "tcp",
                    "max_tcp_connections",
                    settings.max_tcp_connections,
                ),
                first_call_timeout: settings.first_call_timeout,
            };
            serve(
                tcp.incoming(budget),
                routes,
                options,
                connections.clone(),
                lifetime.exit_watch(),
            )
            .await;
        }
    };
    let serve = futures::future::join(unix, tcp);
    if let Some(addr) = tcp_address {
        tracing::warn!(
            %addr,
            "compatibility TCP listener on: any local user can call modules through it"
        );
    }

    tracing::info!(
        pid = std::process::id(),
        socket = %bound.socket().display(),
        dirs = ?settings.modules_dirs,
        "norgopolis-server {} listening",
        norgopolis_common::version()
    );
    // Autostart runs while we serve (its modules may call back in); the
    // readiness report waits for it, briefly, so that a client that started
    // the server finds those modules up.
    spawn_autostart(host.clone(), settings.autostart.clone(), move || {
        ready.ready()
    });

    let mut exit = lifetime.exit_watch();
    tokio::pin!(serve);
    tokio::select! {
        _ = &mut serve => {}
        _ = exit.wait_for(Option::is_some) => {
            // Stop accepting at once; give open calls a bounded moment.
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut serve).await.is_err() {
                tracing::warn!("calls still open after {} s; exiting anyway", DRAIN_TIMEOUT.as_secs());
            }
        }
    }
    // Unlink the socket first so new clients start a fresh server instead of
    // knocking on a closing one, then stop the modules, and only then let go
    // of the lock (with `bound`): a successor waiting for it never runs a
    // module while ours still runs.
    bound.unlink();
    host.stop_all().await;
    drop(bound);
    tracing::info!("norgopolis-server exited cleanly");
    Ok(())
}

/// Raises the open-file limit as far as it goes and returns how it is
/// shared out; a limit that cannot be read is taken as the usual 1,024.
fn open_file_budget() -> FdBudget {
    let limit = crate::accept::fds::raise_open_file_limit().unwrap_or_else(|e| {
        tracing::warn!("cannot read the open-file limit: {e}");
        1024
    });
    FdBudget { limit }
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
