//! Cold start: no server running, then one front end's first result (the
//! front end starts the server, which starts the module).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::{
    nvim::NvimSetup,
    place::Place,
    stats::{median, millis},
};

/// Medians over repetitions of one cold-start scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Cold {
    /// From spawning the front end to its first result line, ms.
    pub first_result_ms: f64,
    /// From spawning the front end to its exit, ms.
    pub exit_ms: f64,
    /// Time the front end measured itself (Neovim: from its script's first
    /// line), ms; absent for the CLI.
    pub inside_ms: Option<f64>,
    /// Repetitions (after one untimed run).
    pub reps: usize,
}

struct Run {
    to_line: Duration,
    to_exit: Duration,
    line: String,
}

/// Spawns `cmd`, times its first stdout line starting with `prefix` and its exit.
fn run_until_line(mut cmd: Command, prefix: &str) -> anyhow::Result<Run> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().context("spawning the front end")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let found = loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break None;
        }
        if line.starts_with(prefix) {
            break Some(start.elapsed());
        }
    };
    let out = child.wait_with_output()?;
    let to_exit = start.elapsed();
    match found {
        Some(to_line) if out.status.success() => Ok(Run {
            to_line,
            to_exit,
            line: line.trim_end().to_string(),
        }),
        _ => bail!(
            "front end failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs `make_cmd` `reps + 1` times from no server (the first untimed, to
/// warm the page cache), stopping the server it started after each.
async fn scenario(
    place: &Place,
    reps: usize,
    prefix: &'static str,
    make_cmd: impl Fn() -> Command,
    check: impl Fn(&str) -> anyhow::Result<Option<f64>>,
) -> anyhow::Result<Cold> {
    let (mut lines, mut exits, mut insides) = (vec![], vec![], vec![]);
    for rep in 0..=reps {
        place.stop_any_server().await?;
        let cmd = make_cmd();
        let run = tokio::task::spawn_blocking(move || run_until_line(cmd, prefix)).await??;
        let inside = check(&run.line)?;
        if rep > 0 {
            lines.push(millis(run.to_line));
            exits.push(millis(run.to_exit));
            insides.extend(inside);
        }
    }
    place.stop_any_server().await?;
    Ok(Cold {
        first_result_ms: median(lines),
        exit_ms: median(exits),
        inside_ms: (!insides.is_empty()).then(|| median(insides)),
        reps,
    })
}

/// `norgopolis call echo echo '"hi"'` with no server running.
pub async fn cli(place: &Place, reps: usize) -> anyhow::Result<Cold> {
    let cli = norgopolis_tests::bin("norgopolis");
    scenario(
        place,
        reps,
        "\"hi\"",
        || {
            let mut cmd = Command::new(&cli);
            place.env(&mut cmd);
            cmd.args(["call", "echo", "echo", "\"hi\""])
                .stdin(Stdio::null());
            cmd
        },
        |_| Ok(None),
    )
    .await
}

/// A fresh headless Neovim whose first `require("norgopolis").call` finds
/// no server; with `bare`, Neovim starting and printing a line, no plugin.
pub async fn nvim(
    place: &Place,
    setup: &NvimSetup,
    reps: usize,
    bare: bool,
) -> anyhow::Result<Cold> {
    let args: Vec<String> = if bare { vec!["bare".into()] } else { vec![] };
    scenario(
        place,
        reps,
        "result ",
        || setup.command(place, "cold.lua", &args),
        |line| {
            let mut parts = line.split_whitespace().skip(1);
            let ns: f64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("bad result line {line:?}"))?;
            let value = parts.next().unwrap_or_default();
            if !bare && value != "hi" {
                bail!("cold call returned {value:?}");
            }
            Ok((!bare).then_some(ns / 1e6))
        },
    )
    .await
}
