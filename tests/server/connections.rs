//! Connections and protocols: HTTP/2 and h2c, header limits and timeouts,
//! connection caps, RFC 9112 host rules.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use crate::common::{assert_identity, bearer, start_stack};
use crate::support::procs::Tokengate;
use crate::support::stack::Stack;
use crate::support::{HttpReply, free_port, http, raw};

#[tokio::test]
async fn h2c_clients_are_served() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let request = http::Request::get(Stack::url(stack.proxy, "/orders"))
        .header("authorization", bearer(&token))
        .header("x-account-id", "evil")
        .body(http_body_util::Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status();
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let reply = HttpReply {
        status,
        headers: http::HeaderMap::new(),
        body,
    };
    assert_identity(&reply, Some(("acme", &id)));
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let stack = start_stack("", "").await;
    let big = "x".repeat(20 * 1024);
    let reply = stack.through_proxy("/orders", &[("x-big", &big)]).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let reply = stack.through_proxy("/orders", &many).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Another limit than the default applies too.
    let admin = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n\
         [server]\nmax_headers = 20\n"
    );
    let _tokengate = Tokengate::start(&config, &[], &[admin]);
    let url = Stack::url(admin, "/healthz");
    assert_eq!(
        http("GET", &url, &many[..10], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        http("GET", &url, &many[..30], "").await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

#[tokio::test]
async fn silent_connections_are_dropped_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (admin, _) = (free_port(), ());
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n\
         [server]\nheader_read_timeout = \"300ms\"\n"
    );
    let _tokengate = Tokengate::start(&config, &[], &[admin]);
    for first_bytes in [
        &b""[..],
        b"PRI * HTTP/2",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .unwrap();
        stream.write_all(first_bytes).await.unwrap();
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        // Closed (0 bytes, or a 408 from hyper for the half-sent request) well
        // before 5 s, instead of held open.
        match read {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Ok(Err(_)) => {}
            Err(_) => panic!(
                "a connection that sent {:?} was held open",
                String::from_utf8_lossy(first_bytes)
            ),
        }
    }
}

#[tokio::test]
async fn open_connections_are_capped_per_listener() {
    use tokio::io::AsyncWriteExt;
    let admin = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n\
         [server]\nmax_connections = 2\nheader_read_timeout = \"30s\"\n"
    );
    let _tokengate = Tokengate::start(&config, &[], &[admin]);
    // wait_for_port's probe connection has come and gone; hold the two slots
    // with connections that have started a request and not finished it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = Stack::url(admin, "/healthz");
    let third = tokio::time::timeout(Duration::from_millis(700), http("GET", &url, &[], "")).await;
    assert!(
        third.is_err(),
        "a third connection was served past max_connections = 2"
    );
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), http("GET", &url, &[], "")).await;
    assert_eq!(
        served.expect("not served once a slot freed").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn host_rules_of_rfc_9112() {
    let stack = start_stack("", "").await;
    let (token, _) = stack.mint("acme").await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    for port in [stack.proxy, stack.forward_auth] {
        for (head, what) in [
            ("GET /orders HTTP/1.1\r\n", "no Host"),
            (
                "GET /orders HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
                "two Host",
            ),
            ("GET /orders HTTP/1.1\r\nHost: a b\r\n", "a space"),
            (
                "GET /orders HTTP/1.1\r\nHost: user@evil.example\r\n",
                "user info",
            ),
            (
                "GET http://user@evil.example/orders HTTP/1.1\r\nHost: evil.example\r\n",
                "user info in the target",
            ),
        ] {
            let reply = raw(port, &format!("{head}{auth}Connection: close\r\n\r\n")).await;
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "{what} on {port}: {reply}"
            );
            assert!(reply.contains(r#""error":"invalid_request""#), "{reply}");
        }
    }
    // Absolute form: the target's authority is the host the upstream sees.
    let reply = raw(
        stack.proxy,
        &format!(
            "GET http://target.example:81/orders HTTP/1.1\r\nHost: other.example\r\n{auth}Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body: serde_json::Value =
        serde_json::from_str(&reply[reply.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let seen = |name: &str| -> Vec<String> {
        body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0] == name)
            .map(|p| p[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(seen("host"), ["target.example:81"]);
    assert_eq!(seen("x-forwarded-host"), ["target.example:81"]);
    assert_eq!(body["uri"], "/orders");
    // HTTP/1.0 may leave Host out.
    let reply = raw(stack.proxy, &format!("GET /orders HTTP/1.0\r\n{auth}\r\n")).await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    // Forward-auth: the original host a trusted proxy names follows the rules too.
    for xfh in [
        "X-Forwarded-Host: a b\r\n",
        "X-Forwarded-Host: a.example\r\nX-Forwarded-Host: b.example\r\n",
    ] {
        let reply = raw(
            stack.forward_auth,
            &format!("GET / HTTP/1.1\r\nHost: auth\r\n{xfh}{auth}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{xfh}: {reply}");
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// What a raw HTTP/2 client saw until the server closed the connection.
#[derive(Debug, Default)]
struct H2Seen {
    /// Frame types, in order.
    frames: Vec<u8>,
    /// The server's SETTINGS parameters.
    settings: Vec<(u16, u32)>,
    /// When the connection closed, from the start of reading; `None`: still
    /// open at the limit.
    closed_after: Option<Duration>,
}

/// Opens an HTTP/2 connection and sends `H2_HELLO` then `more`.
async fn h2_open(port: u16, more: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(H2_HELLO).await.unwrap();
    stream.write_all(more).await.unwrap();
    stream
}

/// Reads frames until the server closes the connection or `limit` passes;
/// if `answer`, acknowledges SETTINGS and answers PINGs, as a live client
/// does (a client in the middle of a header block may send nothing else).
async fn h2_read(mut stream: tokio::net::TcpStream, limit: Duration, answer: bool) -> H2Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut seen = H2Seen::default();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let left = limit.saturating_sub(started.elapsed());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return seen,
            Ok(Ok(0) | Err(_)) => {
                seen.closed_after = Some(started.elapsed());
                return seen;
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            seen.frames.push(kind);
            if kind == 0x4 && flags & 0x1 == 0 {
                for p in payload.chunks(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    seen.settings
                        .push((id, u32::from_be_bytes([p[2], p[3], p[4], p[5]])));
                }
                if answer {
                    let ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";
                    let _ = stream.write_all(ack).await;
                }
            }
            if answer && kind == 0x6 && flags & 0x1 == 0 {
                let mut pong = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00".to_vec();
                pong.extend_from_slice(&payload);
                let _ = stream.write_all(&pong).await;
            }
        }
    }
}

const GOAWAY: u8 = 0x7;

#[tokio::test]
async fn idle_http2_connections_are_closed_and_free_their_slots() {
    let stack = start_stack(
        "",
        "[server]\nmax_connections = 4\nidle_timeout = \"1s\"\nhttp2_max_concurrent_streams = 7\n",
    )
    .await;
    // wait_for_port's probe has come and gone; fill every slot with clients
    // that say hello and nothing more (and answer pings).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let stream = h2_open(stack.proxy, b"").await;
        idle.push(tokio::spawn(h2_read(stream, Duration::from_secs(6), true)));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fifth client waits for a slot, which the idle limit frees.
    let url = Stack::url(stack.proxy, "/public/x");
    let fifth = tokio::time::timeout(Duration::from_secs(5), http("GET", &url, &[], "")).await;
    assert_eq!(fifth.expect("no slot was freed").status, StatusCode::OK);
    for seen in idle {
        let seen = seen.await.unwrap();
        let closed = seen
            .closed_after
            .expect("an idle HTTP/2 connection stayed open");
        assert!(closed >= Duration::from_millis(800), "{seen:?}");
        assert!(seen.frames.contains(&GOAWAY), "{seen:?}");
        assert!(
            seen.settings.contains(&(0x3, 7)),
            "max concurrent streams: {seen:?}"
        );
    }
}

#[tokio::test]
async fn an_unfinished_http2_header_block_is_closed_after_the_header_timeout() {
    let stack = start_stack(
        "",
        "[server]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"60s\"\n",
    )
    .await;
    // HEADERS on stream 1, END_STREAM but no END_HEADERS, holding the start
    // of a literal header whose name never arrives (no CONTINUATION ever).
    let headers = b"\x00\x00\x02\x01\x01\x00\x00\x00\x01\x40\x0a";
    let unfinished = h2_read(
        h2_open(stack.proxy, headers).await,
        Duration::from_secs(5),
        false,
    );
    // The same connection without the HEADERS is only idle, for 60 s.
    let quiet = h2_read(
        h2_open(stack.proxy, b"").await,
        Duration::from_secs(2),
        true,
    );
    let (unfinished, quiet) = tokio::join!(unfinished, quiet);
    let closed = unfinished
        .closed_after
        .expect("an unfinished header block held its connection");
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&closed),
        "{unfinished:?}"
    );
    assert!(unfinished.frames.contains(&GOAWAY), "{unfinished:?}");
    assert_eq!(quiet.closed_after, None, "{quiet:?}");
}

#[tokio::test]
async fn an_http2_request_longer_than_the_idle_timeout_completes() {
    let stack = start_stack("", "[server]\nidle_timeout = \"300ms\"\n").await;
    let (token, _) = stack.mint("acme").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let request = http::Request::get(Stack::url(stack.proxy, "/slow?ms=1200"))
        .header("authorization", bearer(&token))
        .body(http_body_util::Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "{body:?}");
}
