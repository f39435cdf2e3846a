//! Control replies as MessagePack maps, so they reach Lua as plain tables
//! through the same conversion as call results.

use norgopolis_client::{ListModulesReply, LoadReply, ModuleInfo, ModuleStatus, StatusReply};
use rmpv::Value as Mp;

use crate::conn::map;

fn strings(list: Vec<String>) -> Mp {
    Mp::Array(list.into_iter().map(Mp::from).collect())
}

/// `{ pid, version, uptime_ms, socket, sessions, calls_in_flight, modules = {…}, modules_dirs, log_path, protocol_version, recent_failures = { { module, pid, reason, at_unix_ms } } }`.
pub fn status(s: StatusReply) -> Mp {
    map(vec![
        ("pid", Mp::from(s.pid)),
        ("version", Mp::from(s.version)),
        ("uptime_ms", Mp::from(s.uptime_ms)),
        ("socket", Mp::from(s.socket)),
        ("sessions", Mp::from(s.sessions)),
        ("calls_in_flight", Mp::from(s.calls_in_flight)),
        (
            "modules",
            Mp::Array(s.modules.into_iter().map(module_status).collect()),
        ),
        ("modules_dirs", strings(s.modules_dirs)),
        ("log_path", Mp::from(s.log_path)),
        ("protocol_version", Mp::from(s.protocol_version)),
        (
            "recent_failures",
            Mp::Array(
                s.recent_failures
                    .into_iter()
                    .map(|f| {
                        map(vec![
                            ("module", Mp::from(f.module)),
                            ("pid", Mp::from(f.pid)),
                            ("reason", Mp::from(f.reason)),
                            ("at_unix_ms", Mp::from(f.at_unix_ms)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// One loaded module: `{ name, pid, state, uptime_ms, calls_served, calls_in_flight, calls_queued, restarts, last_exit, failure, path }`.
pub fn module_status(m: ModuleStatus) -> Mp {
    map(vec![
        ("name", Mp::from(m.name)),
        ("pid", Mp::from(m.pid)),
        ("state", Mp::from(m.state)),
        ("uptime_ms", Mp::from(m.uptime_ms)),
        ("calls_served", Mp::from(m.calls_served)),
        ("calls_in_flight", Mp::from(m.calls_in_flight)),
        ("calls_queued", Mp::from(m.calls_queued)),
        ("restarts", Mp::from(m.restarts)),
        ("last_exit", Mp::from(m.last_exit)),
        ("failure", Mp::from(m.failure)),
        ("path", Mp::from(m.path)),
    ])
}

/// `{ modules = { { name, path, loaded, version, description, functions, function_docs, function_args, function_results, dependencies, autostart, error } }, dirs }`.
pub fn list_modules(r: ListModulesReply) -> Mp {
    map(vec![
        (
            "modules",
            Mp::Array(r.modules.into_iter().map(module_info).collect()),
        ),
        ("dirs", strings(r.dirs)),
    ])
}

fn module_info(m: ModuleInfo) -> Mp {
    map(vec![
        ("name", Mp::from(m.name)),
        ("path", Mp::from(m.path)),
        ("loaded", Mp::from(m.loaded)),
        ("version", Mp::from(m.version)),
        ("description", Mp::from(m.description)),
        ("functions", strings(m.functions)),
        ("function_docs", strings(m.function_docs)),
        ("function_args", strings(m.function_args)),
        ("function_results", strings(m.function_results)),
        ("dependencies", strings(m.dependencies)),
        ("autostart", Mp::from(m.autostart)),
        ("error", Mp::from(m.error)),
    ])
}

/// `{ module = <module status>, already_loaded }`.
pub fn load(r: LoadReply) -> Mp {
    map(vec![
        ("module", r.module.map(module_status).unwrap_or(Mp::Nil)),
        ("already_loaded", Mp::from(r.already_loaded)),
    ])
}
