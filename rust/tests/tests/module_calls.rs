//! Modules calling modules through the server (the SDK's `router()`, used
//! by echo's `relay`).

mod support;

use std::time::Duration;

use norgopolis_client::{Client, ClientError, Code};
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

fn relay(module: &str, function: &str, args: Value) -> Value {
    map(&[
        ("module", module.into()),
        ("function", function.into()),
        ("args", args),
    ])
}

async fn call(
    client: &Client,
    module: &str,
    function: &str,
    args: Value,
) -> Result<Vec<Value>, ClientError> {
    tokio::time::timeout(WAIT, client.call(module, function, &args))
        .await
        .expect("call did not finish (deadlock?)")
}

#[tokio::test]
async fn a_module_calls_another_module() {
    let sb = Sandbox::new();
    std::os::unix::fs::symlink(bin("echo"), sb.modules.join("peer")).unwrap();
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    let value = Value::Array(vec![1.into(), "x".into()]);
    assert_eq!(
        call(
            &client,
            "echo",
            "relay",
            relay("peer", "echo", value.clone())
        )
        .await
        .unwrap(),
        vec![value]
    );
    // Streams stream through.
    assert_eq!(
        call(&client, "echo", "relay", relay("peer", "count", 4.into()))
            .await
            .unwrap(),
        (0..4).map(Value::from).collect::<Vec<_>>()
    );
    // The callee's error reaches the first caller unchanged.
    let fail = map(&[
        ("code", "NotFound".into()),
        ("message", "no such thing".into()),
    ]);
    let e = call(&client, "echo", "relay", relay("peer", "fail", fail))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().as_str()),
        (Code::NotFound, "no such thing")
    );
    let e = call(&client, "echo", "relay", relay("ghost", "echo", Value::Nil))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("module 'ghost' not found"), "{e}");
    // The module's session is a module's: it shows up, kind "module".
    assert_eq!(client.status().await.unwrap().sessions, 2);
}

#[tokio::test]
async fn call_chains_cycling_back_into_a_busy_module_do_not_deadlock() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    // echo.relay -> echo.relay -> echo.echo: echo is busy with both relays
    // when the innermost call reaches it.
    let chain = relay("echo", "relay", relay("echo", "echo", "deep".into()));
    assert_eq!(
        call(&client, "echo", "relay", chain).await.unwrap(),
        vec![Value::from("deep")]
    );
    // Many at once, each holding echo busy with a sleep at the bottom.
    let chains = (0..12).map(|i| {
        let client = client.clone();
        async move {
            let bottom = relay("echo", "sleep", Value::from(20 + i));
            call(&client, "echo", "relay", relay("echo", "relay", bottom)).await
        }
    });
    for (i, result) in futures::future::join_all(chains)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap(), vec![Value::from(20 + i as u64)]);
    }
    // The server still answers everything else.
    assert_eq!(client.status().await.unwrap().calls_in_flight, 0);
}

#[tokio::test]
async fn nested_calls_do_not_wait_behind_the_module_limit_their_callers_hold() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 2\n");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    // Two front-end calls take both of echo's slots; each goes three deep
    // back into echo. Waiting in line behind their own callers would hang.
    let chains = (0..2).map(|i| {
        let client = client.clone();
        async move {
            let bottom = relay("echo", "sleep", Value::from(50 + i));
            call(&client, "echo", "relay", relay("echo", "relay", bottom)).await
        }
    });
    for (i, result) in futures::future::join_all(chains)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap(), vec![Value::from(50 + i as u64)]);
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.calls_in_flight, 0);
    let echo = status.modules.iter().find(|m| m.name == "echo").unwrap();
    assert_eq!(echo.calls_in_flight, 0, "{echo:?}");
    assert_eq!(echo.calls_queued, 0, "{echo:?}");
}

#[tokio::test]
async fn a_module_session_does_not_keep_the_server_alive() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--linger", "300ms"]);
    let client = client(&sb).await;
    assert_eq!(
        call(&client, "echo", "relay", relay("echo", "echo", 1.into()))
            .await
            .unwrap(),
        vec![Value::from(1)]
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.sessions, 2, "ours and echo's");
    let echo_pid = status
        .modules
        .iter()
        .find(|m| m.name == "echo")
        .unwrap()
        .pid;

    client.detach().await;
    assert!(
        server.exited_within(WAIT).await,
        "the server stayed while only a module's session was left"
    );
    assert!(
        wait_pid_exit(echo_pid, Duration::from_secs(5)).await,
        "echo outlived the server"
    );
}
