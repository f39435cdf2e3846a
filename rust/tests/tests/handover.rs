//! The upgrade handover (issue 13): a client of a newer norgopolis that
//! finds an older server has it retire and starts its own; clients of the
//! old server carry on on the new one without losing or repeating a call.
//!
//! "Older" and "newer" are one debug build run with and without
//! `NORGOPOLIS_VERSION_OVERRIDE` (see `norgopolis_common::version`). The
//! sessions are separate processes: this test binary run again as a
//! driver (the ignored `role` test below, steered by environment
//! variables), so each has its own version, as a real older plugin would.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use norgopolis_client::{Client, ConnectOptions};
use norgopolis_common::version::VERSION_OVERRIDE_ENV;
use norgopolis_tests::{bin, eventually, wait_pid_exit, Sandbox};

/// Upper bound on any single wait; never a timing assertion.
const WAIT: Duration = Duration::from_secs(60);
/// The version the "old" processes speak.
const OLD: &str = "0.0.1";

const ROLE_ENV: &str = "NP_HANDOVER_ROLE";
const NAME_ENV: &str = "NP_HANDOVER_NAME";
const STOP_ENV: &str = "NP_HANDOVER_STOP";

/// Whether this build honours the version override (debug builds only);
/// under `PROFILE=release` these tests have nothing to run against.
fn overrides_honoured() -> bool {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: {VERSION_OVERRIDE_ENV} is honoured by debug builds only");
    }
    cfg!(debug_assertions)
}

/// Module `counter`: a Python module (lean, on the bundled SDK) whose
/// `echo` logs every call it runs (`run ID PID`), and which logs `overlap`
/// if it starts while another copy of itself still runs (an exclusive
/// lock held for the process's life). It takes a second to exit once its
/// server closes its stdin (within `module_grace`), so that a successor
/// that started before its predecessor's modules were gone would show.
fn add_counter_module(sb: &Sandbox) -> PathBuf {
    let folder = sb.modules.join("counter");
    std::fs::create_dir(&folder).expect("module folder");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python/norgopolis_module.py");
    std::fs::copy(sdk, folder.join("norgopolis_module.py")).expect("copy the Python SDK");
    std::fs::write(
        folder.join("module.toml"),
        "exec = \"main.py\"\ntransport = \"lean\"\n",
    )
    .expect("module.toml");
    let log = sb.dir.path().join("counter.log");
    let lock = sb.dir.path().join("counter.lock");
    let main = folder.join("main.py");
    std::fs::write(
        &main,
        format!(
            r#"#!/usr/bin/env python3
import fcntl, os, time
from norgopolis_module import Module

LOG = {log:?}

def note(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")

held = open({lock:?}, "w")
try:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    note("overlap %d" % os.getpid())
note("start %d" % os.getpid())

m = Module()

@m.function("echo")
def echo(args):
    note("run %s %d" % (args, os.getpid()))
    return args

# The SDK ends with os._exit once stdin closes: a second more first.
real_exit = os._exit
def slow_exit(code):
    time.sleep(1)
    real_exit(code)
os._exit = slow_exit
m.run()
"#
        ),
    )
    .expect("main.py");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    log
}

/// The counter module's log, as lines.
fn counter_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn runs(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| l.strip_prefix("run "))
        .map(|rest| rest.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// A process of this test binary in one of the roles of [`role`], and what
/// it printed (read as it goes, so it never waits on a full pipe).
struct Role {
    child: Child,
    out: std::thread::JoinHandle<String>,
}

/// This test binary in one of the roles of [`role`], with the sandbox's
/// environment and, if `version` is given, that version. Drivers named
/// `…grpc` call over gRPC, the others over the lean transport.
fn start_role(sb: &Sandbox, role: &str, name: &str, version: Option<&str>) -> Role {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    sb.env(&mut cmd);
    cmd.args([
        "--exact",
        "role",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .env(NAME_ENV, name)
    .env(STOP_ENV, sb.dir.path().join("stop"))
    .env_remove(VERSION_OVERRIDE_ENV)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    if let Some(v) = version {
        cmd.env(VERSION_OVERRIDE_ENV, v);
    }
    let transport = if name.ends_with("grpc") {
        "grpc"
    } else {
        "lean"
    };
    cmd.env(norgopolis_client::TRANSPORT_ENV, transport);
    let mut child = cmd.spawn().expect("start a role");
    let mut stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    Role { child, out }
}

/// Waits for a role process and returns its stdout lines of ours.
async fn finish(role: Role) -> Vec<String> {
    let Role { mut child, out } = role;
    let read = tokio::task::spawn_blocking(move || out.join().expect("reader"));
    let out = tokio::time::timeout(WAIT, read)
        .await
        .expect("role finished in time")
        .expect("read stdout");
    let status = child.wait().expect("wait");
    // libtest writes "test role ... " before our first line.
    let lines: Vec<String> = out
        .lines()
        .filter_map(|l| Some(l[l.find("np: ")? + "np: ".len()..].to_owned()))
        .collect();
    assert!(
        status.success(),
        "role failed ({status}): {lines:#?}\n{out}"
    );
    lines
}

/// Not a test of its own: what the processes of the tests above run (and
/// nothing when run without [`ROLE_ENV`]).
///
/// - `driver`: calls `counter.echo` with `NAME-0`, `NAME-1`, … until the
///   stop file exists, printing `np: got ID` per reply; any error fails it.
/// - `taker`: connects (doing the handover if the server is older), prints
///   `np: server PID VERSION` and calls once.
#[test]
#[ignore = "run by the handover tests as a separate process"]
fn role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var(NAME_ENV).expect("name");
    let stop = PathBuf::from(std::env::var(STOP_ENV).expect("stop file"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = Client::connect(ConnectOptions::new("test").client_name(&name))
            .await
            .expect("connect");
        match role.as_str() {
            "driver" => {
                let mut i = 0u64;
                while !stop.exists() {
                    let id = format!("{name}-{i}");
                    let got: Vec<String> = client
                        .call("counter", "echo", &id)
                        .await
                        .unwrap_or_else(|e| panic!("call {id} failed: {e}"));
                    assert_eq!(got, vec![id.clone()]);
                    println!("np: got {id}");
                    i += 1;
                }
                println!(
                    "np: server {} {}",
                    client.server_pid(),
                    client.server_version()
                );
            }
            "taker" => {
                println!(
                    "np: server {} {}",
                    client.server_pid(),
                    client.server_version()
                );
                let id = format!("{name}-0");
                let got: Vec<String> = client.call("counter", "echo", &id).await.expect("call");
                assert_eq!(got, vec![id.clone()]);
                println!("np: got {id}");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// The server's pid from its pid file.
fn pid_file(sb: &Sandbox) -> Option<u32> {
    let places = norgopolis_common::Places::for_socket(sb.socket.clone());
    std::fs::read_to_string(places.pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A client that never spawns (so never retires anything), for status.
async fn observer(sb: &Sandbox) -> Client {
    let opts = ConnectOptions::new("test")
        .socket(&sb.socket)
        .spawn(false)
        .keeps_server_alive(false);
    Client::connect(opts).await.expect("observer attaches")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_old_sessions_calling_in_a_loop_lose_and_repeat_nothing_across_a_handover() {
    if !overrides_honoured() {
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("");
    let log = add_counter_module(&sb);
    let names = ["d0", "d1", "d2grpc"];
    let drivers: Vec<Role> = names
        .iter()
        .map(|name| start_role(&sb, "driver", name, Some(OLD)))
        .collect();
    // All three are calling the old server, some calls each.
    eventually(WAIT, "every driver calling", || async {
        let ids = runs(&counter_log(&log));
        names
            .iter()
            .all(|name| {
                let prefix = format!("{name}-");
                ids.iter().filter(|id| id.starts_with(&prefix)).count() >= 20
            })
            .then_some(())
    })
    .await;
    let old = observer(&sb).await.status().await.expect("status");
    assert_eq!(old.version, OLD, "the drivers started an old server");
    let before = runs(&counter_log(&log)).len();

    // A newer client arrives.
    let arrived = std::time::Instant::now();
    let taker = finish(start_role(&sb, "taker", "new", None)).await;
    eprintln!(
        "handover: the newer client was served {:?} after it started, {before} calls before",
        arrived.elapsed()
    );
    let server = taker[0].split(' ').collect::<Vec<_>>();
    let (new_pid, new_version): (u32, &str) = (server[1].parse().expect("pid"), server[2]);
    assert_eq!(new_version, norgopolis_common::VERSION);
    assert_ne!(new_pid, old.pid);
    assert!(
        wait_pid_exit(old.pid, WAIT).await,
        "the old server is still running"
    );

    // Every driver goes on calling, on the new server.
    eventually(
        WAIT,
        "the drivers calling on after the handover",
        || async {
            let ids = runs(&counter_log(&log));
            (ids.len() > before + 60).then_some(())
        },
    )
    .await;
    let new = observer(&sb).await.status().await.expect("status");
    assert_eq!(
        new.pid, new_pid,
        "one new server, the one the taker started"
    );
    assert_eq!(new.version, norgopolis_common::VERSION);
    assert_eq!(pid_file(&sb), Some(new_pid));
    std::fs::write(sb.dir.path().join("stop"), "").expect("stop file");
    let mut replied = Vec::new();
    for driver in drivers {
        let lines = finish(driver).await;
        let (last, got) = lines.split_last().expect("driver output");
        assert_eq!(
            last,
            &format!("server {new_pid} {}", norgopolis_common::VERSION),
            "the driver ended on the new server"
        );
        replied.extend(got.iter().map(|l| l["got ".len()..].to_owned()));
    }
    replied.extend(taker[1..].iter().map(|l| l["got ".len()..].to_owned()));

    // Each id that got a reply ran exactly once, and nothing else ran.
    let log = counter_log(&log);
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for id in runs(&log) {
        *ran.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = ran.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "calls ran twice: {twice:?}");
    let mut expected: Vec<String> = replied.clone();
    expected.sort();
    let ran: Vec<String> = ran.into_keys().collect();
    assert_eq!(
        ran, expected,
        "calls ran without a reply, or replied without running"
    );
    assert!(replied.len() > before + 60);
    eprintln!("handover: {} calls, each run once", replied.len());
    let overlaps: Vec<_> = log.iter().filter(|l| l.starts_with("overlap")).collect();
    assert!(
        overlaps.is_empty(),
        "two counter modules ran at once: {overlaps:?}"
    );
    let starts = log.iter().filter(|l| l.starts_with("start")).count();
    assert_eq!(starts, 2, "one module on each server: {log:#?}");
}

/// A foreground server of `version` (logging to the sandbox's log) with
/// the counter module.
fn server_of_version(sb: &Sandbox, version: &str) -> norgopolis_tests::ServerProc {
    sb.write_config("");
    add_counter_module(sb);
    let mut cmd = sb.server_command(&[]);
    cmd.env(VERSION_OVERRIDE_ENV, version)
        .stderr(std::fs::File::create(&sb.log).expect("log"));
    norgopolis_tests::ServerProc::start(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_client_uses_a_newer_server_as_it_is() {
    if !overrides_honoured() {
        return;
    }
    let sb = Sandbox::new();
    let server = server_of_version(&sb, "99.0.0");
    // This test process speaks the build's own version, older than 99.
    let client = Client::connect(
        ConnectOptions::new("test")
            .socket(&sb.socket)
            .server_binary(bin("norgopolis-server")),
    )
    .await
    .expect("attach");
    assert_eq!(client.server_version(), "99.0.0");
    assert_eq!(client.server_pid(), server.pid);
    let got: Vec<String> = client.call("counter", "echo", "x").await.expect("call");
    assert_eq!(got, vec!["x".to_string()]);
    assert!(client.is_attached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_holds_the_handover_for_a_bounded_time_and_then_fails() {
    if !overrides_honoured() {
        return;
    }
    let sb = Sandbox::new();
    let mut old = server_of_version(&sb, OLD);
    let stuck_client = Client::connect(ConnectOptions::new("test").socket(&sb.socket).spawn(false))
        .await
        .expect("attach");
    let stuck = tokio::spawn(async move {
        stuck_client
            .call::<_, u64>("echo", "sleep", &600_000u64)
            .await
    });
    // The call is running in the module before the newer client arrives.
    let watcher = observer(&sb).await;
    eventually(WAIT, "the sleep call in flight", || async {
        let s = watcher.status().await.ok()?;
        (s.calls_in_flight >= 1).then_some(())
    })
    .await;
    drop(watcher);

    let started = std::time::Instant::now();
    let taker = finish(start_role(&sb, "taker", "new", None)).await;
    assert!(taker[0].starts_with("server "), "{taker:?}");
    assert!(old.exited_within(WAIT).await, "the old server did not exit");
    let took = started.elapsed();
    // 5 s for calls in flight, 3 s for connections, the modules' stop: far
    // below the 600 s the call would take.
    assert!(took < Duration::from_secs(30), "the handover took {took:?}");
    let result = tokio::time::timeout(WAIT, stuck)
        .await
        .expect("the stuck call ended")
        .expect("task");
    let err = result.expect_err("a call cut off by the handover fails");
    assert!(err.is_code(norgopolis_client::Code::Unavailable), "{err}");
    let log = sb.log_text();
    assert!(
        log.contains("with 1 calls still running after 5000 ms"),
        "{log}"
    );
}
