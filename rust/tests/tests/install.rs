//! `norgopolis module install | remove | list` as separate processes,
//! installing into the sandbox's modules dir, then used by a real server.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use norgopolis_tests::*;
use serde_json::Value as Json;
use support::*;

fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    cmd.args(args).stdin(Stdio::null());
    cmd.output().expect("run norgopolis")
}

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = cli(sb, args);
    assert!(
        out.status.success(),
        "norgopolis {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(sb: &Sandbox, args: &[&str]) -> String {
    let out = cli(sb, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "norgopolis {args:?} should fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn listed(sb: &Sandbox) -> Json {
    serde_json::from_str(&ok(sb, &["module", "list", "--json"])).expect("JSON list")
}

fn module<'a>(list: &'a Json, name: &str) -> &'a Json {
    list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {list}"))
}

#[tokio::test]
async fn install_from_a_path_then_call_list_and_remove() {
    let sb = Sandbox::new();
    let src = script_module(
        &sb.dir.path().join("src"),
        "greeter",
        "version = \"1.0\"\nfunctions = [{ name = \"echo\", doc = \"says it back\" }]\n",
        "",
    );
    let out = ok(&sb, &["module", "install", src.to_str().unwrap()]);
    let dest = sb.modules.join("greeter");
    assert_eq!(
        out,
        format!("installed greeter 1.0 at {}\n", dest.display())
    );
    assert!(!std::fs::symlink_metadata(dest.join("run.sh"))
        .unwrap()
        .is_symlink());

    // A bare executable, under another name; the copy is a file of its own.
    let echo = bin("echo");
    ok(
        &sb,
        &["module", "install", echo.to_str().unwrap(), "--name", "e2"],
    );
    assert!(std::fs::symlink_metadata(sb.modules.join("e2"))
        .unwrap()
        .is_file());

    let err = fails(&sb, &["module", "install", src.to_str().unwrap()]);
    assert!(
        err.contains("AlreadyExists") && err.contains("--force"),
        "{err}"
    );
    let out = ok(
        &sb,
        &["module", "install", src.to_str().unwrap(), "--force"],
    );
    assert!(out.starts_with("replaced greeter 1.0"), "{out}");
    assert_eq!(
        entries(&sb.modules),
        ["e2", "echo", "greeter"],
        "no staging left behind"
    );

    let list = listed(&sb);
    let greeter = module(&list, "greeter");
    assert_eq!(greeter["version"], "1.0");
    assert_eq!(greeter["functions"][0]["doc"], "says it back");
    assert_eq!(greeter["restart"], "never");
    assert_eq!(module(&list, "e2")["error"], "");

    let _server = sb.start_server(&[]);
    assert_eq!(ok(&sb, &["call", "greeter", "echo", "\"hi\""]), "\"hi\"\n");
    assert_eq!(ok(&sb, &["call", "e2", "echo", "7"]), "7\n");
    assert_eq!(ok(&sb, &["functions", "greeter"]), "echo\n");

    let out = ok(&sb, &["module", "remove", "greeter"]);
    assert!(out.contains("removed greeter"), "{out}");
    assert!(
        out.contains("unloaded greeter from the running server"),
        "{out}"
    );
    let err = fails(&sb, &["call", "greeter", "echo"]);
    assert!(err.contains("NotFound"), "{err}");
    let err = fails(&sb, &["module", "remove", "greeter"]);
    assert!(
        err.contains("NotFound") && err.contains("not installed"),
        "{err}"
    );
}

#[tokio::test]
async fn install_checks_the_module_and_copies_nothing_when_it_is_bad() {
    let sb = Sandbox::new();
    let src = sb.dir.path().join("src");
    let bad = script_module(&src, "bad", "restart = \"sometimes\"\n", "");
    let err = fails(&sb, &["module", "install", bad.to_str().unwrap()]);
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(
        err.contains("bad/module.toml") && err.contains("key `restart`"),
        "{err}"
    );

    let empty = src.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = fails(&sb, &["module", "install", empty.to_str().unwrap()]);
    assert!(err.contains("not a module"), "{err}");

    let missing_exec = script_module(&src, "noexec", "", "");
    std::fs::remove_file(missing_exec.join("run.sh")).unwrap();
    let err = fails(&sb, &["module", "install", missing_exec.to_str().unwrap()]);
    assert!(err.contains("not an executable"), "{err}");

    let err = fails(
        &sb,
        &[
            "module",
            "install",
            bin("echo").to_str().unwrap(),
            "--name",
            "../x",
        ],
    );
    assert!(err.contains("InvalidArgument"), "{err}");
    let err = fails(&sb, &["module", "install", "/nonexistent/thing"]);
    assert!(err.contains("NotFound"), "{err}");

    assert_eq!(entries(&sb.modules), ["echo"]);
}

#[tokio::test]
async fn missing_dependencies_are_a_warning_not_an_error() {
    let sb = Sandbox::new();
    let src = script_module(
        &sb.dir.path().join("src"),
        "app",
        "dependencies = [\"db\"]\n",
        "",
    );
    let out = cli(&sb, &["module", "install", src.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: app depends on 'db', which is not installed"),
        "{err}"
    );
    assert!(sb.modules.join("app").is_dir());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[tokio::test]
async fn install_from_a_local_cargo_crate() {
    let sb = Sandbox::new();
    let crate_dir = fixture("hello-module");
    let mut cmd = Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    // Build in the workspace's own target dir, unoptimised and offline:
    // the fixture's dependencies are the workspace's, already built there.
    let target = bin_dir().parent().expect("target dir").to_path_buf();
    cmd.env("CARGO_TARGET_DIR", &target)
        .args(["module", "install", "--cargo"])
        .arg(&crate_dir)
        .args(["--", "--offline", "--locked", "--debug"])
        .stdin(Stdio::null());
    let out = cmd.output().expect("run norgopolis");
    assert!(
        out.status.success(),
        "cargo install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = sb.modules.join("hello");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("installed hello 0.3.1 at {}\n", dest.display())
    );
    assert!(dest.join("hello").is_file() && dest.join("module.toml").is_file());

    let _server = sb.start_server(&[]);
    assert_eq!(
        ok(&sb, &["call", "hello", "greet", "\"you\""]),
        "\"Hello, you!\"\n"
    );
    let modules: Json = serde_json::from_str(&ok(&sb, &["modules", "--json"])).unwrap();
    assert_eq!(module(&modules, "hello")["version"], "0.3.1");

    let err = fails(
        &sb,
        &[
            "module",
            "install",
            "--cargo",
            "/nonexistent/crate",
            "--",
            "--offline",
        ],
    );
    assert!(
        err.contains("cargo install") && err.contains("failed"),
        "{err}"
    );
}

/// `module install` once ignored `modules_dirs` in config.toml and wrote
/// where the server would not look: both now follow the catalog's rule.
#[tokio::test]
async fn install_writes_where_the_server_looks_when_config_toml_names_the_dirs() {
    let sb = Sandbox::new();
    let config = sb.dir.path().join("config.toml");
    std::fs::write(&config, "modules_dirs = [\"from-config\"]\n").unwrap();
    let src = script_module(&sb.dir.path().join("src"), "greeter", "", "");
    let run = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(bin(program));
        sb.env(&mut cmd);
        cmd.env_remove("NORGOPOLIS_MODULES_DIR").args(args);
        let out = cmd.output().expect("run");
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let checked = run("norgopolis-server", &["--check-config"]);
    let server_dir = checked
        .lines()
        .find_map(|l| l.strip_prefix("modules dir: "))
        .unwrap_or_else(|| panic!("no modules dir in {checked}"));
    assert_eq!(Path::new(server_dir), sb.dir.path().join("from-config"));
    run("norgopolis", &["module", "install", src.to_str().unwrap()]);
    assert!(
        Path::new(server_dir).join("greeter").is_dir(),
        "not installed into {server_dir}"
    );
}
