//! `tokengate serve` as a black box: a real redis-server, a real upstream,
//! the tokengate binary, and real nginx and Caddy in front of it, on free
//! loopback ports with configs written by the test.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::procs::{Caddy, Nginx, Tokengate};
use support::upstream::Upstream;
use support::{HttpReply, RedisServer, free_port, http, raw};

const ADMIN_KEY: &str = "test-admin-key-0123456789";
const REALM: &str = r#"Bearer realm="tokengate""#;
const INVALID: &str = r#"Bearer realm="tokengate", error="invalid_token""#;

/// Redis, an upstream and tokengate with all three listeners.
struct Stack {
    redis: RedisServer,
    upstream: Upstream,
    tokengate: Tokengate,
    proxy: u16,
    forward_auth: u16,
    admin: u16,
}

impl Stack {
    /// `proxy_extra` goes into `[proxy]`, `extra` after everything.
    async fn start(proxy_extra: &str, extra: &str) -> Self {
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let (proxy, forward_auth, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "[redis]\nurl = \"{redis}\"\n[security]\nbcrypt_cost = 4\n\
             [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{upstream}\"\n{proxy_extra}\n\
             [forward_auth]\nlisten = \"127.0.0.1:{forward_auth}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[public_routes]]\npath_prefix = \"/public\"\n{extra}\n",
            redis = redis.url(),
            upstream = upstream.url(),
        );
        let tokengate = Tokengate::start(
            &config,
            &[("TOKENGATE_ADMIN_KEY", ADMIN_KEY)],
            &[proxy, forward_auth, admin],
        );
        Self {
            redis,
            upstream,
            tokengate,
            proxy,
            forward_auth,
            admin,
        }
    }

    fn url(port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> HttpReply {
        let auth = format!("Bearer {ADMIN_KEY}");
        http(
            method,
            &Self::url(self.admin, path),
            &[("authorization", &auth)],
            body,
        )
        .await
    }

    /// Mints a token through the admin API: (token, id).
    async fn mint(&self, account: &str) -> (String, String) {
        let reply = self
            .admin(
                "POST",
                &format!("/v1/accounts/{account}/tokens"),
                r#"{"name": "test"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let json = reply.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }

    /// `docs/integrations/<file>` as published, with only its ports
    /// changed: the quick start's forward-auth address (from
    /// config/quickstart.toml, so the two cannot drift apart) becomes this
    /// stack's forward-auth listener, the API's this stack's upstream.
    fn integration_snippet(&self, file: &str) -> String {
        let path = format!("{}/docs/integrations/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let forward_auth = quickstart_forward_auth();
        assert!(
            text.contains(&forward_auth),
            "{file} does not send auth checks to the quick start's forward-auth listener {forward_auth}"
        );
        text.replace(&forward_auth, &format!("127.0.0.1:{}", self.forward_auth))
            .replace("127.0.0.1:3000", &self.upstream.addr.to_string())
    }

    /// SIGTERM to tokengate; its exit status once it has exited.
    async fn terminate(mut self) -> (std::process::ExitStatus, Self) {
        tokio::task::spawn_blocking(move || (self.tokengate.terminate(), self))
            .await
            .unwrap()
    }

    async fn through_proxy(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        http("GET", &Self::url(self.proxy, path), headers, "").await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `[forward_auth] listen` of config/quickstart.toml.
fn quickstart_forward_auth() -> String {
    let path = format!("{}/config/quickstart.toml", env!("CARGO_MANIFEST_DIR"));
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["forward_auth"]["listen"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every shipped integration snippet, and the commented reference config,
/// use the quick start's ports: forward-auth on 8082 (the admin API, 8081,
/// answers an auth check with 404, which nginx turns into 500).
#[test]
fn every_snippet_uses_the_quick_start_ports() {
    let forward_auth = quickstart_forward_auth();
    let port = forward_auth.rsplit_once(':').unwrap().1.to_owned();
    let dir = format!("{}/docs/integrations", env!("CARGO_MANIFEST_DIR"));
    for file in ["nginx.conf", "Caddyfile", "traefik.yml", "envoy.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        assert!(text.contains(&port), "{file}: no forward-auth port {port}");
        assert!(
            !text.contains("8081"),
            "{file} points at the admin API's port 8081"
        );
    }
    let reference = std::fs::read_to_string(format!(
        "{}/config/tokengate.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let listen_after = |section: &str| {
        let rest = &reference[reference.find(section).unwrap()..];
        let line = rest.lines().find(|l| l.contains("listen = ")).unwrap();
        line.trim_start_matches("# ").to_owned()
    };
    assert_eq!(
        listen_after("[forward_auth]"),
        format!("listen = \"{forward_auth}\"")
    );
    assert_eq!(listen_after("[admin]"), "listen = \"127.0.0.1:8081\"");
}

/// Forged identity headers in the spellings a proxy or framework may fold
/// into the real ones (hyper sends names in lowercase).
const FORGED: [(&str, &str); 6] = [
    ("x-account-id", "evil"),
    ("x_account_id", "evil"),
    ("x.account.id", "evil"),
    ("x-token-id", "evil"),
    ("x_token_id", "evil"),
    ("x.token.id", "evil"),
];

/// The upstream got exactly the real identity (or none), and no forgery.
fn assert_identity(reply: &HttpReply, expected: Option<(&str, &str)>) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(!body.contains("evil"), "a forged header arrived: {body}");
    for name in reply.seen_names() {
        let folded = tokengate::auth::fold_header_name(&name);
        if folded == "x-account-id" || folded == "x-token-id" {
            assert!(
                name == "x-account-id" || name == "x-token-id",
                "{name} arrived: {body}"
            );
        }
    }
    match expected {
        Some((account, id)) => {
            assert_eq!(reply.seen("x-account-id"), [account], "{body}");
            assert_eq!(reply.seen("x-token-id"), [id], "{body}");
        }
        None => {
            assert!(
                reply.seen("x-account-id").is_empty() && reply.seen("x-token-id").is_empty(),
                "{body}"
            );
        }
    }
}

/// The status seen through `url` once `token` has been revoked by another
/// process (the CLI), polled for at most 1 s.
async fn revoke_elsewhere_and_wait(stack: &Stack, account: &str, id: &str, url: &str, token: &str) {
    let auth = bearer(token);
    assert_eq!(
        http("GET", url, &[("authorization", &auth)], "")
            .await
            .status,
        StatusCode::OK
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args([
            "--redis-url",
            &stack.redis.url(),
            "token",
            "revoke",
            "--account",
            account,
            "--id",
            id,
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();
    loop {
        let reply = http("GET", url, &[("authorization", &auth)], "").await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply.header("www-authenticate"), Some(INVALID));
            return;
        }
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted 1 s after revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_proxy_forwards_the_real_identity_and_nothing_forged() {
    let stack = Stack::start("", "").await;
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
    let stack = Stack::start("", "").await;
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
    let stack = Stack::start("", "").await;
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
    let stack = Stack::start("upstream_timeout = \"300ms\"", "").await;
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
    let stack = Stack::start("", "").await;
    let (token, _) = stack.mint("acme").await;
    let before = stack.tokengate.peak_rss_kib();

    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 160; // 10 MiB
    let chunks = futures_util::stream::iter((0..CHUNKS).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; CHUNK])))
    }));
    let body = StreamBody::new(chunks).boxed();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let request = http::Request::post(Stack::url(stack.proxy, "/upload"))
        .header("authorization", bearer(&token))
        .body(body)
        .unwrap();
    let response = client.request(request).await.unwrap();
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
    let stack = Stack::start("", "").await;
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
async fn h2c_clients_are_served() {
    let stack = Stack::start("", "").await;
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
    let stack = Stack::start("", "").await;
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
async fn the_forward_auth_endpoint_answers_for_any_path_and_method() {
    let stack = Stack::start("", "").await;
    let (token, id) = stack.mint("acme").await;
    let auth = bearer(&token);
    for (method, path) in [("GET", "/"), ("POST", "/anything/at/all"), ("DELETE", "/x")] {
        let reply = http(
            method,
            &Stack::url(stack.forward_auth, path),
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
        assert_eq!(reply.header("x-account-id"), Some("acme"));
        assert_eq!(reply.header("x-token-id"), Some(id.as_str()));
    }
    let reply = http("GET", &Stack::url(stack.forward_auth, "/"), &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(REALM));
    // From a trusted proxy (loopback), the original URI decides public routes,
    // in nginx's and in Traefik's / Caddy's spelling.
    for header in ["x-original-uri", "x-forwarded-uri"] {
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/"),
            &[(header, "/public/x")],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{header}");
        assert!(reply.header("x-account-id").is_none());
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/"),
            &[(header, "/public/../private")],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header}");
    }
}

#[tokio::test]
async fn the_admin_api_manages_tokens() {
    let stack = Stack::start("", "").await;
    let created = stack
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            r#"{"name": "ci", "expires_in_days": 30}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["token"].as_str().unwrap().len(), 55);
    assert_eq!(
        created["expires_at"].as_i64(),
        Some(created["created_at"].as_i64().unwrap() + 30 * 86_400)
    );

    let listed = stack.admin("GET", "/v1/accounts/acme/tokens", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let tokens = listed.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].get("token").is_none() && tokens[0].get("hash").is_none());

    let got = stack
        .admin("GET", &format!("/v1/accounts/acme/tokens/{id}"), "")
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["name"], "ci");

    let revoked = stack
        .admin("DELETE", &format!("/v1/accounts/acme/tokens/{id}"), "")
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json()["status"], "revoked");

    // Errors.
    let url = Stack::url(stack.admin, "/v1/accounts/acme/tokens");
    let missing = http("GET", &url, &[], "").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.header("www-authenticate").is_some());
    let wrong = http(
        "GET",
        &url,
        &[("authorization", "Bearer not-the-admin-key-at-all")],
        "",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_token");
    let bad_json = stack
        .admin("POST", "/v1/accounts/acme/tokens", "{not json")
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.json()["error"], "invalid_json");
    let unknown_field = stack
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            r#"{"name": "x", "admin": true}"#,
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown_field.json()["error"], "invalid_input");
    assert_eq!(unknown_field.json()["field"], "admin");
    let invalid = stack
        .admin("POST", "/v1/accounts/acme/tokens", r#"{"name": ""}"#)
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.json()["field"], "name");
    let invalid = stack
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            r#"{"name": "x", "expires_in_days": 0}"#,
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.json()["field"], "expires_in_days");
    let unknown = tokengate::Token::generate().unwrap().id();
    let reply = stack
        .admin("GET", &format!("/v1/accounts/acme/tokens/{unknown}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let other = stack
        .admin("GET", &format!("/v1/accounts/globex/tokens/{id}"), "")
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another account's token"
    );
    let other = stack
        .admin("DELETE", &format!("/v1/accounts/globex/tokens/{id}"), "")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let garbage = stack
        .admin("GET", "/v1/accounts/acme/tokens/not-an-id", "")
        .await;
    assert_eq!(garbage.status, StatusCode::NOT_FOUND);
    let wrong_method = stack.admin("PUT", "/v1/accounts/acme/tokens", "").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("allow"), Some("GET, POST"));
    let no_route = stack.admin("GET", "/v2/whatever", "").await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_need_no_key() {
    let mut stack = Stack::start("", "").await;
    let (token, _) = stack.mint("acme").await;
    stack
        .through_proxy("/orders", &[("authorization", &bearer(&token))])
        .await;
    stack.through_proxy("/orders", &[]).await;

    let health = http("GET", &Stack::url(stack.admin, "/healthz"), &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = http("GET", &Stack::url(stack.admin, "/readyz"), &[], "").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["store"], "redis");

    let metrics = http("GET", &Stack::url(stack.admin, "/metrics"), &[], "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        "tokengate_requests_total{outcome=\"authenticated\"} 1",
        "tokengate_requests_total{outcome=\"missing_token\"} 1",
        "tokengate_cache_misses_total 1",
        "tokengate_bcrypt_verifications_total 1",
        "tokengate_bcrypt_queue_depth 0",
        "tokengate_store_latency_seconds_bucket{op=\"get\"",
        "tokengate_last_accessed_flushes_total",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }

    let openapi = http("GET", &Stack::url(stack.admin, "/openapi.json"), &[], "").await;
    let served: serde_json::Value = serde_json::from_slice(&openapi.body).unwrap();
    let kept: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, kept);

    // Every documented operation is served (no 404 for the route, no 405).
    let (_, id) = stack.mint("acme").await;
    let mut operations: Vec<(&String, &String)> = kept["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods
                .filter(|m| *m != "parameters")
                .map(move |m| (path, m))
        })
        .collect();
    // A revoked token cannot be changed or rotated: DELETE last.
    operations.sort_by_key(|(_, m)| *m == "delete");
    for (path, method) in operations {
        let concrete = path.replace("{account}", "acme").replace("{id}", &id);
        let body = match method.as_str() {
            "post" if path == "/v1/verify" => r#"{"token": "mk_not_a_token"}"#,
            "post" if path.ends_with("/rotate") => r#"{"grace": "1h"}"#,
            "post" | "patch" => r#"{"name": "doc"}"#,
            "put" => r#"{"remaining": 5}"#,
            _ => "",
        };
        let reply = stack.admin(&method.to_uppercase(), &concrete, body).await;
        assert!(
            reply.status.is_success(),
            "{method} {path} -> {}: {:?}",
            reply.status,
            reply.body
        );
    }

    // Redis gone: not ready (but alive).
    stack.redis.stop();
    let ready = http("GET", &Stack::url(stack.admin, "/readyz"), &[], "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        http("GET", &Stack::url(stack.admin, "/healthz"), &[], "")
            .await
            .status,
        StatusCode::OK
    );
    let _ = &mut stack;
}

#[tokio::test]
async fn sigterm_drains_and_flushes_last_accessed() {
    let stack = Stack::start("", "[last_accessed]\nflush_interval = \"1h\"\n").await;
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
    config.security.bcrypt_cost = support::TEST_BCRYPT_COST;
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
    assert!(tokengate.log().contains("in-memory"), "{}", tokengate.log());
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

#[tokio::test]
async fn nginx_auth_request_in_front_of_tokengate() {
    let stack = Stack::start("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let http_block = stack
        .integration_snippet("nginx.conf")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let _nginx = Nginx::start(&http_block, port);
    // The other proxies' family of original-request headers, forged.
    let forged_route = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
    ];
    check_a_proxy_in_front(&stack, port, &token, &id, &forged_route).await;
}

/// The nginx snippet next to Debian's default site (`listen 80
/// default_server`): requests for the API's host name reach the snippet's
/// server, not the default site's.
#[tokio::test]
async fn the_nginx_snippet_wins_over_debians_default_site() {
    let stack = Stack::start("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let listen = format!("listen 127.0.0.1:{port}");
    let default_site = format!(
        "server {{\n    {listen} default_server;\n    server_name _;\n    return 404;\n}}\n"
    );
    let http_block = default_site
        + &stack
            .integration_snippet("nginx.conf")
            .replace("listen 80;", &format!("{listen};"));
    let _nginx = Nginx::start(&http_block, port);
    let reply = http(
        "GET",
        &format!("http://127.0.0.1:{port}/orders"),
        &[
            ("host", "api.example.com"),
            ("authorization", &bearer(&token)),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.seen("x-token-id"), [id.as_str()]);
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_tokengate() {
    let stack = Stack::start("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let sites = stack.integration_snippet("Caddyfile").replace(
        "http://api.example.com",
        &format!("http://127.0.0.1:{port}"),
    );
    let _caddy = Caddy::start(&sites, port);
    let forged_route = [
        ("x-original-uri", "/public/x"),
        ("x-original-method", "GET"),
    ];
    check_a_proxy_in_front(&stack, port, &token, &id, &forged_route).await;
}

/// What a client of nginx or Caddy in front of tokengate's forward-auth must
/// see: the real identity and no forgery upstream; 401 with the right
/// `WWW-Authenticate` for no token and a bad one; public routes open; a
/// forged original-request header opening nothing; a revocation by another
/// process honoured within 1 s.
async fn check_a_proxy_in_front(
    stack: &Stack,
    port: u16,
    token: &str,
    id: &str,
    forged_route: &[(&str, &str)],
) {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(FORGED);
    assert_identity(
        &http("GET", &url("/orders"), &headers, "").await,
        Some(("acme", id)),
    );

    let reply = http("GET", &url("/orders"), &FORGED, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(REALM));
    let bad = format!("Bearer {}", &token[..54]);
    let reply = http("GET", &url("/orders"), &[("authorization", &bad)], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(INVALID));

    assert_identity(&http("GET", &url("/public/docs"), &FORGED, "").await, None);
    let reply = http("GET", &url("/orders"), forged_route, "").await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{forged_route:?} opened a route"
    );
    revoke_elsewhere_and_wait(stack, "acme", id, &url("/orders"), token).await;
}

#[tokio::test]
async fn a_query_parameter_token_never_reaches_the_upstream() {
    let stack = Stack::start(
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

#[tokio::test]
async fn original_uri_headers_count_only_from_trusted_proxies() {
    // Loopback is not trusted here, so the test client is an untrusted peer.
    let stack = Stack::start("", "[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").await;
    for header in ["x-original-uri", "x-forwarded-uri"] {
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/private"),
            &[(header, "/public/x")],
            "",
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{header} from an untrusted peer opened a route"
        );
    }
    // Its own request line still counts.
    let reply = http("GET", &Stack::url(stack.forward_auth, "/public/x"), &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    // And an untrusted peer's X-Forwarded-For is replaced, not appended to.
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    let reply = stack
        .through_proxy(
            "/orders",
            &[("authorization", &auth), ("x-forwarded-for", "6.6.6.6")],
        )
        .await;
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let admin = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n[log]\nformat = \"json\"\n"
    );
    let tokengate = Tokengate::start(&config, &[], &[admin]);
    let log = started_log(&tokengate).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "listening" && l["fields"]["front_door"] == "admin"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["store"] == "memory"),
        "{log}"
    );
}

/// JSON log fields are plain values: a rejected token's id and the client
/// IP as strings, an absent id left out (never Rust's `Some(…)` / `None`).
#[tokio::test]
async fn json_logs_carry_plain_fields() {
    let stack = Stack::start("", "[log]\nformat = \"json\"\nlevel = \"debug\"\n").await;
    let (token, id) = stack.mint("acme").await;
    let wrong = {
        let parsed = tokengate::token::parse(&token).unwrap();
        tokengate::Token::from_parts(parsed, "WRONGWRONGWRONGWRONGWRON")
            .expose_secret()
            .to_owned()
    };
    for bad in [wrong.as_str(), "mk_garbage"] {
        let reply = stack
            .through_proxy("/orders", &[("authorization", &bearer(bad))])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let log = stack.tokengate.log();
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "token rejected")
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert_eq!(rejected[0]["fields"]["token_id"], id.as_str());
    assert_eq!(rejected[0]["fields"]["client_ip"], "127.0.0.1");
    assert_eq!(rejected[0]["fields"]["reason"], "wrong_secret");
    assert!(
        rejected[1]["fields"].get("token_id").is_none(),
        "{}",
        rejected[1]
    );
    assert!(!log.contains("Some(") && !log.contains("\"None\""), "{log}");
}

/// `[proxy] health_path`: the load balancer's check is answered by
/// tokengate without a token, never forwarded; other methods and paths are
/// not.
#[tokio::test]
async fn the_proxy_answers_its_health_path_itself() {
    let stack = Stack::start("health_path = \"/ping\"", "").await;
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
    let stack = Stack::start("", "").await;
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
async fn forward_auth_refuses_a_mix_of_original_request_header_families() {
    let stack = Stack::start("", "").await;
    let url = Stack::url(stack.forward_auth, "/");
    for headers in [
        [
            ("x-original-uri", "/orders"),
            ("x-forwarded-uri", "/public/x"),
        ],
        [
            ("x-original-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
        ],
        [
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
        ],
    ] {
        let reply = http("GET", &url, &headers, "").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(reply.json()["error"], "invalid_request");
    }
    // One family alone is read as usual.
    let reply = http(
        "GET",
        &url,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
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

/// The log once it says "tokengate started": the ports accept as soon as
/// they are bound, and the workers start and the log lines follow.
async fn started_log(tokengate: &Tokengate) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tokengate.log().contains("started") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokengate.log()
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
    let stack = Stack::start("", "[server]\nworkers = 1\n").await;
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
    let mut stack = Stack::start(
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
    let stack = Stack::start(
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
async fn idle_websocket_tunnels_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start("tunnel_idle_timeout = \"600ms\"", "").await;
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
async fn the_first_request_after_redis_closed_the_connection_is_served() {
    let stack = Stack::start("", "").await;
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
async fn account_ids_outside_the_safe_set_are_refused() {
    let stack = Stack::start("", "").await;
    for account in [
        "%20acme", "acme%20", "%09acme", "a%2Cb", "ac%20me", "%C3%A9",
    ] {
        let reply = stack
            .admin(
                "POST",
                &format!("/v1/accounts/{account}/tokens"),
                r#"{"name": "x"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{account}");
        assert_eq!(reply.json()["field"], "account_id", "{account}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["--redis-url", &stack.redis.url(), "token", "create"])
        .args(["--account", " acme", "--name", "x"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("account_id"), "{stderr}");
    let keys: Vec<String> = stack
        .redis
        .dump()
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn failures_behind_a_proxy_are_charged_to_the_client() {
    let stack = Stack::start("", "[rate_limit]\nfailed_auth_per_ip = 3\n").await;
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
    let stack = Stack::start("", "[client_ip]\ntrusted_proxies = []\n").await;
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
async fn host_rules_of_rfc_9112() {
    let stack = Stack::start("", "").await;
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

#[tokio::test]
async fn the_keyless_admin_api_refuses_cross_site_requests() {
    let admin = free_port();
    let config =
        format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n");
    let _tokengate = Tokengate::start(&config, &[], &[admin]);
    let url = Stack::url(admin, "/v1/accounts/acme/tokens");
    let json = ("content-type", "application/json");
    let body = r#"{"name": "x"}"#;
    // A page's form POST, a DNS-rebinding page, a page's fetch.
    for (headers, status) in [
        (
            vec![
                ("host", "evil.example"),
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "evil.example:8081"), json],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("origin", "http://evil.example"), json],
            StatusCode::FORBIDDEN,
        ),
        (vec![("origin", "null"), json], StatusCode::FORBIDDEN),
        (
            vec![("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (vec![], StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let reply = http("POST", &url, &headers, body).await;
        assert_eq!(reply.status, status, "{headers:?}");
        assert!(reply.json()["error"].is_string(), "{headers:?}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("mk_"));
    }
    let reply = http("GET", &url, &[("host", "evil.example")], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // A tool on the machine (curl, a script) still gets in.
    for headers in [
        vec![json],
        vec![
            ("host", "localhost:8081"),
            ("content-type", "application/json; charset=utf-8"),
        ],
        vec![("origin", &*format!("http://127.0.0.1:{admin}")), json],
    ] {
        let reply = http("POST", &url, &headers, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{headers:?}");
    }
}

#[tokio::test]
async fn an_admin_api_with_a_key_takes_any_host_and_body_type() {
    let stack = Stack::start("", "").await;
    let auth = format!("Bearer {ADMIN_KEY}");
    let reply = http(
        "POST",
        &Stack::url(stack.admin, "/v1/accounts/acme/tokens"),
        &[
            ("authorization", &auth),
            ("host", "admin.internal"),
            ("content-type", "text/plain"),
        ],
        r#"{"name": "x"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_revocation_right_after_a_redis_outage_is_seen_at_once() {
    let mut stack = Stack::start("", "").await;
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
    let stack = Stack::start("", "[cache]\nttl = \"60s\"\ndegraded_ttl = \"1s\"\n").await;
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

#[tokio::test]
async fn slow_uploads_reach_the_upstream_and_its_timeout_starts_once_sent() {
    use http_body_util::{BodyExt, StreamBody};
    let stack = Stack::start("upstream_timeout = \"1s\"", "").await;
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
    let stack = Stack::start("client_body_timeout = \"500ms\"", "").await;
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
    let stack = Stack::start("", "").await;
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
    let stack = Stack::start(
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
    let stack = Stack::start(
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
    let stack = Stack::start("", "[server]\nidle_timeout = \"300ms\"\n").await;
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

/// The access log (`[log] access`): one line per request on every front
/// door, with the outcome and who, never the token or the query string.
#[tokio::test]
async fn every_request_gets_one_access_line_without_secrets() {
    let stack = Stack::start(
        "health_path = \"/ping\"",
        "[sources]\nquery_param = \"api_key\"\n[log]\nformat = \"json\"\n",
    )
    .await;
    let (token, id) = stack.mint("acme").await;
    let ok = stack
        .through_proxy("/orders/7?page=2", &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let by_query = stack
        .through_proxy(&format!("/orders?api_key={token}"), &[])
        .await;
    assert_eq!(by_query.status, StatusCode::OK);
    let missing = stack.through_proxy("/orders", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let health = stack.through_proxy("/ping", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let checked = http(
        "GET",
        &Stack::url(stack.forward_auth, "/auth"),
        &[
            ("authorization", &bearer(&token)),
            ("x-original-method", "POST"),
            ("x-original-uri", "/invoices?secret=1"),
        ],
        "",
    )
    .await;
    assert_eq!(checked.status, StatusCode::OK);

    // The mint, then the five requests above, in order (written within
    // 100 ms).
    let log = access_log(&stack, 6).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "tokengate::access")
        .map(|l| l["fields"].clone())
        .collect();
    assert_eq!(lines.len(), 6, "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("tokengate::access"))
            .all(|l| l.contains(r#""level":"INFO""#) && l.contains(r#""timestamp":""#)),
        "{log}"
    );
    let field = |i: usize, name: &str| lines[i][name].clone();
    assert_eq!(field(0, "door"), "admin");
    assert_eq!(field(0, "status"), 201);
    let authenticated = &lines[1];
    assert_eq!(authenticated["door"], "proxy");
    assert_eq!(authenticated["method"], "GET");
    assert_eq!(authenticated["path"], "/orders/7");
    assert_eq!(authenticated["status"], 200);
    assert_eq!(authenticated["outcome"], "authenticated");
    assert_eq!(authenticated["account_id"], "acme");
    assert_eq!(authenticated["token_id"], id.as_str());
    assert_eq!(authenticated["client_ip"], "127.0.0.1");
    assert_eq!(authenticated["upstream_status"], 200);
    assert!(authenticated["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        authenticated["duration_ms"].as_f64().unwrap()
            >= authenticated["upstream_ms"].as_f64().unwrap()
    );
    assert_eq!(field(2, "path"), "/orders");
    assert_eq!(field(2, "outcome"), "authenticated");
    let rejected = &lines[3];
    assert_eq!(rejected["status"], 401);
    assert_eq!(rejected["outcome"], "missing_token");
    for absent in ["account_id", "token_id", "upstream_status", "upstream_ms"] {
        assert!(rejected.get(absent).is_none(), "{absent}: {rejected}");
    }
    assert_eq!(field(4, "outcome"), "health");
    // Forward-auth names the request it was asked about.
    let decided = &lines[5];
    assert_eq!(decided["door"], "forward_auth");
    assert_eq!(decided["method"], "POST");
    assert_eq!(decided["path"], "/invoices");
    assert_eq!(decided["token_id"], id.as_str());
    // Never the token (nor its secret part), a query or a header.
    let secret = &token[token.len() - 20..];
    assert!(!log.contains(secret), "{log}");
    assert!(
        !log.contains("page=2") && !log.contains("secret=1"),
        "{log}"
    );
    assert!(!log.to_ascii_lowercase().contains("bearer"), "{log}");
}

/// `[log] access = false` turns the access log off; a sample logs that
/// share of requests, evenly spread.
#[tokio::test]
async fn the_access_log_can_be_turned_off_or_sampled() {
    for (setting, expected) in [("access = false", 0), ("access_sample_percent = 25", 2)] {
        let stack = Stack::start("", &format!("[log]\n{setting}\n")).await;
        for _ in 0..8 {
            let reply = stack.through_proxy("/orders", &[]).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        let log = access_log(&stack, expected).await;
        let lines = log.matches("tokengate::access").count();
        assert_eq!(lines, expected, "{setting}: {log}");
    }
    // Human lines, as tracing's: the level, the target, key=value.
    let stack = Stack::start("", "").await;
    let reply = stack.through_proxy("/orders?api_key=x", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let log = access_log(&stack, 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("tokengate::access"))
        .unwrap();
    assert!(
        line.contains(
            " INFO tokengate::access: request door=proxy method=GET path=/orders status=401 \
             outcome=missing_token client_ip=127.0.0.1 duration_ms="
        ),
        "{line}"
    );
    // A level that leaves the access target out turns it off too.
    let stack = Stack::start("", "[log]\nlevel = \"info,tokengate::access=off\"\n").await;
    let reply = stack.through_proxy("/orders", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let log = access_log(&stack, 0).await;
    assert!(!log.contains("tokengate::access"), "{log}");
}

/// The log once `lines` access lines are in it, or after 2 s (the access
/// log is written every 100 ms).
async fn access_log(stack: &Stack, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = stack.tokengate.log();
        let found = log.matches("tokengate::access").count();
        if (lines > 0 && found >= lines) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
