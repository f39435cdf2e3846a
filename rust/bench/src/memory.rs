//! Resident memory of the server and its modules.

use anyhow::Context;
use norgopolis_client::Client;
use serde::Serialize;

use crate::{
    place::{rss_kib, Place, MODULE_NAMES},
    routed,
};

/// Memory with modules loaded.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    /// Modules loaded (echo under several names).
    pub modules: usize,
    /// Server RSS with them loaded, KiB.
    pub server_kib: u64,
    /// Each module process's RSS, KiB.
    pub module_kib: Vec<u64>,
    /// Each module's process id, in the order of [`MODULE_NAMES`].
    #[serde(skip)]
    pub pids: Vec<u32>,
}

/// Memory growth under load.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// Calls made between the readings.
    pub calls: usize,
    /// Concurrent clients making them.
    pub clients: usize,
    /// Server RSS before, KiB.
    pub before_kib: u64,
    /// Server RSS after, KiB.
    pub after_kib: u64,
    /// after - before, KiB (negative when memory was returned).
    pub growth_kib: i64,
}

/// Loads every module of [`MODULE_NAMES`] and reads the RSS of all processes.
pub async fn load_all(client: &Client, server_pid: u32) -> anyhow::Result<Loaded> {
    let mut pids = Vec::new();
    for name in MODULE_NAMES {
        let reply = client
            .load(name, None)
            .await
            .with_context(|| format!("loading {name}"))?;
        pids.push(reply.module.map(|m| m.pid).unwrap_or(0));
    }
    let module_kib = pids
        .iter()
        .map(|&pid| rss_kib(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Loaded {
        modules: MODULE_NAMES.len(),
        server_kib: rss_kib(server_pid)?,
        module_kib,
        pids,
    })
}

/// Server RSS before and after `calls` 64 B echo calls spread over `clients`.
pub async fn growth(
    place: &Place,
    server_pid: u32,
    payload: &[u8],
    clients: usize,
    calls: usize,
) -> anyhow::Result<Growth> {
    let clients_v = routed::clients(place, clients, false).await?;
    // Every client, stream and buffer size has been seen once before the
    // first reading, so what remains is growth, not warm-up.
    routed::burst(&clients_v, "echo", payload, 1000).await?;
    let before_kib = rss_kib(server_pid)?;
    routed::burst(&clients_v, "echo", payload, calls / clients).await?;
    let after_kib = rss_kib(server_pid)?;
    for c in clients_v {
        c.detach().await;
    }
    Ok(Growth {
        calls: calls / clients * clients,
        clients,
        before_kib,
        after_kib,
        growth_kib: after_kib as i64 - before_kib as i64,
    })
}
