//! Module lifecycle against the real server: manifests, dependencies,
//! autostart, restarts, drop-in modules, self-loading by path.

mod support;

use std::path::Path;

use norgopolis_client::{Client, ClientError, Code, ModuleStatus};
use norgopolis_tests::*;
use rmpv::Value;
use support::*;

async fn echo(client: &Client, module: &str, v: Value) -> Result<Vec<Value>, ClientError> {
    client.call(module, "echo", &v).await
}

async fn status_of(client: &Client, name: &str) -> Option<ModuleStatus> {
    let status = client.status().await.expect("status");
    status.modules.into_iter().find(|m| m.name == name)
}

async fn running(client: &Client) -> Vec<String> {
    let status = client.status().await.expect("status");
    status
        .modules
        .into_iter()
        .filter(|m| m.state == "running")
        .map(|m| m.name)
        .collect()
}

#[tokio::test]
async fn a_bad_manifest_affects_only_its_module() {
    let sb = Sandbox::new();
    script_module(&sb.modules, "broken", "version = \"1\"\nnme = \"x\"\n", "");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    let list = client.list_modules().await.unwrap();
    let broken = list.modules.iter().find(|m| m.name == "broken").unwrap();
    assert!(
        broken.error.contains("broken/module.toml") && broken.error.contains("line 3, key `nme`"),
        "{}",
        broken.error
    );
    let echo_info = list.modules.iter().find(|m| m.name == "echo").unwrap();
    assert!(echo_info.error.is_empty());

    let e = echo(&client, "broken", Value::Nil).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("unknown field `nme`"), "{e}");
    assert_eq!(
        echo(&client, "echo", "fine".into()).await.unwrap(),
        vec![Value::from("fine")]
    );
}

#[tokio::test]
async fn dependencies_start_first_and_are_announced() {
    let sb = Sandbox::new();
    let log = log_start(&sb);
    script_module(&sb.modules, "app", "dependencies = [\"db\"]\n", &log);
    script_module(&sb.modules, "db", "dependencies = [\"fs\"]\n", &log);
    script_module(&sb.modules, "fs", "", &log);
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    let reply = client.load("app", None).await.unwrap();
    assert!(!reply.already_loaded);
    // Events are announced as each process is spawned: this is start order.
    let mut loaded = vec![];
    for (topic, p) in events.server_events(3).await {
        assert_eq!(topic, "module.loaded");
        loaded.push(format!(
            "{} ({})",
            field(&p, "name").as_str().unwrap(),
            field(&p, "cause").as_str().unwrap()
        ));
    }
    assert_eq!(loaded, ["fs (dependency)", "db (dependency)", "app (load)"]);
    let mut names = running(&client).await;
    names.sort();
    assert_eq!(names, ["app", "db", "fs"]);

    // Already running dependencies are checked, not started again.
    client.unload("app").await.unwrap();
    echo(&client, "app", Value::Nil).await.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for name in starts(&sb) {
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("app".to_string(), 2), ("db".into(), 1), ("fs".into(), 1)]
    );
}

#[tokio::test]
async fn a_missing_dependency_names_the_chain_and_starts_nothing() {
    let sb = Sandbox::new();
    let log = log_start(&sb);
    script_module(&sb.modules, "a", "dependencies = [\"b\"]\n", &log);
    script_module(&sb.modules, "b", "dependencies = [\"c\"]\n", &log);
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    for e in [
        client.load("a", None).await.map(|_| ()).unwrap_err(),
        echo(&client, "a", Value::Nil)
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        let m = e.message();
        assert!(m.contains("a -> b -> c"), "{m}");
        assert!(m.contains("module 'c' not found"), "{m}");
    }
    assert!(starts(&sb).is_empty(), "started: {:?}", starts(&sb));
    assert!(client.status().await.unwrap().modules.is_empty());
}

#[tokio::test]
async fn a_dependency_cycle_is_refused_with_its_chain() {
    let sb = Sandbox::new();
    let log = log_start(&sb);
    script_module(&sb.modules, "a", "dependencies = [\"b\"]\n", &log);
    script_module(&sb.modules, "b", "dependencies = [\"a\"]\n", &log);
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    let e = client.load("a", None).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("dependency cycle a -> b -> a"), "{e}");
    assert!(starts(&sb).is_empty());
    assert!(client.status().await.unwrap().modules.is_empty());
}

#[tokio::test]
async fn a_failed_start_stops_the_dependencies_it_started() {
    let sb = Sandbox::new();
    script_module(&sb.modules, "dep", "", "");
    let bad = script_module(&sb.modules, "bad", "dependencies = [\"dep\"]\n", "");
    // Executable, but its interpreter does not exist: the spawn fails.
    std::fs::write(bad.join("run.sh"), "#!/nonexistent/interpreter\n").unwrap();
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    let e = client.load("bad", None).await.unwrap_err();
    assert!(e.message().contains("cannot start module 'bad'"), "{e}");
    let loaded = events.wait("module.loaded", "dep").await;
    let exited = events.wait("module.exited", "dep").await;
    assert_eq!(field(&exited, "pid"), field(&loaded, "pid"));
    assert_eq!(field(&exited, "requested"), &Value::from(true));
    assert!(running(&client).await.is_empty());
    let pid = field(&loaded, "pid").as_u64().unwrap() as u32;
    assert!(wait_pid_exit(pid, WAIT).await, "dep {pid} still runs");
}

#[tokio::test]
async fn autostart_runs_in_dependency_order_and_reports_failures() {
    let sb = Sandbox::new();
    let log = log_start(&sb);
    script_module(
        &sb.modules,
        "app",
        "autostart = true\ndependencies = [\"db\"]\n",
        &log,
    );
    script_module(&sb.modules, "db", "", &log);
    script_module(&sb.modules, "lone", "autostart = true\n", &log);
    script_module(&sb.modules, "extra", "", &log);
    script_module(
        &sb.modules,
        "broken",
        "autostart = true\ndependencies = [\"missing\"]\n",
        &log,
    );
    script_module(&sb.modules, "idle", "", &log);
    write_config(&sb, "autostart = [\"extra\"]\n");
    // Readiness waits for autostart, so everything below is settled.
    let (_server, log) = start_server_logged(&sb, &[]);

    assert_eq!(load_order(&log), ["db", "app", "extra", "lone"]);
    let client = client(&sb).await;
    let mut names = running(&client).await;
    names.sort();
    assert_eq!(names, ["app", "db", "extra", "lone"]);
    let broken = status_of(&client, "broken")
        .await
        .expect("broken is reported");
    assert_eq!(broken.state, "failed");
    assert!(
        broken.failure.contains("autostart failed") && broken.failure.contains("broken -> missing"),
        "{}",
        broken.failure
    );
    assert_eq!(
        echo(&client, "app", "up".into()).await.unwrap(),
        vec![Value::from("up")]
    );
}

#[tokio::test]
async fn autostart_of_an_unknown_configured_module_is_not_fatal() {
    let sb = Sandbox::new();
    write_config(&sb, "autostart = [\"ghost\", \"echo\"]\n");
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let ghost = status_of(&client, "ghost")
        .await
        .expect("ghost is reported");
    assert_eq!(ghost.state, "failed");
    assert!(ghost.failure.contains("not found"), "{}", ghost.failure);
    assert_eq!(status_of(&client, "echo").await.unwrap().state, "running");
}

/// A script that exits with `code` on its first `crashes` starts (after
/// greeting with an empty HTTP/2 SETTINGS frame, so it counts as started,
/// and reading a byte, so the server has connected), then runs echo.
fn flaky_prelude(sb: &Sandbox, crashes: u32, code: i32) -> String {
    let counter = sb.dir.path().join("flaky.count");
    format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'\n\
         if [ $n -le {crashes} ]; then printf '\\000\\000\\000\\004\\000\\000\\000\\000\\000'; \
         head -c 1 > /dev/null; exit {code}; fi",
        c = counter.display()
    )
}

#[tokio::test]
async fn on_failure_restarts_with_backoff_until_it_works() {
    let sb = Sandbox::new();
    let prelude = flaky_prelude(&sb, 2, 7);
    script_module(&sb.modules, "flaky", "restart = \"on-failure\"\n", &prelude);
    let _server = sb.start_server(&["--restart-backoff", "20ms"]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    client.load("flaky", None).await.unwrap();
    let mut seen = vec![];
    for (topic, p) in events.server_events(5).await {
        let detail = match topic.as_str() {
            "module.loaded" => format!(
                "{}/{}",
                field(&p, "cause").as_str().unwrap(),
                field(&p, "restarts")
            ),
            "module.crashed" => format!(
                "{}/{}",
                field(&p, "status").as_str().unwrap(),
                field(&p, "restart_in_ms")
            ),
            _ => String::new(),
        };
        seen.push(format!("{topic} {detail}"));
    }
    assert_eq!(
        seen,
        [
            "module.loaded load/0",
            "module.crashed exit status 7/20",
            "module.loaded restart/1",
            "module.crashed exit status 7/40",
            "module.loaded restart/2",
        ]
    );
    assert_eq!(
        echo(&client, "flaky", "works".into()).await.unwrap(),
        vec![Value::from("works")]
    );
    let s = status_of(&client, "flaky").await.unwrap();
    assert_eq!(
        (s.state.as_str(), s.restarts, s.last_exit.as_str()),
        ("running", 2, "exit status 7")
    );
}

#[tokio::test]
async fn on_failure_gives_up_after_the_cap() {
    let sb = Sandbox::new();
    let prelude = flaky_prelude(&sb, 1000, 9);
    script_module(
        &sb.modules,
        "doomed",
        "restart = \"on-failure\"\n",
        &prelude,
    );
    let _server = sb.start_server(&["--restart-backoff", "10ms"]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    client.load("doomed", None).await.unwrap();
    let mut delays = vec![];
    loop {
        let p = events.wait("module.crashed", "doomed").await;
        match field(&p, "restart_in_ms").as_u64() {
            Some(ms) => delays.push(ms),
            None => break,
        }
    }
    assert_eq!(delays, [10, 20, 40, 80, 160]);
    let failed = events.wait("module.failed", "doomed").await;
    let error = field(&failed, "error").as_str().unwrap().to_string();
    assert!(error.contains("gave up after 5 restarts"), "{error}");
    let s = status_of(&client, "doomed").await.unwrap();
    assert_eq!(s.state, "failed");
    assert_eq!(s.restarts, 5);
    assert_eq!(s.last_exit, "exit status 9");
    assert!(s.failure.contains("gave up"), "{}", s.failure);
}

#[tokio::test]
async fn without_a_policy_a_crash_is_reported_and_the_next_call_reloads() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&["--restart-backoff", "10ms"]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    assert!(client.call::<_, Value>("echo", "crash", &5).await.is_err());
    let crashed = events.wait("module.crashed", "echo").await;
    assert_eq!(field(&crashed, "status").as_str(), Some("exit status 5"));
    assert_eq!(field(&crashed, "restart_in_ms"), &Value::Nil);
    let s = status_of(&client, "echo").await.unwrap();
    assert_eq!((s.state.as_str(), s.restarts), ("exited", 0));
    assert_eq!(s.last_exit, "exit status 5");

    echo(&client, "echo", Value::Nil).await.unwrap();
    let loaded = events.wait("module.loaded", "echo").await;
    assert_eq!(field(&loaded, "cause").as_str(), Some("call"));

    client.unload("echo").await.unwrap();
    let exited = events.wait("module.exited", "echo").await;
    assert_eq!(field(&exited, "requested"), &Value::from(true));
    assert_eq!(field(&exited, "status").as_str(), Some("exit status 0"));
}

#[tokio::test]
async fn a_dropped_in_module_is_callable_at_once() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    assert!(echo(&client, "fresh", Value::Nil)
        .await
        .unwrap_err()
        .is_code(Code::NotFound));

    // Build it elsewhere and move it in whole, as an installer does.
    let staging = sb.dir.path().join("staging");
    script_module(
        &staging,
        "fresh",
        "version = \"2.0\"\nfunctions = [\"echo\"]\n",
        "",
    );
    std::fs::rename(staging.join("fresh"), sb.modules.join("fresh")).unwrap();

    assert_eq!(
        echo(&client, "fresh", "hi".into()).await.unwrap(),
        vec![Value::from("hi")]
    );
    let list = client.list_modules().await.unwrap();
    let fresh = list.modules.iter().find(|m| m.name == "fresh").unwrap();
    assert_eq!((fresh.version.as_str(), fresh.loaded), ("2.0", true));
}

fn path_marker(v: &[Value]) -> String {
    let path = field(&v[0], "path").as_str().unwrap_or_default();
    path.split(':').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unload_then_call_picks_up_a_replaced_executable() {
    let sb = Sandbox::new();
    let echo_bin = bin("echo");
    let exe = sb.modules.join("swap");
    write_script(
        &exe,
        &format!("PATH=/v1:$PATH exec '{}'\n", echo_bin.display()),
    );
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let env = |c: Client| async move { c.call::<_, Value>("swap", "env_all", &()).await.unwrap() };

    assert_eq!(path_marker(&env(client.clone()).await), "/v1");
    write_script(
        &exe,
        &format!("PATH=/v2:$PATH exec '{}'\n", echo_bin.display()),
    );
    // The loaded process is not disturbed by the new file...
    assert_eq!(path_marker(&env(client.clone()).await), "/v1");
    // ...and the next load runs it.
    assert!(client.unload("swap").await.unwrap());
    assert_eq!(path_marker(&env(client.clone()).await), "/v2");
}

#[tokio::test]
async fn load_by_path_registers_a_module_with_its_dependencies() {
    let sb = Sandbox::new();
    let elsewhere = sb.dir.path().join("elsewhere");
    let folder = script_module(
        &elsewhere,
        "tool",
        "version = \"0.9\"\ndescription = \"one-off\"\nfunctions = [\"echo\", { name = \"pid\", doc = \"process id\" }]\ndependencies = [\"echo\"]\n",
        "",
    );
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;

    let reply = client.load("", Some(&folder)).await.unwrap();
    let module = reply.module.unwrap();
    assert_eq!(
        (module.name.as_str(), module.state.as_str()),
        ("tool", "running")
    );
    assert_eq!(
        echo(&client, "tool", 1.into()).await.unwrap(),
        vec![Value::from(1)]
    );
    // Its dependency came from the modules dir.
    assert_eq!(status_of(&client, "echo").await.unwrap().state, "running");
    let list = client.list_modules().await.unwrap();
    let tool = list.modules.iter().find(|m| m.name == "tool").unwrap();
    assert_eq!(tool.path, folder.display().to_string());
    assert_eq!(tool.version, "0.9");
    assert_eq!(tool.description, "one-off");
    assert_eq!(tool.functions, ["echo", "pid"]);
    assert_eq!(tool.function_docs, ["", "process id"]);
    assert_eq!(tool.dependencies, ["echo"]);

    // Under another name, from a bare executable.
    let reply = client
        .load("other", Some(Path::new(&bin("echo"))))
        .await
        .unwrap();
    assert_eq!(reply.module.unwrap().name, "other");
    assert_eq!(
        echo(&client, "other", 2.into()).await.unwrap(),
        vec![Value::from(2)]
    );
}

#[tokio::test]
async fn list_modules_carries_manifest_data() {
    let sb = Sandbox::new();
    script_module(
        &sb.modules,
        "db",
        "version = \"1.2.3\"\ndescription = \"a database\"\nfunctions = [\"query\", { name = \"index\", doc = \"reindex\" }]\ndependencies = [\"echo\"]\nautostart = false\n",
        "",
    );
    let _server = sb.start_server(&[]);
    let client = client(&sb).await;
    let list = client.list_modules().await.unwrap();
    let db = list.modules.iter().find(|m| m.name == "db").unwrap();
    assert_eq!(db.version, "1.2.3");
    assert_eq!(db.description, "a database");
    assert_eq!(db.functions, ["query", "index"]);
    assert_eq!(db.function_docs, ["", "reindex"]);
    assert_eq!(db.dependencies, ["echo"]);
    assert!(!db.loaded && !db.autostart && db.error.is_empty());
}

#[tokio::test]
async fn a_module_killed_for_breaking_the_protocol_is_restarted_on_failure() {
    let sb = Sandbox::new();
    let folder = sb.modules.join("shaky");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("module.toml"),
        "exec = \"run.sh\"\nrestart = \"on-failure\"\n",
    )
    .unwrap();
    write_script(
        &folder.join("run.sh"),
        &format!("exec '{}'\n", bin("np-faulty").display()),
    );
    let _server = sb.start_server(&["--restart-backoff", "10ms"]);
    let client = client(&sb).await;
    let mut events = Events::of(&client);

    let first: Vec<u32> = client.call("shaky", "pid", &()).await.unwrap();
    assert!(client
        .call::<_, Value>("shaky", "garbage", &())
        .await
        .is_err());
    let crashed = events.wait("module.crashed", "shaky").await;
    let reason = field(&crashed, "reason")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("not HTTP/2"), "{reason}");
    assert_eq!(field(&crashed, "restart_in_ms"), &Value::from(10));
    let loaded = events.wait("module.loaded", "shaky").await;
    assert_eq!(field(&loaded, "cause").as_str(), Some("restart"));
    let second: Vec<u32> = client.call("shaky", "pid", &()).await.unwrap();
    assert_ne!(first, second, "a new process answers");
    assert_eq!(status_of(&client, "shaky").await.unwrap().restarts, 1);
}
