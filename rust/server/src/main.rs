//! `norgopolis-server`: the per-user singleton router daemon.
//!
//! Start-up order matters: settings are read and checked first (so errors
//! reach the spawning client), then the process detaches (before any thread
//! exists, as `fork` requires), and only then is the tokio runtime built.

mod accept;
mod config;
mod modules;
mod services;
mod sessions;
mod startup;

use std::process::ExitCode;

use clap::Parser;

use config::settings;
use startup::{daemon, logfile, ready};

/// `--check-config`: resolves the settings as a start would (config file
/// included, with the same parser) and prints the outcome instead of serving.
fn check_config(args: settings::Args) -> ExitCode {
    let file = args
        .config
        .clone()
        .or_else(|| norgopolis_common::places::config_path().ok());
    match settings::Settings::resolve(args) {
        Ok(s) => {
            match file {
                Some(f) if f.exists() => println!("config ok: {}", f.display()),
                Some(f) => println!("config ok: no file at {} (defaults)", f.display()),
                None => println!("config ok: no config file (defaults)"),
            }
            println!("socket: {}", s.places.socket.display());
            for dir in &s.modules_dirs {
                println!("modules dir: {}", dir.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("norgopolis-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    ready::report_panics();
    let args = match settings::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // A spawning client waits on the readiness pipe: tell it what was
            // wrong instead of leaving it with a bare exit status.
            if e.use_stderr() {
                let mut ready = ready::ReadyPipe::from_fd(settings::ready_fd_from_argv());
                ready.fail(e.to_string().lines().next().unwrap_or("bad command line"));
            }
            e.exit();
        }
    };
    if args.version {
        println!("norgopolis-server {}", norgopolis_common::version());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        return check_config(args);
    }
    let mut ready = ready::ReadyPipe::from_fd(args.ready_fd);
    let settings = match settings::Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("norgopolis-server: {msg}");
            ready.fail(&msg);
            return ExitCode::FAILURE;
        }
    };
    let log = if settings.foreground {
        None
    } else {
        match daemon::detach(&settings.log_path, settings.log_max_size) {
            Ok(log) => Some(log),
            Err(e) => {
                let msg = format!("cannot detach: {e:#}");
                eprintln!("norgopolis-server: {msg}");
                ready.fail(&msg);
                return ExitCode::FAILURE;
            }
        }
    };
    init_tracing(log);
    // Before any thread exists: the guardian is forked.
    if let Err(e) = modules::process::guardian::start(ready::close_without_report) {
        tracing::warn!("cannot start the group guardian (helpers modules start may outlive a killed server): {e}");
    }
    if settings.debug_panic {
        panic!("deliberate panic (--debug-panic)");
    }
    // One thread: the server routes bytes and computes nothing, so worker
    // threads only add hand-offs (per routed call on the 2-core benchmark
    // machine: 2.5 instead of 6 thread switches, a third less server CPU,
    // ~15% more sequential calls/s, the same under 8 clients; `make bench`).
    // Module processes are spawned from their own thread (spawner.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .thread_name("norgopolis")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready.fail(&format!("cannot start runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(startup::run::run(settings, ready)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr with `--foreground`, else to the rotating log file.
fn init_tracing(log: Option<logfile::RotatingLog>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NORGOPOLIS_LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    match log {
        Some(log) => fmt.with_writer(log).init(),
        None => fmt.with_writer(std::io::stderr).init(),
    }
}
