//! Module configuration (issue 17, item 1): the `[modules.NAME]` table of
//! `config.toml`, merged with `--module-config NAME=JSON` (which wins), is
//! handed to each module as a JSON object in `NORGOPOLIS_MODULE_CONFIG`,
//! whatever its transport; the SDK accessors read it; the file is read
//! again at each module start, so an edit applies after unload + load.

mod support;

use std::path::{Path, PathBuf};

use norgopolis_tests::*;
use serde_json::{json, Value};
use support::{output_text as text, run_cli, script_module, write_config, write_script};

/// Calls `module.config` through the running server; its one result.
fn config_of(sb: &Sandbox, module: &str) -> Value {
    let out = run_cli(sb, &["call", module, "config"]);
    assert!(out.status.success(), "{module}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{module}: {e}: {}", text(&out)))
}

fn unload(sb: &Sandbox, module: &str) {
    let out = run_cli(sb, &["unload", module]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A lean module folder `name` running `command` on `main` (its program,
/// written into the folder), with the SDK file `sdk` beside it.
fn lean_module(sb: &Sandbox, name: &str, sdk: &str, main: &str, command: &str) {
    let folder = sb.modules.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        repo_root().join(sdk),
        folder.join(Path::new(sdk).file_name().unwrap()),
    )
    .unwrap();
    std::fs::write(folder.join("main"), main).unwrap();
    std::fs::write(
        folder.join("module.toml"),
        "exec = \"run.sh\"\ntransport = \"lean\"\n",
    )
    .unwrap();
    write_script(&folder.join("run.sh"), &format!("exec {command} main\n"));
}

/// Modules answering `config` with what their SDK read: Python, Lua
/// under LuaJIT (the SDK's own JSON decoder) and Lua under `nvim -l`
/// (vim.json).
fn add_sdk_modules(sb: &Sandbox) -> [&'static str; 3] {
    lean_module(
        sb,
        "pyconf",
        "sdk/python/norgopolis_module.py",
        "import sys\nsys.path.insert(0, '.')\nfrom norgopolis_module import Module\n\
         m = Module()\n\n@m.function('config')\ndef config(_):\n    return m.config\n\nm.run()\n",
        "python3",
    );
    let lua = "package.path = './?.lua;' .. package.path\n\
               local m = require('norgopolis_module').new()\n\
               m:fn('config', function() return m.config end)\nm:run()\n";
    lean_module(
        sb,
        "luaconf",
        "sdk/lua/norgopolis_module.lua",
        lua,
        "luajit",
    );
    let nvim = repo_root().join(".deps/nvim/bin/nvim");
    let nvim = if nvim.exists() {
        nvim.display().to_string()
    } else {
        "nvim".to_string()
    };
    lean_module(
        sb,
        "nvimconf",
        "sdk/lua/norgopolis_module.lua",
        lua,
        &format!("'{nvim}' --clean -l"),
    );
    ["pyconf", "luaconf", "nvimconf"]
}

/// A gRPC module (the echo module) whose start script records the
/// variable it was given in `seen.json` beside it.
fn add_grpc_recorder(sb: &Sandbox, name: &str) -> PathBuf {
    let folder = script_module(
        &sb.modules,
        name,
        "",
        "printf '%s' \"${NORGOPOLIS_MODULE_CONFIG-unset}\" > seen.json",
    );
    folder.join("seen.json")
}

const CONFIG: &str = r#"
linger = "20s"

[modules.pyconf]
root = "~/notes"
when = 1979-05-27T07:32:00Z
limits = { results = 100, depth = 2 }

[modules.luaconf]
list = [1, 2.5, "three", true]
nested = { deep = { x = "y" } }

[modules.nvimconf]
list = [1, 2.5, "three", true]
nested = { deep = { x = "y" } }

[modules.grpc]
transport_independent = true
"#;

#[test]
fn each_module_sees_its_table_through_its_sdk() {
    let sb = Sandbox::new();
    write_config(&sb, CONFIG);
    let [py, lua, nvim] = add_sdk_modules(&sb);
    let seen = add_grpc_recorder(&sb, "grpc");
    let _server = sb.start_server(&[]);

    assert_eq!(
        config_of(&sb, py),
        json!({"root": "~/notes", "when": "1979-05-27T07:32:00Z",
               "limits": {"results": 100, "depth": 2}})
    );
    let lua_table = json!({"list": [1, 2.5, "three", true], "nested": {"deep": {"x": "y"}}});
    assert_eq!(config_of(&sb, lua), lua_table);
    assert_eq!(config_of(&sb, nvim), lua_table);

    let out = run_cli(&sb, &["call", "grpc", "echo", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(seen).unwrap()).unwrap();
    assert_eq!(seen, json!({"transport_independent": true}));
}

#[test]
fn a_module_without_a_table_gets_an_empty_object() {
    let sb = Sandbox::new();
    write_config(&sb, "[modules.someone_else]\nx = 1\n");
    let [py, lua, nvim] = add_sdk_modules(&sb);
    let seen = add_grpc_recorder(&sb, "grpc");
    let mut server = sb.server_command(&[]);
    // Whatever the server inherited is not passed on.
    server.env("NORGOPOLIS_MODULE_CONFIG", r#"{"leaked":true}"#);
    let _server = ServerProc::start(server);
    for module in [py, lua, nvim] {
        assert_eq!(config_of(&sb, module), json!({}), "{module}");
    }
    let out = run_cli(&sb, &["call", "grpc", "echo", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(seen).unwrap(), "{}");
}

#[test]
fn a_bad_modules_table_stops_the_server_naming_file_line_and_key() {
    let sb = Sandbox::new();
    for (config, line, key, what) in [
        (
            "[modules]\nnotes = 3\n",
            2,
            "modules.notes",
            "must be a table",
        ),
        (
            "linger = \"1s\"\nmodules = [1]\n",
            2,
            "modules",
            "invalid type",
        ),
        (
            "\n[modules.\"no/slash\"]\nx = 1\n",
            2,
            "modules.no/slash",
            "may only contain",
        ),
    ] {
        write_config(&sb, config);
        let line_text = sb.start_server_expect_error(&[]);
        let file = sb.config_path().display().to_string();
        assert!(line_text.starts_with("error "), "{config:?}: {line_text}");
        assert!(line_text.contains(&file), "{config:?}: {line_text}");
        assert!(
            line_text.contains(&format!("line {line}, key `{key}`")),
            "{config:?}: {line_text}"
        );
        assert!(line_text.contains(what), "{config:?}: {line_text}");
    }
}

#[test]
fn a_bad_module_config_flag_is_refused_with_the_reason() {
    let sb = Sandbox::new();
    for (flag, what) in [
        ("notes", "NAME=JSON"),
        ("notes=[1]", "must be a JSON object"),
        ("notes={\"a\":", "is not JSON"),
        ("../x={}", "may only contain"),
    ] {
        let line = sb.start_server_expect_error(&["--module-config", flag]);
        assert!(line.starts_with("error "), "{flag}: {line}");
        assert!(line.contains(what), "{flag}: {line}");
    }
}

#[test]
fn an_edit_applies_at_the_next_start_of_the_module() {
    let sb = Sandbox::new();
    write_config(&sb, "[modules.pyconf]\nversion = 1\n");
    let [py, ..] = add_sdk_modules(&sb);
    let _server = sb.start_server(&[]);
    assert_eq!(config_of(&sb, py), json!({"version": 1}));

    write_config(&sb, "[modules.pyconf]\nversion = 2\n");
    // The running module keeps what it was started with...
    assert_eq!(config_of(&sb, py), json!({"version": 1}));
    // ...and its next start reads the file again.
    let out = run_cli(&sb, &["restart", py]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with("restarted pyconf (pid "),
        "{}",
        text(&out)
    );
    assert_eq!(config_of(&sb, py), json!({"version": 2}));

    // A file that went bad since: the start fails naming it; the server stays.
    write_config(&sb, "[modules.pyconf]\nversion = 3\nversion = 4\n");
    unload(&sb, py);
    let out = run_cli(&sb, &["call", py, "config"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(
        err.contains(&sb.config_path().display().to_string()),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
    write_config(&sb, "[modules.pyconf]\nversion = 5\n");
    assert_eq!(config_of(&sb, py), json!({"version": 5}));
}

#[test]
fn flags_from_the_front_end_win_over_the_file_key_by_key() {
    let sb = Sandbox::new();
    write_config(
        &sb,
        "[modules.pyconf]\nroot = \"file\"\nkeep = 1\n[modules.pyconf.limits]\nresults = 10\ndepth = 1\n",
    );
    let [py, lua, ..] = add_sdk_modules(&sb);
    let _server = sb.start_server(&[
        "--module-config",
        r#"pyconf={"root":"setup","limits":{"depth":3}}"#,
        "--module-config",
        r#"luaconf={"only":"setup"}"#,
    ]);
    assert_eq!(
        config_of(&sb, py),
        json!({"root": "setup", "keep": 1, "limits": {"results": 10, "depth": 3}})
    );
    assert_eq!(config_of(&sb, lua), json!({"only": "setup"}));
}
