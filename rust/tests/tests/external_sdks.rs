//! External modules written with the Python and Lua SDKs (`m.provide()`,
//! `m:provide()`): registered over the socket, called like any module,
//! refused when the name is taken, ended by `unload`.

mod providers;
mod support;

use std::{os::unix::fs::PermissionsExt, process::Command};

use futures::StreamExt;
use norgopolis_client::Client;
use norgopolis_tests::{nvim_binary, repo_root, Sandbox, ServerProc};
use providers::{registered, Provider};
use rmpv::Value;
use support::client;

const PYTHON: &str = r#"
import os, sys
sys.path.insert(0, sys.argv[1])
from norgopolis_module import Module, Error
m = Module()

@m.function("echo")
def echo(args):
    return args

@m.function("count")
def count(n):
    for i in range(n):
        yield i

@m.function("pid")
def pid(_):
    return os.getpid()

try:
    m.provide(sys.argv[2])
except Error as e:
    sys.stderr.write("refused (%d): %s\n" % (e.code, e.message))
    sys.exit(2)
except Exception as e:
    sys.stderr.write("%s\n" % e)
    sys.exit(1)
"#;

const LUA: &str = r#"
package.path = arg[1] .. "/?.lua;" .. package.path
local m = require("norgopolis_module").new()
m:fn("echo", function(args) return args end)
m:fn("count", function(n, emit) for i = 0, n - 1 do emit(i) end end)
m:fn("pid", function() return vim.fn.getpid() end)
local _, why, code = m:provide(arg[2])
io.stderr:write(why .. "\n")
os.exit(code and 2 or 1)
"#;

/// A provider of `name` written with the SDK in `lang`.
fn provider(sb: &Sandbox, lang: &str, name: &str) -> Provider {
    let sdk = repo_root().join("sdk").join(lang);
    let cmd = match lang {
        "python" => {
            let script = sb.dir.path().join("provider.py");
            std::fs::write(&script, PYTHON).unwrap();
            let mut cmd = Command::new("python3");
            cmd.arg(script);
            cmd
        }
        _ => {
            let script = sb.dir.path().join("provider.lua");
            std::fs::write(&script, LUA).unwrap();
            let mut cmd = Command::new(nvim_binary());
            cmd.args(["--clean", "-l"]).arg(script);
            cmd
        }
    };
    let mut cmd = cmd;
    cmd.arg(sdk).arg(name);
    Provider::run(sb, cmd)
}

async fn one(c: &Client, module: &str, function: &str, args: &Value) -> Value {
    let results: Vec<Value> = c.call(module, function, args).await.unwrap();
    results.into_iter().next().expect("one result")
}

/// The whole story for one SDK.
async fn provides(lang: &str) {
    let sb = Sandbox::new();
    let _server: ServerProc = sb.start_server_logged(&[]);
    let c = client(&sb).await;
    let name = format!("{lang}-ext");
    let mut first = provider(&sb, lang, &name);
    let status = registered(&c, &name).await;
    assert_eq!(status.pid, first.pid());

    let args = Value::Map(vec![("x".into(), 1.into())]);
    assert_eq!(one(&c, &name, "echo", &args).await, args);
    assert_eq!(
        one(&c, &name, "pid", &Value::Nil).await,
        Value::from(first.pid())
    );
    let mut items = c.invoke::<_, u64>(&name, "count", &200u64).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = items.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(
        got,
        (0..200).collect::<Vec<u64>>(),
        "streamed past the credit"
    );
    let listed = c.list_modules().await.unwrap();
    let listed = listed.modules.iter().find(|m| m.name == name).unwrap();
    assert_eq!(listed.functions, vec!["count", "echo", "pid"]);

    let mut second = provider(&sb, lang, &name);
    let (code, err) = second.ended().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("AlreadyExists") || err.contains("(6)"),
        "{err}"
    );
    assert!(err.contains("another process provides it"), "{err}");

    assert!(c.unload(&name).await.unwrap());
    let (code, err) = first.ended().await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("closed the connection"), "{err}");
}

#[tokio::test]
async fn a_python_provider() {
    provides("python").await;
}

#[tokio::test]
async fn a_lua_provider_under_nvim() {
    provides("lua").await;
}

#[tokio::test]
async fn plain_lua_without_a_socket_library_gets_a_clear_error() {
    let lua = ["lua5.1", "lua"].into_iter().find(|l| {
        Command::new(l)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(lua) = lua else {
        eprintln!("skipped: no plain Lua interpreter");
        return;
    };
    let sdk = repo_root().join("sdk/lua");
    let out = Command::new(lua)
        .arg("-e")
        .arg(format!(
            "package.path = '{}/?.lua;' .. package.path \
             local m = require('norgopolis_module').new('x') \
             local ok, why = m:provide() io.stderr:write(tostring(why)) os.exit(ok and 0 or 3)",
            sdk.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ffi") && err.contains("needs") {
        assert_eq!(out.status.code(), Some(3), "{err}");
    } else {
        // This `lua` is LuaJIT (it has ffi): no server, so a connect error.
        assert!(err.contains("cannot connect"), "{err}");
    }
}

#[tokio::test]
async fn the_python_sdk_refuses_a_socket_dir_open_to_others() {
    let sb = Sandbox::new();
    let _server: ServerProc = sb.start_server_logged(&[]);
    let c = client(&sb).await;
    std::fs::set_permissions(&sb.runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut refused = provider(&sb, "python", "open");
    let (code, err) = refused.ended().await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("open to others") && err.contains("chmod 700"),
        "{err}"
    );
    std::fs::set_permissions(&sb.runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(c
        .list_modules()
        .await
        .unwrap()
        .modules
        .iter()
        .all(|m| m.name != "open"));
}
