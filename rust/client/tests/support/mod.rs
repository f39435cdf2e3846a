//! A private norgopolis world for one test: its own socket, log and modules
//! dir in a temp dir, the real server binary, and every server started in it
//! killed when the test ends.
//!
//! Shared by the client's and the CLI's integration tests.

#![allow(dead_code)]

use std::{
    ffi::OsString,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use norgopolis_client::ConnectOptions;

/// `target/debug` (or whichever profile dir holds the test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p norgopolis-server -p norgopolis-echo` first",
        p.display()
    );
    p
}

/// The real server binary.
pub fn server_bin() -> PathBuf {
    built("norgopolis-server")
}

/// The echo module binary.
pub fn echo_bin() -> PathBuf {
    built("echo")
}

/// Client logs in the test output when `RUST_LOG` asks for them.
pub fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// One isolated norgopolis place.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub modules: PathBuf,
    server: PathBuf,
    pids: Mutex<Vec<u32>>,
}

impl Sandbox {
    /// A fresh place with `echo` in its modules dir.
    pub fn new() -> Sandbox {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join("run");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&run)
            .expect("runtime dir");
        let modules = dir.path().join("modules");
        std::fs::create_dir(&modules).expect("modules dir");
        std::os::unix::fs::symlink(echo_bin(), modules.join("echo")).expect("echo symlink");
        Sandbox {
            socket: run.join("test.sock"),
            log: dir.path().join("server.log"),
            modules,
            server: server_bin(),
            pids: Mutex::new(Vec::new()),
            dir,
        }
    }

    /// Arguments for servers started here. The linger is long so that a
    /// test decides when a server goes, not a timer; `Drop` cleans up.
    pub fn server_args(&self) -> Vec<OsString> {
        vec![
            "--modules-dir".into(),
            self.modules.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--linger".into(),
            "60s".into(),
        ]
    }

    /// Client options for this place.
    pub fn opts(&self) -> ConnectOptions {
        ConnectOptions::new("rust")
            .client_name("integration-test")
            .socket(&self.socket)
            .server_binary(&self.server)
            .server_args(self.server_args())
    }

    /// Environment for a CLI process using this place.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("NORGOPOLIS_SOCKET", self.socket.clone().into()),
            ("NORGOPOLIS_SERVER", self.server.clone().into()),
            ("NORGOPOLIS_LOG", self.log.clone().into()),
            ("NORGOPOLIS_MODULES_DIR", self.modules.clone().into()),
            ("XDG_RUNTIME_DIR", self.dir.path().join("xdg-run").into()),
            ("XDG_STATE_HOME", self.dir.path().join("state").into()),
            ("XDG_DATA_HOME", self.dir.path().join("data").into()),
        ]
    }

    /// Remembers a server pid so `Drop` kills it.
    pub fn track(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }

    /// The server log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pids of live server processes started for this sandbox's socket.
    pub fn live_servers(&self) -> Vec<u32> {
        let mut found = Vec::new();
        let socket = self.socket.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if !is_server(pid, &self.server) {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let mentions = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(&socket);
            if (mentions(&cmdline) || mentions(&environ)) && !is_zombie(pid) {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut pids = self.pids.lock().map(|p| p.clone()).unwrap_or_default();
        pids.extend(self.live_servers());
        for pid in pids {
            // Only our server binary: never a recycled pid.
            if is_server(pid, &self.server) {
                // SAFETY: sending a signal.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn is_server(pid: u32, server: &Path) -> bool {
    // The server's group guardian is a fork of the server binary, named apart.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() == "np-guardian" {
        return false;
    }
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|exe| exe == server || exe.canonicalize().ok() == server.canonicalize().ok())
        .unwrap_or(false)
}

fn is_zombie(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state == 'Z')
}

/// The bits of `/proc/<pid>/stat` tests look at.
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub session: u32,
}

/// Reads `/proc/<pid>/stat`; `None` if the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
    })
}

/// Whether a process exists and has not exited.
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z')
}
