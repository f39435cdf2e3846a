//! `norgopolis`: call modules and control the server from a shell.
//!
//! Exit codes: 0 success, 1 a failed call or command (`error: <Code>:
//! <message>` on stderr), 2 a usage error.

mod args;
mod check;
mod convert;
mod install;
mod module_cmd;
mod render;

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;
use futures::StreamExt;
use norgopolis_client::{Client, ClientError, ConnectOptions};

use args::{Cli, Command};

/// How long `shutdown` waits for the server to be gone.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// A command's failure: what to print and how to exit.
struct Failure {
    code: &'static str,
    message: String,
    exit: u8,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure {
            code: e.code_name(),
            message: e.message(),
            exit: 1,
        }
    }
}

impl Failure {
    fn usage(message: String) -> Self {
        Failure {
            code: "InvalidArgument",
            message,
            exit: 2,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}: {}", f.code, f.message);
            ExitCode::from(f.exit)
        }
    }
}

/// Diagnostics only when asked for (`RUST_LOG`), on stderr.
fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .init();
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let opts = connect_options(&cli)?;
    match cli.command {
        Command::Call {
            module,
            function,
            args,
        } => {
            let args = read_args(args.as_deref())?;
            let client = Client::connect(opts).await?;
            let res = call(&client, &module, &function, args).await;
            client.detach().await;
            res
        }
        Command::Status { json } => {
            let client = Client::connect(opts).await?;
            let status = client.status().await;
            client.detach().await;
            let status = status?;
            if json {
                print_json(&render::status_json(&status))
            } else {
                print_text(&render::status_text(&status))
            }
        }
        Command::Modules { json } => {
            let client = Client::connect(opts).await?;
            let list = client.list_modules().await;
            client.detach().await;
            let list = list?;
            if json {
                print_json(&render::modules_json(&list))
            } else {
                print_text(&render::modules_text(&list))
            }
        }
        Command::Load { target, name } => {
            let (name, path) = load_target(&target, name)?;
            let client = Client::connect(opts).await?;
            let reply = client.load(&name, path.as_deref()).await;
            client.detach().await;
            let reply = reply?;
            let pid = reply.module.as_ref().map(|m| m.pid).unwrap_or_default();
            let shown = reply
                .module
                .as_ref()
                .map(|m| m.name.as_str())
                .filter(|n| !n.is_empty())
                .unwrap_or(&name);
            if reply.already_loaded {
                print_text(&format!("{shown} was already loaded (pid {pid})\n"))
            } else {
                print_text(&format!("loaded {shown} (pid {pid})\n"))
            }
        }
        Command::Unload { name } => {
            let client = Client::connect(opts).await?;
            let was_loaded = client.unload(&name).await;
            client.detach().await;
            if was_loaded? {
                print_text(&format!("unloaded {name}\n"))
            } else {
                print_text(&format!("{name} was not loaded\n"))
            }
        }
        Command::Restart { name } => {
            let client = Client::connect(opts).await?;
            let reply = match client.unload(&name).await {
                Ok(_) => client.load(&name, None).await,
                Err(e) => Err(e),
            };
            client.detach().await;
            let pid = reply?.module.map(|m| m.pid).unwrap_or_default();
            print_text(&format!("restarted {name} (pid {pid})\n"))
        }
        Command::Functions { module } => module_cmd::functions(&module, opts).await,
        Command::Module { command } => module_cmd::run(command, &cli.modules_dir, opts).await,
        Command::Shutdown { reason } => shutdown(opts, &reason).await,
    }
}

fn connect_options(cli: &Cli) -> Result<ConnectOptions, Failure> {
    let mut opts = ConnectOptions::new("cli")
        .client_name("norgopolis")
        .spawn(!cli.no_spawn);
    if let Some(s) = &cli.socket {
        opts = opts.socket(absolute(s)?);
    }
    if let Some(s) = &cli.server {
        opts = opts.server_binary(absolute(s)?);
    }
    // A daemon does not keep our working directory's meaning: hand it
    // absolute paths.
    for dir in &cli.modules_dir {
        opts = opts.server_arg("--modules-dir").server_arg(absolute(dir)?);
    }
    if let Some(l) = &cli.linger {
        opts = opts.server_arg("--linger").server_arg(l);
    }
    Ok(opts)
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))
}

/// Arguments as MessagePack bytes: JSON text, "-" for stdin, none for nil.
fn read_args(arg: Option<&str>) -> Result<Vec<u8>, Failure> {
    let text = match arg {
        None => return Ok(Vec::new()),
        Some("-") => {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::usage(format!("cannot read arguments from stdin: {e}")))?;
            s
        }
        Some(t) => t.to_string(),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("arguments are not valid JSON: {e}")))?;
    Ok(convert::encode(&convert::json_to_msgpack(&json)))
}

async fn call(client: &Client, module: &str, function: &str, args: Vec<u8>) -> Result<(), Failure> {
    let mut results = client.invoke_raw(module, function, args).await?;
    let mut out = io::stdout().lock();
    while let Some(item) = results.next().await {
        let value = convert::decode(&item?).map_err(|e| Failure {
            code: "Internal",
            message: format!("the module sent a result that is not MessagePack: {e}"),
            exit: 1,
        })?;
        let line = convert::msgpack_to_json(&value).to_string();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): stop quietly; dropping the
            // stream cancels the call.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(output_failure(e)),
        }
    }
    Ok(())
}

/// `load` takes a name, or a path when the argument contains a '/'.
fn load_target(target: &str, name: Option<String>) -> Result<(String, Option<PathBuf>), Failure> {
    if !target.contains('/') {
        return Ok((name.unwrap_or_else(|| target.to_string()), None));
    }
    let path = absolute(Path::new(target))?;
    let name = match name {
        Some(n) => n,
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{target}: cannot tell the module name; pass --name"
                ))
            })?,
    };
    Ok((name, Some(path)))
}

async fn shutdown(opts: ConnectOptions, reason: &str) -> Result<(), Failure> {
    // Starting a server only to stop it would be silly.
    let client = match Client::connect(opts.spawn(false)).await {
        Ok(c) => c,
        Err(ClientError::Connect { source, .. })
            if source.kind() != io::ErrorKind::PermissionDenied =>
        {
            return print_text("no server running\n")
        }
        Err(e) => return Err(e.into()),
    };
    let socket = client.socket().to_path_buf();
    let pid = client.server_pid();
    client.shutdown(reason).await?;
    client.detach().await;
    if norgopolis_client::wait_for_server_exit(&socket, SHUTDOWN_WAIT).await? {
        print_text(&format!("server {pid} has exited\n"))
    } else {
        Err(Failure {
            code: "DeadlineExceeded",
            message: format!(
                "server {pid} is still running {}s after being asked to exit",
                SHUTDOWN_WAIT.as_secs()
            ),
            exit: 1,
        })
    }
}

fn print_json(v: &serde_json::Value) -> Result<(), Failure> {
    print_text(&format!("{v}\n"))
}

fn print_text(s: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(output_failure(e)),
    }
}

fn output_failure(e: io::Error) -> Failure {
    Failure {
        code: "Internal",
        message: format!("cannot write to stdout: {e}"),
        exit: 1,
    }
}
