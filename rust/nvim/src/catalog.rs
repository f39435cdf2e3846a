//! The module catalog for Lua: `native.modules_dirs(opts)`,
//! `native.server_binary(explicit, beside)` and `native.disk_modules(dirs)`
//! answer with `norgopolis-catalog`'s rules, the server's own, so
//! `lua/norgopolis/` presents these answers instead of re-deriving them.
//!
//! | function | returns |
//! |---|---|
//! | `modules_dirs({ flags?, config?, fallbacks? })` | `{ dirs, search, source, config? }` or `nil, message` |
//! | `server_binary(explicit?, {beside…})` | `{ path?, source?, refused?, tried, message? }` |
//! | `disk_modules({dirs…})` | list of `module list --json` records |

use std::path::{Path, PathBuf};

use mlua::{IntoLuaMulti, Lua, Table, Value};
use norgopolis_catalog::{
    dirs::{self, ConfigDirs, DirsSource},
    listing,
    server_binary::{self, ServerSource},
};

/// Adds the catalog's functions to the module table `m`.
pub fn add(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set("modules_dirs", lua.create_function(modules_dirs)?)?;
    m.set("server_binary", lua.create_function(server_binary)?)?;
    m.set("disk_modules", lua.create_function(disk_modules)?)?;
    Ok(())
}

/// `opts.flags` is the caller's own choice of dirs (the `modules_dirs`
/// option), the first layer of the rule; `opts.fallbacks` (the bundled
/// modules) are appended in `search`.
fn modules_dirs(lua: &Lua, opts: Option<Table>) -> mlua::Result<mlua::MultiValue> {
    let list = |key: &str| -> mlua::Result<Vec<PathBuf>> {
        let Some(t) = &opts else { return Ok(vec![]) };
        let items: Option<Vec<String>> = t.get(key)?;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect())
    };
    let flags = list("flags")?;
    let fallbacks = list("fallbacks")?;
    let config: Option<String> = match &opts {
        Some(t) => t.get("config")?,
        None => None,
    };
    let resolved = match dirs::resolve(&flags, ConfigDirs::Read(config.map(PathBuf::from))) {
        Ok(r) => r,
        Err(e) => return (Value::Nil, e.to_string()).into_lua_multi(lua),
    };
    let t = lua.create_table()?;
    t.set("dirs", strings(&resolved.dirs))?;
    t.set("search", strings(&resolved.with_fallbacks(&fallbacks)))?;
    t.set("source", resolved.source.kind())?;
    if let DirsSource::Config(path) = &resolved.source {
        t.set("config", display(path))?;
    }
    t.into_lua_multi(lua)
}

fn server_binary(
    lua: &Lua,
    (explicit, beside): (Option<String>, Option<Vec<String>>),
) -> mlua::Result<Table> {
    let beside: Vec<PathBuf> = beside
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let t = lua.create_table()?;
    match server_binary::find_server(explicit.as_deref().map(Path::new), &beside) {
        Ok(found) => {
            t.set("path", display(&found.path))?;
            t.set("source", found.source.kind())?;
            t.set("tried", vec![display(&found.path)])?;
        }
        Err(e) => {
            t.set("refused", e.refused.map(ServerSource::kind))?;
            t.set("tried", e.tried.clone())?;
            t.set("message", e.to_string())?;
        }
    }
    Ok(t)
}

fn disk_modules(lua: &Lua, dirs: Vec<String>) -> mlua::Result<Table> {
    let dirs: Vec<PathBuf> = dirs.into_iter().map(PathBuf::from).collect();
    let t = lua.create_table()?;
    for (i, record) in listing::list(&dirs).into_iter().enumerate() {
        t.raw_set(i + 1, json_to_lua(lua, record)?)?;
    }
    Ok(t)
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn strings(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().map(|d| display(d)).collect()
}

/// A catalog record as plain Lua values.
fn json_to_lua(lua: &Lua, v: serde_json::Value) -> mlua::Result<Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => Value::Number(n.as_f64().unwrap_or_default()),
        J::String(s) => Value::String(lua.create_string(s)?),
        J::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        J::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k, json_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}
