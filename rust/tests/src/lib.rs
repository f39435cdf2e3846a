//! Test harness: each [`Sandbox`] is a private temp dir with its own runtime
//! dir, socket, log and modules dir, so tests run real servers side by side.
//!
//! Everything here talks to the real binaries over the real socket with the
//! generated gRPC clients; nothing of the server is mocked.

use std::{
    io::{BufRead, BufReader},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use norgopolis_proto::{
    communication::{forwarder_client::ForwarderClient, Invocation, MessagePack},
    v1::{
        client_message, control_client::ControlClient, server_message, ClientMessage, Hello,
        ServerMessage, Welcome,
    },
    PROTOCOL_VERSION,
};
#[cfg(target_os = "linux")]
use std::os::fd::{FromRawFd, OwnedFd};
#[cfg(target_os = "linux")]
use tokio::io::unix::AsyncFd;
use tokio::{net::UnixStream, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Directory holding the workspace's built binaries (target/debug or release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("exe dir");
    // Integration tests live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The repository's root (where README.md, sdk/ and examples/ live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Neovim the Makefile installs (`.deps/nvim`), else `nvim` from PATH.
pub fn nvim_binary() -> PathBuf {
    let bundled = repo_root().join(".deps/nvim/bin/nvim");
    if bundled.exists() {
        bundled
    } else {
        PathBuf::from("nvim")
    }
}

/// Env var naming a folder of shipped binaries (e.g. `target/dist`) that
/// tests run instead of the debug build's where it holds one of that name;
/// test-only helpers (np-probe, np-flood, …) still come from [`bin_dir`].
/// `make test` runs the adversarial suites once more this way, because
/// optimised builds differ from debug ones (integer overflow, timing).
pub const SHIPPED_BINARIES_ENV: &str = "NORGOPOLIS_TEST_BINARIES";

/// Path of a workspace binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(SHIPPED_BINARIES_ENV).filter(|d| !d.is_empty()) {
        let shipped = PathBuf::from(dir).join(name);
        if shipped.exists() {
            return shipped;
        }
    }
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} missing: run `make build` (or cargo build --workspace) first",
        p.display()
    );
    p
}

/// A private place for one test's server.
pub struct Sandbox {
    /// Temp dir removed on drop.
    pub dir: tempfile::TempDir,
    /// Runtime dir (0700) holding the socket.
    pub runtime: PathBuf,
    /// The socket path.
    pub socket: PathBuf,
    /// Modules dir with `echo` linked in.
    pub modules: PathBuf,
    /// Server log when daemonized.
    pub log: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh sandbox with the echo module available.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("np-")
            .tempdir()
            .expect("tempdir");
        let runtime = dir.path().join("rt");
        norgopolis_common::places::ensure_private_dir(&runtime).expect("runtime dir");
        let modules = dir.path().join("modules");
        std::fs::create_dir(&modules).expect("modules dir");
        std::os::unix::fs::symlink(bin("echo"), modules.join("echo")).expect("link echo");
        Sandbox {
            socket: runtime.join("norgopolis.sock"),
            log: dir.path().join("server.log"),
            runtime,
            modules,
            dir,
        }
    }

    /// Environment for any norgopolis process of this sandbox.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("NORGOPOLIS_SOCKET", &self.socket)
            .env("NORGOPOLIS_MODULES_DIR", &self.modules)
            .env("NORGOPOLIS_LOG", &self.log)
            .env("NORGOPOLIS_CONFIG", self.dir.path().join("config.toml"))
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env("NORGOPOLIS_SERVER", bin("norgopolis-server"));
    }

    /// The server command with this sandbox's places and `extra` flags.
    pub fn server_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin("norgopolis-server"));
        self.env(&mut cmd);
        cmd.arg("--foreground").args(extra);
        cmd
    }

    /// Starts a foreground server and waits for its readiness line.
    pub fn start_server(&self, extra: &[&str]) -> ServerProc {
        ServerProc::start(self.server_command(extra))
    }

    /// Starts a server expected to fail; returns its readiness line.
    pub fn start_server_expect_error(&self, extra: &[&str]) -> String {
        let (mut child, line) = spawn_with_ready(self.server_command(extra)).expect("server start");
        let _ = child.wait();
        line
    }

    /// A gRPC channel to this sandbox's socket.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        connect(&self.socket).await
    }

    /// The server log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `cmd` with a readiness pipe on fd 3 and returns its first line.
pub fn spawn_with_ready(mut cmd: Command) -> anyhow::Result<(Child, String)> {
    let (read, write) = nix::unistd::pipe().context("pipe")?;
    let write_fd = write.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; fd 3 is then inherited (no CLOEXEC).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(write_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.arg("--ready-fd").arg("3").stdin(Stdio::null());
    let child = cmd.spawn().context("spawn")?;
    drop(write);
    let mut line = String::new();
    BufReader::new(std::fs::File::from(read)).read_line(&mut line)?;
    Ok((child, line.trim_end().to_string()))
}

/// A server process started by a test; killed on drop.
pub struct ServerProc {
    /// The process.
    pub child: Child,
    /// Its pid (from the readiness line).
    pub pid: u32,
}

impl ServerProc {
    /// Runs a server command and waits for its readiness line; panics
    /// with that line if it is not `ready <pid>`.
    pub fn start(cmd: Command) -> Self {
        let (child, line) = spawn_with_ready(cmd).expect("server start");
        let pid: u32 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("server did not become ready: {line:?}"));
        ServerProc { child, pid }
    }

    /// Waits up to `timeout` for the server to exit; true if it did.
    pub async fn exited_within(&mut self, timeout: Duration) -> bool {
        wait_pid_exit(self.pid, timeout).await && self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects a tonic channel to a Unix socket.
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    connect_endpoint(socket, Endpoint::from_static("http://norgopolis.test")).await
}

/// A channel whose HTTP/2 windows hold only about `bytes` of results: a
/// caller that stops reading is felt by the server almost at once.
pub async fn connect_narrow(socket: &Path, bytes: u32) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_static("http://norgopolis.test")
        .initial_stream_window_size(bytes)
        .initial_connection_window_size(bytes);
    connect_endpoint(socket, endpoint).await
}

async fn connect_endpoint(socket: &Path, endpoint: Endpoint) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    Ok(endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await?)
}

/// An attached session held by a test; dropping it detaches.
pub struct Session {
    /// The server's welcome.
    pub welcome: Welcome,
    /// Keeps the client's half of the Attach stream open.
    pub outbound: mpsc::Sender<ClientMessage>,
    /// Server messages after the Welcome.
    pub inbound: tonic::Streaming<ServerMessage>,
}

/// Attaches on `channel` as a test client.
pub async fn attach(channel: &Channel, keeps_server_alive: bool) -> Result<Session, tonic::Status> {
    attach_with_version(channel, keeps_server_alive, PROTOCOL_VERSION).await
}

/// Attaches claiming a given protocol version.
pub async fn attach_with_version(
    channel: &Channel,
    keeps_server_alive: bool,
    protocol_version: u32,
) -> Result<Session, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let hello = Hello {
        protocol_version,
        client_kind: "test".into(),
        client_name: "norgopolis-tests".into(),
        pid: std::process::id(),
        keeps_server_alive,
    };
    tx.send(ClientMessage {
        kind: Some(client_message::Kind::Hello(hello)),
    })
    .await
    .map_err(|_| tonic::Status::internal("send"))?;
    let mut inbound = ControlClient::new(channel.clone())
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(ServerMessage {
            kind: Some(server_message::Kind::Welcome(welcome)),
        }) => Ok(Session {
            welcome,
            outbound: tx,
            inbound,
        }),
        other => Err(tonic::Status::internal(format!(
            "expected Welcome, got {other:?}"
        ))),
    }
}

/// Encodes a value as MessagePack call arguments.
pub fn args(value: rmpv::Value) -> Option<MessagePack> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &value).expect("encode");
    Some(MessagePack { data: buf })
}

/// Decodes one result item.
pub fn value(item: &MessagePack) -> rmpv::Value {
    rmpv::decode::read_value(&mut item.data.as_slice()).expect("decode")
}

/// Starts a call and returns its result stream.
pub async fn call(
    channel: &Channel,
    module: &str,
    function: &str,
    arg: rmpv::Value,
) -> Result<tonic::Streaming<MessagePack>, tonic::Status> {
    Ok(ForwarderClient::new(channel.clone())
        .forward(Invocation {
            module: module.into(),
            function_name: function.into(),
            args: args(arg),
        })
        .await?
        .into_inner())
}

/// Runs a call to completion: its items, or the first error.
pub async fn call_all(
    channel: &Channel,
    module: &str,
    function: &str,
    arg: rmpv::Value,
) -> Result<Vec<rmpv::Value>, tonic::Status> {
    let mut stream = call(channel, module, function, arg).await?;
    let mut out = vec![];
    while let Some(item) = stream.next().await {
        out.push(value(&item?));
    }
    Ok(out)
}

/// Whether a process exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits for any process (not only our children) to exit, by pidfd: an
/// event, not a polling loop. True if it exited within `timeout`.
#[cfg(target_os = "linux")]
pub async fn wait_pid_exit(pid: u32, timeout: Duration) -> bool {
    // SAFETY: plain syscall; returns a new fd we own or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return true; // No such process: it is gone already.
    }
    // SAFETY: the fd was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: we own the pidfd and keep it registered only while we wait.
    let Ok(async_fd) = (unsafe { AsyncFd::register(fd) }) else {
        return !pid_alive(pid);
    };
    let exited = tokio::time::timeout(timeout, async_fd.readable())
        .await
        .is_ok();
    // A zombie is exited for our purposes; the pidfd turns readable for it.
    exited || !pid_alive(pid)
}

/// Waits for any process to exit (no pidfd outside Linux, where the suite
/// does not run: this only keeps the crate compiling, by polling).
#[cfg(not(target_os = "linux"))]
pub async fn wait_pid_exit(pid: u32, timeout: Duration) -> bool {
    let gone = || unsafe { libc::kill(pid as libc::pid_t, 0) } == -1;
    tokio::time::timeout(timeout, async {
        while !gone() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

/// Pids of processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(str::to_owned))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(ppid)
        })
        .collect()
}

/// Reads a spawned helper's stdout until a line starting with `prefix`.
pub fn read_line_starting(child: &mut Child, prefix: &str) -> anyhow::Result<String> {
    let stdout = child.stdout.as_mut().ok_or_else(|| anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("EOF before a line starting with {prefix:?}");
        }
        if line.starts_with(prefix) {
            return Ok(line.trim_end().to_string());
        }
    }
}

// ---- Additions for the fault, abuse and compatibility suites. ----

impl Sandbox {
    /// The config file every server of this sandbox reads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes this sandbox's `config.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write config.toml");
    }

    /// Adds module `name`: a script that runs `exec` with `args` (same pid,
    /// through `exec`).
    pub fn add_exec_module(&self, name: &str, exec: &Path, args: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        let quoted: Vec<String> = std::iter::once(exec.display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let path = self.modules.join(name);
        std::fs::write(&path, format!("#!/bin/sh\nexec {}\n", quoted.join(" ")))
            .expect("write module script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod module script");
    }

    /// Adds module `name` running the `np-faulty` fixture with `args`.
    pub fn add_faulty_module(&self, name: &str, args: &[&str]) {
        self.add_exec_module(name, &bin("np-faulty"), args);
    }

    /// Starts a foreground server whose log (stderr) goes to `server.log` in
    /// the sandbox, so a test can read it.
    pub fn start_server_logged(&self, extra: &[&str]) -> ServerProc {
        let log = std::fs::File::create(&self.log).expect("create log");
        let mut cmd = self.server_command(extra);
        cmd.stderr(log);
        ServerProc::start(cmd)
    }
}

/// The server's `Status`.
pub async fn status(channel: &Channel) -> norgopolis_proto::v1::StatusReply {
    ControlClient::new(channel.clone())
        .status(norgopolis_proto::v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// Polls `check` until it returns `Some`, at most `timeout`; panics with
/// `what` otherwise. For conditions no event announces (counters settling
/// after callers left).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The status of one module, if the server knows it.
pub fn module_status<'a>(
    status: &'a norgopolis_proto::v1::StatusReply,
    name: &str,
) -> Option<&'a norgopolis_proto::v1::ModuleStatus> {
    status.modules.iter().find(|m| m.name == name)
}

/// A gRPC channel on a plain HTTP/2 connection, without tonic's client
/// transport, which enforces `grpc-timeout` itself: tests that must see
/// the server's own deadline handling use this one.
#[derive(Clone)]
pub struct RawChannel(hyper::client::conn::http2::SendRequest<tonic::body::BoxBody>);

impl tower::Service<http::Request<tonic::body::BoxBody>> for RawChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::BoxBody>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Opens a [`RawChannel`] to a Unix socket.
pub async fn raw_channel(socket: &Path) -> anyhow::Result<RawChannel> {
    let stream = UnixStream::connect(socket).await?;
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    Ok(RawChannel(send))
}

/// A Forwarder client on a [`RawChannel`].
pub fn raw_forwarder(channel: RawChannel) -> ForwarderClient<RawChannel> {
    ForwarderClient::with_origin(channel, http::Uri::from_static("http://norgopolis.test"))
}

impl Sandbox {
    /// Adds module folder `name` whose `module.toml` declares
    /// `transport = "lean"` and runs `exec` (linked into the folder) with
    /// `args`.
    pub fn add_lean_module(&self, name: &str, exec: &Path, args: &[&str]) {
        let folder = self.modules.join(name);
        std::fs::create_dir_all(&folder).expect("module folder");
        std::os::unix::fs::symlink(exec, folder.join("run")).expect("link module executable");
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        std::fs::write(
            folder.join("module.toml"),
            format!(
                "exec = \"run\"\nargs = [{}]\ntransport = \"lean\"\n",
                args.join(", ")
            ),
        )
        .expect("write module.toml");
    }

    /// Adds module folder `notes`: the bundled notes module on the lean
    /// transport with `restart = "on-failure"`, started through a script
    /// that hands it `config_json` in `NORGOPOLIS_MODULE_CONFIG`, as the
    /// server hands a module its `[modules.notes]` table.
    pub fn add_notes_module(&self, config_json: &str) {
        use std::os::unix::fs::PermissionsExt;
        let folder = self.modules.join("notes");
        std::fs::create_dir_all(&folder).expect("module folder");
        std::fs::write(
            folder.join("module.toml"),
            "exec = \"run.sh\"\ntransport = \"lean\"\nrestart = \"on-failure\"\n",
        )
        .expect("write module.toml");
        let quoted = config_json.replace('\'', "'\\''");
        let script = folder.join("run.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexport NORGOPOLIS_MODULE_CONFIG='{quoted}'\nexec '{}' \"$@\"\n",
                bin("notes").display()
            ),
        )
        .expect("write run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod run.sh");
    }
}
