//! Provider processes (external modules) for the tests of `PROVIDE`.

#![allow(dead_code)] // Each test file uses its own subset.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
};

use norgopolis_client::{Client, ModuleStatus};
use norgopolis_tests::{bin, eventually, Sandbox};

use crate::support::WAIT;

/// A provider process, killed on drop.
pub struct Provider {
    /// The process.
    pub child: Child,
}

impl Provider {
    /// The echo module providing `name` (the Rust SDK's `provide`).
    pub fn echo(sb: &Sandbox, name: &str) -> Provider {
        let mut cmd = Command::new(bin("echo"));
        cmd.args(["--provide", name]);
        Provider::run(sb, cmd)
    }

    /// Runs `cmd` in the sandbox's environment as a provider.
    pub fn run(sb: &Sandbox, mut cmd: Command) -> Provider {
        sb.env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Provider {
            child: cmd.spawn().expect("start provider"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the provider to end by itself; its exit code and stderr.
    pub async fn ended(&mut self) -> (Option<i32>, String) {
        let child = &mut self.child;
        let deadline = tokio::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the provider") {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the provider did not end within {WAIT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        (status.code(), err)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of module `name`, if the server knows it.
pub async fn module_status(c: &Client, name: &str) -> Option<ModuleStatus> {
    let status = c.status().await.expect("status");
    status.modules.into_iter().find(|m| m.name == name)
}

/// Waits until `name` runs as an external module; returns its status.
pub async fn registered(c: &Client, name: &str) -> ModuleStatus {
    eventually(WAIT, "the provider to register", || async {
        module_status(c, name)
            .await
            .filter(|m| m.state == "running" && m.kind == "external")
    })
    .await
}
