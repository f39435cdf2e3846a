//! A private place to run servers in (the test harness's [`Sandbox`]), with
//! extra module names and memory readings.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{anyhow, Context};
use norgopolis_client::{Client, ConnectOptions};
use norgopolis_tests::{spawn_with_ready, Sandbox, ServerProc};

/// Names the echo binary is linked under, so that "4 modules loaded" means
/// four processes.
pub const MODULE_NAMES: [&str; 4] = ["echo", "echo2", "echo3", "echo4"];

/// A module folder running the echo binary over the lean transport
/// (`transport = "lean"` in its `module.toml`).
pub const LEAN_MODULE: &str = "echo-lean";

/// A sandbox whose modules dir holds echo under every name of
/// [`MODULE_NAMES`], and as [`LEAN_MODULE`].
pub struct Place {
    /// Socket, runtime dir, modules dir, log, environment.
    pub sandbox: Sandbox,
}

impl Place {
    /// A fresh place in a temp dir.
    pub fn new() -> anyhow::Result<Place> {
        let sandbox = Sandbox::new();
        let echo = norgopolis_tests::bin("echo");
        for name in &MODULE_NAMES[1..] {
            std::os::unix::fs::symlink(&echo, sandbox.modules.join(name))
                .with_context(|| format!("linking echo as {name}"))?;
        }
        sandbox.add_lean_module(LEAN_MODULE, &echo, &[]);
        Ok(Place { sandbox })
    }

    /// The socket servers of this place listen on.
    pub fn socket(&self) -> &Path {
        &self.sandbox.socket
    }

    /// Starts a foreground server logging to this place's log (the bench's
    /// own output stays readable) and waits until it is listening.
    pub fn start_server(&self) -> anyhow::Result<ServerProc> {
        self.start_server_with(&[])
    }

    /// [`Place::start_server`] with `extra` arguments.
    pub fn start_server_with(&self, extra: &[&str]) -> anyhow::Result<ServerProc> {
        let mut args = vec!["--linger", "600s", "--idle-timeout", "600s"];
        args.extend_from_slice(extra);
        let mut cmd = self.sandbox.server_command(&args);
        let log = File::create(&self.sandbox.log).context("server log")?;
        cmd.stdout(Stdio::null()).stderr(log);
        let (child, line) = spawn_with_ready(cmd)?;
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow!("server did not become ready: {line:?}"))?;
        Ok(ServerProc { child, pid })
    }

    /// Connection options for a client that never starts a server.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new("bench")
            .socket(self.socket())
            .client_name("norgopolis-bench")
            .spawn(false)
    }

    /// Attaches a client to the running server.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(self.options())
            .await
            .with_context(|| format!("attaching to {}", self.socket().display()))
    }

    /// Attaches a client whose calls use gRPC (the public protocol) rather
    /// than the lean transport.
    pub async fn grpc_client(&self) -> anyhow::Result<Client> {
        let opts = self.options().transport(norgopolis_client::Transport::Grpc);
        let client = Client::connect(opts)
            .await
            .with_context(|| format!("attaching to {}", self.socket().display()))?;
        anyhow::ensure!(!client.is_lean(), "asked for a gRPC client, got a lean one");
        Ok(client)
    }

    /// Stops whatever server runs on this place's socket and waits until it
    /// has exited (its lock is free). Fine if none runs.
    pub async fn stop_any_server(&self) -> anyhow::Result<()> {
        if let Ok(client) = Client::connect(self.options()).await {
            client.shutdown("bench: next repetition").await.ok();
        }
        let gone = norgopolis_client::wait_for_server_exit(
            self.socket(),
            std::time::Duration::from_secs(10),
        )
        .await?;
        anyhow::ensure!(
            gone,
            "the server on {} did not exit",
            self.socket().display()
        );
        Ok(())
    }

    /// Sets this place's environment on a command.
    pub fn env(&self, cmd: &mut std::process::Command) {
        self.sandbox.env(cmd);
    }

    /// The place's temp dir.
    pub fn dir(&self) -> PathBuf {
        self.sandbox.dir.path().to_path_buf()
    }
}

/// Resident set size of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_rss_is_readable_and_plausible() {
        let kib = rss_kib(std::process::id()).unwrap();
        assert!(kib > 100, "{kib} KiB");
        assert!(rss_kib(u32::MAX).is_err());
    }
}
