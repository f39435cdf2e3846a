//! Idle unload: `idle_unload` in a module's manifest (or the server-wide
//! default in config.toml) stops the module after that long without
//! calls, announced as `module.exited` with cause `idle`; the next call
//! starts it again. A call in flight or a stream open keeps it; bad values
//! break that module only, naming the file and key.
//!
//! Nothing here sleeps to synchronise: unloads are awaited as events (or
//! polled in `Status` with a generous bound), and "long enough has passed"
//! is shown by a witness module with the same `idle_unload` being unloaded.

mod support;

use futures::StreamExt;
use norgopolis_client::Client;
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

/// A folder module running echo (lean) with `manifest` lines; every start
/// is logged (see `starts`).
fn napper(sb: &Sandbox, name: &str, manifest: &str) {
    script_module(
        &sb.modules,
        name,
        &format!("transport = \"lean\"\n{manifest}\n"),
        &log_start(sb),
    );
}

async fn pid(client: &Client, module: &str) -> u32 {
    let got: Vec<u32> = client.call(module, "pid", &Value::Nil).await.unwrap();
    got[0]
}

async fn state(client: &Client, module: &str) -> Option<String> {
    let status = client.status().await.unwrap();
    status
        .modules
        .iter()
        .find(|m| m.name == module)
        .map(|m| m.state.clone())
}

#[tokio::test]
async fn an_idle_module_is_unloaded_and_the_next_call_starts_it_again() {
    let sb = Sandbox::new();
    napper(&sb, "napper", "idle_unload = \"300ms\"");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    let first = pid(&client, "napper").await;
    let exited = events.wait("module.exited", "napper").await;
    assert_eq!(field(&exited, "cause").as_str(), Some("idle"), "{exited}");
    assert_eq!(field(&exited, "pid").as_u64(), Some(u64::from(first)));
    assert_eq!(field(&exited, "requested").as_bool(), Some(true));
    assert!(
        wait_pid_exit(first, WAIT).await,
        "the idle module's process is gone"
    );
    assert_eq!(state(&client, "napper").await.as_deref(), Some("idle"));

    let second = pid(&client, "napper").await;
    assert_ne!(first, second, "a new process serves the next call");
    let loaded = events.wait("module.loaded", "napper").await;
    assert_eq!(field(&loaded, "cause").as_str(), Some("call"));
    assert_eq!(starts(&sb), ["napper", "napper"]);
}

#[tokio::test]
async fn an_open_stream_or_call_in_flight_keeps_the_module() {
    let sb = Sandbox::new();
    napper(&sb, "streamer", "idle_unload = \"300ms\"");
    napper(&sb, "witness", "idle_unload = \"300ms\"");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    // A stream the caller stops reading after its first item: open, and
    // quiet, for as long as the caller likes.
    let streamer = pid(&client, "streamer").await;
    let mut stream = client
        .invoke::<Value, u64>("streamer", "count", &Value::from(3))
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);
    // A call in flight, quiet too: sleeping in the module.
    let sleeper = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, u64>("streamer", "sleep", &Value::from(60_000))
                .await
        })
    };
    // The witness is called after both began; once it is unloaded for
    // idleness, the streamer has been quiet longer than its idle_unload.
    let _ = pid(&client, "witness").await;
    let witness = events.wait("module.exited", "witness").await;
    assert_eq!(field(&witness, "cause").as_str(), Some("idle"));
    assert_eq!(state(&client, "streamer").await.as_deref(), Some("running"));
    assert!(pid_alive(streamer));

    // The stream goes on where it stopped.
    let rest: Vec<u64> = stream.map(|i| i.unwrap()).collect().await;
    assert_eq!(rest, [1, 2]);
    // The sleeping call alone still keeps it: cancel it, then it goes.
    sleeper.abort();
    let exited = events.wait("module.exited", "streamer").await;
    assert_eq!(field(&exited, "cause").as_str(), Some("idle"));
    assert_eq!(field(&exited, "pid").as_u64(), Some(u64::from(streamer)));
    assert_eq!(starts(&sb).iter().filter(|s| *s == "streamer").count(), 1);
}

#[tokio::test]
async fn the_server_default_applies_where_the_manifest_says_nothing() {
    let sb = Sandbox::new();
    sb.write_config("idle_unload = \"300ms\"\n");
    napper(&sb, "awake", "idle_unload = \"off\"");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    let awake = pid(&client, "awake").await;
    // echo is a bare executable: the server's default applies to it.
    let echo = pid(&client, "echo").await;
    let exited = events.wait("module.exited", "echo").await;
    assert_eq!(field(&exited, "cause").as_str(), Some("idle"));
    assert_eq!(field(&exited, "pid").as_u64(), Some(u64::from(echo)));
    // Called before echo and idle since: "off" kept it.
    assert_eq!(state(&client, "awake").await.as_deref(), Some("running"));
    assert_eq!(pid(&client, "awake").await, awake);
}

#[tokio::test]
async fn an_autostarted_module_unloaded_for_idleness_stays_unloaded_until_called() {
    let sb = Sandbox::new();
    napper(&sb, "early", "autostart = true\nidle_unload = \"300ms\"");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    eventually(WAIT, "the autostarted module to be unloaded", || async {
        (state(&client, "early").await.as_deref() == Some("idle")).then_some(())
    })
    .await;
    assert_eq!(starts(&sb), ["early"], "not started again by itself");
    let _ = pid(&client, "early").await;
    assert_eq!(starts(&sb), ["early", "early"]);
}

#[tokio::test]
async fn bad_values_break_that_module_only_naming_file_and_key() {
    let sb = Sandbox::new();
    let cases = [
        ("x10", "\"10x\"", "not a duration"),
        ("minus", "\"-1\"", "not a non-negative duration"),
        ("long", "\"400d\"", "too long"),
        ("word", "true", "a duration such as"),
    ];
    for (name, value, _) in &cases {
        napper(&sb, name, &format!("idle_unload = {value}"));
    }
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    for (name, value, why) in &cases {
        let e = client
            .call::<Value, Value>(name, "pid", &Value::Nil)
            .await
            .unwrap_err();
        let text = e.message();
        assert!(
            text.contains(&format!("{name}/module.toml"))
                && text.contains("key `idle_unload`")
                && text.contains(why),
            "{value}: {text}"
        );
    }
    assert!(pid(&client, "echo").await > 0, "other modules keep working");
    assert!(starts(&sb).is_empty(), "no broken module was started");
}
