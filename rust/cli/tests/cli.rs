//! The `norgopolis` command against the real server, as separate processes.

#[path = "../../client/tests/support/mod.rs"]
mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

use serde_json::Value;
use support::{alive, proc_stat, Sandbox};

fn cli(sb: &Sandbox) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_norgopolis"));
    cmd.envs(sb.env())
        .args(["--linger", "60s"])
        .stdin(Stdio::null());
    cmd
}

fn run(sb: &Sandbox, args: &[&str]) -> Output {
    cli(sb).args(args).output().expect("run norgopolis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status_pid(sb: &Sandbox, extra: &[&str]) -> u32 {
    let mut args = extra.to_vec();
    args.extend(["status", "--json"]);
    let out = run(sb, &args);
    assert!(
        out.status.success(),
        "status failed: {}\n{}",
        stderr(&out),
        sb.log_text()
    );
    let v: Value = serde_json::from_str(&stdout(&out)).expect("status --json is JSON");
    let pid = v["pid"].as_u64().expect("pid") as u32;
    sb.track(pid);
    pid
}

#[test]
fn sixteen_concurrent_cold_starts_end_with_one_server() {
    let sb = Sandbox::new();
    let children: Vec<_> = (0..16)
        .map(|_| {
            cli(&sb)
                .args(["status", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn norgopolis")
        })
        .collect();
    let mut pids = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "a cold start failed: {}\n{}",
            stderr(&out),
            sb.log_text()
        );
        let v: Value = serde_json::from_str(&stdout(&out)).expect("JSON status");
        let pid = v["pid"].as_u64().expect("pid") as u32;
        sb.track(pid);
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 1, "servers: {pids:?}");
    let pid = *pids.iter().next().unwrap();
    assert_eq!(sb.live_servers(), vec![pid], "exactly one server runs");
}

#[test]
fn the_spawned_server_outlives_the_cli_in_a_session_of_its_own() {
    let sb = Sandbox::new();
    let pid = status_pid(&sb, &[]);
    // The CLI has exited; its server has not.
    assert!(
        alive(pid),
        "server {pid} died with its client\n{}",
        sb.log_text()
    );
    let me = proc_stat(std::process::id()).unwrap();
    assert_ne!(proc_stat(pid).unwrap().session, me.session);
    assert_eq!(status_pid(&sb, &["--no-spawn"]), pid);
}

#[test]
fn no_spawn_without_a_server_fails() {
    let sb = Sandbox::new();
    let out = run(&sb, &["--no-spawn", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: Unavailable: "),
        "{}",
        stderr(&out)
    );
    assert!(sb.live_servers().is_empty());
}

#[test]
fn status_table_lists_the_server() {
    let sb = Sandbox::new();
    let out = run(&sb, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&sb.socket.display().to_string()), "{text}");
    assert!(text.contains("sessions  1"), "{text}");
    let pid = status_pid(&sb, &[]);
    assert!(text.contains(&format!("pid {pid},")), "{text}");
}

#[test]
fn call_prints_one_json_line_per_result() {
    let sb = Sandbox::new();
    let out = run(&sb, &["call", "echo", "count", "4"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), sb.log_text());
    assert_eq!(stdout(&out), "0\n1\n2\n3\n");

    let value = r#"{"a":[1,-2,2.5,"x",null,true],"b":{},"big":18446744073709551615}"#;
    let out = run(&sb, &["call", "echo", "echo", value]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(got, serde_json::from_str::<Value>(value).unwrap());
    assert_eq!(stdout(&out).lines().count(), 1);

    // No arguments is nil; "-" reads them from stdin.
    let out = run(&sb, &["call", "echo", "echo"]);
    assert_eq!(stdout(&out), "null\n");
    let mut child = cli(&sb)
        .args(["call", "echo", "echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"[7.0]").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "[7.0]\n");

    // Binary: a string when it is UTF-8, else bytes.
    let out = run(&sb, &["call", "echo", "big", "300"]);
    let bytes: Vec<u8> = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(bytes, (0..300).map(|i| i as u8).collect::<Vec<_>>());
}

#[test]
fn call_prints_each_result_as_it_arrives() {
    let sb = Sandbox::new();
    // Item 0 at once, item 1 after an hour: the first line must show up
    // while the call is still running.
    let mut child = cli(&sb)
        .args(["call", "echo", "count", r#"{"n":2,"delay_ms":3600000}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(first, "0\n", "{}\n{}", stderr(&out), sb.log_text());
    assert!(still_running);
}

#[test]
fn a_module_error_is_printed_with_its_code() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        &[
            "call",
            "echo",
            "fail",
            r#"{"code":"NotFound","message":"no such note"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: NotFound: no such note\n");
}

#[test]
fn modules_load_and_unload() {
    let sb = Sandbox::new();
    let out = run(&sb, &["modules", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let echo = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "echo")
        .expect("echo listed")
        .clone();
    assert_eq!(echo["loaded"], false);

    let out = run(&sb, &["load", "echo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("loaded echo (pid "),
        "{}",
        stdout(&out)
    );
    let out = run(&sb, &["status"]);
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| panic!("no echo row:\n{table}"));
    assert!(row.contains("running"), "{row}");

    let out = run(&sb, &["unload", "echo"]);
    assert_eq!(stdout(&out), "unloaded echo\n");
    let out = run(&sb, &["unload", "echo"]);
    assert_eq!(stdout(&out), "echo was not loaded\n");

    // By path, from somewhere else.
    let path = sb.modules.join("echo");
    let out = run(&sb, &["load", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("loaded echo"), "{}", stdout(&out));
}

#[test]
fn call_to_a_missing_module_prints_not_found_and_fails() {
    let sb = Sandbox::new();
    let out = run(&sb, &["call", "no_such_module", "f", "[1]"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: NotFound: "),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    status_pid(&sb, &[]);
}

#[test]
fn bad_json_arguments_are_a_usage_error() {
    let sb = Sandbox::new();
    let out = run(&sb, &["--no-spawn", "call", "echo", "echo", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: InvalidArgument: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shutdown_waits_for_the_server_and_the_next_command_starts_a_new_one() {
    let sb = Sandbox::new();
    let first = status_pid(&sb, &[]);
    let out = run(&sb, &["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A graceful exit removes the socket before the server lets go of its
    // lock, which is what `shutdown` waits for.
    assert!(
        !sb.socket.exists(),
        "shutdown returned before the server exited\n{}",
        sb.log_text()
    );
    let out = run(&sb, &["shutdown"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "no server running\n");
    let second = status_pid(&sb, &[]);
    assert_ne!(first, second);
}

#[test]
fn version_names_the_program() {
    let out = Command::new(env!("CARGO_BIN_EXE_norgopolis"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("norgopolis {}\n", env!("CARGO_PKG_VERSION"))
    );
}
