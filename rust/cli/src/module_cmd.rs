//! `norgopolis module …` and `norgopolis functions`: printing what
//! [`crate::install`] did, and what is installed.

use std::path::PathBuf;

use norgopolis_catalog::listing;
use norgopolis_client::{Client, ConnectOptions};
use serde_json::{json, Value};

use crate::{
    args::ModuleCommand,
    install::{self, InstallError, Installed, Listed},
    print_json, print_text, render, Failure,
};

impl From<InstallError> for Failure {
    fn from(e: InstallError) -> Self {
        Failure {
            code: e.code,
            message: e.message,
            exit: 1,
        }
    }
}

/// Runs a `module` subcommand; `flags` are the global `--modules-dir`s.
pub async fn run(
    command: ModuleCommand,
    flags: &[PathBuf],
    opts: ConnectOptions,
) -> Result<(), Failure> {
    let dirs = install::modules_dirs(flags)?;
    match command {
        ModuleCommand::Install {
            path,
            cargo,
            name,
            force,
            cargo_args,
        } => {
            let installed = match (path, cargo) {
                (_, Some(spec)) => {
                    install::install_cargo(&spec, name.as_deref(), force, &cargo_args, &dirs)?
                }
                (Some(path), None) => install::install_path(&path, name.as_deref(), force, &dirs)?,
                (None, None) => return Err(Failure::usage("give a PATH or --cargo CRATE".into())),
            };
            report_install(&installed)
        }
        ModuleCommand::Remove { name } => {
            let removed = install::remove(&name, &dirs)?;
            print_text(&format!("removed {name} ({})\n", removed.display()))?;
            // A running server would keep the old process until it exits.
            if let Ok(client) = Client::connect(opts.spawn(false)).await {
                let unloaded = client.unload(&name).await;
                client.detach().await;
                if matches!(unloaded, Ok(true)) {
                    print_text(&format!("unloaded {name} from the running server\n"))?;
                }
            }
            Ok(())
        }
        ModuleCommand::Check {
            target,
            max_message_size,
        } => {
            // The module gets the socket a server would give it, for calls of its own.
            let socket = opts.socket.clone().or_else(|| {
                norgopolis_common::places::Places::from_env()
                    .ok()
                    .map(|p| p.socket)
            });
            crate::check::run(&target, &dirs, socket.as_deref(), max_message_size).await
        }
        ModuleCommand::List { json } => {
            let listed = install::list(&dirs);
            if json {
                print_json(&list_json(&listed, &dirs))
            } else {
                print_text(&list_text(&listed, &dirs))
            }
        }
    }
}

fn report_install(i: &Installed) -> Result<(), Failure> {
    let version = if i.version.is_empty() {
        String::new()
    } else {
        format!(" {}", i.version)
    };
    let verb = if i.replaced { "replaced" } else { "installed" };
    let mut text = format!("{verb} {}{version} at {}\n", i.name, i.path.display());
    if i.replaced {
        text.push_str(&format!(
            "a running server keeps a loaded {0} until `norgopolis unload {0}`\n",
            i.name
        ));
    }
    print_text(&text)?;
    for dep in &i.missing_dependencies {
        eprintln!(
            "warning: {} depends on '{dep}', which is not installed",
            i.name
        );
    }
    Ok(())
}

fn list_json(listed: &[Listed], dirs: &[PathBuf]) -> Value {
    let modules: Vec<Value> = listed
        .iter()
        .map(|l| listing::record(&l.name, &l.found))
        .collect();
    json!({
        "modules": modules,
        "dirs": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
    })
}

fn list_text(listed: &[Listed], dirs: &[PathBuf]) -> String {
    let mut out = String::new();
    if listed.is_empty() {
        out.push_str("no modules installed\n");
    } else {
        let rows = listed
            .iter()
            .map(|l| match &l.found {
                Ok(found) => {
                    let m = found.manifest.clone().unwrap_or_default();
                    let functions: Vec<&str> = m.functions.iter().map(|f| f.name()).collect();
                    vec![
                        l.name.clone(),
                        m.version,
                        functions.join(", "),
                        m.description,
                    ]
                }
                Err(e) => vec![
                    l.name.clone(),
                    String::new(),
                    String::new(),
                    format!("error: {e}"),
                ],
            })
            .collect();
        out.push_str(&render::table(
            &["MODULE", "VERSION", "FUNCTIONS", "DESCRIPTION"],
            rows,
        ));
    }
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    out.push_str(&format!("\nmodules dirs: {}\n", dirs.join(", ")));
    out
}

/// `norgopolis functions MODULE`: the declared functions, from the server.
pub async fn functions(module: &str, opts: ConnectOptions) -> Result<(), Failure> {
    let client = Client::connect(opts).await?;
    let list = client.list_modules().await;
    client.detach().await;
    let list = list?;
    let Some(info) = list.modules.iter().find(|m| m.name == module) else {
        return Err(Failure {
            code: "NotFound",
            message: format!("no module '{module}' (see `norgopolis modules`)"),
            exit: 1,
        });
    };
    print_text(&signature_lines(info))
}

/// One line per function: its name, then its declared signature when it
/// has one (`query(args) -> result`), so the first word stays the name.
fn signature_lines(info: &norgopolis_proto::v1::ModuleInfo) -> String {
    let mut text = String::new();
    for (i, name) in info.functions.iter().enumerate() {
        let args = info.function_args.get(i).map_or("", String::as_str);
        let result = info.function_results.get(i).map_or("", String::as_str);
        text.push_str(name);
        if !args.is_empty() || !result.is_empty() {
            let args = if args.is_empty() { "any" } else { args };
            text.push_str(&format!("  ({args})"));
            if !result.is_empty() {
                text.push_str(&format!(" -> {result}"));
            }
        }
        text.push('\n');
    }
    text
}
