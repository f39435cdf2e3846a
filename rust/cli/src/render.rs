//! Human tables and JSON forms of the server's status and module list.

use norgopolis_client::{ListModulesReply, ModuleInfo, ModuleStatus, StatusReply};
use serde_json::{json, Value};

/// `StatusReply` as JSON, field names as in the proto.
pub fn status_json(s: &StatusReply) -> Value {
    json!({
        "pid": s.pid,
        "version": s.version,
        "protocol_version": s.protocol_version,
        "uptime_ms": s.uptime_ms,
        "socket": s.socket,
        "sessions": s.sessions,
        "calls_in_flight": s.calls_in_flight,
        "modules": s.modules.iter().map(module_status_json).collect::<Vec<_>>(),
        "modules_dirs": s.modules_dirs,
        "log_path": s.log_path,
        "cli_version": norgopolis_common::VERSION,
    })
}

/// `ModuleStatus` as JSON.
pub fn module_status_json(m: &ModuleStatus) -> Value {
    json!({
        "name": m.name,
        "pid": m.pid,
        "state": m.state,
        "uptime_ms": m.uptime_ms,
        "calls_served": m.calls_served,
        "calls_in_flight": m.calls_in_flight,
        "restarts": m.restarts,
        "last_exit": m.last_exit,
        "path": m.path,
        "calls_queued": m.calls_queued,
        "failure": m.failure,
        "kind": m.kind,
    })
}

/// `ListModulesReply` as JSON.
pub fn modules_json(r: &ListModulesReply) -> Value {
    json!({
        "modules": r.modules.iter().map(module_info_json).collect::<Vec<_>>(),
        "dirs": r.dirs,
    })
}

fn module_info_json(m: &ModuleInfo) -> Value {
    json!({
        "name": m.name,
        "path": m.path,
        "loaded": m.loaded,
        "version": m.version,
        "description": m.description,
        "functions": m.functions,
        "function_docs": m.function_docs,
        "function_args": m.function_args,
        "function_results": m.function_results,
        "dependencies": m.dependencies,
        "autostart": m.autostart,
        "error": m.error,
    })
}

/// The status as a short summary followed by a table of loaded modules.
pub fn status_text(s: &StatusReply) -> String {
    let mut out = format!(
        "server    pid {}, version {}, protocol {}, up {}\n\
         socket    {}\n\
         sessions  {} ({} calls in flight)\n\
         log       {}\n",
        s.pid,
        s.version,
        s.protocol_version,
        duration(s.uptime_ms),
        s.socket,
        s.sessions,
        s.calls_in_flight,
        s.log_path,
    );
    out.push_str(&version_line(&s.version, norgopolis_common::VERSION));
    for (i, d) in s.modules_dirs.iter().enumerate() {
        let label = if i == 0 { "modules" } else { "" };
        out.push_str(&format!("{label:<10}{d}\n"));
    }
    out.push('\n');
    if s.modules.is_empty() {
        out.push_str("no modules loaded\n");
        return out;
    }
    let rows = s
        .modules
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.pid.to_string(),
                // An external module's process is not the server's.
                if m.kind.is_empty() {
                    m.state.clone()
                } else {
                    format!("{} ({})", m.state, m.kind)
                },
                duration(m.uptime_ms),
                m.calls_served.to_string(),
                m.calls_in_flight.to_string(),
                m.restarts.to_string(),
                m.last_exit.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "MODULE",
            "PID",
            "STATE",
            "UPTIME",
            "CALLS",
            "IN FLIGHT",
            "RESTARTS",
            "LAST EXIT",
        ],
        rows,
    ));
    for m in s.modules.iter().filter(|m| !m.failure.is_empty()) {
        out.push_str(&format!("{}: {}\n", m.name, m.failure));
    }
    out
}

/// The CLI's own version, and what to do when the server runs another.
fn version_line(server: &str, cli: &str) -> String {
    if server == cli {
        format!("cli       version {cli}\n")
    } else {
        format!(
            "cli       version {cli}: the server runs {server}; `norgopolis shutdown` lets the next call start this version\n"
        )
    }
}

/// Modules available on disk (and loaded ones), one row each.
pub fn modules_text(r: &ListModulesReply) -> String {
    let mut out = String::new();
    if r.modules.is_empty() {
        out.push_str("no modules found\n");
    } else {
        let rows = r
            .modules
            .iter()
            .map(|m| {
                let about = if m.error.is_empty() {
                    m.description.clone()
                } else {
                    format!("error: {}", m.error)
                };
                vec![
                    m.name.clone(),
                    if m.loaded { "yes" } else { "no" }.to_string(),
                    m.version.clone(),
                    m.path.clone(),
                    about,
                ]
            })
            .collect();
        out.push_str(&table(
            &["MODULE", "LOADED", "VERSION", "PATH", "DESCRIPTION"],
            rows,
        ));
    }
    if !r.dirs.is_empty() {
        out.push_str(&format!("\nsearched: {}\n", r.dirs.join(", ")));
    }
    out
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Milliseconds as a short human duration: `850ms`, `12s`, `3m 04s`,
/// `2h 03m`, `1d 02h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(184_000), "3m 04s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(duration(93_600_000), "1d 02h");
    }

    fn status() -> StatusReply {
        StatusReply {
            pid: 42,
            version: "0.1.0".into(),
            uptime_ms: 61_000,
            socket: "/r/n.sock".into(),
            sessions: 2,
            calls_in_flight: 1,
            modules: vec![ModuleStatus {
                name: "echo".into(),
                pid: 4321,
                state: "running".into(),
                uptime_ms: 5_000,
                calls_served: 17,
                calls_in_flight: 1,
                ..Default::default()
            }],
            modules_dirs: vec!["/m1".into(), "/m2".into()],
            log_path: "/l/server.log".into(),
            protocol_version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn status_table_has_summary_and_one_row_per_module() {
        let text = status_text(&status());
        assert!(text.contains("pid 42, version 0.1.0"), "{text}");
        assert!(text.contains("up 1m 01s"), "{text}");
        assert!(text.contains("/r/n.sock"), "{text}");
        let mut lines = text.lines().skip_while(|l| !l.starts_with("MODULE"));
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        // Columns line up: each value starts where its header does.
        for (h, v) in [("PID", "4321"), ("STATE", "running"), ("CALLS", "17")] {
            assert_eq!(header.find(h), row.find(v), "{header}\n{row}");
        }
        assert!(row.starts_with("echo"));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn status_shows_the_cli_version_and_a_mismatch() {
        let mut s = status();
        s.version = norgopolis_common::VERSION.into();
        let text = status_text(&s);
        assert!(
            text.contains(&format!(
                "cli       version {}\n",
                norgopolis_common::VERSION
            )),
            "{text}"
        );
        s.version = "0.0.1".into();
        let text = status_text(&s);
        assert!(
            text.contains("the server runs 0.0.1; `norgopolis shutdown`"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_restarts_and_failures() {
        let mut s = status();
        s.modules.push(ModuleStatus {
            name: "flaky".into(),
            state: "failed".into(),
            restarts: 5,
            last_exit: "exit status 9".into(),
            failure: "gave up after 5 restarts".into(),
            ..Default::default()
        });
        let text = status_text(&s);
        let row = text.lines().find(|l| l.starts_with("flaky")).unwrap();
        assert!(
            row.contains("failed") && row.contains(" 5 ") && row.ends_with("exit status 9"),
            "{row}"
        );
        assert!(
            text.ends_with("flaky: gave up after 5 restarts\n"),
            "{text}"
        );
        assert_eq!(
            status_json(&s)["modules"][1]["failure"],
            "gave up after 5 restarts"
        );
    }

    #[test]
    fn status_json_uses_proto_field_names() {
        let v = status_json(&status());
        assert_eq!(v["pid"], 42);
        assert_eq!(v["modules"][0]["calls_served"], 17);
        assert_eq!(v["modules_dirs"][1], "/m2");
    }
}
