//! `compat-module`: a module exactly as authors write them today with the
//! public `norgopolis-module` 2.0.3 crate (its recommended unbounded-channel
//! streams, its own runtime, its quirks: it never exits on stdin EOF and
//! only leaves after five idle minutes, so the router has to reap it).
//!
//! | function | arguments        | result |
//! |----------|------------------|--------|
//! | `echo`   | any value        | the argument (nil when absent) |
//! | `count`  | `{n, delay_ms?}` | streams `0..n`, sleeping `delay_ms` between items |
//! | `pid`    | ignored          | the process id |
//! | `fail`   | message          | fails with `PermissionDenied` and that message |

use std::time::Duration;

use norgopolis_module::{
    invoker_service::Service, module_communication::MessagePack, Code, Module, Status,
};
use serde_json::Value;
use tokio_stream::wrappers::UnboundedReceiverStream;

struct Compat;

type Items = UnboundedReceiverStream<Result<MessagePack, Status>>;

fn decode(args: Option<MessagePack>) -> Result<Value, Status> {
    match args {
        None => Ok(Value::Null),
        Some(a) => a
            .decode::<Value>()
            .map_err(|e| Status::new(Code::InvalidArgument, e.to_string())),
    }
}

fn encode(value: impl serde::Serialize) -> Result<MessagePack, Status> {
    MessagePack::encode(value).map_err(|e| Status::new(Code::Internal, e.to_string()))
}

fn one(value: impl serde::Serialize) -> Result<Items, Status> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(encode(value));
    Ok(UnboundedReceiverStream::new(rx))
}

#[norgopolis_module::async_trait]
impl Service for Compat {
    type Stream = Items;

    async fn call(&self, function: String, args: Option<MessagePack>) -> Result<Items, Status> {
        let args = decode(args)?;
        match function.as_str() {
            "echo" => one(args),
            "pid" => one(std::process::id()),
            "fail" => Err(Status::new(
                Code::PermissionDenied,
                args.as_str().unwrap_or("refused").to_string(),
            )),
            "count" => {
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(0);
                let delay = args.get("delay_ms").and_then(Value::as_u64).unwrap_or(0);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    for i in 0..n {
                        // The caller went away: stop producing.
                        if tx.send(encode(i)).is_err() {
                            return;
                        }
                        if delay > 0 && i + 1 < n {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                    }
                });
                Ok(UnboundedReceiverStream::new(rx))
            }
            other => Err(Status::new(
                Code::NotFound,
                format!("compat-module has no function {other:?}"),
            )),
        }
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = Module::new().start(Compat).await {
        eprintln!("compat-module: {e:#}");
        std::process::exit(1);
    }
}
