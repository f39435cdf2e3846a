//! How far any server could go on the public path: the public client and
//! the public module measured without a router.
//!
//! A routed call cannot cost less than its two ends. So in each repetition
//! of the side-by-side run we measure them alone:
//! - the client (`compat-bench`) against a stub `Forwarder` that answers
//!   each call at once with its argument, in a process of its own;
//! - the module (`compat-module`) called directly over its pipes
//!   ([`DirectModule`]), one HTTP/2 connection as a router has.
//!
//! From those, the best figure a server that cost nothing could give:
//! - latency: the client alone plus the module alone, less the CPU the stub
//!   and the direct caller spent per call (that work is what a router
//!   does; taking all of it away, even the part off the critical path,
//!   errs towards a better bound);
//! - throughput, with every core busy: cores ÷ (client CPU + module CPU per
//!   call), each read under the same concurrency.

use std::{
    io::BufRead,
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{anyhow, Context};
use norgopolis_proto::communication::{
    forwarder_server::{Forwarder, ForwarderServer},
    Invocation, InvocationOverride, MessagePack, OverrideStatus,
};
use tonic::{Request, Response, Status};

use crate::{
    cpu::{per_call, Usage},
    direct::DirectModule,
    series::Plan,
};

/// The best figures any server could give in one repetition, in the units
/// of the side-by-side rows.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// p50 of a 64 B echo, µs.
    pub small_p50_us: f64,
    /// p50 of a 64 KiB echo, µs.
    pub large_p50_us: f64,
    /// Calls per second of `clients` concurrent 64 B echo callers.
    pub many_per_s: f64,
}

/// The ends' own figures behind a [`Reach`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ends {
    /// The client against the stub: p50 64 B, p50 64 KiB (µs).
    pub client_p50_us: [f64; 2],
    /// The stub's CPU per call, 64 B and 64 KiB (µs).
    pub stub_cpu_us: [f64; 2],
    /// The module called directly: p50 64 B, p50 64 KiB (µs).
    pub module_p50_us: [f64; 2],
    /// The direct caller's CPU per call, 64 B and 64 KiB (µs).
    pub caller_cpu_us: [f64; 2],
    /// CPU per call under concurrency (µs): the clients, the module.
    pub many_cpu_us: [f64; 2],
}

impl Ends {
    /// The best a server that costs nothing could do, on `cores` cores.
    pub fn reach(&self, cores: usize) -> Reach {
        let alone = |i: usize| {
            (self.client_p50_us[i] - self.stub_cpu_us[i]).max(0.0)
                + (self.module_p50_us[i] - self.caller_cpu_us[i]).max(0.0)
        };
        let per_call = self.many_cpu_us[0] + self.many_cpu_us[1];
        Reach {
            small_p50_us: alone(0),
            large_p50_us: alone(1),
            many_per_s: cores as f64 * 1e6 / per_call.max(f64::MIN_POSITIVE),
        }
    }
}

/// The stub server: the bench binary's hidden `stub-forwarder` command.
pub struct StubServer {
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl StubServer {
    /// Starts `bench_exe stub-forwarder` and reads its port.
    pub fn start(bench_exe: &Path) -> anyhow::Result<StubServer> {
        let mut child = Command::new(bench_exe)
            .arg("stub-forwarder")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the stub Forwarder")?;
        let mut line = String::new();
        let out = child.stdout.take().context("stub stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .map_err(|_| anyhow!("the stub Forwarder printed {line:?}, not its port"))?;
        Ok(StubServer { child, port })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        // Closing stdin is its cue to leave; killed in case it lingers.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers every `Forward` at once with its argument as the one item.
struct Stub;

type OneItem = futures::stream::Once<futures::future::Ready<Result<MessagePack, Status>>>;

#[tonic::async_trait]
impl Forwarder for Stub {
    type ForwardStream = OneItem;

    async fn forward(&self, request: Request<Invocation>) -> Result<Response<OneItem>, Status> {
        let data = request
            .into_inner()
            .args
            .map(|a| a.data)
            .unwrap_or_default();
        let item = futures::future::ready(Ok(MessagePack { data }));
        Ok(Response::new(futures::stream::once(item)))
    }

    async fn r#override(
        &self,
        _: Request<InvocationOverride>,
    ) -> Result<Response<OverrideStatus>, Status> {
        Err(Status::unimplemented("the stub answers Forward only"))
    }
}

/// `stub-forwarder`: serves [`Stub`] on a free loopback port (printed on
/// stdout) on one thread, as both servers run, until stdin closes.
pub fn stub_forwarder() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| anyhow!("stub listener: {e}"))?;
        let stdin_closed = async {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        };
        tonic::transport::Server::builder()
            .add_service(ForwarderServer::new(Stub))
            .serve_with_incoming_shutdown(incoming, stdin_closed)
            .await?;
        anyhow::Ok(())
    })
}

/// The module called directly: p50 and the caller's CPU per call for
/// `payload`, sequentially.
pub async fn module_alone(
    module: &DirectModule,
    payload: &[u8],
    calls: usize,
) -> anyhow::Result<(f64, f64)> {
    let me = std::process::id();
    let plan = Plan {
        warmup: calls / 10,
        reps: 1,
        calls,
    };
    let before = Usage::of(me);
    let latency = module.echo_series(payload, plan).await?;
    // echo_series checks one call first, then the warm-up and timed calls.
    let made = (plan.warmup + plan.calls + 1) as u64;
    let caller = Usage::of(me).cpu_us_per_call_since(&before, made);
    Ok((latency.p50_us, caller))
}

/// `clients` concurrent callers of the module directly, `calls` each on
/// the one connection: the module's CPU per call.
pub async fn module_cpu_under_load(
    module: &DirectModule,
    payload: &[u8],
    clients: usize,
    calls: u64,
) -> anyhow::Result<f64> {
    let made = clients * calls as usize;
    let cost = per_call(&[("module", module.pid())], made, || async {
        let callers = (0..clients).map(|_| async {
            for _ in 0..calls {
                module.call("echo", payload).await?;
            }
            anyhow::Ok(())
        });
        futures::future::try_join_all(callers).await?;
        Ok(())
    })
    .await?;
    Ok(cost[0].cpu_us)
}
