//! Events through the real server: published by clients and modules,
//! delivered to every attached session in one order; the server's own
//! lifecycle topics.

mod support;

use norgopolis_client::{Code, SessionEvent};
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

fn msgpack(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).unwrap();
    buf
}

#[tokio::test]
async fn events_from_clients_and_modules_reach_two_clients_in_order() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let a = client(&sb).await;
    let b = client(&sb).await;
    let mut feeds = [Events::of(&a), Events::of(&b)];

    for i in 0..20 {
        let delivered = a
            .publish("tester", "tick", msgpack(&Value::from(i)))
            .await
            .unwrap();
        assert_eq!(delivered, 2, "both sessions take every event");
    }
    // A module publishes through the router like any client; its own
    // session is attached by then and counts too.
    let delivered: Vec<u32> = b
        .call(
            "echo",
            "publish",
            &map(&[("topic", "echo.hello".into()), ("data", "hi".into())]),
        )
        .await
        .unwrap();
    assert_eq!(delivered, [3]);

    let mut seqs = vec![];
    for feed in &mut feeds {
        let mut got = vec![];
        let mut seq = vec![];
        while got.len() < 21 {
            let e = feed.next().await;
            if e.module == "norgopolis" {
                continue; // echo's module.loaded, in between
            }
            seq.push(e.seq);
            got.push(format!("{}/{}/{}", e.module, e.topic, payload(&e)));
        }
        let mut expected: Vec<String> = (0..20).map(|i| format!("tester/tick/{i}")).collect();
        expected.push("echo/echo.hello/\"hi\"".into());
        assert_eq!(got, expected);
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "seq grows: {seq:?}");
        seqs.push(seq);
    }
    assert_eq!(seqs[0], seqs[1], "both clients see the same sequence");
}

#[tokio::test]
async fn clients_cannot_publish_as_the_server() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let a = client(&sb).await;
    let e = a
        .publish("norgopolis", "module.loaded", msgpack(&Value::Nil))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = a.publish("x", "", vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn shutdown_is_announced_before_the_goodbye() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&[]);
    let watcher = client(&sb).await;
    let mut feed = watcher.subscribe();
    let other = client(&sb).await;
    other.shutdown("tests are done").await.unwrap();

    let mut seen = vec![];
    loop {
        match tokio::time::timeout(WAIT, feed.recv()).await {
            Ok(Ok(SessionEvent::Event(e))) => {
                let reason = field(&payload(&e), "reason")
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                seen.push(format!("{}/{}: {reason}", e.module, e.topic));
            }
            Ok(Ok(SessionEvent::Goodbye(reason))) => seen.push(format!("goodbye: {reason}")),
            Ok(Ok(SessionEvent::Closed)) | Ok(Err(_)) => break,
            Err(_) => panic!("session did not end; saw {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "norgopolis/server.shutdown: shutdown requested: tests are done",
            "goodbye: server shutting down: shutdown requested: tests are done",
        ]
    );
    assert!(server.exited_within(WAIT).await);
}
