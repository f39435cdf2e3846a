//! Events published through the server reach other sessions' subscribers.

mod support;

use std::time::Duration;

use norgopolis_client::{Client, SessionEvent};
use support::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_another_session() {
    let sb = Sandbox::new();
    let publisher = Client::connect(sb.opts()).await.expect("connect");
    sb.track(publisher.server_pid());
    let listener = Client::connect(sb.opts()).await.expect("connect");
    let mut events = listener.subscribe();

    let payload = vec![0x92, 0x01, 0xa1, b'x']; // [1, "x"]
    let delivered = publisher
        .publish("tester", "greeting", payload.clone())
        .await
        .expect("publish");
    assert!(delivered >= 1, "delivered to {delivered} sessions");

    let got = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("an event in time")
        .expect("an event");
    match got {
        SessionEvent::Event(e) => {
            assert_eq!(e.module, "tester");
            assert_eq!(e.topic, "greeting");
            assert_eq!(e.payload, payload);
        }
        other => panic!("expected an event, got {other:?}"),
    }
}
