//! Function signatures declared in `module.toml`: the server checks every
//! call's arguments against them before routing, on the lean and the gRPC
//! client transport alike, and answers `InvalidArgument` naming the field;
//! the module never sees a refused call. Bad signatures make the module
//! broken (naming file, function and column) and nothing else.

mod support;

use std::process::{Command, Stdio};

use norgopolis_client::{Client, ClientError, Transport};
use norgopolis_tests::*;
use rmpv::Value;
use support::{client_with, map, write_script};
use tonic::Code;

/// One function per type of the notation (and a few nested shapes), all
/// served by one Python handler that records the function it ran; `seen`
/// (declared without a signature) returns those names.
const SIGNED: &[(&str, &str)] = &[
    ("t_nil", "nil"),
    ("t_boolean", "boolean"),
    ("t_integer", "integer"),
    ("t_number", "number"),
    ("t_string", "string"),
    ("t_binary", "binary"),
    ("t_any", "any"),
    ("t_array", "[integer]"),
    ("t_map", "{ path: string, limit?: integer }"),
    ("t_open", "{ path: string, ... }"),
    ("t_union", "integer | { n: integer }"),
    ("t_optional", "string?"),
    (
        "t_nested",
        "{ items: [{ name: string, tags?: [string] }], \"odd key\"?: boolean }",
    ),
];

/// Writes module folder `recorder` (Python SDK, lean transport).
fn recorder(sb: &Sandbox) {
    let folder = sb.modules.join("recorder");
    std::fs::create_dir_all(&folder).unwrap();
    let program = folder.join("module.py");
    let names: Vec<String> = SIGNED.iter().map(|(n, _)| format!("{n:?}")).collect();
    std::fs::write(
        &program,
        format!(
            "import sys\nsys.path.insert(0, {sdk:?})\nfrom norgopolis_module import Module\n\
             m = Module()\nseen = []\n\
             def make(name):\n    def run(args):\n        seen.append(name)\n        return args\n    return run\n\
             for name in [{names}]:\n    m.function(name)(make(name))\n\
             m.function('seen')(lambda _args: list(seen))\n\
             m.run()\n",
            sdk = repo_root().join("sdk/python").display().to_string(),
            names = names.join(", "),
        ),
    )
    .unwrap();
    write_script(
        &folder.join("run"),
        &format!("exec python3 '{}'\n", program.display()),
    );
    let mut functions: Vec<String> = SIGNED
        .iter()
        .map(|(n, sig)| format!("  {{ name = {n:?}, args = {sig:?}, result = {sig:?} }},"))
        .collect();
    functions.push("  \"seen\",".into());
    std::fs::write(
        folder.join("module.toml"),
        format!(
            "exec = \"run\"\ntransport = \"lean\"\nfunctions = [\n{}\n]\n",
            functions.join("\n")
        ),
    )
    .unwrap();
}

async fn call(client: &Client, function: &str, args: &Value) -> Result<Vec<Value>, ClientError> {
    client
        .call::<Value, Value>("recorder", function, args)
        .await
}

fn list(items: Vec<Value>) -> Value {
    Value::Array(items)
}

/// `(function, arguments that fit)`.
fn fitting() -> Vec<(&'static str, Value)> {
    vec![
        ("t_nil", Value::Nil),
        ("t_boolean", true.into()),
        ("t_integer", (-7).into()),
        ("t_number", 1.5.into()),
        ("t_number", 3.into()),
        ("t_string", "text".into()),
        ("t_binary", Value::Binary(vec![0, 255])),
        ("t_any", map(&[("x", list(vec![Value::Nil]))])),
        ("t_array", list(vec![1.into(), 2.into()])),
        ("t_array", list(vec![])),
        ("t_map", map(&[("path", "a".into())])),
        ("t_map", map(&[("path", "a".into()), ("limit", 3.into())])),
        ("t_open", map(&[("path", "a".into()), ("extra", 1.into())])),
        ("t_union", 4.into()),
        ("t_union", map(&[("n", 4.into())])),
        ("t_optional", Value::Nil),
        ("t_optional", "x".into()),
        (
            "t_nested",
            map(&[(
                "items",
                list(vec![
                    map(&[("name", "a".into())]),
                    map(&[("name", "b".into()), ("tags", list(vec!["t".into()]))]),
                ]),
            )]),
        ),
    ]
}

/// `(function, arguments that do not fit, the error's first words)`.
fn refused() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("t_nil", 1.into(), "args: expected nil, got integer"),
        (
            "t_boolean",
            "yes".into(),
            "args: expected boolean, got string",
        ),
        (
            "t_integer",
            1.5.into(),
            "args: expected integer, got number",
        ),
        ("t_number", "1".into(), "args: expected number, got string"),
        (
            "t_string",
            Value::Binary(vec![1]),
            "args: expected string, got binary",
        ),
        (
            "t_binary",
            "text".into(),
            "args: expected binary, got string",
        ),
        (
            "t_array",
            list(vec![1.into(), "2".into()]),
            "args[2]: expected integer, got string",
        ),
        (
            "t_map",
            map(&[("path", "a".into()), ("limit", "3".into())]),
            "args.limit: expected integer, got string",
        ),
        (
            "t_map",
            map(&[("limit", 3.into())]),
            "args.path: missing (expected string)",
        ),
        (
            "t_map",
            map(&[("path", "a".into()), ("limt", 3.into())]),
            "args: unexpected key \"limt\" (expected path, limit)",
        ),
        (
            "t_map",
            Value::Nil,
            "args: expected {path: string, limit?: integer}, got nil",
        ),
        (
            "t_union",
            map(&[("n", "4".into())]),
            "args.n: expected integer, got string",
        ),
        (
            "t_union",
            "4".into(),
            "args: expected integer | {n: integer}, got string",
        ),
        (
            "t_optional",
            1.into(),
            "args: expected string | nil, got integer",
        ),
        (
            "t_nested",
            map(&[(
                "items",
                list(vec![
                    map(&[("name", "a".into())]),
                    map(&[("name", "b".into()), ("tags", list(vec![1.into()]))]),
                ]),
            )]),
            "args.items[2].tags[1]: expected string, got integer",
        ),
        (
            "t_nested",
            map(&[("items", list(vec![])), ("odd key", 1.into())]),
            "args[\"odd key\"]: expected boolean, got integer",
        ),
    ]
}

#[tokio::test]
async fn every_type_is_checked_on_both_transports_before_the_module_sees_the_call() {
    let sb = Sandbox::new();
    recorder(&sb);
    let _server = sb.start_server(&[]);
    let mut expected_seen = Vec::new();
    for transport in [Transport::Lean, Transport::Grpc] {
        let client = client_with(&sb, transport).await;
        for (function, args) in fitting() {
            let got = call(&client, function, &args)
                .await
                .unwrap_or_else(|e| panic!("{function}({args}) over {transport:?}: {e}"));
            assert_eq!(
                got,
                std::slice::from_ref(&args),
                "{function} over {transport:?}"
            );
            expected_seen.push(Value::from(function));
        }
        for (function, args, message) in refused() {
            let e = call(&client, function, &args).await.expect_err(&format!(
                "{function}({args}) over {transport:?} was let through"
            ));
            assert_eq!(e.code(), Code::InvalidArgument, "{function}: {e}");
            let text = e.message();
            assert!(
                text.starts_with(message)
                    && text.contains(&format!("module 'recorder' function '{function}'")),
                "{function}({args}) over {transport:?}: {text}"
            );
        }
        client.detach().await;
    }
    // The module ran the fitting calls and nothing else.
    let client = client_with(&sb, Transport::Lean).await;
    let seen = call(&client, "seen", &Value::Nil).await.unwrap();
    assert_eq!(seen, [Value::Array(expected_seen)]);
}

#[tokio::test]
async fn a_function_without_a_signature_is_not_checked() {
    let sb = Sandbox::new();
    recorder(&sb);
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    // `seen` declares no signature: anything goes through.
    for args in [Value::Nil, 1.into(), map(&[("x", 1.into())])] {
        assert!(call(&client, "seen", &args).await.is_ok());
    }
    // Neither does a function the manifest does not list: the module answers.
    let e = call(&client, "undeclared", &Value::Nil).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

#[tokio::test]
async fn a_signature_syntax_error_breaks_that_module_only() {
    let sb = Sandbox::new();
    let folder = sb.modules.join("broken");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(bin("echo"), folder.join("broken")).unwrap();
    std::fs::write(
        folder.join("module.toml"),
        "functions = [\n  { name = \"query\", args = \"{ path: strng }\" },\n]\n",
    )
    .unwrap();
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    let e = client
        .call::<Value, Value>("broken", "query", &Value::Nil)
        .await
        .unwrap_err();
    let text = e.message();
    assert!(
        text.contains("module.toml")
            && text.contains("function \"query\", `args`: column 9: unknown type \"strng\""),
        "{text}"
    );
    // Listed as broken, with the same reason; others keep working.
    let listed = client.list_modules().await.unwrap();
    let broken = listed.modules.iter().find(|m| m.name == "broken").unwrap();
    assert!(broken.error.contains("column 9"), "{}", broken.error);
    let echoed: Vec<Value> = client.call("echo", "echo", &Value::from(1)).await.unwrap();
    assert_eq!(echoed, [Value::from(1)]);
}

#[tokio::test]
async fn the_cli_prints_signatures() {
    let sb = Sandbox::new();
    recorder(&sb);
    let _server = sb.start_server(&[]);
    let mut cmd = Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    let out = cmd
        .args(["functions", "recorder"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(
            &"t_map  ({ path: string, limit?: integer }) -> { path: string, limit?: integer }"
        ),
        "{text}"
    );
    assert!(
        lines.contains(&"t_array  ([integer]) -> [integer]"),
        "{text}"
    );
    // No signature: the name alone, as completion scripts expect.
    assert!(lines.contains(&"seen"), "{text}");
    // Over the server's list too.
    let client = client_with(&sb, Transport::Lean).await;
    let listed = client.list_modules().await.unwrap();
    let m = listed
        .modules
        .iter()
        .find(|m| m.name == "recorder")
        .unwrap();
    let i = m.functions.iter().position(|f| f == "t_union").unwrap();
    assert_eq!(m.function_args[i], "integer | { n: integer }");
    assert_eq!(m.function_results[i], "integer | { n: integer }");
    let seen = m.functions.iter().position(|f| f == "seen").unwrap();
    assert_eq!(m.function_args[seen], "");
}
