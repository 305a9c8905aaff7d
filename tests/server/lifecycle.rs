//! Start-up, shutdown, workers, the embedded store, and Redis outages seen from
//! `tokengate serve`.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{assert_identity, bearer, revoke_elsewhere_and_wait, start_stack, started_log};
use crate::support::procs::{ADMIN_KEY, Tokengate};
use crate::support::stack::Stack;
use crate::support::upstream::Upstream;
use crate::support::{free_port, http};

#[tokio::test]
async fn sigterm_drains_and_flushes_last_accessed() {
    let stack = start_stack("", "[last_accessed]\nflush_interval = \"1h\"\n").await;
    let (token, id) = stack.mint("acme").await;
    let auth = bearer(&token);
    assert_eq!(
        stack
            .through_proxy("/orders", &[("authorization", &auth)])
            .await
            .status,
        StatusCode::OK
    );
    let mut conn = stack.redis.connection().await;
    let key = format!("tokengate:token:{id}");
    let before: Option<i64> = redis::AsyncCommands::hget(&mut conn, &key, "last_accessed")
        .await
        .unwrap();
    assert_eq!(before, None, "written only in batches");

    // A slow request in flight when SIGTERM arrives still completes.
    let slow = tokio::spawn({
        let url = Stack::url(stack.proxy, "/slow?ms=700");
        let auth = auth.clone();
        async move {
            http("GET", &url, &[("authorization", &auth)], "")
                .await
                .status
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (exit, stack) = stack.terminate().await;
    assert!(
        exit.success(),
        "exit status {exit}:\n{}",
        stack.tokengate.log()
    );
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::OK,
        "the in-flight request was cut"
    );
    let after: Option<i64> = redis::AsyncCommands::hget(&mut conn, &key, "last_accessed")
        .await
        .unwrap();
    assert!(
        after.is_some(),
        "pending last-accessed lost at shutdown:\n{}",
        stack.tokengate.log()
    );
}

#[test]
fn start_up_errors_are_one_line_naming_the_cause() {
    let check = |config: &str, env: &[(&str, &str)], needle: &str| {
        let out = Tokengate::run_expecting_exit(config, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{needle:?} not in {stderr}");
    };
    check(
        "[proxy]\nlisten = \"127.0.0.1:1\"\nupstrem = \"http://x\"\n",
        &[],
        "proxy.upstrem",
    );
    check("[proxy]\nlisten = \"127.0.0.1:1\"\n", &[], "proxy.upstream");
    check("[cache]\nttl = \"forever\"\n", &[], "cache.ttl");
    check("", &[], "nothing to serve");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    check(
        &format!("[forward_auth]\nlisten = \"127.0.0.1:{port}\"\n"),
        &[],
        &format!("127.0.0.1:{port}"),
    );
    let admin = free_port();
    let config = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    check(&config, &[], "TOKENGATE_ADMIN_KEY");
    check(&config, &[("TOKENGATE_ADMIN_KEY", "short")], "at least 16");
    check(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n[forward_auth]\nlisten = \"127.0.0.1:0\"\n",
        &[],
        "cannot connect to Redis",
    );
}

/// `serve_until` in-process: the admin key comes with the config (no
/// process environment), errors are typed, and `stop` ends it cleanly.
#[tokio::test]
async fn serve_until_runs_in_process_from_a_serve_config() {
    use tokengate::server::{AdminKey, ServeConfig};
    use tokengate::{InvalidConfig, ServeError};

    let admin = free_port();
    let mut config = ServeConfig::default();
    config.security.bcrypt_cost = crate::support::TEST_BCRYPT_COST;
    config.admin.listen = Some(format!("127.0.0.1:{admin}").parse().unwrap());
    config.admin.key = Some(AdminKey::new(ADMIN_KEY));
    // Debug never shows the key.
    assert!(!format!("{config:?}").contains(ADMIN_KEY));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokengate::serve_until(config.clone(), async {
        let _ = stopped.await;
    }));
    let url = format!("http://127.0.0.1:{admin}/v1/accounts/acme/tokens");
    let auth = format!("Bearer {ADMIN_KEY}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let created = loop {
        if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
            break http(
                "POST",
                &url,
                &[("authorization", &auth)],
                r#"{"name":"ci"}"#,
            )
            .await;
        }
        assert!(Instant::now() < deadline, "serve_until did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    let listed = http(
        "GET",
        &url,
        &[("authorization", "Bearer wrong-key-0123456789")],
        "",
    )
    .await;
    assert_eq!(listed.status, StatusCode::UNAUTHORIZED);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    // Typed errors, the same one-line messages the CLI prints.
    let mut keyless = config.clone();
    keyless.admin.key = None;
    let err = tokengate::serve_until(keyless, async {}).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Config(InvalidConfig::Environment(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("needs TOKENGATE_ADMIN_KEY"),
        "{err}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut taken = config.clone();
    taken.admin.listen = Some(busy.local_addr().unwrap());
    let err = tokengate::serve_until(taken, async {}).await.unwrap_err();
    match &err {
        ServeError::Bind { address, key, .. } => {
            assert_eq!(*address, busy.local_addr().unwrap());
            assert_eq!(*key, "[admin] listen");
        }
        other => panic!("{other:?}"),
    }
    let err = tokengate::serve_until(ServeConfig::default(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::NothingToServe), "{err:?}");
}

#[tokio::test]
async fn serve_works_on_the_embedded_store_with_nothing_else_installed() {
    let upstream = Upstream::start().await;
    let (proxy, admin) = (free_port(), free_port());
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n",
        upstream.url()
    );
    let tokengate = Tokengate::start(&config, &[], &[proxy, admin]);
    let log = tokengate.log_once("in-memory").await;
    assert!(log.contains("in-memory"), "{log}");
    let created = http(
        "POST",
        &Stack::url(admin, "/v1/accounts/demo/tokens"),
        &[("content-type", "application/json")],
        r#"{"name": "try"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let reply = http(
        "GET",
        &Stack::url(proxy, "/hello"),
        &[("authorization", &bearer(&token))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-account-id"), ["demo"]);
    let ready = http("GET", &Stack::url(admin, "/readyz"), &[], "").await;
    assert_eq!(ready.json()["store"], "memory");
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn server_workers_sets_the_serving_threads_and_one_serves_many_connections() {
    let stack = start_stack("", "[server]\nworkers = 1\n").await;
    let log = started_log(&stack.tokengate).await;
    assert_eq!(threads_named(stack.tokengate.pid(), "tokengate-worke"), 1);
    assert!(log.contains("workers=1"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log}");
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    // One worker: a request waiting on a slow upstream must not hold up a
    // second connection.
    let headers = [("authorization", auth.as_str())];
    let slow = stack.through_proxy("/slow?ms=3000", &headers);
    let quick = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let reply = stack.through_proxy("/orders", &headers).await;
        (reply, started.elapsed())
    };
    let (slow, (quick, waited)) = tokio::join!(slow, quick);
    assert_eq!(quick.status, StatusCode::OK);
    assert!(
        waited < Duration::from_secs(2),
        "the second connection waited {waited:?}"
    );
    assert_eq!(slow.status, StatusCode::OK);

    let admin = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n\
         [server]\nworkers = 3\n"
    );
    let three = Tokengate::start(&config, &[], &[admin]);
    started_log(&three).await;
    assert_eq!(threads_named(three.pid(), "tokengate-worke"), 3);
}

#[tokio::test]
async fn shutdown_flushes_over_a_redis_connection_a_request_reopened() {
    // After a Redis restart, the first request to fail reopens the
    // connection, on its worker's runtime; the flush at shutdown must still
    // find it running.
    let mut stack = start_stack(
        "",
        "[last_accessed]\nflush_interval = \"1h\"\n[server]\nworkers = 2\n",
    )
    .await;
    stack.mint("acme").await;
    stack.redis.stop();
    stack.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (token, id) = loop {
        let reply = stack
            .admin("POST", "/v1/accounts/acme/tokens", r#"{"name": "after"}"#)
            .await;
        if reply.status == StatusCode::CREATED {
            let json = reply.json();
            break (
                json["token"].as_str().unwrap().to_owned(),
                json["id"].as_str().unwrap().to_owned(),
            );
        }
        assert!(Instant::now() < deadline, "Redis never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reply = stack
        .through_proxy("/orders", &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let (exit, stack) = stack.terminate().await;
    assert!(
        exit.success(),
        "exit status {exit}:\n{}",
        stack.tokengate.log()
    );
    let mut conn = stack.redis.connection().await;
    let after: Option<i64> =
        redis::AsyncCommands::hget(&mut conn, format!("tokengate:token:{id}"), "last_accessed")
            .await
            .unwrap();
    assert!(
        after.is_some(),
        "pending last-accessed lost at shutdown:\n{}",
        stack.tokengate.log()
    );
}

#[tokio::test]
async fn requests_past_the_shutdown_grace_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = start_stack(
        "upstream_timeout = \"60s\"",
        "[server]\nshutdown_grace = \"500ms\"\n",
    )
    .await;
    let (token, _) = stack.mint("acme").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.proxy))
        .await
        .unwrap();
    let request =
        format!("GET /slow?ms=20000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (exit, stack) = stack.terminate().await;
    let waited = started.elapsed();
    assert!(
        exit.success(),
        "exit status {exit}:\n{}",
        stack.tokengate.log()
    );
    assert!(waited < Duration::from_secs(5), "exit took {waited:?}");
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the connection is still open");
    assert!(
        answer.is_empty(),
        "got an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        stack.tokengate.log().contains("grace period over"),
        "{}",
        stack.tokengate.log()
    );
}

#[tokio::test]
async fn the_first_request_after_redis_closed_the_connection_is_served() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    // Nothing cached: the proxy's first request must read Redis.
    stack.redis.kill_clients().await;
    let reply = stack
        .through_proxy("/orders", &[("authorization", &bearer(&token))])
        .await;
    assert_identity(&reply, Some(("acme", &id)));
    stack.redis.kill_clients().await;
    let reply = stack
        .admin("GET", &format!("/v1/accounts/acme/tokens/{id}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    stack.redis.kill_clients().await;
    let reply = stack.admin("GET", "/readyz", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn a_revocation_right_after_a_redis_outage_is_seen_at_once() {
    let mut stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let url = Stack::url(stack.proxy, "/orders");
    let auth = bearer(&token);
    assert_eq!(
        http("GET", &url, &[("authorization", &auth)], "")
            .await
            .status,
        StatusCode::OK
    );
    // Redis goes away for 8 s and comes back with the same data.
    let keys = [
        format!("tokengate:token:{id}"),
        "tokengate:account:acme".to_owned(),
    ];
    let mut conn = stack.redis.connection().await;
    let mut dumps = Vec::new();
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        dumps.push(dump);
    }
    drop(conn);
    stack.redis.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stack.redis.restart();
    let mut conn = stack.redis.connection().await;
    for (key, dump) in keys.iter().zip(&dumps) {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // Revoked at once: refused within 1 s (it waited out a 5 s backoff).
    revoke_elsewhere_and_wait(&stack, "acme", &id, &url, &token).await;
    // The outage and the return are in the log; the start was quiet.
    let log = stack.tokengate.log();
    assert!(log.contains("token event stream lost"), "{log}");
    assert!(log.contains("reconnected to Redis"), "{log}");
    let lost = log.find("token event stream lost").unwrap();
    // Up to the start of that line (its own timestamp and WARN excluded).
    let start = &log[..log[..lost].rfind('\n').map_or(0, |i| i + 1)];
    assert!(!start.contains("WARN"), "{start}");
}

#[tokio::test]
async fn a_silent_revocation_channel_shortens_the_trust_in_cached_tokens() {
    let stack = start_stack("", "[cache]\nttl = \"60s\"\ndegraded_ttl = \"1s\"\n").await;
    let (token, _) = stack.mint("acme").await;
    let url = Stack::url(stack.proxy, "/orders");
    let auth = bearer(&token);
    assert_eq!(
        http("GET", &url, &[("authorization", &auth)], "")
            .await
            .status,
        StatusCode::OK
    );
    // Frozen: every connection stays open and nothing answers, as across a
    // partition. The subscription's ping notices; after the degraded ttl,
    // the cached token is checked with the store again, which cannot answer.
    stack.redis.signal("-STOP");
    let frozen = Instant::now();
    let mut status = StatusCode::OK;
    while frozen.elapsed() < Duration::from_secs(12) {
        status = http("GET", &url, &[("authorization", &auth)], "")
            .await
            .status;
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.redis.signal("-CONT");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "trusted the cache for 12 s"
    );
    // Back: resubscribed, and served again.
    let back = Instant::now();
    loop {
        let status = http("GET", &url, &[("authorization", &auth)], "")
            .await
            .status;
        if status == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
