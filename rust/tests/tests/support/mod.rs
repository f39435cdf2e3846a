//! Helpers shared by the module-lifecycle tests: module folders written on
//! the fly (shell scripts that exec the real echo module), an attached
//! client, and waiting for server events.

#![allow(dead_code)] // Each test file uses its own subset.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use norgopolis_client::{Client, ConnectOptions, Event, SessionEvent, Transport};
use norgopolis_tests::{bin, spawn_with_ready, Sandbox, ServerProc};
use rmpv::Value;
use tokio::sync::broadcast;

/// Upper bound on any single wait, so a broken test fails instead of
/// hanging; never a timing assertion.
pub const WAIT: Duration = Duration::from_secs(30);

/// Writes module folder `<dir>/<name>/` with `module.toml` (`exec =
/// "run.sh"` plus `manifest`) and `run.sh`, a shell script that runs
/// `prelude` and then execs the echo module.
pub fn script_module(dir: &Path, name: &str, manifest: &str, prelude: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("module folder");
    std::fs::write(
        folder.join("module.toml"),
        format!("exec = \"run.sh\"\n{manifest}"),
    )
    .expect("write module.toml");
    write_script(
        &folder.join("run.sh"),
        &format!("{prelude}\nexec '{}' \"$@\"\n", bin("echo").display()),
    );
    folder
}

/// Writes an executable `#!/bin/sh` script (atomically: a running copy of
/// the old file is never modified in place).
pub fn write_script(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename script");
}

/// A shell line appending this module's name to the sandbox's start log.
pub fn log_start(sb: &Sandbox) -> String {
    format!(
        "echo \"$NORGOPOLIS_MODULE\" >> '{}'",
        starts_file(sb).display()
    )
}

fn starts_file(sb: &Sandbox) -> PathBuf {
    sb.dir.path().join("starts.log")
}

/// Module names in the order their processes started (see [`log_start`]).
pub fn starts(sb: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(starts_file(sb))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes the sandbox's config file (the harness points
/// `NORGOPOLIS_CONFIG` at it).
pub fn write_config(sb: &Sandbox, text: &str) {
    std::fs::write(sb.dir.path().join("config.toml"), text).expect("write config");
}

/// A client attached to the sandbox's running server (never spawning one).
pub async fn client(sb: &Sandbox) -> Client {
    let opts = ConnectOptions::new("test")
        .client_name("lifecycle-tests")
        .socket(&sb.socket)
        .spawn(false);
    Client::connect(opts).await.expect("attach to the server")
}

/// A client attached to the sandbox's running server whose calls go over
/// `transport`.
pub async fn client_with(sb: &Sandbox, transport: Transport) -> Client {
    let opts = ConnectOptions::new("test")
        .socket(&sb.socket)
        .spawn(false)
        .transport(transport);
    Client::connect(opts).await.expect("attach to the server")
}

/// A client's event feed.
pub struct Events(pub broadcast::Receiver<SessionEvent>);

impl Events {
    /// Subscribes to `client`'s events from now on.
    pub fn of(client: &Client) -> Self {
        Events(client.subscribe())
    }

    /// The next event (not a goodbye); panics if the session ends first.
    pub async fn next(&mut self) -> Event {
        loop {
            match tokio::time::timeout(WAIT, self.0.recv()).await {
                Ok(Ok(SessionEvent::Event(e))) => return e,
                Ok(Ok(SessionEvent::Goodbye(_))) => continue,
                Ok(Ok(SessionEvent::Closed)) => panic!("session closed while waiting for an event"),
                Ok(Err(e)) => panic!("event feed failed: {e}"),
                Err(_) => panic!("no event within {WAIT:?}"),
            }
        }
    }

    /// The next server event on `topic` about module `name` (skipping
    /// others); returns its payload.
    pub async fn wait(&mut self, topic: &str, name: &str) -> Value {
        loop {
            let e = self.next().await;
            if e.module == "norgopolis" && e.topic == topic {
                let p = payload(&e);
                if field(&p, "name").as_str() == Some(name) {
                    return p;
                }
            }
        }
    }

    /// The next `count` server events, as `(topic, payload)`.
    pub async fn server_events(&mut self, count: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < count {
            let e = self.next().await;
            if e.module == "norgopolis" {
                out.push((e.topic.clone(), payload(&e)));
            }
        }
        out
    }
}

/// An event's MessagePack payload.
pub fn payload(e: &Event) -> Value {
    rmpv::decode::read_value(&mut e.payload.as_slice()).expect("payload is MessagePack")
}

/// `map[key]`, nil when absent.
pub fn field<'a>(map: &'a Value, key: &str) -> &'a Value {
    const NIL: &Value = &Value::Nil;
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map_or(NIL, |(_, v)| v)
}

/// A `{key: value, …}` argument map.
pub fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// Starts a foreground server whose log goes to a file (instead of the
/// test's stderr); returns it and the log path.
pub fn start_server_logged(sb: &Sandbox, flags: &[&str]) -> (ServerProc, PathBuf) {
    let log = sb.dir.path().join("foreground.log");
    let mut cmd = sb.server_command(flags);
    cmd.stderr(std::fs::File::create(&log).expect("create log"));
    let (child, line) = spawn_with_ready(cmd).expect("start server");
    let pid = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("server did not become ready: {line:?}"));
    (ServerProc { child, pid }, log)
}

/// Module names in the order the server started them, from its log
/// ("module loaded module=NAME" lines, written as each process is spawned).
pub fn load_order(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("module loaded"))
        .filter_map(|l| {
            let rest = &l[l.find("module=")? + "module=".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect()
}

// ---- Stalled and vanishing callers (stalls, soak). ----

/// CLI callers, killed (stopped or not) when dropped.
pub struct Callers(pub Vec<std::process::Child>);

impl Drop for Callers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `n` CLI processes calling `echo count <count>`, half of them
/// over gRPC, their output thrown away.
pub fn cli_callers(sb: &Sandbox, n: usize, count: u64) -> Callers {
    let callers = (0..n)
        .map(|i| {
            let mut cmd = std::process::Command::new(bin("norgopolis"));
            sb.env(&mut cmd);
            if i % 2 == 1 {
                cmd.env("NORGOPOLIS_CLIENT_TRANSPORT", "grpc");
            }
            cmd.args(["--no-spawn", "call", "echo", "count", &count.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the CLI")
        })
        .collect();
    Callers(callers)
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; the pid is a child we have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Opens a raw lean connection and exchanges hellos.
pub async fn raw_lean(
    socket: &Path,
) -> (
    norgopolis_proto::lean_frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut write, &norgopolis_proto::lean_frame::hello_bytes())
        .await
        .unwrap();
    let mut frames = norgopolis_proto::lean_frame::FrameReader::new(read, 1 << 20);
    let hello = frames
        .read_prefix(norgopolis_proto::lean_frame::HEADER_LEN + 4)
        .await
        .unwrap();
    assert_eq!(
        hello,
        norgopolis_proto::lean_frame::hello_bytes(),
        "the server greets back"
    );
    (frames, write)
}

pub async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    frame: norgopolis_proto::lean_frame::Frame,
) {
    let mut buf = Vec::new();
    norgopolis_proto::lean_frame::encode(&frame, &mut buf).unwrap();
    tokio::io::AsyncWriteExt::write_all(write, &buf)
        .await
        .unwrap();
}

/// Runs the `norgopolis` CLI with the sandbox's environment.
pub fn run_cli(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    cmd.args(args).stdin(std::process::Stdio::null());
    cmd.output().expect("run norgopolis")
}

/// A process's stdout and stderr, for messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
