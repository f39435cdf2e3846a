//! Leave/arrive races against the linger timer, through the real client's
//! find-or-spawn: whatever the timing, no client may fail.

use std::time::Duration;

use norgopolis_client::{Client, ConnectOptions};
use norgopolis_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_arrive_around_a_short_linger_never_fails() {
    let sb = Sandbox::new();
    let opts = ConnectOptions::new("rust")
        .client_name("race-test")
        .socket(&sb.socket)
        .server_binary(bin("norgopolis-server"))
        .server_args(["--linger", "20ms", "--modules-dir"])
        .server_arg(&sb.modules)
        .server_args(["--log"])
        .server_arg(&sb.log);
    let mut servers = std::collections::BTreeSet::new();
    let mut last_pid = 0;
    for i in 0..200u64 {
        let client = Client::connect(opts.clone())
            .await
            .unwrap_or_else(|e| panic!("connect #{i} failed: {e}\nlog:\n{}", sb.log_text()));
        let got: Vec<u64> = client
            .call("echo", "echo", &i)
            .await
            .unwrap_or_else(|e| panic!("call #{i} failed: {e}\nlog:\n{}", sb.log_text()));
        assert_eq!(got, vec![i]);
        servers.insert(client.server_pid());
        last_pid = client.server_pid();
        client.detach().await;
        // Pauses spread across the 20 ms linger (pseudo-random, repeatable):
        // some arrivals land before the exit decision, some right at it, some after.
        let pause = (i * 7919) % 45;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    assert!(
        servers.len() > 1,
        "the linger never expired: the race was not exercised"
    );
    assert!(
        wait_pid_exit(last_pid, Duration::from_secs(3)).await,
        "last server did not exit"
    );
    eprintln!("200 sessions over {} servers", servers.len());
}
