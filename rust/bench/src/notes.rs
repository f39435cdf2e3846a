//! The notes module on a generated workspace (`--only-notes`): cold index,
//! restart from its cache, `search` from Lua and Rust, how soon a written
//! file shows in `backlinks`, and the module's memory.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use norgopolis_client::Client;
use rmpv::Value;
use serde::Serialize;

use crate::{
    nvim::NvimSetup,
    place::{rss_kib, Place},
    stats::{percentile, Latency, Rep},
};

/// What the generator wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// Notes written.
    pub notes: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Every figure of the notes bench.
#[derive(Debug, Clone, Serialize)]
pub struct NotesResults {
    /// The workspace measured.
    pub workspace: Generated,
    /// Cold index as the module timed it (no cache), ms.
    pub cold_index_ms: f64,
    /// From `load` to the first answer of a cold module, ms.
    pub cold_first_answer_ms: f64,
    /// Restart from the cache as the module timed it, ms.
    pub restart_index_ms: f64,
    /// From a call that starts the stopped module to its answer, ms.
    pub restart_first_answer_ms: f64,
    /// `search` top-20 from Lua in Neovim.
    pub search_lua: Latency,
    /// `search` top-20 from the Rust client.
    pub search_rust: Latency,
    /// From a file written to `backlinks` answering with it, ms: p50, max.
    pub write_to_backlinks_ms: (f64, f64),
    /// Module RSS after the cold index and after the queries, KiB.
    pub module_kib: (u64, u64),
}

/// Tiny deterministic generator (no dependency): xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A skewed index below `n`: small ones much more often, like words.
    fn zipfish(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as usize
    }
}

/// Vocabulary size of the generated text.
const WORDS: usize = 30_000;
/// Notes per folder.
const PER_FOLDER: usize = 100;
/// Size each note grows to, about.
const NOTE_BYTES: usize = 5_000;

/// Word `i` of the vocabulary: syllables spelling `i`.
fn word(i: usize) -> String {
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "ba", "do", "fi", "gu", "ha", "je",
        "pe", "qu", "ro", "su", "ta", "wi", "xo", "ya", "zu",
    ];
    let mut n = i + SYL.len();
    let mut w = String::new();
    while n > 0 {
        w.push_str(SYL[n % SYL.len()]);
        n /= SYL.len();
    }
    w
}

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| word(rng.zipfish(WORDS)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn note_path(root: &Path, i: usize) -> PathBuf {
    root.join(format!("topic{}", i / PER_FOLDER))
        .join(format!("note{i}.norg"))
}

/// Writes `notes` notes under `root` (100 per folder), each about 5 KB
/// with metadata, headings, links of several kinds, tasks and a code block.
pub fn generate(root: &Path, notes: usize) -> anyhow::Result<Generated> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut bytes = 0u64;
    for i in 0..notes {
        let path = note_path(root, i);
        if i % PER_FOLDER == 0 {
            std::fs::create_dir_all(path.parent().context("folder")?)?;
        }
        let mut t = String::with_capacity(NOTE_BYTES + 600);
        let _ = write!(
            t,
            "@document.meta\ntitle: {}\ndescription: {}\ncategories: [\n  {}\n  {}\n]\n\
             created: 2024-01-{:02}\nupdated: 2024-02-{:02}\n@end\n\n",
            words(&mut rng, 3),
            words(&mut rng, 8),
            word(rng.below(50)),
            word(rng.below(50)),
            1 + i % 28,
            1 + i % 28
        );
        let mut section = 0;
        while t.len() < NOTE_BYTES {
            section += 1;
            let _ = writeln!(t, "* Section {section} {}", words(&mut rng, 3));
            for _ in 0..4 {
                let _ = writeln!(t, "  {}", words(&mut rng, 14));
            }
            let other = rng.below(notes);
            let _ = writeln!(
                t,
                "  See {{:../topic{}/note{other}:}} and {{:../topic{}/note{other}:* Section 1}}[there], {{* Section {section}}}, {{https://example.org/{i}}}.",
                other / PER_FOLDER,
                other / PER_FOLDER
            );
            let _ = writeln!(t, "** (x) {}", words(&mut rng, 4));
            let _ = writeln!(t, "   - ( ) {}", words(&mut rng, 5));
            let _ = writeln!(t, "   - (-) {}", words(&mut rng, 5));
            if section % 3 == 0 {
                let _ = writeln!(t, "@code lua\nlocal x = \"{{:not/a/link:}}\"\n@end");
            }
        }
        std::fs::write(&path, &t)?;
        bytes += t.len() as u64;
    }
    Ok(Generated { notes, bytes })
}

/// Search queries: a common word and the prefix of a rarer one.
fn queries(n: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            let common = word(rng.zipfish(200));
            let rarer = word(200 + rng.below(2000));
            let prefix: String = rarer.chars().take(4).collect();
            format!("{common} {prefix}")
        })
        .collect()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    const NIL: &Value = &Value::Nil;
    v.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map_or(NIL, |(_, v)| v)
}

async fn call(c: &Client, function: &str, args: serde_json::Value) -> anyhow::Result<Vec<Value>> {
    c.call::<_, Value>("notes", function, &args)
        .await
        .map_err(|e| anyhow!("notes.{function}: {e}"))
}

/// `stats`, and how long the call took.
async fn timed_stats(c: &Client) -> anyhow::Result<(Value, Duration)> {
    let t = Instant::now();
    let stats = call(c, "stats", serde_json::json!({})).await?;
    let took = t.elapsed();
    let s = stats
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("stats: no result"))?;
    Ok((s, took))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The pid of the loaded notes module.
async fn module_pid(c: &Client) -> anyhow::Result<u32> {
    let status = c.status().await.map_err(|e| anyhow!("status: {e}"))?;
    status
        .modules
        .iter()
        .find(|m| m.name == "notes")
        .map(|m| m.pid)
        .ok_or_else(|| anyhow!("notes is not loaded"))
}

/// Runs every notes measurement on a fresh place and workspace.
pub async fn measure(
    nvim: Option<&NvimSetup>,
    notes: usize,
    reps: usize,
    calls: usize,
) -> anyhow::Result<NotesResults> {
    let place = Place::new()?;
    let ws = place.dir().join("workspace");
    crate::step(&format!("notes: generating {notes} notes"));
    let generated = generate(&ws, notes)?;
    let config = serde_json::json!({
        "workspaces": { "bench": ws },
        "cache_dir": place.dir().join("cache"),
    });
    place.sandbox.add_notes_module(&config.to_string());
    let server = place.start_server()?;
    let client = place.client().await?;

    let cold = cold_index(&client).await?;
    let (restart_index_ms, restart_first_answer_ms) = restart(&client).await?;
    let pid = module_pid(&client).await?;
    let qs = queries(50);
    let search_rust = rust_search(&client, &qs, reps, calls).await?;
    let search_lua = match nvim {
        Some(setup) => {
            crate::step("notes: search from Lua");
            lua_search(setup, &place, &qs, reps, calls)?
        }
        None => Latency::from_reps(&[], 0),
    };
    let write_to_backlinks_ms = write_to_backlinks(&client, &ws).await?;
    let after_kib = rss_kib(pid)?;

    client.detach().await;
    place.stop_any_server().await?;
    drop(server);
    Ok(NotesResults {
        workspace: generated,
        cold_index_ms: cold.index_ms,
        cold_first_answer_ms: cold.first_answer_ms,
        restart_index_ms,
        restart_first_answer_ms,
        search_lua,
        search_rust,
        write_to_backlinks_ms,
        module_kib: (cold.kib, after_kib),
    })
}

/// What the cold index measured.
struct Cold {
    index_ms: f64,
    first_answer_ms: f64,
    kib: u64,
}

/// Loads the module on a workspace it has no cache of.
async fn cold_index(client: &Client) -> anyhow::Result<Cold> {
    crate::step("notes: cold index");
    let t = Instant::now();
    client
        .load("notes", None)
        .await
        .map_err(|e| anyhow!("load notes: {e}"))?;
    let (stats, _) = timed_stats(client).await?;
    let first_answer_ms = ms(t.elapsed());
    if field(&stats, "cache").as_str() != Some("absent") {
        bail!("cold index found a cache: {stats}");
    }
    Ok(Cold {
        index_ms: field(&stats, "index_ms").as_f64().unwrap_or(f64::NAN),
        first_answer_ms,
        kib: rss_kib(module_pid(client).await?)?,
    })
}

/// Stops the module and times a call that starts it again from its
/// cache: the module's own timing and the call's, ms.
async fn restart(client: &Client) -> anyhow::Result<(f64, f64)> {
    crate::step("notes: restart from the cache");
    client
        .unload("notes")
        .await
        .map_err(|e| anyhow!("unload: {e}"))?;
    let (stats, took) = timed_stats(client).await?;
    if field(&stats, "cache").as_str() != Some("loaded") {
        bail!("the restart did not use the cache: {stats}");
    }
    let index_ms = field(&stats, "index_ms").as_f64().unwrap_or(f64::NAN);
    Ok((index_ms, ms(took)))
}

/// `search` top-20 from the Rust client, `reps` times `calls` calls.
async fn rust_search(
    client: &Client,
    qs: &[String],
    reps: usize,
    calls: usize,
) -> anyhow::Result<Latency> {
    crate::step("notes: search from Rust");
    let mut rust_reps = Vec::new();
    for _ in 0..reps {
        let mut samples = Vec::with_capacity(calls);
        let wall = Instant::now();
        for i in 0..calls {
            let t = Instant::now();
            call(
                client,
                "search",
                serde_json::json!({ "query": qs[i % qs.len()], "limit": 20 }),
            )
            .await?;
            samples.push(t.elapsed());
        }
        rust_reps.push(Rep::from_samples(&mut samples, wall.elapsed()));
    }
    Ok(Latency::from_reps(&rust_reps, calls))
}

/// Writes 20 files linking to the first note and polls `backlinks` until
/// each shows: p50 and max, ms.
async fn write_to_backlinks(client: &Client, ws: &Path) -> anyhow::Result<(f64, f64)> {
    crate::step("notes: a written file in backlinks");
    let target = note_path(ws, 0);
    let mut delays = Vec::new();
    for i in 0..20 {
        let path = ws.join(format!("written{i}.norg"));
        let wanted = path.display().to_string();
        std::fs::write(
            &path,
            format!("* Written {i}\n  links to {{:topic0/note0:}}\n"),
        )?;
        let t = Instant::now();
        loop {
            let back = call(client, "backlinks", serde_json::json!({ "path": target })).await?;
            if back
                .iter()
                .any(|b| field(b, "path").as_str() == Some(wanted.as_str()))
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{wanted} never showed in backlinks");
            }
        }
        delays.push(t.elapsed());
    }
    delays.sort_unstable();
    Ok((
        ms(percentile(&delays, 50.0)),
        ms(*delays.last().unwrap_or(&Duration::ZERO)),
    ))
}

#[derive(serde::Deserialize)]
struct LuaSearch {
    reps: Vec<LuaRep>,
}

#[derive(serde::Deserialize)]
struct LuaRep {
    wall_ns: f64,
    samples_ns: Vec<f64>,
}

fn lua_search(
    setup: &NvimSetup,
    place: &Place,
    queries: &[String],
    reps: usize,
    calls: usize,
) -> anyhow::Result<Latency> {
    let args = [reps.to_string(), calls.to_string(), queries.join(";")];
    let parsed: LuaSearch = crate::nvim::run_json(setup, place, "notes.lua", &args)?;
    let reps = parsed
        .reps
        .iter()
        .map(|r| (r.wall_ns, r.samples_ns.as_slice()));
    Ok(crate::nvim::latency_of(reps, calls))
}

/// The figures as a markdown table, each against its target.
pub fn markdown(r: &NotesResults) -> String {
    let ok = |good: bool| if good { "✅" } else { "❌" };
    let mb = |kib: u64| kib as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nNotes module on {} generated notes ({:.1} MB)\n",
        r.workspace.notes,
        r.workspace.bytes as f64 / 1e6
    );
    let _ = writeln!(s, "| Measurement | Ours | Target |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| Cold index (module's own timing) · load to first answer | {:.0} ms · {:.0} ms | ≤ 10 s {} |",
        r.cold_index_ms,
        r.cold_first_answer_ms,
        ok(r.cold_first_answer_ms <= 10_000.0)
    );
    let _ = writeln!(
        s,
        "| Restart from cache (module's own timing) · call to first answer | {:.0} ms · {:.0} ms | ≤ 300 ms {} |",
        r.restart_index_ms,
        r.restart_first_answer_ms,
        ok(r.restart_first_answer_ms <= 300.0)
    );
    let _ = writeln!(
        s,
        "| `search` top-20 from Lua | p50 {:.2} ms · p99 {:.2} ms | p50 ≤ 5 ms {} |",
        r.search_lua.p50_us / 1000.0,
        r.search_lua.p99_us / 1000.0,
        ok(r.search_lua.calls_per_rep > 0 && r.search_lua.p50_us <= 5000.0)
    );
    let _ = writeln!(
        s,
        "| `search` top-20 from Rust | p50 {:.2} ms · p99 {:.2} ms | — |",
        r.search_rust.p50_us / 1000.0,
        r.search_rust.p99_us / 1000.0
    );
    let _ = writeln!(
        s,
        "| File written → in `backlinks` of another client | p50 {:.0} ms · max {:.0} ms | ≤ 100 ms {} |",
        r.write_to_backlinks_ms.0,
        r.write_to_backlinks_ms.1,
        ok(r.write_to_backlinks_ms.1 <= 100.0)
    );
    let _ = writeln!(
        s,
        "| Module RSS after cold index · after the queries | {:.1} MB · {:.1} MB | ≤ 150 MB {} |",
        mb(r.module_kib.0),
        mb(r.module_kib.1),
        ok(r.module_kib.0.max(r.module_kib.1) <= 150 * 1024)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_notes_parse_with_every_construct() {
        let dir = tempfile_dir();
        let g = generate(&dir, 3).expect("generate");
        assert_eq!(g.notes, 3);
        let text = std::fs::read_to_string(note_path(&dir, 2)).expect("note");
        assert!(text.len() >= NOTE_BYTES);
        for needle in [
            "@document.meta",
            "* Section 1",
            "** (x)",
            "- ( )",
            "{:../topic0/note",
            "@code lua",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn words_are_distinct() {
        let set: std::collections::HashSet<String> = (0..WORDS).map(word).collect();
        assert_eq!(set.len(), WORDS);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("np-notes-gen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
