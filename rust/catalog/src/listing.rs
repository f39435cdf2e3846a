//! Modules on disk as plain data: one record per module, as `norgopolis
//! module list --json` prints it and the Neovim library hands it to Lua, so
//! both describe a module (and its problem) in the same words.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::locate::{self, LocateError, Located};

/// Every module in `dirs` as the server would pick it (first dir wins),
/// each as [`record`] describes it.
pub fn list(dirs: &[PathBuf]) -> Vec<Value> {
    locate::scan(dirs)
        .iter()
        .map(|(name, found)| record(name, found))
        .collect()
}

/// One module: `name`, `path`, `exec`, `args`, `version`, `description`,
/// `dependencies`, `autostart`, `restart`, `functions` (`name`, `doc`,
/// `args`, `result`) and `error` (""), or only `name` and `error` when it
/// cannot load.
pub fn record(name: &str, found: &Result<Located, LocateError>) -> Value {
    let found = match found {
        Ok(found) => found,
        Err(e) => return json!({ "name": name, "error": e.to_string() }),
    };
    let m = found.manifest.clone().unwrap_or_default();
    let functions: Vec<Value> = m
        .functions
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "doc": f.doc(),
                "args": f.args().unwrap_or_default(),
                "result": f.result().unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "name": name,
        "path": found.origin.display().to_string(),
        "exec": found.exec.display().to_string(),
        "args": found.args,
        "version": m.version,
        "description": m.description,
        "dependencies": m.dependencies,
        "autostart": m.autostart,
        "restart": m.restart.as_str(),
        "functions": functions,
        "error": "",
    })
}
