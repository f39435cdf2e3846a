//! Figures from inside headless Neovim, through the plugin's Lua API.
//!
//! The Lua side lives in `rust/bench/lua/`; it loads the release build of
//! the native library given to it (never touching `lua/norgopolis/native.so`)
//! and reports on stdout.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::{
    cpu::PerCall,
    place::Place,
    series::Plan,
    stats::{median, Latency, Rep},
};

/// Where Neovim, the native library and the scripts are.
#[derive(Debug, Clone)]
pub struct NvimSetup {
    /// The `nvim` binary.
    pub nvim: PathBuf,
    /// The native library to load as `norgopolis.native`.
    pub native: PathBuf,
    /// The repository root (holds `lua/norgopolis`).
    pub root: PathBuf,
}

impl NvimSetup {
    fn script(&self, name: &str) -> PathBuf {
        self.root.join("rust/bench/lua").join(name)
    }

    /// `nvim --headless -u NONE -i NONE -l <script> <native> <root> <args>`
    /// in `place`'s environment.
    pub fn command(&self, place: &Place, script: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.nvim);
        place.env(&mut cmd);
        cmd.args(["--headless", "-u", "NONE", "-i", "NONE", "-l"])
            .arg(self.script(script))
            .arg(&self.native)
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Checks that everything needed is there, and replaces a launcher
    /// (the venv's `nvim` is a Python script that execs the real binary,
    /// ~80 ms that a user's Neovim does not pay) by the binary it runs.
    pub fn resolve(mut self) -> anyhow::Result<NvimSetup> {
        for (what, p) in [("nvim", &self.nvim), ("native library", &self.native)] {
            if !p.exists() {
                bail!("{what} not found at {}", p.display());
            }
        }
        let out = Command::new(&self.nvim)
            .args(["--headless", "-u", "NONE", "-i", "NONE", "-l"])
            .arg(self.script("progpath.lua"))
            .stdin(Stdio::null())
            .output()
            .context("running nvim")?;
        let progpath = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || progpath.is_empty() {
            bail!(
                "{} does not run: {}",
                self.nvim.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.nvim = PathBuf::from(progpath);
        Ok(self)
    }
}

#[derive(Deserialize)]
struct LuaRep {
    wall_ns: f64,
    samples_ns: Vec<f64>,
    cpu_us_per_call: f64,
    switches_per_call: f64,
}

#[derive(Deserialize)]
struct LuaWarm {
    small: Vec<LuaRep>,
    large: Vec<LuaRep>,
}

/// Warm echo from Lua: latencies (64 B, 64 KiB) and what a 64 B call costs
/// the Neovim process.
pub struct Warm {
    /// 64-byte argument.
    pub b64: Latency,
    /// 64 KiB argument.
    pub kib64: Latency,
    /// CPU and context switches of the Neovim process per 64 B call.
    pub cost: PerCall,
}

/// Runs the warm Lua series.
pub fn warm(
    setup: &NvimSetup,
    place: &Place,
    module: &str,
    small: Plan,
    large_calls: usize,
) -> anyhow::Result<Warm> {
    let mut args: Vec<String> = [small.reps, small.warmup, small.calls, large_calls]
        .map(|n| n.to_string())
        .into();
    args.push(module.to_string());
    let warm: LuaWarm = run_json(setup, place, "warm.lua", &args)?;
    Ok(Warm {
        b64: latency_of(samples(&warm.small), small.calls),
        kib64: latency_of(samples(&warm.large), large_calls),
        cost: PerCall {
            process: "nvim".into(),
            cpu_us: median(warm.small.iter().map(|r| r.cpu_us_per_call)),
            switches: median(warm.small.iter().map(|r| r.switches_per_call)),
        },
    })
}

fn samples(reps: &[LuaRep]) -> impl Iterator<Item = (f64, &[f64])> {
    reps.iter().map(|r| (r.wall_ns, r.samples_ns.as_slice()))
}

/// Runs `script` in headless Neovim in `place` and parses the last line it
/// prints that starts with `{` (its JSON report).
pub fn run_json<T: serde::de::DeserializeOwned>(
    setup: &NvimSetup,
    place: &Place,
    script: &str,
    args: &[String],
) -> anyhow::Result<T> {
    let out = setup
        .command(place, script, args)
        .output()
        .context("running nvim")?;
    if !out.status.success() {
        bail!(
            "nvim {script} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("no result from nvim: {text}"))?;
    serde_json::from_str(line).with_context(|| format!("nvim {script} result"))
}

/// Latency over repetitions given as (wall time, per-call samples), in ns.
pub fn latency_of<'a>(reps: impl Iterator<Item = (f64, &'a [f64])>, calls: usize) -> Latency {
    let reps: Vec<Rep> = reps
        .map(|(wall_ns, samples_ns)| {
            let mut samples: Vec<Duration> = samples_ns
                .iter()
                .map(|&ns| Duration::from_nanos(ns as u64))
                .collect();
            Rep::from_samples(&mut samples, Duration::from_nanos(wall_ns as u64))
        })
        .collect();
    Latency::from_reps(&reps, calls)
}

/// Repository root this binary was built from.
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
