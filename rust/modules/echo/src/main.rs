//! `echo`: the bundled test module. Integration tests everywhere rely on
//! it, so its behaviour is fixed and documented here. It implements the
//! conformance function set of docs/protocol.md (`echo`, `count`, `fail`,
//! `sleep`, `big`), so `norgopolis module check` runs every check on it.
//!
//! | function  | arguments                               | result |
//! |-----------|-----------------------------------------|--------|
//! | `echo`    | any value                               | the argument, unchanged (nil when absent); any MessagePack value round-trips, binary, ext and nested maps included |
//! | `count`   | `n`, or `{n, delay_ms?, crash_after?, fail_after?}` | streams the integers `0..n`, sleeping `delay_ms` (default 0) between items. With `crash_after = k` (`k <= n`), once the first `k` items have been written to stdout the process exits abruptly with code 101 (a crash mid-stream); `k > n` never crashes. With `fail_after = k` (`k <= n`), the call fails with `Aborted` ("failed after k items") after the first `k` items |
//! | `sleep`   | `ms`                                    | sleeps `ms` milliseconds, then returns `ms` |
//! | `fail`    | `{code, message?}`                      | fails with that gRPC code, given as a name (`"NotFound"`; also `"not_found"`, `"NOT_FOUND"`) or a number (`5`), and that message (default `"failed on request"`); code `Ok`/`0` or an unknown code is `InvalidArgument` |
//! | `crash`   | exit code, or nothing                   | exits at once with that code (default 3), without replying |
//! | `env`     | ignored                                 | the value of `NORGOPOLIS_MODULE` (string), nil if unset |
//! | `env_all` | ignored                                 | `{module, socket, path}`: `NORGOPOLIS_MODULE`, `NORGOPOLIS_SOCKET`, `PATH`, each a string or nil |
//! | `pid`     | ignored                                 | the process id |
//! | `stderr`  | `text`                                  | writes `text` and a newline to stderr in one write (the router logs it), returns nil |
//! | `big`     | `n`                                     | a binary string of `n` bytes, byte `i` being `i % 256` |
//! | `relay`   | `{module, function, args?}`             | calls `module.function(args)` through the router (`NORGOPOLIS_SOCKET`) and streams its items back as they come; its error, code and message, becomes ours |
//! | `publish` | `{topic, data?}`                        | publishes `data` (nil when absent) on `topic` as this module (`NORGOPOLIS_MODULE`) through the router; returns how many sessions it reached |
//!
//! Arguments that do not fit answer `InvalidArgument`; an unknown function
//! answers `NotFound` listing these names. Like every SDK module it exits
//! with code 0 when stdin closes or on SIGTERM.
//!
//! `echo --provide NAME` serves the same functions as the external module
//! `NAME` (`Module::provide`, on `$NORGOPOLIS_SOCKET` or the default
//! socket) instead; it prints why it stopped to stderr and exits with code
//! 2 when the router refused the name, 1 otherwise.

use std::{io::Write, process::ExitCode, time::Duration};

use futures::StreamExt;
use norgopolis_sdk::{rmpv::Value, Code, Emitter, Error, Module};
use serde::Deserialize;

/// Exit code of a `count` told to crash mid-stream.
const STREAM_CRASH_EXIT: i32 = 101;
/// Exit code of `crash` without an argument.
const DEFAULT_CRASH_EXIT: i32 = 3;

// One connection, nothing computed: the runtime the SDK docs recommend.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = args.as_slice() {
        if flag == "--provide" {
            let ended = module(name).provide().await;
            eprintln!("echo: {ended}");
            return ExitCode::from(if ended.refused().is_some() { 2 } else { 1 });
        }
    }
    module("echo").run().await
}

fn module(name: &str) -> Module {
    Module::new(name)
        .function("echo", |v: Value| async move { Ok(v) })
        .stream("count", count)
        .describe_args("count", "n or {n, delay_ms?, crash_after?, fail_after?}")
        .function("sleep", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .function("fail", fail)
        .describe_args("fail", "{code: name or number, message?}")
        .function("crash", crash)
        .describe_args("crash", "exit code or nil")
        .function("env", |_: Value| async move {
            Ok(var(norgopolis_sdk::env::MODULE_ENV))
        })
        .function("env_all", |_: Value| async move {
            Ok(Value::Map(vec![
                ("module".into(), var(norgopolis_sdk::env::MODULE_ENV)),
                ("socket".into(), var(norgopolis_sdk::env::SOCKET_ENV)),
                ("path".into(), var("PATH")),
            ]))
        })
        .function("pid", |_: Value| async move { Ok(std::process::id()) })
        .function("stderr", |text: String| async move {
            let line = format!("{text}\n");
            std::io::stderr().lock().write_all(line.as_bytes())?;
            Ok(())
        })
        .function("big", |n: usize| async move {
            Ok(Value::Binary((0..n).map(|i| i as u8).collect()))
        })
        .stream("relay", relay)
        .describe_args("relay", "{module, function, args?}")
        .function("publish", publish)
        .describe_args("publish", "{topic, data?}")
}

#[derive(Deserialize)]
struct RelayArgs {
    module: String,
    function: String,
    #[serde(default = "nil")]
    args: Value,
}

async fn relay(args: RelayArgs, out: Emitter) -> Result<(), Error> {
    let router = norgopolis_sdk::router().await?;
    let mut items = router
        .invoke::<Value, Value>(&args.module, &args.function, &args.args)
        .await?;
    while let Some(item) = items.next().await {
        out.send(&item?).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct PublishArgs {
    topic: String,
    #[serde(default = "nil")]
    data: Value,
}

fn nil() -> Value {
    Value::Nil
}

async fn publish(args: PublishArgs) -> Result<u32, Error> {
    norgopolis_sdk::publish(&args.topic, &args.data).await
}

/// An environment variable as a string, nil if unset or not UTF-8.
fn var(name: &str) -> Value {
    std::env::var(name).map_or(Value::Nil, Value::from)
}

async fn crash(code: Option<i32>) -> Result<(), Error> {
    std::process::exit(code.unwrap_or(DEFAULT_CRASH_EXIT))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CountArgs {
    N(u64),
    Options {
        n: u64,
        #[serde(default)]
        delay_ms: u64,
        crash_after: Option<u64>,
        fail_after: Option<u64>,
    },
}

async fn count(args: CountArgs, out: Emitter) -> Result<(), Error> {
    let (n, delay_ms, crash_after, fail_after) = match args {
        CountArgs::N(n) => (n, 0, None, None),
        CountArgs::Options {
            n,
            delay_ms,
            crash_after,
            fail_after,
        } => (n, delay_ms, crash_after, fail_after),
    };
    if crash_after == Some(0) {
        crash_mid_stream(&out).await;
    }
    let failed = |k: u64| Error::new(Code::Aborted, format!("failed after {k} items"));
    if fail_after == Some(0) {
        return Err(failed(0));
    }
    for i in 0..n {
        out.send(&i).await?;
        if crash_after == Some(i + 1) {
            crash_mid_stream(&out).await;
        }
        if fail_after == Some(i + 1) {
            return Err(failed(i + 1));
        }
        if delay_ms > 0 && i + 1 < n {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }
    Ok(())
}

/// Exits abruptly, but only once the items sent so far are in the pipe:
/// tests expect exactly that many items before the crash.
async fn crash_mid_stream(out: &Emitter) -> ! {
    let _ = out.flush().await;
    std::process::exit(STREAM_CRASH_EXIT)
}

#[derive(Deserialize)]
struct FailArgs {
    code: CodeArg,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CodeArg {
    Number(i64),
    Name(String),
}

async fn fail(args: FailArgs) -> Result<Value, Error> {
    let code = match &args.code {
        CodeArg::Number(n) => i32::try_from(*n)
            .ok()
            .filter(|n| (1..=16).contains(n))
            .map(Code::from_i32),
        CodeArg::Name(name) => code_from_name(name),
    };
    let code = code.ok_or_else(|| {
        let given = match &args.code {
            CodeArg::Number(n) => n.to_string(),
            CodeArg::Name(s) => format!("{s:?}"),
        };
        Error::invalid_argument(format!(
            "fail: {given} is not a gRPC error code (use a name like \"NotFound\" or 1..16)"
        ))
    })?;
    let message = args
        .message
        .unwrap_or_else(|| "failed on request".to_owned());
    Err(Error::new(code, message))
}

/// Error codes by name; case and underscores do not matter.
fn code_from_name(name: &str) -> Option<Code> {
    let key: String = name
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match key.as_str() {
        "cancelled" | "canceled" => Code::Cancelled,
        "unknown" => Code::Unknown,
        "invalidargument" => Code::InvalidArgument,
        "deadlineexceeded" => Code::DeadlineExceeded,
        "notfound" => Code::NotFound,
        "alreadyexists" => Code::AlreadyExists,
        "permissiondenied" => Code::PermissionDenied,
        "resourceexhausted" => Code::ResourceExhausted,
        "failedprecondition" => Code::FailedPrecondition,
        "aborted" => Code::Aborted,
        "outofrange" => Code::OutOfRange,
        "unimplemented" => Code::Unimplemented,
        "internal" => Code::Internal,
        "unavailable" => Code::Unavailable,
        "dataloss" => Code::DataLoss,
        "unauthenticated" => Code::Unauthenticated,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_name() {
        for n in 1..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_from_name(&format!("{code:?}")), Some(code), "{code:?}");
        }
        assert_eq!(code_from_name("NOT_FOUND"), Some(Code::NotFound));
        assert_eq!(code_from_name("not_found"), Some(Code::NotFound));
        assert_eq!(code_from_name("Ok"), None);
        assert_eq!(code_from_name("Nope"), None);
    }
}
