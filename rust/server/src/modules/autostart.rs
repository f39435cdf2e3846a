//! Autostart: modules whose manifest says `autostart = true`, and those the
//! config lists, are loaded when the server starts, dependencies first. A
//! module that fails is logged and shown as failed by `Status`; the others
//! and the server carry on.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use norgopolis_catalog::locate;

use super::host::{Cause, ModuleHost};

/// Longest the readiness report waits for autostart to finish.
pub const READY_WAIT: Duration = Duration::from_secs(3);

/// Runs [`autostart`] in the background and calls `ready` once it is done,
/// or after [`READY_WAIT`] if it takes longer.
pub fn spawn_autostart(
    host: Arc<ModuleHost>,
    configured: Vec<String>,
    ready: impl FnOnce() + Send + 'static,
) {
    let run = tokio::spawn(async move { autostart(&host, &configured).await });
    tokio::spawn(async move {
        if tokio::time::timeout(READY_WAIT, run).await.is_err() {
            tracing::warn!(
                "autostart still running after {} s; reporting ready anyway",
                READY_WAIT.as_secs()
            );
        }
        ready();
    });
}

/// Loads the autostart modules one by one, in dependency order; returns
/// the names tried, in order, each with its error if it failed.
pub async fn autostart(host: &ModuleHost, configured: &[String]) -> Vec<(String, Option<String>)> {
    let found = locate::scan(host.dirs());
    let deps: BTreeMap<String, Vec<String>> = found
        .iter()
        .filter_map(|(name, l)| {
            let m = l.as_ref().ok()?.manifest.as_ref()?;
            Some((name.clone(), m.dependencies.clone()))
        })
        .collect();
    let mut wanted: BTreeSet<String> = found
        .iter()
        .filter(|(_, l)| {
            l.as_ref()
                .ok()
                .and_then(|l| l.manifest.as_ref())
                .is_some_and(|m| m.autostart)
        })
        .map(|(name, _)| name.clone())
        .collect();
    wanted.extend(configured.iter().cloned());
    let order = order(&wanted, |name| deps.get(name).cloned().unwrap_or_default());
    if !order.is_empty() {
        tracing::info!("autostart: {}", order.join(", "));
    }
    let mut report = Vec::with_capacity(order.len());
    for name in order {
        let error = match host.load_as(&name, None, Cause::Autostart).await {
            Ok(_) => None,
            Err(e) => {
                let error = e.message().to_string();
                tracing::warn!(module = %name, "autostart failed: {error}");
                host.record_failure(&name, &format!("autostart failed: {error}"));
                Some(error)
            }
        };
        report.push((name, error));
    }
    report
}

/// `wanted` sorted so that every module comes after the wanted modules it
/// depends on (directly or through others); ties alphabetical. Cycles are
/// left for the load to refuse with a clear error.
fn order(wanted: &BTreeSet<String>, deps_of: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    fn visit(
        name: &str,
        wanted: &BTreeSet<String>,
        deps_of: &dyn Fn(&str) -> Vec<String>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let mut deps = deps_of(name);
        deps.sort();
        for dep in deps {
            visit(&dep, wanted, deps_of, seen, out);
        }
        if wanted.contains(name) {
            out.push(name.to_string());
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in wanted {
        visit(name, wanted, &deps_of, &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(wanted: &[&str], table: &[(&str, &[&str])]) -> Vec<String> {
        let wanted = wanted.iter().map(|s| s.to_string()).collect();
        let table: BTreeMap<&str, Vec<String>> = table
            .iter()
            .map(|(n, d)| (*n, d.iter().map(|s| s.to_string()).collect()))
            .collect();
        order(&wanted, |n| table.get(n).cloned().unwrap_or_default())
    }

    #[test]
    fn dependencies_first_then_alphabetical() {
        let table: &[(&str, &[&str])] = &[("a", &["x"]), ("x", &["z"]), ("m", &[])];
        // a needs z through x (not wanted itself): z still goes first.
        assert_eq!(run(&["a", "m", "z"], table), ["z", "a", "m"]);
        assert_eq!(run(&["m", "b"], table), ["b", "m"]);
    }

    #[test]
    fn cycles_do_not_hang() {
        let table: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"])];
        assert_eq!(run(&["a", "b"], table), ["b", "a"]);
    }
}
