//! The `notes` module under the real server: lean transport, `on-failure`
//! restarts, `notes.changed` events reaching every session, two clients
//! querying while files change, a crash mid-life, and a workspace that is
//! not there.

mod support;

use std::path::Path;

use norgopolis_client::{Client, Code};
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

/// Adds the notes module to `sb`, configured with `config`.
fn notes_module(sb: &Sandbox, config: &serde_json::Value) {
    sb.add_notes_module(&config.to_string());
}

/// A sandbox with workspace `ws` (`b.norg` and `a.norg` linking to it) and
/// the notes module configured for it.
fn setup() -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::new();
    let ws = sb.dir.path().join("ws");
    std::fs::create_dir(&ws).expect("ws");
    let ws = std::fs::canonicalize(ws).expect("canonical");
    std::fs::write(ws.join("b.norg"), "* Bee\n  alpha target\n").expect("b");
    std::fs::write(ws.join("a.norg"), "* Ay\n  alpha see {:b:}\n").expect("a");
    notes_module(
        &sb,
        &serde_json::json!({
            "workspaces": { "ws": ws },
            "cache_dir": sb.dir.path().join("cache"),
        }),
    );
    (sb, ws)
}

async fn call(c: &Client, function: &str, args: serde_json::Value) -> Vec<Value> {
    tokio::time::timeout(WAIT, c.call::<_, Value>("notes", function, &args))
        .await
        .expect("call did not finish")
        .unwrap_or_else(|e| panic!("notes.{function} {args}: {e}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    field(v, key).as_str().unwrap_or("")
}

/// The next `notes.changed` payload from module `notes`.
async fn next_change(events: &mut Events) -> Value {
    loop {
        let e = events.next().await;
        if e.module == "notes" && e.topic == "notes.changed" {
            return payload(&e);
        }
    }
}

fn backlinks_to(ws: &Path, name: &str) -> serde_json::Value {
    serde_json::json!({ "path": ws.join(name) })
}

#[tokio::test]
async fn two_clients_query_while_files_change_and_every_session_hears_each_change() {
    let (sb, ws) = setup();
    let _server = sb.start_server(&[]);
    let c1 = client(&sb).await;
    let c2 = client(&sb).await;
    let mut ev1 = Events::of(&c1);
    let mut ev2 = Events::of(&c2);
    let stats = call(&c1, "stats", serde_json::json!({})).await;
    assert_eq!(field(&stats[0], "files").as_u64(), Some(2));

    // c2 searches without pause while c1's side writes 20 files.
    let searcher = {
        let c2 = c2.clone();
        tokio::spawn(async move {
            let mut calls = 0;
            loop {
                let hits = c2
                    .call::<_, Value>(
                        "notes",
                        "search",
                        &serde_json::json!({ "query": "alpha", "limit": 100 }),
                    )
                    .await
                    .expect("search while files change");
                calls += 1;
                if hits.len() >= 22 {
                    return calls;
                }
            }
        })
    };
    for i in 0..20 {
        let text = format!("* Note {i}\n  alpha links {{:b:}}\n");
        std::fs::write(ws.join(format!("c{i}.norg")), text).expect("write");
    }
    // Each session hears each new file; once it has, the index has it.
    for events in [&mut ev1, &mut ev2] {
        let mut created = std::collections::BTreeSet::new();
        while created.len() < 20 {
            let change = next_change(events).await;
            assert_eq!(text(&change, "workspace"), "ws");
            if text(&change, "kind") == "created" {
                created.insert(text(&change, "path").to_owned());
            }
        }
        assert!(created
            .iter()
            .all(|p| p.starts_with(&*ws.display().to_string())));
    }
    let back = call(&c2, "backlinks", backlinks_to(&ws, "b.norg")).await;
    assert_eq!(back.len(), 21);
    let searches = tokio::time::timeout(WAIT, searcher)
        .await
        .expect("searcher finished")
        .expect("searcher ok");
    assert!(searches >= 1);

    // A deletion is announced and gone from the next query.
    std::fs::remove_file(ws.join("a.norg")).expect("rm");
    loop {
        let change = next_change(&mut ev1).await;
        if text(&change, "kind") == "deleted" {
            assert!(text(&change, "path").ends_with("/a.norg"));
            break;
        }
    }
    let back = call(&c1, "backlinks", backlinks_to(&ws, "b.norg")).await;
    assert_eq!(back.len(), 20);
    assert!(back.iter().all(|b| !text(b, "path").ends_with("/a.norg")));
}

#[tokio::test]
async fn a_crashed_module_is_restarted_and_comes_back_with_its_cache() {
    let (sb, ws) = setup();
    let _server = sb.start_server(&[]);
    let c = client(&sb).await;
    let mut events = Events::of(&c);
    let stats = call(&c, "stats", serde_json::json!({})).await;
    assert_eq!(text(&stats[0], "cache"), "absent");
    let loaded = events.wait("module.loaded", "notes").await;
    let pid = field(&loaded, "pid").as_u64().expect("pid") as i32;

    // A change the cache may not have yet, then the module dies.
    std::fs::write(ws.join("late.norg"), "* Late\n  zebra\n").expect("write");
    next_change(&mut events).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill notes");
    let crashed = events.wait("module.crashed", "notes").await;
    assert!(!field(&crashed, "restart_in_ms").is_nil(), "{crashed:?}");
    let again = events.wait("module.loaded", "notes").await;
    assert_eq!(text(&again, "cause"), "restart");

    let stats = call(&c, "stats", serde_json::json!({})).await;
    assert_eq!(text(&stats[0], "cache"), "loaded", "{stats:?}");
    assert_eq!(field(&stats[0], "files").as_u64(), Some(3));
    assert!(field(&stats[0], "parsed").as_u64() <= Some(1), "{stats:?}");
    let hits = call(&c, "search", serde_json::json!({ "query": "zebra" })).await;
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn a_missing_workspace_fails_the_call_and_the_module_stays_up() {
    let sb = Sandbox::new();
    let missing = sb.dir.path().join("no-such-notes");
    notes_module(
        &sb,
        &serde_json::json!({
            "workspaces": { "gone": missing },
            "cache_dir": sb.dir.path().join("cache"),
        }),
    );
    let _server = sb.start_server(&[]);
    let c = client(&sb).await;
    let mut events = Events::of(&c);
    for _ in 0..3 {
        let err = tokio::time::timeout(
            WAIT,
            c.call::<_, Value>("notes", "files", &serde_json::json!({})),
        )
        .await
        .expect("call finished")
        .expect_err("a missing workspace is an error");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(
            err.message().contains(&*missing.display().to_string()),
            "{err}"
        );
    }
    // The same process answered every call: nothing crashed or exited.
    c.publish("test", "sentinel", Vec::new())
        .await
        .expect("publish");
    loop {
        let e = events.next().await;
        if e.topic == "sentinel" {
            break;
        }
        assert!(
            !(e.module == "norgopolis"
                && matches!(e.topic.as_str(), "module.crashed" | "module.exited")),
            "{e:?}"
        );
    }
}
