//! `compat-client HOST PORT MODULE FUNCTION [JSON-ARGS]`: calls a module
//! through the public `norgopolis-client` 0.6 crate, the way existing
//! front ends do (TCP host and port, streaming callback).
//!
//! Prints `item <json>` for every result as it arrives, then `done`; on
//! failure prints `error <code> <message>` and exits with status 2.

use norgopolis_client::MessagePack;
use serde_json::Value;

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 4 {
        eprintln!("usage: compat-client HOST PORT MODULE FUNCTION [JSON-ARGS]");
        std::process::exit(64);
    }
    let args = match argv.get(4) {
        None => None,
        Some(text) => {
            let value: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("bad JSON arguments: {e}");
                    std::process::exit(64);
                }
            };
            Some(MessagePack::encode(value).expect("encode arguments"))
        }
    };
    let outcome = async {
        let mut connection = norgopolis_client::connect(&argv[0], &argv[1]).await?;
        connection
            .invoke(argv[2].clone(), argv[3].clone(), args, |item: Value| {
                println!("item {item}");
            })
            .await
    }
    .await;
    match outcome {
        Ok(()) => println!("done"),
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => println!("error {:?} {}", status.code(), status.message()),
                None => println!("error Transport {e:#}"),
            }
            std::process::exit(2);
        }
    }
}
