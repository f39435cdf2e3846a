//! `norgopolis module check NAME|PATH`: starts a module as the router would
//! (lean transport) and drives it through the protocol of
//! docs/protocol.md, printing a pass/fail table.

mod checks;
mod conn;
mod values;

use std::path::{Path, PathBuf};

use checks::{Row, Verdict};
use conn::ModuleConn;

use crate::Failure;
use norgopolis_catalog::{locate, manifest::Transport};

/// Finds the module: a path when `target` contains '/', else a name in `dirs`.
fn find(target: &str, dirs: &[PathBuf]) -> Result<locate::Located, Failure> {
    let not_found = |message: String| Failure {
        code: "NotFound",
        message,
        exit: 1,
    };
    if !target.contains('/') {
        return locate::locate(target, dirs).map_err(|e| not_found(e.to_string()));
    }
    let path = crate::absolute(Path::new(target))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match locate::at_path(&name, &path) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(not_found(format!("{target}: no module there (an executable, or a folder with module.toml or an executable named like it)"))),
        Err(e) => Err(not_found(e.to_string())),
    }
}

/// Runs every check on `target`; fails when any check failed.
pub async fn run(
    target: &str,
    dirs: &[PathBuf],
    socket: Option<&Path>,
    limit: usize,
) -> Result<(), Failure> {
    let module = find(target, dirs)?;
    let mut m = ModuleConn::spawn(&module, socket).map_err(|e| Failure {
        code: "FailedPrecondition",
        message: format!("cannot start {}: {e}", module.exec.display()),
        exit: 1,
    })?;
    let mut rows: Vec<Row> = Vec::new();
    let greeted = checks::hello(&mut m).await;
    let ok = matches!(greeted, Verdict::Pass(_));
    rows.push(("hello".into(), greeted));
    if ok {
        rows.push(("ping".into(), checks::ping(&mut m).await));
        rows.push((
            "unknown function".into(),
            checks::unknown_function(&mut m).await,
        ));
        rows.extend(checks::echo_types(&mut m).await);
        rows.push((
            "count: 10,000 items under credit".into(),
            checks::stream(&mut m).await,
        ));
        rows.push(("cancel mid-stream".into(), checks::cancel(&mut m).await));
        rows.push((
            "fail: every error code".into(),
            checks::error_codes(&mut m).await,
        ));
        rows.push((
            "sleep past a deadline".into(),
            checks::deadline(&mut m).await,
        ));
        rows.push((
            "calls run concurrently".into(),
            checks::concurrency(&mut m).await,
        ));
        rows.extend(checks::big_messages(&mut m, limit).await);
    }
    rows.push((
        "exit when stdin closes".into(),
        checks::exit_on_stdin_close(&mut m).await,
    ));
    report(&module, rows, &m).await
}

async fn report(module: &locate::Located, rows: Vec<Row>, m: &ModuleConn) -> Result<(), Failure> {
    let failed = rows
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Fail(_)))
        .count();
    let skipped = rows
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Skip(_)))
        .count();
    let total = rows.len();
    let table_rows = rows
        .into_iter()
        .map(|(name, verdict)| {
            let (word, detail) = match verdict {
                Verdict::Pass(d) => ("pass", d),
                Verdict::Fail(d) => ("FAIL", d),
                Verdict::Skip(d) => ("skipped", d),
            };
            vec![name, word.to_string(), detail]
        })
        .collect();
    let mut text = format!("checking {} ({})\n", module.name, module.exec.display());
    if module.manifest.as_ref().map(|m| m.transport) != Some(Transport::Lean) {
        text.push_str("note: its module.toml does not say transport = \"lean\"; the server will speak gRPC to it\n");
    }
    text.push_str(&crate::render::table(
        &["CHECK", "RESULT", "DETAIL"],
        table_rows,
    ));
    text.push_str(&format!(
        "\n{} passed, {failed} failed, {skipped} skipped\n",
        total - failed - skipped
    ));
    if failed > 0 {
        let stderr = m.stderr.lock().await;
        if !stderr.is_empty() {
            text.push_str("\nthe module's last stderr lines:\n");
            for line in stderr.iter() {
                text.push_str(&format!("  {line}\n"));
            }
        }
    }
    crate::print_text(&text)?;
    if failed > 0 {
        return Err(Failure {
            code: "FailedPrecondition",
            message: format!(
                "{} failed {failed} of {total} conformance checks",
                module.name
            ),
            exit: 1,
        });
    }
    Ok(())
}
