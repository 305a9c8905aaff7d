//! The sidecar proxy of a real `tokengate serve`: identity headers, refusals,
//! upstream errors, streaming bodies and upgrades.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use crate::common::{
    FORGED, INVALID, REALM, assert_identity, bearer, revoke_elsewhere_and_wait, start_stack,
};
use crate::support::procs::{ADMIN_KEY, Tokengate};
use crate::support::stack::Stack;
use crate::support::{RedisServer, free_port, http, raw};

#[tokio::test]
async fn the_proxy_forwards_the_real_identity_and_nothing_forged() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let auth = bearer(&token);
    let mut headers = vec![("authorization", auth.as_str()), ("host", "api.example")];
    headers.extend(FORGED);
    let reply = stack.through_proxy("/orders?page=2", &headers).await;
    assert_identity(&reply, Some(("acme", &id)));
    let json = reply.json();
    assert_eq!(
        json["uri"], "/orders?page=2",
        "the exact path that was authorized"
    );
    assert!(
        reply.seen("authorization").is_empty(),
        "Authorization is dropped by default"
    );
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(reply.seen("x-forwarded-proto"), ["http"]);
    assert_eq!(reply.seen("x-forwarded-host"), ["api.example"]);

    // From a trusted proxy (loopback by default), X-Forwarded-For is appended to.
    let reply = stack
        .through_proxy(
            "/orders",
            &[("authorization", &auth), ("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(reply.seen("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);

    // A public route passes without a token, and still without forgeries.
    let reply = stack.through_proxy("/public/docs", &FORGED).await;
    assert_identity(&reply, None);
}

#[tokio::test]
async fn the_proxy_refuses_missing_bad_and_revoked_tokens() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;

    let reply = stack.through_proxy("/orders", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(REALM));
    assert_eq!(reply.json()["error"], "missing_token");

    let forged = format!("Bearer {}", &token[..54]);
    let reply = stack
        .through_proxy("/orders", &[("authorization", &forged)])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(INVALID));
    assert_eq!(reply.json()["error"], "invalid_token");

    let url = Stack::url(stack.proxy, "/orders");
    revoke_elsewhere_and_wait(&stack, "acme", &id, &url, &token).await;
}

#[tokio::test]
async fn a_connection_header_cannot_strip_the_real_identity() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let auth = bearer(&token);
    let reply = stack
        .through_proxy(
            "/orders",
            &[
                ("authorization", &auth),
                (
                    "connection",
                    "keep-alive, X-Account-Id, x-token-id, X-Forwarded-For",
                ),
                ("x-account-id", "evil"),
            ],
        )
        .await;
    assert_identity(&reply, Some(("acme", &id)));
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
    assert!(
        reply
            .seen("connection")
            .iter()
            .all(|v| !v.to_lowercase().contains("account"))
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let stack = start_stack("upstream_timeout = \"300ms\"", "").await;
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    let reply = stack
        .through_proxy("/slow?ms=3000", &[("authorization", &auth)])
        .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_timeout");

    // A second stack whose upstream port has nothing behind it.
    let dead = free_port();
    let redis = RedisServer::start();
    let (proxy, admin) = (free_port(), free_port());
    let config = format!(
        "[redis]\nurl = \"{}\"\n[security]\nbcrypt_cost = 4\n[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n\
         upstream = \"http://127.0.0.1:{dead}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        redis.url()
    );
    let _tokengate = Tokengate::start(
        &config,
        &[("TOKENGATE_ADMIN_KEY", ADMIN_KEY)],
        &[proxy, admin],
    );
    let created = http(
        "POST",
        &Stack::url(admin, "/v1/accounts/acme/tokens"),
        &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
        r#"{"name": "x"}"#,
    )
    .await
    .json();
    let auth = bearer(created["token"].as_str().unwrap());
    let reply = http(
        "GET",
        &Stack::url(proxy, "/orders"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn a_ten_mib_body_streams_through_with_flat_memory() {
    use http_body_util::{BodyExt, StreamBody};
    // One worker, warmed up by a small upload first: the baseline then
    // holds what the first request on a thread costs (the allocator's
    // per-thread heap, the upstream connection), which is not buffering.
    let stack = start_stack("", "[server]\nworkers = 1\n").await;
    let (token, _) = stack.mint("acme").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let upload = |chunks: usize| {
        let body = futures_util::stream::iter((0..chunks).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                b'x';
                CHUNK
            ])))
        }));
        http::Request::post(Stack::url(stack.proxy, "/upload"))
            .header("authorization", bearer(&token))
            .body(StreamBody::new(body).boxed())
            .unwrap()
    };
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 160; // 10 MiB
    let warm_up = client.request(upload(1)).await.unwrap();
    assert_eq!(warm_up.status(), StatusCode::OK);
    warm_up.into_body().collect().await.unwrap();
    let before = stack.tokengate.peak_rss_kib();

    let response = client.request(upload(CHUNKS)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(reply["body_bytes"], CHUNK * CHUNKS);

    let grown = stack.tokengate.peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 4 * 1024,
        "peak RSS grew by {grown} KiB for a 10 MiB body: it was buffered"
    );
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn websocket_upgrades_pass_after_auth() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = start_stack("", "").await;
    let (token, _) = stack.mint("acme").await;
    let handshake = |auth: Option<&str>| {
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
        )
    };
    let mut refused = tokio::net::TcpStream::connect(("127.0.0.1", stack.proxy))
        .await
        .unwrap();
    refused.write_all(handshake(None).as_bytes()).await.unwrap();
    let head = read_head(&mut refused).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.proxy))
        .await
        .unwrap();
    stream
        .write_all(handshake(Some(&token)).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let message = b"ping over the upgraded connection";
    stream.write_all(message).await.unwrap();
    let mut echo = vec![0u8; message.len()];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "no echo: {read:?}\n{}",
        stack.tokengate.log()
    );
    assert_eq!(echo, message);
}

#[tokio::test]
async fn a_query_parameter_token_never_reaches_the_upstream() {
    let stack = start_stack(
        "",
        "[sources]\nquery_param = \"api_key\"\napi_key_header = true\n",
    )
    .await;
    let (token, id) = stack.mint("acme").await;
    let reply = stack
        .through_proxy(&format!("/orders?page=2&api_key={token}"), &[])
        .await;
    assert_identity(&reply, Some(("acme", &id)));
    assert_eq!(reply.json()["uri"], "/orders?page=2");
    // A percent-encoded name is the same parameter to the service.
    let reply = stack
        .through_proxy(&format!("/orders?api%5Fkey={token}&page=3"), &[])
        .await;
    assert_identity(&reply, Some(("acme", &id)));
    assert_eq!(reply.json()["uri"], "/orders?page=3");
    let reply = stack
        .through_proxy("/orders", &[("x-api-key", &token)])
        .await;
    assert_identity(&reply, Some(("acme", &id)));
    assert!(
        reply.seen("x-api-key").is_empty(),
        "the X-API-Key token reached the upstream"
    );
    let log = stack.tokengate.log();
    assert!(!log.contains(&token[25..49]), "a token secret was logged");
}

/// `[proxy] health_path`: the load balancer's check is answered by
/// tokengate without a token, never forwarded; other methods and paths are
/// not.
#[tokio::test]
async fn the_proxy_answers_its_health_path_itself() {
    let stack = start_stack("health_path = \"/ping\"", "").await;
    for method in ["GET", "HEAD"] {
        let reply = http(method, &Stack::url(stack.proxy, "/ping"), &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{method}");
        if method == "GET" {
            // tokengate's own answer, not the upstream's echo.
            assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
        }
    }
    for (method, path) in [("POST", "/ping"), ("GET", "/ping/x"), ("GET", "/pingx")] {
        let reply = http(method, &Stack::url(stack.proxy, path), &[], "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // A bad path is a config error naming the key.
    let out = Tokengate::run_expecting_exit(
        "[proxy]\nlisten = \"127.0.0.1:1\"\nupstream = \"http://127.0.0.1:2\"\nhealth_path = \"ping\"\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proxy.health_path"), "{stderr}");
}

/// An HTTP/1.0 upstream (like `python3 -m http.server`, the README's
/// stand-in) does not turn the client's HTTP/1.1 answers into HTTP/1.0: the
/// client keeps its connection for a second request.
#[tokio::test]
async fn an_http_1_0_upstream_does_not_downgrade_the_client() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let redis = RedisServer::start();
    let (proxy, admin) = (free_port(), free_port());
    let config = format!(
        "[redis]\nurl = \"{}\"\n[security]\nbcrypt_cost = 4\n\
         [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"http://{upstream}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        redis.url()
    );
    let _tokengate = Tokengate::start(
        &config,
        &[("TOKENGATE_ADMIN_KEY", ADMIN_KEY)],
        &[proxy, admin],
    );
    let minted = http(
        "POST",
        &Stack::url(admin, "/v1/accounts/acme/tokens"),
        &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
        r#"{"name": "old upstream"}"#,
    )
    .await;
    let token = minted.json()["token"].as_str().unwrap().to_owned();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    for round in 0..2 {
        let request = format!(
            "GET /r{round} HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut status = String::new();
        stream.read_line(&mut status).await.unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "round {round}: {status:?}"
        );
        let mut length = 0;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            assert!(!lower.starts_with("connection: close"), "{line}");
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"ok");
    }
}

#[tokio::test]
async fn only_websocket_upgrades_pass() {
    let stack = start_stack("", "").await;
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    let reply = stack
        .through_proxy(
            "/orders",
            &[
                ("authorization", &auth),
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAAQAAP__"),
            ],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "served as plain HTTP/1.1, not switched"
    );
    assert!(reply.seen("upgrade").is_empty() && reply.seen("http2-settings").is_empty());
}

#[tokio::test]
async fn idle_websocket_tunnels_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = start_stack("tunnel_idle_timeout = \"600ms\"", "").await;
    let (token, _) = stack.mint("acme").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.proxy))
        .await
        .unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic every 150 ms keeps it open well past the idle timeout.
    let started = Instant::now();
    let mut last = started;
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echo)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "tunnel closed while in use: {read:?}"
        );
        last = Instant::now();
    }
    // Silence: closed 600 ms after the last byte (and not before).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle tunnel stayed open");
    assert!(rest.is_empty());
    assert!(
        last.elapsed() >= Duration::from_millis(550),
        "closed after {:?} of silence",
        last.elapsed()
    );
}

#[tokio::test]
async fn failures_behind_a_proxy_are_charged_to_the_client() {
    let stack = start_stack("", "[rate_limit]\nfailed_auth_per_ip = 3\n").await;
    let (token, _) = stack.mint("acme").await;
    let good = bearer(&token);
    let bad = bearer(&format!("{}x", &token[..54]));
    // Each round: three clients of one bucket fail, a fourth of the same
    // bucket is refused (with a bad token and a good one), and a client of
    // another bucket still gets in. The
    // load balancer in front (loopback: trusted) writes ports, IPv6 too.
    for (failing, same_bucket, other) in [
        (
            ["203.0.113.5:4711", "203.0.113.5:4712", "203.0.113.5"],
            "203.0.113.5:9",
            "203.0.113.6:4711",
        ),
        (
            [
                "[2001:db8:1:2::1]:443",
                "2001:db8:1:2::2",
                "[2001:db8:1:2:ffff::3]",
            ],
            "2001:db8:1:2::99",
            "[2001:db8:1:3::1]:443",
        ),
    ] {
        for client in failing {
            let reply = stack
                .through_proxy(
                    "/orders",
                    &[("authorization", &bad), ("x-forwarded-for", client)],
                )
                .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{client}");
        }
        for auth in [&bad, &good] {
            let reply = stack
                .through_proxy(
                    "/orders",
                    &[("authorization", auth), ("x-forwarded-for", same_bucket)],
                )
                .await;
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{same_bucket}");
        }
        let reply = stack
            .through_proxy(
                "/orders",
                &[("authorization", &good), ("x-forwarded-for", other)],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{other} was charged for another client"
        );
    }
}

#[tokio::test]
async fn no_spelling_of_a_forwarding_header_passes_from_a_client() {
    let stack = start_stack("", "[client_ip]\ntrusted_proxies = []\n").await;
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    let forged = [
        ("x_forwarded_for", "7.7.7.7"),
        ("x.forwarded.for", "7.7.7.7"),
        ("x_real_ip", "7.7.7.7"),
        ("x-real-ip", "7.7.7.7"),
        ("x_forwarded_host", "evil.example"),
        ("x_forwarded_proto", "https"),
        ("x-forwarded-port", "7"),
        ("x_forwarded_port", "7"),
        ("x-forwarded-prefix", "/evil"),
        ("forwarded", "for=7.7.7.7"),
        ("x-forwarded-for", "7.7.7.7"),
    ];
    let mut headers = vec![("authorization", auth.as_str()), ("host", "api.example")];
    headers.extend(forged);
    let reply = stack.through_proxy("/orders", &headers).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&reply.body);
    for value in ["7.7.7.7", "evil", "https", "\"7\""] {
        assert!(!body.contains(value), "{value} arrived: {body}");
    }
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(reply.seen("x-forwarded-host"), ["api.example"]);
}

#[tokio::test]
async fn slow_uploads_reach_the_upstream_and_its_timeout_starts_once_sent() {
    use http_body_util::{BodyExt, StreamBody};
    let stack = start_stack("upstream_timeout = \"1s\"", "").await;
    let (token, _) = stack.mint("acme").await;
    // 3 MiB at about 1 MiB/s: three times the upstream timeout.
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 48;
    let chunks = futures_util::StreamExt::then(futures_util::stream::iter(0..CHUNKS), |_| async {
        tokio::time::sleep(Duration::from_millis(62)).await;
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; CHUNK])))
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let request = http::Request::post(Stack::url(stack.proxy, "/upload"))
        .header("authorization", bearer(&token))
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let started = Instant::now();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() > Duration::from_secs(2));
    let reply: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(reply["body_bytes"], CHUNK * CHUNKS);
    // Once the body is sent, the timeout holds as before.
    let reply = http(
        "POST",
        &Stack::url(stack.proxy, "/slow?ms=3000"),
        &[("authorization", &bearer(&token))],
        "a small body",
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let stack = start_stack("client_body_timeout = \"500ms\"", "").await;
    let (token, _) = stack.mint("acme").await;
    let started = Instant::now();
    let reply = raw(
        stack.proxy,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 100\r\n\r\nonly ten b"
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""error":"request_timeout""#), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        !stack.tokengate.log().contains("WARN"),
        "{}",
        stack.tokengate.log()
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_error() {
    let stack = start_stack("", "").await;
    let (token, _) = stack.mint("acme").await;
    for (body, what) in [
        ("5\nhello\r\n0\r\n\r\n", "a bare LF after the chunk size"),
        (
            "FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
            "an overflowing chunk size",
        ),
        ("5\r\nhelloXX0\r\n\r\n", "no CRLF after the chunk data"),
    ] {
        let reply = raw(
            stack.proxy,
            &format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{body}"
            ),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{what}: {reply}");
        assert!(
            reply.contains(r#""error":"invalid_request""#),
            "{what}: {reply}"
        );
    }
    let log = stack.tokengate.log();
    assert!(
        !log.contains("upstream unreachable") && !log.contains("WARN"),
        "{log}"
    );
}
