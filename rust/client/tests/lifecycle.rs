//! Find-or-spawn against the real server: detached start, one server for
//! many concurrent clients, and recovery from a server on its way out.

mod support;

use std::time::Duration;

use norgopolis_client::{Client, ClientError, SessionEvent};
use support::{proc_stat, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_a_detached_server_that_outlives_its_client() {
    let sb = Sandbox::new();
    let client = Client::connect(sb.opts()).await.expect("connect");
    let pid = client.server_pid();
    sb.track(pid);
    assert_ne!(pid, std::process::id());

    let server = proc_stat(pid).expect("server process exists");
    let me = proc_stat(std::process::id()).expect("own stat");
    assert_ne!(
        server.session, me.session,
        "server must have its own session"
    );
    assert_ne!(
        server.ppid,
        std::process::id(),
        "server must not be our child"
    );

    let status = client.status().await.expect("status");
    assert_eq!(status.pid, pid);
    assert_eq!(status.socket, sb.socket.to_string_lossy());
    client.detach().await;

    // The server is still there for the next client, which must not spawn.
    let again = Client::connect(sb.opts().spawn(false))
        .await
        .unwrap_or_else(|e| panic!("server gone after its client left: {e}\n{}", sb.log_text()));
    assert_eq!(again.server_pid(), pid);
    assert_ne!(again.session_id(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_connects_share_one_server() {
    let sb = Sandbox::new();
    let connects = (0..16).map(|_| Client::connect(sb.opts()));
    let clients: Vec<Client> = futures::future::join_all(connects)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("a connect failed: {e}\n{}", sb.log_text()));
    let pid = clients[0].server_pid();
    sb.track(pid);
    assert!(clients.iter().all(|c| c.server_pid() == pid));
    let mut sessions: Vec<u64> = clients.iter().map(Client::session_id).collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 16, "every client has its own session");
    assert_eq!(clients[0].status().await.unwrap().sessions, 16);
    assert_eq!(sb.live_servers(), vec![pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spawn_without_a_server_is_a_connect_error() {
    let sb = Sandbox::new();
    let err = Client::connect(sb.opts().spawn(false)).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert_eq!(err.code_name(), "Unavailable");
    assert!(sb.live_servers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_meeting_an_exiting_server_ends_up_on_a_new_one() {
    let sb = Sandbox::new();
    let first = Client::connect(sb.opts()).await.expect("connect");
    let old = first.server_pid();
    sb.track(old);
    let mut events = first.subscribe();
    first.shutdown("test").await.expect("shutdown");
    // Right away, while the old server is still winding down.
    let next = Client::connect(sb.opts())
        .await
        .unwrap_or_else(|e| panic!("connect after shutdown: {e}\n{}", sb.log_text()));
    sb.track(next.server_pid());
    assert_ne!(next.server_pid(), old);
    let status = next.status().await.expect("status from the new server");
    assert_eq!(status.pid, next.server_pid());

    // The old session heard the goodbye and then closed (events the
    // server publishes on its way out may come first).
    let mut seen = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        let closed = e == SessionEvent::Closed;
        if !matches!(e, SessionEvent::Event(_)) {
            seen.push(e);
        }
        if closed {
            break;
        }
    }
    assert!(
        matches!(seen.first(), Some(SessionEvent::Goodbye(_))),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&SessionEvent::Closed));
    assert!(!first.is_attached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_ends_the_session_on_the_server() {
    let sb = Sandbox::new();
    let a = Client::connect(sb.opts()).await.expect("connect");
    sb.track(a.server_pid());
    let b = Client::connect(sb.opts()).await.expect("connect");
    assert_eq!(a.status().await.unwrap().sessions, 2);
    b.detach().await;
    assert_eq!(a.status().await.unwrap().sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_ends_the_session() {
    let sb = Sandbox::new();
    let a = Client::connect(sb.opts()).await.expect("connect");
    sb.track(a.server_pid());
    let b = Client::connect(sb.opts()).await.expect("connect");
    let b2 = b.clone();
    drop(b);
    assert_eq!(a.status().await.unwrap().sessions, 2, "a clone keeps it");
    drop(b2);
    // The end of the stream reaches the server asynchronously: wait for the
    // count to drop, within a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = a.status().await.unwrap().sessions;
        if n == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session still counted: {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_server_binary_is_reported_with_its_path() {
    let sb = Sandbox::new();
    let bogus = sb.dir.path().join("no-such-server");
    let err = Client::connect(sb.opts().server_binary(&bogus))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ServerNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&bogus.display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_to_start_reports_its_error_and_log() {
    let sb = Sandbox::new();
    let config = sb.dir.path().join("config.toml");
    std::fs::write(&config, "no_such_setting = 1\n").unwrap();
    let err = Client::connect(sb.opts().server_arg("--config").server_arg(&config))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Spawn { .. }), "{err:?}");
    let msg = err.to_string();
    // The server's own error line, and where to look for more.
    assert!(msg.contains("no_such_setting"), "{msg}");
    assert!(msg.contains(&sb.log.display().to_string()), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_the_server_left_fail_as_unavailable_without_reconnecting() {
    let sb = Sandbox::new();
    let client = Client::connect(sb.opts()).await.expect("connect");
    let old = client.server_pid();
    sb.track(old);
    client.shutdown("test").await.expect("shutdown");
    let gone = norgopolis_client::wait_for_server_exit(client.socket(), Duration::from_secs(10))
        .await
        .expect("wait");
    assert!(gone, "the server did not exit\n{}", sb.log_text());
    let err = client
        .call::<_, String>("echo", "echo", &"hi")
        .await
        .expect_err("a call on a connection to a server that left");
    assert_eq!(err.code_name(), "Unavailable", "{err:?}");
    // No new server was started behind our back (the old one may still be
    // on its last steps after releasing its lock).
    let others: Vec<u32> = sb
        .live_servers()
        .into_iter()
        .filter(|&p| p != old)
        .collect();
    assert!(others.is_empty(), "a server was started: {others:?}");
}
