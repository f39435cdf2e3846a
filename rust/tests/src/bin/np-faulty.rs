//! `np-faulty`: a module that misbehaves on request, for the fault suite.
//! It serves `module_communication.Invoker` on its stdio with plain tonic
//! (no SDK: the SDK protects stdout, and we want to break it).
//!
//! Flags (before any call):
//! - `--crash-at-start CODE`: exit with CODE at once (a crash loop).
//! - `--garbage-at-start`: print a line to stdout before speaking HTTP/2.
//! - `--ignore-sigterm`: ignore SIGTERM and never exit on stdin EOF.
//! - `--stay-after-eof`: keep running after stdin closes (like modules on
//!   the public `norgopolis-module` crate).
//!
//! | function    | result |
//! |-------------|--------|
//! | `echo`      | its argument |
//! | `pid`       | the process id |
//! | `garbage`   | writes bytes that are not HTTP/2 straight to stdout, then answers nil |
//! | `hang`      | stops the whole process (SIGSTOP): nothing answers any more |
//! | `hold`      | a stream that never yields; counts its cancellations |
//! | `cancelled` | how many `hold` streams were cancelled so far |
//! | `flood`     | writes `n` lines to stderr, then answers `n` |

use std::{
    io::Write,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use futures::Stream;
use norgopolis_proto::module_communication::{
    invoker_server::{Invoker, InvokerServer},
    Invocation, MessagePack,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{transport::server::Connected, Request, Response, Status};

static CANCELLED: AtomicU64 = AtomicU64::new(0);
/// Told when stdin reaches EOF (the router closed it).
static STDIN_EOF: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn pack(value: rmpv::Value) -> MessagePack {
    let mut data = Vec::new();
    rmpv::encode::write_value(&mut data, &value).expect("encode");
    MessagePack { data }
}

fn unpack(args: Option<MessagePack>) -> rmpv::Value {
    args.and_then(|a| rmpv::decode::read_value(&mut a.data.as_slice()).ok())
        .unwrap_or(rmpv::Value::Nil)
}

type Items = Pin<Box<dyn Stream<Item = Result<MessagePack, Status>> + Send>>;

fn one(value: rmpv::Value) -> Items {
    Box::pin(futures::stream::once(async move { Ok(pack(value)) }))
}

/// A stream that never yields and counts being dropped (cancelled).
struct Hold;

impl Stream for Hold {
    type Item = Result<MessagePack, Status>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Pending
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        CANCELLED.fetch_add(1, Ordering::SeqCst);
    }
}

struct Faulty;

#[tonic::async_trait]
impl Invoker for Faulty {
    type InvokeStream = Items;

    async fn invoke(&self, request: Request<Invocation>) -> Result<Response<Items>, Status> {
        let inv = request.into_inner();
        let args = unpack(inv.args);
        let items = match inv.function_name.as_str() {
            "echo" => one(args),
            "pid" => one(std::process::id().into()),
            "garbage" => {
                let junk = b"this is not http/2, just a stray println\n";
                // SAFETY: a plain write to our own stdout.
                unsafe { libc::write(1, junk.as_ptr().cast(), junk.len()) };
                one(rmpv::Value::Nil)
            }
            "hang" => {
                // SAFETY: stops this process; only SIGCONT or SIGKILL end that.
                unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
                // The stop reaches every thread a moment later; never answer.
                std::future::pending::<()>().await;
                one(rmpv::Value::Nil)
            }
            "hold" => Box::pin(Hold),
            "cancelled" => one(CANCELLED.load(Ordering::SeqCst).into()),
            "flood" => {
                let n = args.as_u64().unwrap_or(0);
                let mut err = std::io::stderr().lock();
                for i in 0..n {
                    let _ = writeln!(err, "flood line {i}");
                }
                one(n.into())
            }
            other => return Err(Status::not_found(format!("np-faulty has no {other:?}"))),
        };
        Ok(Response::new(items))
    }
}

/// stdin and stdout as one connection.
struct Stdio {
    stdin: tokio::io::Stdin,
    stdout: tokio::io::Stdout,
}

impl Connected for Stdio {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Stdio {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stdin).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            STDIN_EOF.notify_one();
        }
        polled
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdout).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_shutdown(cx)
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| argv.iter().any(|a| a == flag);
    if let Some(i) = argv.iter().position(|a| a == "--crash-at-start") {
        let code = argv.get(i + 1).and_then(|c| c.parse().ok()).unwrap_or(7);
        eprintln!("np-faulty: crashing at start with {code}");
        std::process::exit(code);
    }
    let stay = has("--stay-after-eof") || has("--ignore-sigterm");
    if has("--ignore-sigterm") {
        // SAFETY: setting a signal disposition.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if has("--garbage-at-start") {
        println!("hello from a stray println");
    }
    let io = Stdio {
        stdin: tokio::io::stdin(),
        stdout: tokio::io::stdout(),
    };
    // One connection, and an incoming stream that never ends (tonic stops
    // serving when it does).
    let incoming = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(io)]),
        futures::stream::pending(),
    );
    let served = tonic::transport::Server::builder()
        .add_service(InvokerServer::new(Faulty))
        .serve_with_incoming(incoming);
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                eprintln!("np-faulty: {e}");
            }
        }
        _ = STDIN_EOF.notified() => {}
    }
    if stay {
        std::future::pending::<()>().await;
    }
}
