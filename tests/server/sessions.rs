//! Open connections end with their token: WebSocket tunnels and streaming
//! responses across replicas, the handshake race, and a Redis outage.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{on_token, patch, unix_now};
use crate::support::RedisServer;
use crate::support::procs::Replica;
use crate::support::upstream::Upstream;

/// The WebSocket handshake for `/ws`, bearing `token`.
fn websocket_handshake(token: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// A WebSocket tunnel through `port`'s proxy to the echoing upstream, open
/// and echoing.
async fn open_tunnel(port: u16, token: &str) -> tokio::net::TcpStream {
    open_tunnel_with(port, token, "").await
}

/// [`open_tunnel`], with `extra` header lines in the handshake.
async fn open_tunnel_with(port: u16, token: &str, extra: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let handshake = websocket_handshake(token).replacen("\r\n\r\n", &format!("\r\n{extra}\r\n"), 1);
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(echoes(&mut stream).await, "a new tunnel does not echo");
    stream
}

/// Whether `stream` echoes a ping within a second.
async fn echoes(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut echo = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut echo)).await,
        Ok(Ok(_))
    ) && &echo == b"ping"
}

/// How long until `stream`, pinged every 50 ms, stops echoing and is
/// closed (fails past `limit`).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    loop {
        if !echoes(stream).await {
            // Closed, not merely slow: the read ends.
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest))
                    .await
                    .is_ok();
            assert!(closed, "the tunnel stopped echoing but stayed open");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the tunnel still carries traffic after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 21, point 4: a WebSocket tunnel opened through one replica is
/// closed within a second of its token being revoked, disabled, given
/// scopes that no longer cover the route, or rotated with no grace through
/// another replica, and at the second its (changed) expiry comes; the
/// log names the token. A tunnel of another token stays open throughout.
#[tokio::test]
async fn open_tunnels_are_closed_within_a_second_on_every_replica() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let routes = "[[routes]]\npath_prefix = \"/ws\"\nscopes = [\"chat\"]\n\
                  [[routes]]\npath_prefix = \"/ws\"\nmethods = [\"DELETE\"]\nscopes = [\"chat:admin\"]\n";
    let a = Replica::start(&redis.url(), &upstream.url(), routes);
    let b = Replica::start(&redis.url(), &upstream.url(), routes);
    let mint = || async {
        let created = a.create(r#"{"name": "chat", "scopes": ["chat"]}"#).await;
        assert_eq!(created.status, StatusCode::CREATED);
        let json = created.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    };
    let (bystander, _) = mint().await;
    let mut untouched = open_tunnel(b.proxy, &bystander).await;

    // A rotation without grace expires the old token, then revokes it: the
    // other replica may hear of either first.
    let changes: [(&[&str], &str, &str); 5] = [
        (&["reason=revoked"], "DELETE", ""),
        (&["reason=disabled"], "PATCH", r#"{"enabled": false}"#),
        (
            &["reason=insufficient_scope"],
            "PATCH",
            r#"{"scopes": ["chat:read"]}"#,
        ),
        (
            &["reason=ip_not_allowed"],
            "PATCH",
            r#"{"allowed_ips": ["10.9.8.0/24"]}"#,
        ),
        (
            &["reason=revoked", "reason=expired"],
            "POST",
            r#"{"grace": "0s"}"#,
        ),
    ];
    for (reasons, method, body) in changes {
        let (token, id) = mint().await;
        let mut tunnel = open_tunnel(b.proxy, &token).await;
        let rest = if method == "POST" { "/rotate" } else { "" };
        let reply = on_token(&a, method, &id, rest, body).await;
        assert!(reply.status.is_success(), "{method}: {:?}", reply.body);
        let took = closed_within(&mut tunnel, Duration::from_secs(1)).await;
        eprintln!("{method} {body}: tunnel closed by the other replica after {took:?}");
        let log = b.tokengate.log();
        assert!(
            log.lines().any(|l| l.contains("closed a tunnel")
                && l.contains(&id)
                && reasons.iter().any(|r| l.contains(r))),
            "{reasons:?}: no log line naming {id}:\n{log}"
        );
        assert!(
            echoes(&mut untouched).await,
            "another token's tunnel was closed"
        );
    }

    // Opened with a method override, it needed what DELETE needs too:
    // losing that scope ends it.
    let created = a
        .create(r#"{"name": "chat", "scopes": ["chat", "chat:admin"]}"#)
        .await;
    let json = created.json();
    let (token, id) = (
        json["token"].as_str().unwrap(),
        json["id"].as_str().unwrap(),
    );
    let mut tunnel = open_tunnel_with(b.proxy, token, "X-HTTP-Method-Override: DELETE\r\n").await;
    let reply = patch(&a, id, r#"{"scopes": ["chat"]}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    closed_within(&mut tunnel, Duration::from_secs(1)).await;
    assert!(
        b.tokengate
            .log()
            .lines()
            .any(|l| l.contains("closed a tunnel")
                && l.contains(id)
                && l.contains("reason=insufficient_scope"))
    );

    // Expiry, moved closer by a PATCH: closed as that second begins.
    let (token, id) = mint().await;
    let mut tunnel = open_tunnel(b.proxy, &token).await;
    let at = unix_now() + 2;
    let reply = patch(&a, &id, &format!(r#"{{"expires_at": {at}}}"#)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    closed_within(&mut tunnel, Duration::from_secs(4)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now >= at as f64 && now < at as f64 + 1.0,
        "closed at {now}, expiry {at}"
    );
    assert!(
        b.tokengate
            .log()
            .lines()
            .any(|l| l.contains("closed a tunnel")
                && l.contains(&id)
                && l.contains("reason=expired"))
    );
    assert!(echoes(&mut untouched).await);
}

/// A token revoked while the upstream is answering its handshake gets the
/// refusal a new request would get, not a `101` and a tunnel.
#[tokio::test]
async fn a_handshake_whose_token_is_revoked_meanwhile_is_refused() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let a = Replica::start(&redis.url(), &upstream.url(), "");
    let b = Replica::start(&redis.url(), &upstream.url(), "");
    let json = a.create(r#"{"name": "chat"}"#).await.json();
    let (token, id) = (
        json["token"].as_str().unwrap(),
        json["id"].as_str().unwrap(),
    );
    // b caches the token first, so the handshake is admitted at once.
    assert_eq!(b.get(token).await.status, StatusCode::OK);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", b.proxy))
        .await
        .unwrap();
    let handshake = websocket_handshake(token).replacen("GET /ws ", "GET /ws?ms=800 ", 1);
    stream.write_all(handshake.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        on_token(&a, "DELETE", id, "", "").await.status,
        StatusCode::OK
    );
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        use tokio::io::AsyncReadExt;
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(b.tokengate.log().contains("refused a tunnel"));
}

/// While the revocation feed is down, a tunnel whose token the store
/// cannot vouch for is ended, as a request would get 503: Redis gone, the
/// tunnel closes within about two `degraded_ttl`s, logged as unverified.
#[tokio::test]
async fn tunnels_the_store_cannot_vouch_for_end_while_the_feed_is_down() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let replica = Replica::start(
        &redis.url(),
        &upstream.url(),
        "[cache]\nttl = \"2s\"\nnegative_ttl = \"1s\"\ndegraded_ttl = \"1s\"\n",
    );
    let created = replica.create(r#"{"name": "chat"}"#).await;
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let mut tunnel = open_tunnel(replica.proxy, &token).await;
    // With the feed up, rounds of re-checks (every ttl) leave it open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        echoes(&mut tunnel).await,
        "closed while its token was valid"
    );
    redis.stop();
    let took = closed_within(&mut tunnel, Duration::from_secs(4)).await;
    eprintln!("Redis gone: tunnel closed after {took:?}");
    let log = replica.tokengate.log();
    assert!(
        log.lines()
            .any(|l| l.contains("closed a tunnel") && l.contains("reason=unverified")),
        "{log}"
    );
}

/// A response still streaming (server-sent events) through one replica
/// when its token is revoked through another is cut within a second, like
/// a tunnel; one on a token that stays valid streams on.
#[tokio::test]
async fn a_streaming_response_is_cut_within_a_second_of_a_revocation() {
    use http_body_util::BodyExt;
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let a = Replica::start(&redis.url(), &upstream.url(), "");
    let b = Replica::start(&redis.url(), &upstream.url(), "");
    let mint = || async {
        let json = a.create(r#"{"name": "events"}"#).await.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    };
    let ((token, id), (other, _)) = (mint().await, mint().await);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let open = |token: &str| {
        let request = http::Request::get(format!("http://127.0.0.1:{}/events", b.proxy))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap();
        client.request(request)
    };
    let mut events = open(&token).await.unwrap();
    let mut others = open(&other).await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // Past the second after which a stream is watched.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let frame = events.body_mut().frame().await.unwrap().unwrap();
        assert!(frame.is_data());
    }
    let revoked = on_token(&a, "DELETE", &id, "", "").await;
    assert_eq!(revoked.status, StatusCode::OK);
    let revoked_at = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.body_mut().frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return revoked_at.elapsed(),
            }
        }
    })
    .await
    .expect("the stream went on after its token was revoked");
    eprintln!("stream cut {ended:?} after the revocation");
    assert!(ended < Duration::from_secs(1), "cut after {ended:?}");
    // The other token's stream goes on.
    for _ in 0..3 {
        let frame = others.body_mut().frame().await.unwrap().unwrap();
        assert!(frame.is_data());
    }
    let log = b.tokengate.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cut a streaming response") && l.contains(&id)),
        "{log}"
    );
}
