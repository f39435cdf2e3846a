//! Modules in other languages: `norgopolis module check` over the Rust,
//! Python and Lua SDKs (the bundled echo module and the examples under
//! `examples/modules/`), the checker failing modules that break the
//! protocol, and the Python and Lua examples installed and called from the
//! CLI through a real server.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use norgopolis_tests::*;
use support::write_script;

fn example(name: &str) -> PathBuf {
    repo_root().join("examples/modules").join(name)
}

fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    cmd.args(args).stdin(Stdio::null());
    cmd.output().expect("run norgopolis")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the checker on `target`; its whole output and whether it passed.
fn check(sb: &Sandbox, target: &Path) -> (String, bool) {
    let out = cli(sb, &["module", "check", target.to_str().unwrap()]);
    (text(&out), out.status.success())
}

fn assert_all_pass(sb: &Sandbox, target: &Path) {
    let (out, passed) = check(sb, target);
    assert!(passed, "{out}");
    assert!(out.contains(" 0 failed, 0 skipped"), "{out}");
    for row in [
        "hello",
        "count: 10,000 items under credit",
        "cancel mid-stream",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(row) && l.contains(" pass ")),
            "{row} did not pass:\n{out}"
        );
    }
}

/// The verdict of check `row` in the checker's table.
fn verdict<'a>(out: &'a str, row: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row {row}:\n{out}"));
    line[row.len()..]
        .split_whitespace()
        .find(|w| ["pass", "FAIL", "skipped"].contains(w))
        .unwrap_or_default()
}

#[test]
fn the_checker_passes_the_rust_sdk_echo_module() {
    let sb = Sandbox::new();
    assert_all_pass(&sb, &bin("echo"));
}

#[test]
fn the_checker_passes_the_python_sdk_example() {
    let sb = Sandbox::new();
    assert_all_pass(&sb, &example("python-echo"));
}

#[test]
fn the_checker_passes_the_lua_sdk_example_under_luajit() {
    let sb = Sandbox::new();
    assert_all_pass(&sb, &example("lua-echo"));
}

#[test]
fn the_checker_passes_the_lua_sdk_under_nvim() {
    let sb = Sandbox::new();
    let run = sb.dir.path().join("nvim-echo");
    write_script(
        &run,
        &format!(
            "cd '{}' && exec '{}' -l main.lua\n",
            example("lua-echo").display(),
            nvim_binary().display()
        ),
    );
    assert_all_pass(&sb, &run);
}

/// A Python module on the SDK with its rules bent by `patch`.
fn python_module(sb: &Sandbox, name: &str, patch: &str, functions: &str) -> PathBuf {
    let dir = sb.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("module.py");
    std::fs::write(
        &program,
        format!(
            "import sys\nsys.path.insert(0, '{sdk}')\n\
             import norgopolis_module as n\nfrom norgopolis_module import Module, Error\n\
             {patch}\nm = Module()\n{functions}\nm.run()\n",
            sdk = repo_root().join("sdk/python").display(),
        ),
    )
    .unwrap();
    write_script(
        &dir.join(name),
        &format!("exec python3 '{}'\n", program.display()),
    );
    dir
}

#[test]
fn the_checker_fails_modules_that_ignore_credit_or_cancel_or_greet_wrongly() {
    let sb = Sandbox::new();
    let functions = "@m.function('echo')\ndef echo(a):\n    return a\n\
                     @m.function('count')\ndef count(n):\n    for i in range(n):\n        yield i\n";
    // Starts every call with more credit than the protocol grants, and
    // never hears a CANCEL.
    let bent = python_module(
        &sb,
        "bent",
        "n.INITIAL_CREDIT = 100000\nn.Module._end = lambda self, call_id: None",
        functions,
    );
    let (out, passed) = check(&sb, &bent);
    assert!(!passed, "{out}");
    assert_eq!(
        verdict(&out, "count: 10,000 items under credit"),
        "FAIL",
        "{out}"
    );
    assert!(out.contains("before any CREDIT"), "{out}");
    assert_eq!(verdict(&out, "cancel mid-stream"), "FAIL", "{out}");
    assert_eq!(verdict(&out, "echo: map"), "pass", "{out}");

    // Prints to stdout before the hello.
    let chatty = sb.dir.path().join("chatty");
    write_script(&chatty, "echo starting up the module; exec cat\n");
    let (out, passed) = check(&sb, &chatty);
    assert!(!passed, "{out}");
    assert_eq!(verdict(&out, "hello"), "FAIL", "{out}");
    assert!(out.contains("starting up"), "{out}");
}

#[test]
fn the_checker_skips_what_a_module_lacks() {
    let sb = Sandbox::new();
    let only_echo = python_module(
        &sb,
        "only-echo",
        "",
        "@m.function('echo')\ndef echo(a):\n    return a\n",
    );
    let (out, passed) = check(&sb, &only_echo);
    assert!(passed, "{out}");
    for row in [
        "count: 10,000 items under credit",
        "cancel mid-stream",
        "fail: every error code",
        "sleep past a deadline",
        "big:",
        "calls run concurrently",
    ] {
        assert_eq!(verdict(&out, row), "skipped", "{row}:\n{out}");
    }
    assert_eq!(verdict(&out, "echo: extension"), "pass", "{out}");
    assert_eq!(verdict(&out, "exit when stdin closes"), "pass", "{out}");
}

#[test]
fn python_and_lua_modules_are_installed_and_called_from_the_cli() {
    let sb = Sandbox::new();
    for name in ["python-echo", "lua-echo"] {
        let path = example(name);
        let out = cli(&sb, &["module", "install", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        // The SDK beside the example is a link; the installed copy holds the file.
        let sdk = std::fs::read_dir(sb.modules.join(name))
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("norgopolis_module")
            })
            .expect("the SDK is installed with the module");
        assert!(!sdk.file_type().unwrap().is_symlink());

        let out = cli(&sb, &["call", name, "echo", r#"{"a":[1,"two",null]}"#]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "{\"a\":[1,\"two\",null]}\n",
            "{name}"
        );

        let out = cli(&sb, &["call", name, "count", "5"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0\n1\n2\n3\n4\n",
            "{name}"
        );

        let out = cli(
            &sb,
            &[
                "call",
                name,
                "fail",
                r#"{"code":"PermissionDenied","message":"not you"}"#,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: PermissionDenied: not you\n",
            "{name}"
        );

        let out = cli(&sb, &["call", name, "nope"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{name}: {}",
            text(&out)
        );
    }
    let out = cli(&sb, &["shutdown"]);
    assert!(out.status.success(), "{}", text(&out));
}
