//! Hardening against a careless config and odd modules: absurd durations,
//! panics, what modules leave behind, stderr floods, programs that do not
//! speak the protocol, modules that close their stdout, relative paths.

mod support;

use std::{path::Path, process::Command, time::Instant};

use norgopolis_client::{Client, ClientError, Code, ConnectOptions};
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

/// Starts a foreground server of `sb` expected to fail at start; returns
/// its readiness line and exit code.
fn start_failing(mut cmd: Command) -> (String, Option<i32>) {
    cmd.stderr(std::process::Stdio::null());
    let (mut child, line) = spawn_with_ready(cmd).expect("run the server");
    if line.starts_with("ready ") {
        // Not what the test expects; do not wait for its idle timeout.
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the server");
    (line, status.code())
}

/// The error a client that spawns a (daemonized) server with `args` gets.
async fn spawn_error(sb: &Sandbox, args: &[&str]) -> String {
    let opts = ConnectOptions::new("test")
        .socket(&sb.socket)
        .server_binary(bin("norgopolis-server"))
        .server_args(args.iter().copied())
        .server_arg("--log")
        .server_arg(&sb.log)
        .spawn(true);
    match Client::connect(opts).await {
        Ok(_) => panic!("the server started with {args:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn absurd_durations_on_the_command_line_are_errors_naming_the_flag() {
    let sb = Sandbox::new();
    for (flag, value) in [
        ("--linger", "1e20"),
        ("--idle-timeout", "1e300"),
        ("--linger", "inf"),
        ("--keepalive-interval", "0"),
    ] {
        let (line, code) = start_failing(sb.server_command(&[flag, value]));
        assert!(line.starts_with("error "), "{flag} {value}: {line:?}");
        assert!(line.contains(flag), "{flag} {value}: {line:?}");
        assert!(
            line.contains("too long") || line.contains("too short"),
            "{flag} {value}: {line:?}"
        );
        assert_ne!(code, Some(101), "{flag} {value}: the server panicked");
    }
}

#[test]
fn absurd_durations_in_the_config_are_errors_naming_file_line_and_key() {
    let sb = Sandbox::new();
    let config = sb.config_path().display().to_string();
    for (text, key) in [
        ("linger = 1e20\n", "linger"),
        ("\nidle_timeout = \"1e300\"\n", "idle_timeout"),
        ("call_timeout = \"1e15s\"\n", "call_timeout"),
        ("module_grace = \"1e19ms\"\n", "module_grace"),
        ("module_ping_interval = 0\n", "module_ping_interval"),
    ] {
        // The sandbox hands the config over in NORGOPOLIS_CONFIG.
        sb.write_config(text);
        let (line, code) = start_failing(sb.server_command(&[]));
        let at = format!(
            "config file {config}, line {}, key `{key}`",
            text.lines().count()
        );
        assert!(line.starts_with("error "), "{text:?}: {line:?}");
        assert!(line.contains(&at), "{text:?}: {line:?}");
        assert_ne!(code, Some(101), "{text:?}: the server panicked");
    }
}

#[tokio::test]
async fn a_spawning_client_sees_the_duration_error() {
    let sb = Sandbox::new();
    let other = sb.dir.path().join("other.toml");
    std::fs::write(&other, "idle_timeout = \"1e300\"\n").unwrap();
    let e = spawn_error(&sb, &["--config", other.to_str().unwrap()]).await;
    assert!(e.contains("key `idle_timeout`"), "{e}");
    assert!(e.contains("too long"), "{e}");
    let e = spawn_error(&sb, &["--linger", "1e20"]).await;
    assert!(e.contains("--linger") && e.contains("too long"), "{e}");
}

#[tokio::test]
async fn a_panic_at_start_is_logged_and_reported_to_the_spawning_client() {
    let sb = Sandbox::new();
    let e = spawn_error(&sb, &["--debug-panic"]).await;
    assert!(e.contains("panicked"), "{e}");
    assert!(!e.contains("exited before becoming ready"), "{e}");
    let log = sb.log_text();
    assert!(
        log.contains("panicked") && log.contains("--debug-panic"),
        "{log}"
    );
}

#[tokio::test]
async fn what_a_module_starts_dies_with_a_killed_server() {
    let sb = Sandbox::new();
    let helper_pid = sb.dir.path().join("helper.pid");
    script_module(
        &sb.modules,
        "forker",
        "",
        &format!(
            "sleep 1000 </dev/null >/dev/null 2>&1 &\necho $! > '{}'",
            helper_pid.display()
        ),
    );
    let mut server = sb.start_server(&[]);
    let client = client(&sb).await;
    let v: Vec<Value> = client
        .call("forker", "echo", &Value::from(1))
        .await
        .unwrap();
    assert_eq!(v, vec![Value::from(1)]);
    let helper: u32 = std::fs::read_to_string(&helper_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(helper), "the helper did not start");

    server.child.kill().unwrap();
    let _ = server.child.wait();
    assert!(
        wait_pid_exit(helper, WAIT).await,
        "the module's helper {helper} outlived the SIGKILLed server"
    );
}

#[tokio::test]
async fn stderr_floods_stay_within_the_limit_summaries_included() {
    let sb = Sandbox::new();
    sb.write_config("stderr_lines_per_second = 10\n");
    sb.add_faulty_module("flooder", &[]);
    let _server = sb.start_server_logged(&[]);
    let client = client(&sb).await;
    let started = Instant::now();
    // A flood that lasts: the limit is a rate, so time must pass under it.
    while started.elapsed().as_secs_f64() < 2.5 {
        let n: Vec<Value> = client
            .call("flooder", "flood", &Value::from(200))
            .await
            .unwrap();
        assert_eq!(n, vec![Value::from(200)]);
    }
    eventually(WAIT, "a flood summary", || async {
        sb.log_text().contains("stderr flood").then_some(())
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let log = sb.log_text();
    let logged = log
        .lines()
        .filter(|l| l.contains("flood line") || l.contains("stderr"))
        .count();
    // A burst of twice the rate, then the rate, for the time that passed.
    let bound = 20 + (10.0 * elapsed).ceil() as usize + 1;
    assert!(
        logged <= bound,
        "{logged} lines logged in {elapsed:.1} s, more than the limit allows ({bound}):\n{log}"
    );
}

fn call_error(result: Result<Vec<Value>, ClientError>) -> (Code, String) {
    match result {
        Ok(v) => panic!("the call succeeded: {v:?}"),
        Err(ClientError::Call { code, message, .. }) => (code, message),
        Err(e) => panic!("not a call error: {e}"),
    }
}

#[tokio::test]
async fn loading_a_program_that_does_not_speak_the_protocol_says_why() {
    let sb = Sandbox::new();
    sb.write_config("module_ping_interval = \"250ms\"\nmodule_ping_timeout = \"500ms\"\n");
    let elsewhere = sb.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let chatty = elsewhere.join("chatty");
    write_script(&chatty, "echo 'I am not a module'\nexec sleep 1000\n");
    let silent = elsewhere.join("silent");
    write_script(&silent, "exec sleep 1000\n");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    for (path, why) in [
        (&chatty, "not HTTP/2"),
        (&silent, "did not answer the HTTP/2 handshake"),
    ] {
        let name = path.file_name().unwrap().to_str().unwrap();
        let e = client.load("", Some(path.as_path())).await.unwrap_err();
        assert!(e.to_string().contains(why), "load {name}: {e}");
        // The next call by name gets the same reason, not "no such module".
        let (code, message) = call_error(client.call(name, "echo", &Value::Nil).await);
        assert_eq!(code, Code::Unavailable, "call {name}: {message}");
        assert!(message.contains(why), "call {name}: {message}");
    }
}

#[tokio::test]
async fn a_module_that_closes_its_stdout_is_named_as_such() {
    let sb = Sandbox::new();
    let closer = sb.modules.join("closer");
    write_script(&closer, "exec >&-\nexec sleep 1000\n");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let (code, message) = call_error(client.call("closer", "echo", &Value::Nil).await);
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(
        message.contains("module 'closer' closed its stdout"),
        "{message}"
    );
}

#[tokio::test]
async fn a_relative_socket_in_the_config_is_taken_from_its_dir() {
    let sb = Sandbox::new();
    // The config's dir must be private to hold the socket.
    let config = sb.runtime.join("config.toml");
    std::fs::write(&config, "socket = \"rel.sock\"\n").unwrap();
    let mut cmd = sb.server_command(&[]);
    cmd.env("NORGOPOLIS_CONFIG", &config).current_dir("/");
    let (child, line) = spawn_with_ready(cmd).unwrap();
    let _server = ServerProc {
        child,
        pid: line
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not start: {line:?}")),
    };
    let socket = sb.runtime.join("rel.sock");
    let ch = connect(&socket).await.unwrap();
    assert_eq!(
        call_all(&ch, "echo", "echo", Value::from(7)).await.unwrap(),
        vec![Value::from(7)]
    );
}

#[test]
fn a_bad_relative_socket_dir_names_the_absolute_path_once() {
    let sb = Sandbox::new();
    // Run from elsewhere: a relative socket must not land in the cwd.
    let open = sb.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::symlink(Path::new("/nonexistent"), open.join("link")).unwrap();
    sb.write_config("socket = \"open/link/s.sock\"\n");
    let mut cmd = sb.server_command(&[]);
    cmd.current_dir(sb.dir.path().join("modules"));
    let (line, code) = start_failing(cmd);
    let dir = open.join("link").display().to_string();
    assert!(line.starts_with("error "), "{line:?}");
    assert!(line.contains(&dir), "{line:?}");
    assert_eq!(line.matches(&dir).count(), 1, "{line:?}");
    assert_ne!(code, Some(101));
}
