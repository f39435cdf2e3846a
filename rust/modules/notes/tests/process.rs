//! The built `notes` binary as the router runs it: a child process spoken
//! to over its stdin/stdout, on a copy of `tests/fixtures/garden`, with its
//! configuration in `NORGOPOLIS_MODULE_CONFIG`.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use norgopolis_sdk::{
    rmpv::Value,
    testing::{self, call, Client},
    Code,
};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
};

/// Upper bound so that a broken test fails instead of hanging; never a
/// timing assertion.
const WAIT: Duration = Duration::from_secs(60);

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("test step did not finish")
}

/// A running notes process and a client connected to it.
struct Notes {
    child: Child,
    client: Client,
    stdin_pump: JoinHandle<()>,
}

impl Notes {
    async fn start(config: &serde_json::Value) -> Notes {
        Self::start_as(config, None).await
    }

    /// Starts the module, as user `uid` when given.
    async fn start_as(config: &serde_json::Value, uid: Option<u32>) -> Notes {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_notes"));
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("NORGOPOLIS_SOCKET")
            .env_remove("NORGOPOLIS_TRANSPORT")
            .env("NORGOPOLIS_MODULE_CONFIG", config.to_string())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn notes");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdin = child.stdin.take().expect("stdin");
        let (client_writes, mut pump_reads) = tokio::io::duplex(64 * 1024);
        let stdin_pump = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut pump_reads, &mut stdin).await;
        });
        let client = within(testing::connect(stdout, client_writes))
            .await
            .expect("connect to notes");
        Notes {
            child,
            client,
            stdin_pump,
        }
    }

    /// Closes stdin (how the router stops a module) and waits for the exit.
    async fn stop(mut self) -> Option<i32> {
        self.stdin_pump.abort();
        let _ = self.stdin_pump.await;
        drop(self.client);
        within(self.child.wait()).await.expect("wait").code()
    }

    async fn ok(&mut self, function: &str, args: serde_json::Value) -> Vec<Value> {
        within(call(&mut self.client, function, &json_to_value(&args)))
            .await
            .unwrap_or_else(|s| panic!("{function} {args}: {s:?}"))
    }

    async fn err(&mut self, function: &str, args: serde_json::Value) -> (Code, String) {
        let status = within(call(&mut self.client, function, &json_to_value(&args)))
            .await
            .expect_err("the call should fail");
        (status.code(), status.message().to_owned())
    }

    /// The files of workspace `ws`.
    async fn files_of(&mut self, ws: &str) -> Vec<Value> {
        self.ok("files", serde_json::json!({ "workspace": ws }))
            .await
    }

    /// Calls until `done` holds for the results (the watcher applies
    /// changes a little after they happen), failing after [`WAIT`].
    async fn until(
        &mut self,
        function: &str,
        args: serde_json::Value,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.ok(function, args.clone()).await;
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{function} {args} never satisfied: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn json_to_value(j: &serde_json::Value) -> Value {
    norgopolis_sdk::rmpv::ext::to_value(j).expect("json to msgpack")
}

/// Field `key` of a result map, as a string, number or nil.
fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map_or(&Value::Nil, |(_, v)| v)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).as_str().unwrap_or("")
}

fn n(v: &Value, key: &str) -> u64 {
    get(v, key).as_u64().unwrap_or(0)
}

/// A temp dir holding a copy of the garden fixture workspace.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&fixtures().join("garden"), &dir.path().join("garden"));
        Place { dir }
    }

    fn garden(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path().join("garden")).expect("garden")
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "workspaces": { "garden": self.dir.path().join("garden") },
            "cache_dir": self.dir.path().join("cache"),
        })
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixtures") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

fn paths(results: &[Value]) -> Vec<String> {
    results.iter().map(|r| s(r, "path").to_owned()).collect()
}

#[tokio::test]
async fn every_function_on_the_fixture_workspace() {
    let place = Place::new();
    let g = place.garden();
    let index = g.join("index.norg").display().to_string();
    let tomato = g.join("plants/tomato.norg").display().to_string();
    let basil = g.join("plants/basil.norg").display().to_string();
    let mut notes = Notes::start(&place.config()).await;

    // files: .norg files only, hidden folders skipped, metadata kept.
    let files = notes.ok("files", serde_json::json!({})).await;
    assert_eq!(
        paths(&files),
        [index.clone(), basil.clone(), tomato.clone()]
    );
    let f = &files[0];
    assert_eq!(s(f, "workspace"), "garden");
    assert_eq!(s(f, "title"), "Garden Index");
    assert_eq!(s(f, "description"), "Where the garden notes start");
    assert_eq!(s(f, "created"), "2024-01-01");
    assert_eq!(s(f, "updated"), "2024-02-01");
    assert_eq!(
        get(f, "categories"),
        &Value::Array(vec!["garden".into(), "home".into()])
    );
    // No meta title: the first heading.
    assert_eq!(s(&files[1], "title"), "Basil");

    // headings of one file, and of all.
    let hs = notes
        .ok("headings", serde_json::json!({ "path": index }))
        .await;
    let got: Vec<(u64, u64, &str)> = hs
        .iter()
        .map(|h| (n(h, "line"), n(h, "level"), s(h, "text")))
        .collect();
    assert_eq!(
        got,
        [(12, 1, "Plants"), (15, 2, "Buy seeds"), (23, 1, "Reading")]
    );
    assert_eq!(
        notes.ok("headings", serde_json::json!({})).await.len(),
        3 + 1 + 2
    );

    // tasks, all and by state (name or marker).
    let tasks = notes.ok("tasks", serde_json::json!({})).await;
    let states: Vec<&str> = tasks.iter().map(|t| s(t, "state")).collect();
    assert_eq!(
        states,
        [
            "done",
            "undone",
            "urgent",
            "pending",
            "on_hold",
            "cancelled",
            "uncertain",
            "recurring"
        ]
    );
    let done = notes.ok("tasks", serde_json::json!({ "state": "x" })).await;
    assert_eq!(done.len(), 1);
    assert_eq!(s(&done[0], "text"), "Buy seeds");
    assert_eq!(n(&done[0], "line"), 15);
    let (code, msg) = notes
        .err("tasks", serde_json::json!({ "state": "later" }))
        .await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("\"later\"") && msg.contains("on_hold"),
        "{msg}"
    );

    // links: every kind, files resolved; none from the code block.
    let links = notes
        .ok("links", serde_json::json!({ "path": index }))
        .await;
    let got: Vec<(u64, &str, &str)> = links
        .iter()
        .map(|l| (n(l, "line"), s(l, "kind"), s(l, "file")))
        .collect();
    let index_s = index.as_str();
    assert_eq!(
        got,
        [
            (13, "file", tomato.as_str()),
            (13, "heading", tomato.as_str()),
            (14, "generic", basil.as_str()),
            (14, "url", ""),
            (24, "heading", index_s),
            (24, "generic", index_s),
            (24, "wiki", ""),
            (
                24,
                "external_file",
                &*g.join("notes.txt").display().to_string()
            ),
            (24, "timestamp", ""),
            (24, "definition", index_s),
            (24, "footnote", index_s),
            (24, "extendable", ""),
            (24, "line", index_s),
        ]
    );
    assert_eq!(s(&links[1], "target"), ":plants/tomato:* Watering");
    assert_eq!(s(&links[1], "description"), "watering tomatoes");
    assert_eq!(s(&links[1], "name"), "Watering");
    assert_eq!(n(&links[1], "level"), 1);

    // backlinks: who links to tomato, and to index (itself included).
    let back = notes
        .ok("backlinks", serde_json::json!({ "path": tomato }))
        .await;
    let got: Vec<(&str, u64)> = back.iter().map(|b| (s(b, "path"), n(b, "line"))).collect();
    assert_eq!(got, [(index_s, 13), (index_s, 13)]);
    for b in &back {
        assert_eq!(
            s(b, "snippet"),
            "See {:plants/tomato:} and {:plants/tomato:* Watering}[watering tomatoes]."
        );
    }
    let back = notes
        .ok("backlinks", serde_json::json!({ "path": index }))
        .await;
    let from: Vec<&str> = back.iter().map(|b| s(b, "path")).collect();
    assert_eq!(from.iter().filter(|p| **p == basil).count(), 1);
    assert_eq!(from.iter().filter(|p| **p == tomato).count(), 1);
    let from_tomato = back
        .iter()
        .find(|b| s(b, "path") == tomato)
        .expect("tomato");
    assert_eq!(
        s(from_tomato, "snippet"),
        "Tomatoes want deep watering. Back to {:../index:}."
    );
    // links (the file's own) carry no snippet: only backlinks need one.
    let own = notes
        .ok("links", serde_json::json!({ "path": tomato }))
        .await;
    assert!(own.iter().all(|l| get(l, "snippet").is_nil()), "{own:?}");

    // search: title above heading above body; AND; prefix on the last term.
    let hits = notes
        .ok("search", serde_json::json!({ "query": "tomato" }))
        .await;
    assert_eq!(s(&hits[0], "path"), tomato, "title match first");
    let hits = notes
        .ok("search", serde_json::json!({ "query": "waterin" }))
        .await;
    assert_eq!(
        paths(&hits),
        [tomato.clone(), index.clone()],
        "heading above body"
    );
    let h = &hits[0];
    assert_eq!(n(h, "line"), 4);
    assert_eq!(s(h, "heading"), "Watering");
    assert_eq!(s(h, "snippet"), "* Watering");
    assert_eq!(s(h, "title"), "Tomato");
    let hits = notes
        .ok(
            "search",
            serde_json::json!({ "query": "deep water", "limit": 5 }),
        )
        .await;
    assert_eq!(paths(&hits), [tomato.as_str()]);
    assert!(notes
        .ok("search", serde_json::json!({ "query": "deep basil" }))
        .await
        .is_empty());
    let hits = notes
        .ok(
            "search",
            serde_json::json!({ "query": "harvest flowering" }),
        )
        .await;
    assert_eq!(paths(&hits), [basil.as_str()]);
    assert_eq!(s(&hits[0], "heading"), "Basil");
    let (code, _) = notes
        .err("search", serde_json::json!({ "query": " ,, " }))
        .await;
    assert_eq!(code, Code::InvalidArgument);
    let (code, msg) = notes
        .err("search", serde_json::json!({ "qurey": "x" }))
        .await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("qurey"), "{msg}");

    // stats
    let stats = notes.ok("stats", serde_json::json!({})).await;
    let st = &stats[0];
    assert_eq!(n(st, "files"), 3);
    assert_eq!(n(st, "headings"), 6);
    assert_eq!(n(st, "tasks"), 8);
    assert_eq!(n(st, "links"), 13 + 1 + 1);
    assert_eq!(s(st, "cache"), "absent");

    // reindex: every file read again, per workspace.
    let re = notes.ok("reindex", serde_json::json!({})).await;
    assert_eq!(re.len(), 1);
    assert_eq!(s(&re[0], "workspace"), "garden");
    assert_eq!(s(&re[0], "path"), g.display().to_string());
    assert_eq!((n(&re[0], "files"), n(&re[0], "parsed")), (3, 3));
    let (code, _) = notes
        .err("reindex", serde_json::json!({ "workspace": "nope" }))
        .await;
    assert_eq!(code, Code::NotFound);

    // bad paths
    let (code, msg) = notes
        .err("links", serde_json::json!({ "path": "rel.norg" }))
        .await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("absolute"), "{msg}");
    let (code, msg) = notes
        .err("links", serde_json::json!({ "path": "/elsewhere/x.norg" }))
        .await;
    assert_eq!(code, Code::NotFound);
    assert!(msg.contains("no configured workspace"), "{msg}");

    assert_eq!(notes.stop().await, Some(0));
}

#[tokio::test]
async fn backlink_snippets_are_the_linking_line_trimmed_and_capped() {
    let place = Place::new();
    let g = place.garden();
    let tomato = g.join("plants/tomato.norg").display().to_string();
    // A long line of multi-byte characters, indented, with the link last.
    let long = format!("\t   {} {{:plants/tomato:}}  ", "é".repeat(300));
    std::fs::write(g.join("long.norg"), format!("* Long\n{long}\n")).expect("write");
    let mut notes = Notes::start(&place.config()).await;
    let back = notes
        .ok("backlinks", serde_json::json!({ "path": tomato }))
        .await;
    let from_long: Vec<&Value> = back
        .iter()
        .filter(|b| s(b, "path").ends_with("/long.norg"))
        .collect();
    assert_eq!(from_long.len(), 1, "{back:?}");
    assert_eq!(n(from_long[0], "line"), 2);
    let snippet = s(from_long[0], "snippet");
    assert_eq!(
        snippet,
        "é".repeat(160),
        "trimmed, then cut at 160 characters"
    );

    assert_eq!(notes.stop().await, Some(0));
}

#[tokio::test]
async fn edits_renames_deletes_and_a_burst_are_followed() {
    let place = Place::new();
    let g = place.garden();
    let tomato = g.join("plants/tomato.norg");
    let mut notes = Notes::start(&place.config()).await;
    notes.ok("stats", serde_json::json!({})).await;

    // Edit: a new link to tomato appears in backlinks.
    std::fs::write(
        g.join("plants/basil.norg"),
        "* Basil\n  pairs with {:tomato:}\n",
    )
    .expect("write");
    let back = notes
        .until("backlinks", serde_json::json!({ "path": tomato }), |r| {
            r.len() == 3
        })
        .await;
    assert!(back.iter().any(|b| s(b, "path").ends_with("basil.norg")
        && n(b, "line") == 2
        && s(b, "snippet") == "pairs with {:tomato:}"));

    // Create, then rename: the old path is gone, the new one indexed.
    std::fs::write(g.join("new.norg"), "* Fresh zucchini\n").expect("write");
    notes
        .until("search", serde_json::json!({ "query": "zucchini" }), |r| {
            r.len() == 1
        })
        .await;
    std::fs::rename(g.join("new.norg"), g.join("plants/renamed.norg")).expect("rename");
    let hits = notes
        .until("search", serde_json::json!({ "query": "zucchini" }), |r| {
            paths(r) == [g.join("plants/renamed.norg").display().to_string()]
        })
        .await;
    assert_eq!(hits.len(), 1);

    // A whole folder renamed and then deleted.
    std::fs::rename(g.join("plants"), g.join("crops")).expect("rename dir");
    notes
        .until("files", serde_json::json!({}), |r| {
            paths(r).iter().filter(|p| p.contains("/crops/")).count() == 3
                && !paths(r).iter().any(|p| p.contains("/plants/"))
        })
        .await;
    std::fs::remove_dir_all(g.join("crops")).expect("rm");
    notes
        .until("files", serde_json::json!({}), |r| r.len() == 1)
        .await;

    // A burst of 1,000 writes over 100 files ends consistent: every file
    // holds its last word, and no earlier one.
    let dir = g.join("burst");
    std::fs::create_dir(&dir).expect("mkdir");
    for round in 0..10 {
        for i in 0..100 {
            let text = format!("* Note {i}\n  word round{round} file{i}\n");
            std::fs::write(dir.join(format!("n{i}.norg")), text).expect("write");
        }
    }
    notes
        .until(
            "search",
            serde_json::json!({ "query": "round9", "limit": 1000 }),
            |r| r.len() == 100,
        )
        .await;
    for round in 0..9 {
        let stale = notes
            .ok(
                "search",
                serde_json::json!({ "query": format!("round{round}"), "limit": 1000 }),
            )
            .await;
        assert!(stale.is_empty(), "round{round} still indexed: {stale:?}");
    }
    let stats = notes.ok("stats", serde_json::json!({})).await;
    assert_eq!(n(&stats[0], "files"), 101);
    assert_eq!(notes.stop().await, Some(0));
}

#[tokio::test]
async fn a_restart_reads_only_changed_files_and_a_bad_cache_is_rebuilt() {
    let place = Place::new();
    let g = place.garden();
    let mut notes = Notes::start(&place.config()).await;
    assert_eq!(
        n(&notes.ok("stats", serde_json::json!({})).await[0], "parsed"),
        3
    );
    assert_eq!(notes.stop().await, Some(0));

    // Unchanged: everything from the cache.
    let mut notes = Notes::start(&place.config()).await;
    let st = notes.ok("stats", serde_json::json!({})).await;
    assert_eq!((s(&st[0], "cache"), n(&st[0], "parsed")), ("loaded", 0));
    assert_eq!(notes.stop().await, Some(0));

    // One file changed (size), one deleted while the module was down.
    std::fs::write(g.join("plants/basil.norg"), "* Basil\n  and cucumbers\n").expect("write");
    std::fs::remove_file(g.join("plants/tomato.norg")).expect("rm");
    let mut notes = Notes::start(&place.config()).await;
    let st = notes.ok("stats", serde_json::json!({})).await;
    assert_eq!(
        (s(&st[0], "cache"), n(&st[0], "parsed"), n(&st[0], "files")),
        ("loaded", 1, 2)
    );
    assert_eq!(
        notes
            .ok("search", serde_json::json!({ "query": "cucumbers" }))
            .await
            .len(),
        1
    );
    assert!(notes
        .ok("search", serde_json::json!({ "query": "aphids" }))
        .await
        .is_empty());
    assert_eq!(notes.stop().await, Some(0));

    // Garbage, then an old format: rebuilt from the files, never fatal.
    let cache = place.dir.path().join("cache/index.bin");
    let good = std::fs::read(&cache).expect("cache written");
    std::fs::write(&cache, &good[..good.len() / 2]).expect("truncate");
    let mut notes = Notes::start(&place.config()).await;
    let st = notes.ok("stats", serde_json::json!({})).await;
    assert_eq!((s(&st[0], "cache"), n(&st[0], "parsed")), ("rebuilt", 2));
    assert!(s(&st[0], "cache_error").contains("truncated"), "{st:?}");
    assert_eq!(notes.ok("files", serde_json::json!({})).await.len(), 2);
    assert_eq!(notes.stop().await, Some(0));
    let mut old = std::fs::read(&cache).expect("cache rewritten");
    old[8] = 0;
    std::fs::write(&cache, &old).expect("write");
    let mut notes = Notes::start(&place.config()).await;
    let st = notes.ok("stats", serde_json::json!({})).await;
    assert_eq!(s(&st[0], "cache"), "rebuilt");
    assert!(
        s(&st[0], "cache_error").contains("format version 0"),
        "{st:?}"
    );
    assert_eq!(notes.stop().await, Some(0));
}

#[tokio::test]
async fn missing_or_unusable_workspaces_fail_the_call_not_the_module() {
    let place = Place::new();
    let missing = place.dir.path().join("nowhere");
    let a_file = place.dir.path().join("garden/readme.txt");
    let config = serde_json::json!({
        "workspaces": {
            "garden": place.dir.path().join("garden"),
            "gone": missing,
            "file": a_file,
        },
        "cache_dir": place.dir.path().join("cache"),
    });
    let mut notes = Notes::start(&config).await;
    for (ws, path) in [("gone", &missing), ("file", &a_file)] {
        let (code, msg) = notes
            .err("files", serde_json::json!({ "workspace": ws }))
            .await;
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    // Unscoped calls cover every workspace, so they say so too …
    let (code, msg) = notes
        .err("search", serde_json::json!({ "query": "tomato" }))
        .await;
    assert_eq!(code, Code::FailedPrecondition);
    assert!(
        msg.contains("nowhere") || msg.contains("readme.txt"),
        "{msg}"
    );
    // … while the readable one serves, and an unknown name is named.
    assert_eq!(notes.files_of("garden").await.len(), 3);
    let (code, msg) = notes
        .err("files", serde_json::json!({ "workspace": "nope" }))
        .await;
    assert_eq!(code, Code::NotFound);
    assert!(msg.contains("'nope'") && msg.contains("garden"), "{msg}");

    // Creating the missing folder fixes its calls.
    std::fs::create_dir(&missing).expect("mkdir");
    std::fs::write(missing.join("late.norg"), "* Late\n").expect("write");
    let files = notes.files_of("gone").await;
    assert_eq!(files.len(), 1);
    assert_eq!(notes.stop().await, Some(0));

    // No workspaces at all, and a config that is not valid: clear errors.
    let cache_dir = place.dir.path().join("cache");
    let mut notes = Notes::start(&serde_json::json!({ "cache_dir": cache_dir })).await;
    let (code, msg) = notes.err("files", serde_json::json!({})).await;
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("no workspaces configured"), "{msg}");
    assert_eq!(notes.stop().await, Some(0));
    let mut notes = Notes::start(&serde_json::json!({ "workspaces": 3 })).await;
    let (code, msg) = notes
        .err("search", serde_json::json!({ "query": "x" }))
        .await;
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("NORGOPOLIS_MODULE_CONFIG"), "{msg}");
    assert_eq!(notes.stop().await, Some(0));
}

/// The unprivileged user the machine's tests run other users as.
const NOBODY: u32 = 65534;

#[tokio::test]
async fn an_unreadable_workspace_fails_its_calls_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let place = Place::new();
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    // Everything readable by `nobody` but one workspace (root's, 0700).
    open(place.dir.path(), 0o755);
    let locked = place.dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::write(locked.join("secret.norg"), "* Secret\n").expect("write");
    open(&locked, 0o700);
    let cache = place.dir.path().join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    open(&cache, 0o777);
    let config = serde_json::json!({
        "workspaces": { "garden": place.dir.path().join("garden"), "locked": locked },
        "cache_dir": cache,
    });
    let mut notes = Notes::start_as(&config, Some(NOBODY)).await;
    let (code, msg) = notes
        .err("files", serde_json::json!({ "workspace": "locked" }))
        .await;
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains(&*locked.display().to_string()), "{msg}");
    assert!(
        msg.contains("Permission denied") || msg.contains("permission"),
        "{msg}"
    );
    assert_eq!(notes.files_of("garden").await.len(), 3);
    assert_eq!(notes.stop().await, Some(0));
}
