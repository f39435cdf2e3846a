//! The module's functions. Each takes one map and streams one map per
//! result; every result names its `workspace`, absolute `path` and, where
//! it points into a file, a 1-based `line`.

use std::{
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use norgopolis_sdk::{rmpv::Value, Emitter, Error, Module};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    config::{expand_home, normalize},
    index::{path_order, Doc, Index},
    norg::TaskState,
    notes::{Notes, SyncReport},
};

/// Results of `search` when the caller gives no `limit`.
const DEFAULT_LIMIT: usize = 20;
/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 160;

/// The state and a signal that the first index is done.
#[derive(Clone)]
struct Ctx {
    notes: Arc<Notes>,
    ready: watch::Receiver<bool>,
}

impl Ctx {
    /// Waits until the first index is complete.
    async fn notes(&self) -> Result<&Notes, Error> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map_err(|_| Error::internal("the first index did not complete"))?;
        Ok(&self.notes)
    }
}

/// Registers streaming function `$name`, served by `$handler(notes, args,
/// out)` once the first index is done.
macro_rules! streamed {
    ($module:expr, $ctx:expr, $name:literal, $handler:ident) => {{
        let c = $ctx.clone();
        $module.stream($name, move |v: Value, out: Emitter| {
            let c = c.clone();
            async move { $handler(c.notes().await?, args(v, $name)?, &out).await }
        })
    }};
}

/// The module with every function, answering once `ready` turns true.
pub fn module(notes: Arc<Notes>, ready: watch::Receiver<bool>) -> Module {
    let ctx = Ctx { notes, ready };
    let m = Module::new("notes");
    let m = streamed!(m, ctx, "search", search);
    let m = streamed!(m, ctx, "backlinks", backlinks);
    let m = streamed!(m, ctx, "links", links);
    let m = streamed!(m, ctx, "headings", headings);
    let m = streamed!(m, ctx, "tasks", tasks);
    let m = streamed!(m, ctx, "files", files);
    let c = ctx.clone();
    let m = m.function("stats", move |v: Value| {
        let c = c.clone();
        async move {
            let _: NoArgs = args(v, "stats")?;
            stats(c.notes().await?)
        }
    });
    let c = ctx;
    m.stream("reindex", move |v: Value, out: Emitter| {
        let c = c.clone();
        async move {
            let a: Scope = args(v, "reindex")?;
            let notes = c.notes.clone();
            c.notes().await?;
            let reports = tokio::task::spawn_blocking(move || reindex(&notes, a))
                .await
                .map_err(|e| Error::internal(format!("reindex failed: {e}")))??;
            for r in reports {
                out.send(&r).await?;
            }
            Ok(())
        }
    })
    .describe_args("search", "{query, limit?, workspace?}")
    .describe_args("backlinks", "{path}")
    .describe_args("links", "{path}")
    .describe_args("headings", "{path?}")
    .describe_args("tasks", "{state?, workspace?}")
    .describe_args("files", "{workspace?}")
    .describe_args("stats", "{}")
    .describe_args("reindex", "{workspace?}")
}

/// Decodes a call's map; nil or an empty table (Lua's `{}` is an empty
/// array) mean "no arguments".
fn args<T: DeserializeOwned + Default>(v: Value, function: &str) -> Result<T, Error> {
    match &v {
        Value::Nil => return Ok(T::default()),
        Value::Array(a) if a.is_empty() => return Ok(T::default()),
        Value::Map(_) => {}
        other => {
            return Err(Error::invalid_argument(format!(
                "{function}: expected a map of arguments, got {other}"
            )))
        }
    }
    norgopolis_sdk::rmpv::ext::from_value(v)
        .map_err(|e| Error::invalid_argument(format!("{function}: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Scope {
    workspace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: Option<String>,
    limit: Option<usize>,
    workspace: Option<String>,
}

#[derive(Serialize)]
struct SearchResult<'a> {
    workspace: &'a str,
    path: String,
    line: u32,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<&'a str>,
    snippet: String,
    score: u32,
}

async fn search(notes: &Notes, a: SearchArgs, out: &Emitter) -> Result<(), Error> {
    let query = a.query.unwrap_or_default();
    if crate::text::terms(&query).next().is_none() {
        return Err(Error::invalid_argument(
            "search: query must contain at least one word",
        ));
    }
    notes.scope(a.workspace.as_deref())?;
    let limit = a.limit.unwrap_or(DEFAULT_LIMIT);
    let results = search_results(&notes.index(), &query, limit, a.workspace.as_deref());
    send_all(out, results).await
}

/// The best `limit` documents for `query`, each encoded as the result
/// `search` sends.
pub fn search_results(
    index: &Index,
    query: &str,
    limit: usize,
    workspace: Option<&str>,
) -> Vec<Encoded> {
    let hits = index.search(query, limit, workspace);
    hits.iter()
        .filter_map(|h| {
            let doc = index.doc(h.doc)?;
            let r = SearchResult {
                workspace: &doc.workspace,
                path: doc.path.display().to_string(),
                line: h.line,
                title: &doc.title,
                heading: heading_at(doc, h.line),
                snippet: snippet(&doc.path, h.line),
                score: h.score,
            };
            to_value(&r)
        })
        .collect()
}

/// The heading a line sits under.
fn heading_at(doc: &Doc, line: u32) -> Option<&str> {
    doc.parsed
        .headings
        .iter()
        .take_while(|h| h.line <= line)
        .last()
        .map(|h| h.text.as_str())
}

/// Line `line` of the file, trimmed and cut to [`SNIPPET_CHARS`]; empty
/// when the file cannot be read.
fn snippet(path: &Path, line: u32) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .nth(line.saturating_sub(1) as usize)
        .map(trim_snippet)
        .unwrap_or_default()
}

/// A line as a snippet: trimmed and cut to [`SNIPPET_CHARS`].
fn trim_snippet(line: &str) -> String {
    line.trim().chars().take(SNIPPET_CHARS).collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: Option<String>,
}

/// The `path` argument as an absolute, normalised path (symlinks resolved
/// when it exists), or `InvalidArgument`.
fn path_arg(function: &str, path: Option<&str>) -> Result<PathBuf, Error> {
    let raw =
        path.ok_or_else(|| Error::invalid_argument(format!("{function}: path is required")))?;
    let p = expand_home(raw);
    if !p.is_absolute() {
        return Err(Error::invalid_argument(format!(
            "{function}: path must be absolute, got {raw:?}"
        )));
    }
    Ok(std::fs::canonicalize(&p).unwrap_or_else(|_| normalize(&p)))
}

#[derive(Serialize)]
struct LinkResult<'a> {
    workspace: &'a str,
    path: String,
    line: u32,
    target: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// `backlinks` only: the linking line's text (as [`snippet`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    snippet: Option<String>,
}

/// Every link of `doc` (those for which `keep` holds), as results; with
/// `snippets`, each carries its line's text, read from the file once for
/// all of its links (not at all when none is kept).
fn link_results(doc: &Doc, keep: impl Fn(Option<&Path>) -> bool, snippets: bool) -> Vec<Encoded> {
    let kept: Vec<_> = doc
        .links
        .iter()
        .zip(&doc.resolved)
        .filter(|(_, file)| keep(file.as_deref()))
        .collect();
    // Unreadable now (deleted since it was indexed): empty snippets.
    let text = (snippets && !kept.is_empty()).then(|| std::fs::read(&doc.path).unwrap_or_default());
    let text = text.as_deref().map(String::from_utf8_lossy);
    let lines: Option<Vec<&str>> = text.as_deref().map(|t| t.lines().collect());
    kept.into_iter()
        .filter_map(|(stored, file)| {
            let l = stored.expand()?;
            let snippet = lines.as_ref().map(|lines| {
                lines
                    .get(l.line.saturating_sub(1) as usize)
                    .map_or_else(String::new, |line| trim_snippet(line))
            });
            to_value(&LinkResult {
                workspace: &doc.workspace,
                path: doc.path.display().to_string(),
                line: l.line,
                target: &stored.target,
                kind: l.kind.name(),
                file: file.as_ref().map(|f| f.display().to_string()),
                name: l.name.as_deref(),
                level: l.level,
                description: stored.description.as_deref(),
                snippet,
            })
        })
        .collect()
}

async fn backlinks(notes: &Notes, a: PathArgs, out: &Emitter) -> Result<(), Error> {
    let target = path_arg("backlinks", a.path.as_deref())?;
    notes.scope(None)?;
    let results: Vec<Encoded> = {
        let index = notes.index();
        // Indexed paths and the argument are both normalised, so equal
        // files have equal bytes; comparing those is what keeps this fast
        // over hundreds of thousands of links (`Path`'s equality walks
        // components).
        let target = target.as_os_str();
        let links_here = |f: Option<&Path>| f.is_some_and(|f| f.as_os_str() == target);
        let linking = index
            .docs()
            .filter(|d| d.resolved.iter().any(|f| links_here(f.as_deref())));
        by_path(linking)
            .into_iter()
            .flat_map(|d| link_results(d, links_here, true))
            .collect()
    };
    send_all(out, results).await
}

async fn links(notes: &Notes, a: PathArgs, out: &Emitter) -> Result<(), Error> {
    let path = path_arg("links", a.path.as_deref())?;
    let results = {
        let index = notes.index();
        let doc = indexed(notes, &index, &path)?;
        link_results(doc, |_| true, false)
    };
    send_all(out, results).await
}

/// The indexed document at `path`, or an error saying why there is none.
fn indexed<'i>(notes: &Notes, index: &'i Index, path: &Path) -> Result<&'i Doc, Error> {
    if let Some(doc) = index.get(path) {
        return Ok(doc);
    }
    match notes.workspace_of(path) {
        Some(ws) => {
            notes.scope(Some(&ws.name))?;
            Err(Error::not_found(format!(
                "{} is not an indexed .norg file of workspace '{}'",
                path.display(),
                ws.name
            )))
        }
        None => Err(Error::not_found(format!(
            "{} is in no configured workspace",
            path.display()
        ))),
    }
}

#[derive(Serialize)]
struct HeadingResult<'a> {
    workspace: &'a str,
    path: String,
    line: u32,
    level: u8,
    text: &'a str,
}

fn heading_results(doc: &Doc) -> impl Iterator<Item = Encoded> + '_ {
    let path = doc.path.display().to_string();
    doc.parsed.headings.iter().filter_map(move |h| {
        to_value(&HeadingResult {
            workspace: &doc.workspace,
            path: path.clone(),
            line: h.line,
            level: h.level,
            text: &h.text,
        })
    })
}

async fn headings(notes: &Notes, a: PathArgs, out: &Emitter) -> Result<(), Error> {
    let results: Vec<Encoded> = match a.path.as_deref() {
        Some(p) => {
            let path = path_arg("headings", Some(p))?;
            let index = notes.index();
            heading_results(indexed(notes, &index, &path)?).collect()
        }
        None => {
            notes.scope(None)?;
            let index = notes.index();
            by_path(index.docs())
                .into_iter()
                .flat_map(heading_results)
                .collect()
        }
    };
    send_all(out, results).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TaskArgs {
    state: Option<String>,
    workspace: Option<String>,
}

#[derive(Serialize)]
struct TaskResult<'a> {
    workspace: &'a str,
    path: String,
    line: u32,
    state: &'static str,
    text: &'a str,
}

async fn tasks(notes: &Notes, a: TaskArgs, out: &Emitter) -> Result<(), Error> {
    let state = match a.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.name()).collect();
            Error::invalid_argument(format!(
                "tasks: unknown state {s:?} (one of {}, or its marker like \"x\")",
                names.join(", ")
            ))
        })?),
    };
    notes.scope(a.workspace.as_deref())?;
    let results: Vec<Encoded> = {
        let index = notes.index();
        by_path(in_workspace(&index, a.workspace.as_deref()))
            .into_iter()
            .flat_map(|d| {
                let path = d.path.display().to_string();
                d.parsed
                    .tasks
                    .iter()
                    .filter(move |t| state.map_or(true, |s| s == t.state))
                    .filter_map(move |t| {
                        to_value(&TaskResult {
                            workspace: &d.workspace,
                            path: path.clone(),
                            line: t.line,
                            state: t.state.name(),
                            text: &t.text,
                        })
                    })
            })
            .collect()
    };
    send_all(out, results).await
}

/// Documents in path order, so results come in a stable order.
fn by_path<'i>(docs: impl Iterator<Item = &'i Doc>) -> Vec<&'i Doc> {
    let mut docs: Vec<&Doc> = docs.collect();
    docs.sort_by(|a, b| path_order(a.path.as_os_str().as_bytes(), b.path.as_os_str().as_bytes()));
    docs
}

fn in_workspace<'i>(index: &'i Index, workspace: Option<&'i str>) -> impl Iterator<Item = &'i Doc> {
    index
        .docs()
        .filter(move |d| workspace.map_or(true, |w| w == d.workspace))
}

#[derive(Serialize)]
struct FileResult<'a> {
    workspace: &'a str,
    path: String,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    categories: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<&'a str>,
}

async fn files(notes: &Notes, a: Scope, out: &Emitter) -> Result<(), Error> {
    notes.scope(a.workspace.as_deref())?;
    let results: Vec<Encoded> = {
        let index = notes.index();
        by_path(in_workspace(&index, a.workspace.as_deref()))
            .into_iter()
            .filter_map(|d| {
                let m = &d.parsed.meta;
                to_value(&FileResult {
                    workspace: &d.workspace,
                    path: d.path.display().to_string(),
                    title: &d.title,
                    description: m.description.as_deref(),
                    categories: &m.categories,
                    created: m.created.as_deref(),
                    updated: m.updated.as_deref(),
                })
            })
            .collect()
    };
    send_all(out, results).await
}

#[derive(Serialize)]
struct Stats {
    workspaces: Vec<String>,
    files: usize,
    headings: usize,
    links: usize,
    tasks: usize,
    terms: usize,
    index_ms: f64,
    cache: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_error: Option<String>,
    parsed: usize,
    broken: std::collections::HashMap<String, String>,
}

fn stats(notes: &Notes) -> Result<Stats, Error> {
    let timing = notes.timing();
    let index = notes.index();
    let sum = |f: fn(&Doc) -> usize| index.docs().map(f).sum::<usize>();
    let stats = Stats {
        workspaces: notes
            .config
            .workspaces
            .iter()
            .map(|w| w.name.clone())
            .collect(),
        files: index.len(),
        headings: sum(|d| d.parsed.headings.len()),
        links: sum(|d| d.links.len()),
        tasks: sum(|d| d.parsed.tasks.len()),
        terms: index.term_count(),
        index_ms: timing.index_ms,
        cache: timing.cache,
        cache_error: timing.cache_error,
        parsed: timing.parsed,
        broken: notes.broken(),
    };
    Ok(stats)
}

fn reindex(notes: &Notes, a: Scope) -> Result<Vec<SyncReport>, Error> {
    let scope = notes.scope(a.workspace.as_deref())?;
    let reports = scope
        .into_iter()
        .map(|ws| {
            notes
                .sync_workspace(ws, true)
                .map_err(Error::failed_precondition)
        })
        .collect::<Result<Vec<_>, _>>()?;
    notes.save_if_dirty();
    Ok(reports)
}

/// One result, encoded while the index is locked (structs as maps), so the
/// lock is not held while the caller reads.
fn to_value<T: Serialize>(v: &T) -> Option<Encoded> {
    rmp_serde::to_vec_named(v).ok().map(Encoded)
}

/// A result already encoded as MessagePack.
pub struct Encoded(pub Vec<u8>);

async fn send_all(out: &Emitter, results: Vec<Encoded>) -> Result<(), Error> {
    for r in results {
        out.send_encoded(r.0).await?;
    }
    Ok(())
}

/// Every function of the module.
pub const FUNCTIONS: [&str; 8] = [
    "search",
    "backlinks",
    "links",
    "headings",
    "tasks",
    "files",
    "stats",
    "reindex",
];

/// The module when its configuration is unusable: every function fails
/// with `FailedPrecondition` naming the problem, instead of the process
/// exiting into a restart loop.
pub fn broken_module(why: String) -> Module {
    FUNCTIONS.iter().fold(Module::new("notes"), |m, name| {
        let why = why.clone();
        m.function(name, move |_: Value| {
            let why = why.clone();
            async move {
                Err::<(), _>(Error::failed_precondition(format!(
                    "notes configuration: {why}"
                )))
            }
        })
    })
}
