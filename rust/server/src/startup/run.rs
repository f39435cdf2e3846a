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
    sessions::lifetime::Lifetime,
    startup::ready::ReadyPipe,
};

/// Longest we wait for open calls and sessions to finish once exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the server until the lifetime task decides to exit.
pub async fn run(settings: Settings, mut ready: ReadyPipe) -> anyhow::Result<()> {
    let budget = open_file_budget();
    let (bound, tcp) = match bind(&settings).await {
        Ok(listeners) => listeners,
        Err(e) => {
            ready.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    let host = module_host(&settings)?;
    let lifetime = Lifetime::start(
        settings.linger,
        settings.idle_timeout,
        settings.max_sessions,
    );
    let connections = Arc::new(Connections::default());
    let router = Arc::new(Router {
        host: host.clone(),
        lifetime: lifetime.clone(),
        call_timeout: settings.call_timeout,
        max_calls_per_session: settings.max_calls_per_session,
        max_message_size: settings.max_message_size,
        stall_timeout: settings.stall_timeout,
    });
    let control = ControlService {
        host: host.clone(),
        lifetime: lifetime.clone(),
        hub: host.events(),
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
    let serving = Serving {
        settings: &settings,
        router,
        connections,
        lifetime: &lifetime,
    };
    let tcp_address = tcp.as_ref().map(|t| t.local);
    let unix_cap = unix_connections(&settings, &budget);
    let serve = serving.serve(&bound, control, tcp, budget, unix_cap);
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
    until_exit(serve, &lifetime).await;
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

/// Takes the socket (and its lock) and binds the TCP listener if enabled.
async fn bind(settings: &Settings) -> anyhow::Result<(Arc<Bound>, Option<TcpCompat>)> {
    let bound = Arc::new(Bound::acquire(&settings.places, settings.lock_wait).await?);
    let tcp = match settings.listen_tcp {
        Some(addr) => Some(TcpCompat::bind(addr).await?),
        None => None,
    };
    Ok((bound, tcp))
}

/// The module host, set up as the settings say.
fn module_host(settings: &Settings) -> anyhow::Result<Arc<ModuleHost>> {
    let host = ModuleHost::new(
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
    .context("cannot start the module spawner")?;
    host.set_restart_policy(RestartPolicy::with_base(settings.restart_backoff));
    Ok(Arc::new(host))
}

/// What both listeners are served with.
struct Serving<'a> {
    settings: &'a Settings,
    router: Arc<Router>,
    connections: Arc<Connections>,
    lifetime: &'a Lifetime,
}

impl Serving<'_> {
    /// Serves the socket (gRPC with Control, and lean; at most `unix_cap`
    /// connections) and the TCP listener if bound (the public protocol
    /// only), until the exit is decided.
    async fn serve(
        &self,
        bound: &Arc<Bound>,
        control: ControlService,
        tcp: Option<TcpCompat>,
        budget: FdBudget,
        unix_cap: u32,
    ) {
        let size = self.settings.max_message_size;
        let unix_routes = Routes::new(self.forwarder()).add_service(
            ControlServer::new(control)
                .max_decoding_message_size(size)
                .max_encoding_message_size(size),
        );
        let unix = serve(
            bound.incoming(),
            unix_routes,
            self.options(
                "unix",
                Some(self.router.clone()),
                Admission::new("unix", "max_connections", unix_cap),
            ),
            self.connections.clone(),
            self.lifetime.exit_watch(),
        );
        let tcp = async {
            let Some(tcp) = tcp else { return };
            // The public protocol only: no sessions, control or shutdown.
            let admission = Admission::new(
                "tcp",
                "max_tcp_connections",
                self.settings.max_tcp_connections,
            );
            serve(
                tcp.incoming(budget),
                Routes::new(self.forwarder()),
                self.options("tcp", None, admission),
                self.connections.clone(),
                self.lifetime.exit_watch(),
            )
            .await;
        };
        futures::future::join(unix, tcp).await;
    }

    /// `communication.Forwarder`, bounded by the message size.
    fn forwarder(&self) -> SizedForwarder {
        let forwarder = Arc::new(ForwarderService {
            router: self.router.clone(),
        });
        SizedForwarder::new(forwarder, self.settings.max_message_size)
    }

    /// How one listener's connections are served.
    fn options(
        &self,
        transport: &'static str,
        lean: Option<Arc<Router>>,
        admission: Arc<Admission>,
    ) -> ServeOptions<Arc<Router>> {
        ServeOptions {
            transport,
            // A little above the call limit, so callers over it get a clear
            // error.
            max_streams: self.settings.max_calls_per_session.saturating_add(32),
            keepalive: self
                .settings
                .keepalive_interval
                .max(Duration::from_secs(10))
                * 2,
            lean,
            admission,
            first_call_timeout: self.settings.first_call_timeout,
        }
    }
}

/// Serves until the exit is decided, then gives open calls a bounded
/// moment to finish.
async fn until_exit(serve: impl std::future::Future<Output = ()>, lifetime: &Lifetime) {
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
}

/// How many connections the socket may keep: `max_connections`, unless
/// the open-file limit allows fewer (then said in the log).
fn unix_connections(settings: &Settings, budget: &FdBudget) -> u32 {
    let unix_cap = budget.unix_connections(settings.max_connections);
    if unix_cap < settings.max_connections {
        tracing::warn!(
            "max_connections is {} but the open-file limit ({}) allows {unix_cap}",
            settings.max_connections,
            budget.limit
        );
    }
    unix_cap
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
