//! Modules written with the Python and Lua SDKs (`examples/modules/`),
//! beside the Rust SDK's lean module: warm echo and a 10,000-item stream,
//! all from the Rust client through the router.

use std::path::Path;

use anyhow::Context;
use norgopolis_client::Client;
use serde::Serialize;

use crate::{
    figures::{latency, rate},
    place::{Place, LEAN_MODULE},
    routed,
    series::{Plan, Streamed},
    stats::Latency,
};

/// The SDK modules measured: language, module name, example folder.
const SDKS: [(&str, &str, Option<&str>); 3] = [
    ("Rust", LEAN_MODULE, None),
    ("Python", "python-echo", Some("python-echo")),
    ("Lua (LuaJIT)", "lua-echo", Some("lua-echo")),
];

/// One SDK's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SdkRow {
    /// The module's language.
    pub language: String,
    /// Warm echo, 64 B.
    pub echo: Latency,
    /// A 10,000-item stream of `count`.
    pub stream: Streamed,
}

/// Links the example modules into `place`'s modules dir (before its server
/// looks for them).
pub fn install(place: &Place, root: &Path) -> anyhow::Result<()> {
    for (_, name, folder) in SDKS {
        if let Some(folder) = folder {
            let src = root.join("examples/modules").join(folder);
            std::os::unix::fs::symlink(&src, place.sandbox.modules.join(name))
                .with_context(|| format!("linking {}", src.display()))?;
        }
    }
    Ok(())
}

/// Measures every SDK's module through the router.
pub async fn measure(
    client: &Client,
    payload: &[u8],
    plan: Plan,
    items: u64,
    reps: usize,
) -> anyhow::Result<Vec<SdkRow>> {
    let mut rows = Vec::new();
    for (language, module, _) in SDKS {
        crate::step(&format!("{language} SDK module: echo and a stream"));
        let echo = routed::echo_series(client, module, payload, plan)
            .await
            .with_context(|| format!("echo through {module}"))?;
        let stream = routed::stream(client, module, items, reps)
            .await
            .with_context(|| format!("stream from {module}"))?;
        rows.push(SdkRow {
            language: language.into(),
            echo,
            stream,
        });
    }
    Ok(rows)
}

/// The rows' table lines: `[what, figure, target, public]`.
pub fn table_rows(rows: &[SdkRow]) -> Vec<[String; 4]> {
    let mut out = Vec::new();
    for r in rows {
        out.push([
            format!(
                "{} SDK module, warm echo 64 B · lean client, lean module",
                r.language
            ),
            latency(&r.echo),
            "—".into(),
            String::new(),
        ]);
        out.push([
            format!(
                "{} SDK module, stream of {} items",
                r.language,
                rate(r.stream.items as f64)
            ),
            format!(
                "{} items/s · first item {:.2} ms",
                rate(r.stream.items_per_s),
                r.stream.first_item_ms
            ),
            "—".into(),
            String::new(),
        ]);
    }
    out
}

/// Just these rows, as a markdown table (`--only-sdks`).
pub fn markdown(rows: &[SdkRow]) -> String {
    let mut out = String::from("| Measurement | Ours |\n|---|---|\n");
    for [what, figure, ..] in table_rows(rows) {
        out.push_str(&format!("| {what} | {figure} |\n"));
    }
    out
}
