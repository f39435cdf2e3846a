//! The module hop alone: gRPC over a module's stdio, no router.
//!
//! We start the echo module ourselves and speak
//! `module_communication.Invoker` to it over its pipes, the way the server
//! does, so the difference to the routed figures is what the router adds.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
};

use anyhow::{ensure, Context};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use norgopolis_proto::module_communication::{
    invoker_client::InvokerClient, Invocation, MessagePack,
};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::{
    series::{sequential, stream_series, Plan, Streamed},
    stats::Latency,
};

/// A module process and the gRPC client on its stdio.
pub struct DirectModule {
    child: Child,
    client: InvokerClient<Channel>,
}

impl DirectModule {
    /// Starts the module binary at `exec` on pipes.
    pub async fn start(exec: &std::path::Path) -> anyhow::Result<DirectModule> {
        let mut child = Command::new(exec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exec.display()))?;
        let stdin = child.stdin.take().context("module stdin")?;
        let stdout = child.stdout.take().context("module stdout")?;
        let io = Arc::new(Mutex::new(Some(tokio::io::join(stdout, stdin))));
        let connector = tower::service_fn(move |_| {
            let io = io.lock().ok().and_then(|mut s| s.take());
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("module pipes already used"))
            }
        });
        let channel = Endpoint::from_static("http://module.local")
            .connect_with_connector(connector)
            .await
            .context("HTTP/2 over the module's stdio")?;
        let client = InvokerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(DirectModule { child, client })
    }

    /// The module's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// One call; returns the items' total size.
    pub async fn call(&self, function: &str, args: &[u8]) -> anyhow::Result<usize> {
        let request = Invocation {
            function_name: function.to_string(),
            args: Some(MessagePack {
                data: args.to_vec(),
            }),
        };
        let mut stream = self.client.clone().invoke(request).await?.into_inner();
        let mut size = 0;
        while let Some(item) = stream.next().await {
            size += item?.data.len();
        }
        Ok(size)
    }

    /// Sequential echo calls with `payload`.
    pub async fn echo_series(&self, payload: &[u8], plan: Plan) -> anyhow::Result<Latency> {
        let size = self.call("echo", payload).await?;
        ensure!(
            size == payload.len(),
            "echo returned {size} bytes, sent {}",
            payload.len()
        );
        sequential(plan, || async {
            self.call("echo", payload).await?;
            Ok(())
        })
        .await
    }

    /// Streams `count(items)` `reps` times.
    pub async fn stream(&self, items: u64, reps: usize) -> anyhow::Result<Streamed> {
        let args = norgopolis_proto::msgpack::encode(&items)?;
        stream_series(items, reps, || async {
            let request = Invocation {
                function_name: "count".into(),
                args: Some(MessagePack { data: args.clone() }),
            };
            let s = self.client.clone().invoke(request).await?.into_inner();
            Ok(s.map(|item| item.map(drop).map_err(anyhow::Error::from))
                .boxed())
        })
        .await
    }

    /// Closes stdin (the module's cue to exit) and waits for it, killing
    /// it if it lingers.
    pub async fn stop(mut self) {
        drop(self.client);
        let exited =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
