//! Tokens that carry policy (issue 13), end to end: the `tokengate` binary
//! with `[[routes]]`, a real redis-server, a real upstream, and real nginx
//! in front of forward-auth.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::procs::{Nginx, Replica, Tokengate};
use support::upstream::Upstream;
use support::{HttpReply, RedisServer, free_port, http};

const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// The route table of these tests: writes to /orders need orders:write,
/// reads orders:read, the catalog nothing, /reports two scopes.
const ROUTES: &str = r#"
[[routes]]
path_prefix = "/orders"
methods = ["POST", "PUT", "DELETE"]
scopes = ["orders:write"]

[[routes]]
path_prefix = "/orders"
scopes = ["orders:read"]

[[routes]]
path_prefix = "/orders/catalog"

[[routes]]
path_prefix = "/reports"
scopes = ["reports:read", "orders:read"]
"#;

/// Redis, an upstream and tokengate (proxy, forward-auth, admin) with
/// [`ROUTES`].
struct Stack {
    redis: RedisServer,
    upstream: Upstream,
    _tokengate: Tokengate,
    proxy: u16,
    forward_auth: u16,
    admin: u16,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `extra` after the routes (more config).
    async fn start_with(extra: &str) -> Self {
        Self::start_routes(ROUTES, "", extra).await
    }

    /// With `routes` for [`ROUTES`], `proxy` added to `[proxy]` and `extra`
    /// at the end.
    async fn start_routes(routes: &str, proxy_keys: &str, extra: &str) -> Self {
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let (proxy, forward_auth, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "[redis]\nurl = \"{redis}\"\n[security]\nbcrypt_cost = 4\n\
             [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{upstream}\"\n{proxy_keys}\n\
             [forward_auth]\nlisten = \"127.0.0.1:{forward_auth}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n{routes}\n{extra}",
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
            _tokengate: tokengate,
            proxy,
            forward_auth,
            admin,
        }
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> HttpReply {
        let auth = format!("Bearer {ADMIN_KEY}");
        http(
            method,
            &format!("http://127.0.0.1:{}{path}", self.admin),
            &[("authorization", &auth)],
            body,
        )
        .await
    }

    /// Mints a token with these scopes through the admin API.
    async fn mint(&self, scopes: &[&str]) -> String {
        let body = serde_json::json!({ "name": "scoped", "scopes": scopes }).to_string();
        let reply = self.admin("POST", "/v1/accounts/acme/tokens", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.json()["token"].as_str().unwrap().to_owned()
    }
}

/// The `tokengate` binary on `redis`, with a clean environment.
fn cli(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["--redis-url", &redis.url()])
        .args(args)
        .env_clear()
        .env("TOKENGATE_SECURITY_BCRYPT_COST", "4")
        .output()
        .unwrap()
}

async fn send(method: &str, port: u16, path: &str, token: &str) -> HttpReply {
    let auth = format!("Bearer {token}");
    // Forged scopes in every spelling: none may reach the upstream.
    let headers = [
        ("authorization", auth.as_str()),
        ("x-token-scopes", "*"),
        ("X_Token_Scopes", "*"),
    ];
    http(
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        &headers,
        "",
    )
    .await
}

/// 200 from the upstream, which saw exactly `scopes` (none: no header) and
/// no forged copy.
fn assert_admitted(reply: &HttpReply, scopes: Option<&str>) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let seen: Vec<String> = reply.seen("x-token-scopes");
    assert_eq!(seen, scopes.into_iter().collect::<Vec<_>>());
    for name in reply.seen_names() {
        assert!(
            name == "x-token-scopes"
                || tokengate::auth::fold_header_name(&name) != "x-token-scopes",
            "a forged {name} arrived"
        );
    }
}

/// 403 `insufficient_scope`, with RFC 6750's header naming `scope`.
fn assert_insufficient(reply: &HttpReply, scope: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            format!(r#"Bearer realm="tokengate", error="insufficient_scope", scope="{scope}""#)
                .as_str()
        )
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    assert_eq!(json["error"], "insufficient_scope");
    assert_eq!(
        json["message"],
        format!("The token lacks a scope this request needs: {scope}.")
    );
}

#[tokio::test]
async fn scopes_are_checked_by_the_proxy_and_forwarded() {
    let stack = Stack::start().await;
    let reader = stack.mint(&["orders:read"]).await;
    let writer = stack.mint(&["orders:*"]).await;
    let both = stack.mint(&["reports:read", "orders:read"]).await;
    let none = stack.mint(&[]).await;
    let p = stack.proxy;

    // Reads need orders:read; writes orders:write.
    assert_admitted(
        &send("GET", p, "/orders/7", &reader).await,
        Some("orders:read"),
    );
    assert_insufficient(&send("POST", p, "/orders", &reader).await, "orders:write");
    assert_insufficient(
        &send("DELETE", p, "/orders/7", &reader).await,
        "orders:write",
    );
    // A prefix scope grants both.
    assert_admitted(&send("POST", p, "/orders", &writer).await, Some("orders:*"));
    assert_admitted(&send("GET", p, "/orders", &writer).await, Some("orders:*"));
    // Every scope of a route is needed; the header names them all.
    assert_insufficient(
        &send("GET", p, "/reports/q3", &reader).await,
        "reports:read orders:read",
    );
    assert_admitted(
        &send("GET", p, "/reports/q3", &both).await,
        Some("orders:read reports:read"),
    );
    // A more specific route without scopes, and a path no route names.
    assert_admitted(&send("GET", p, "/orders/catalog/9", &none).await, None);
    assert_admitted(&send("GET", p, "/elsewhere", &none).await, None);
    assert_insufficient(&send("GET", p, "/orders", &none).await, "orders:read");
    // Segment boundaries: /ordersx is not below /orders.
    assert_admitted(&send("GET", p, "/ordersx", &none).await, None);
    // A path not in normal form needs every scope any route names.
    for path in [
        "/elsewhere/../orders",
        "/orders/catalog/%2e%2e/x",
        "//orders",
    ] {
        assert_insufficient(
            &send("GET", p, path, &reader).await,
            "orders:read orders:write reports:read",
        );
    }
    // Percent-encoding is decoded before matching.
    assert_insufficient(&send("GET", p, "/%6Frders", &none).await, "orders:read");
}

#[tokio::test]
async fn the_admin_api_stores_scopes_and_refuses_bad_ones_with_422() {
    let stack = Stack::start().await;
    let body = r#"{"name": "s", "scopes": ["orders:write", "orders:read", "orders:read"]}"#;
    let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let created = reply.json();
    assert_eq!(
        created["scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    let id = created["id"].as_str().unwrap();
    let reply = stack
        .admin("GET", &format!("/v1/accounts/acme/tokens/{id}"), "")
        .await;
    assert_eq!(
        reply.json()["scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    let key = format!("tokengate:token:{id}");
    let stored = stack.redis.dump().await;
    let field = stored
        .iter()
        .find(|(k, _)| k.starts_with(&key))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(field.contains("orders:read orders:write"), "{field}");

    let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    for (scopes, says) in [
        (serde_json::json!(["Orders:read"]), r#"(got "Orders:read")"#),
        (serde_json::json!(["or*ders"]), r#"(got "or*ders")"#),
        (serde_json::json!([""]), r#"(got "")"#),
        (serde_json::json!(["a".repeat(65)]), "must each be 1–64"),
        (serde_json::json!(many), "must be at most 32 (got 33)"),
    ] {
        let body = serde_json::json!({ "name": "s", "scopes": scopes }).to_string();
        let reply = stack.admin("POST", "/v1/accounts/acme/tokens", &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{scopes}");
        let json = reply.json();
        assert_eq!(json["error"], "invalid_input");
        assert_eq!(json["field"], "scopes");
        let message = json["message"].as_str().unwrap();
        assert!(message.starts_with("scopes "), "{message}");
        assert!(message.contains(says), "{message}");
    }
}

#[tokio::test]
async fn nginx_auth_request_enforces_scopes_on_the_original_request() {
    let stack = Stack::start().await;
    let reader = stack.mint(&["orders:read"]).await;
    let port = free_port();
    let _nginx = Nginx::start(&nginx_snippet(&stack, port), port);
    assert_admitted(
        &send("GET", port, "/orders/7", &reader).await,
        Some("orders:read"),
    );
    // nginx answers a 403 from auth_request with its own page.
    let reply = send("POST", port, "/orders", &reader).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.seen_names().is_empty(),
        "the upstream was reached: {:?}",
        reply.body
    );
    let reply = send("GET", port, "/reports", &reader).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Forward-auth itself answers as the proxy does, on the original
    // request's method and URI.
    let fa = stack.forward_auth;
    let auth = format!("Bearer {reader}");
    let check = |method: &'static str, uri: &'static str| {
        let auth = auth.clone();
        async move {
            http(
                "GET",
                &format!("http://127.0.0.1:{fa}/"),
                &[
                    ("authorization", auth.as_str()),
                    ("x-original-method", method),
                    ("x-original-uri", uri),
                ],
                "",
            )
            .await
        }
    };
    let reply = check("GET", "/orders/7").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-token-scopes"), Some("orders:read"));
    assert_insufficient(&check("PUT", "/orders/7").await, "orders:write");
}

/// The route table of issue 21's probes: /admin needs admin, DELETE on
/// /orders orders:delete, GET on /reports reports:read.
const PROBED: &str = r#"
[[routes]]
path_prefix = "/admin"
scopes = ["admin"]

[[routes]]
path_prefix = "/orders"
methods = ["DELETE"]
scopes = ["orders:delete"]

[[routes]]
path_prefix = "/reports"
methods = ["GET"]
scopes = ["reports:read"]
"#;

/// Every scope [`PROBED`] names: what a path not in normal form needs.
const EVERY_PROBED_SCOPE: &str = "admin orders:delete reports:read";

/// `method path` through `port` with `token` and `headers`.
async fn send_with(
    method: &str,
    port: u16,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> HttpReply {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http(method, &format!("http://127.0.0.1:{port}{path}"), &all, "").await
}

/// A stack with [`PROBED`], real nginx `auth_request` in front of its
/// forward-auth, and a token holding only orders:read.
struct Probed {
    stack: Stack,
    nginx_port: u16,
    _nginx: Nginx,
    reader: String,
}

impl Probed {
    async fn start() -> Self {
        let stack = Stack::start_routes(PROBED, "", "").await;
        let reader = stack.mint(&["orders:read"]).await;
        let nginx_port = free_port();
        let nginx = Nginx::start(&nginx_snippet(&stack, nginx_port), nginx_port);
        Self {
            stack,
            nginx_port,
            _nginx: nginx,
            reader,
        }
    }

    /// Through the proxy, with the reader's token.
    async fn proxy(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        send_with(method, self.stack.proxy, path, &self.reader, headers).await
    }

    /// Forward-auth asked directly, as Traefik, Caddy and Envoy ask (the
    /// original method and URI in `X-Forwarded-Method` / `-Uri`).
    async fn forward_auth(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> HttpReply {
        let mut all = vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)];
        all.extend_from_slice(headers);
        send_with("GET", self.stack.forward_auth, "/", &self.reader, &all).await
    }

    /// Through nginx: refused with nginx's own 403 page, the upstream
    /// never reached.
    async fn nginx_refuses(&self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let reply = send_with(method, self.nginx_port, path, &self.reader, headers).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path} {headers:?}: {:?}",
            reply.body
        );
        assert!(
            reply.seen_names().is_empty(),
            "{method} {path} {headers:?}: the upstream was reached: {:?}",
            reply.body
        );
    }

    /// Refused at all three: 403 naming `scope` from the proxy and
    /// forward-auth, nginx's 403 without reaching the upstream.
    async fn refused_everywhere(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        scope: &str,
    ) {
        let reply = self.proxy(method, path, headers).await;
        if method == "HEAD" {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
            let www = reply.header("www-authenticate").unwrap_or_default();
            assert!(www.contains(&format!(r#"scope="{scope}""#)), "{www}");
        } else {
            assert_insufficient(&reply, scope);
        }
        let reply = self.forward_auth(method, path, headers).await;
        assert_insufficient(&reply, scope);
        self.nginx_refuses(method, path, headers).await;
    }
}

/// Issue 21, point 1: `/ADMIN` needs what `/admin` needs, at the proxy,
/// at forward-auth and behind nginx; every other path trick stays refused.
#[tokio::test]
async fn letter_case_does_not_walk_around_a_route() {
    let probed = Probed::start().await;
    let p = probed.stack.proxy;
    assert_admitted(
        &probed.proxy("GET", "/administrator", &[]).await,
        Some("orders:read"),
    );
    for path in ["/admin", "/ADMIN", "/Admin/users", "/aDmIn/x", "/%41DMIN"] {
        probed.refused_everywhere("GET", path, &[], "admin").await;
    }
    probed
        .refused_everywhere("DELETE", "/ORDERS/1", &[], "orders:delete")
        .await;
    // Letters that Unicode-aware routers fold into ASCII: every scope.
    probed
        .refused_everywhere("GET", "/adm%C4%B1n", &[], EVERY_PROBED_SCOPE)
        .await;
    // Every other path trick stays refused.
    for path in [
        "//admin",
        "/./admin",
        "/x/../admin",
        "/admin%2Fx",
        "/admin;x=1",
        "/%2e/admin",
    ] {
        assert_insufficient(&probed.proxy("GET", path, &[]).await, EVERY_PROBED_SCOPE);
        assert_insufficient(
            &probed.forward_auth("GET", path, &[]).await,
            EVERY_PROBED_SCOPE,
        );
    }
    probed
        .refused_everywhere("GET", "/%61dmin", &[], "admin")
        .await;
    let absolute = support::raw(
        p,
        &format!(
            "GET http://127.0.0.1:{p}/ADMIN HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            probed.reader
        ),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 403"), "{absolute}");
}

/// Issue 21, point 2: a route for GET covers HEAD, at all three.
#[tokio::test]
async fn head_does_not_walk_around_a_get_route() {
    let probed = Probed::start().await;
    assert_insufficient(
        &probed.proxy("GET", "/reports/q1", &[]).await,
        "reports:read",
    );
    probed
        .refused_everywhere("HEAD", "/reports/q1", &[], "reports:read")
        .await;
    probed
        .refused_everywhere("HEAD", "/Reports/q1", &[], "reports:read")
        .await;
    // Other methods are not GET.
    assert_admitted(
        &probed.proxy("POST", "/reports/q1", &[]).await,
        Some("orders:read"),
    );
}

/// The override headers, in spellings frameworks read as one of them.
const OVERRIDE_HEADERS: [&str; 6] = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "x-http-method-override",
    "X_HTTP_Method_Override",
    "X.Method.Override",
];

/// Issue 21, point 3: a request naming another method (a header in any
/// spelling, `_method` in the query) needs the scopes of both, at all
/// three; a token holding both passes, override and all.
#[tokio::test]
async fn method_overrides_do_not_walk_around_a_route() {
    let probed = Probed::start().await;
    assert_admitted(
        &probed.proxy("POST", "/orders/1", &[]).await,
        Some("orders:read"),
    );
    for header in OVERRIDE_HEADERS {
        for value in ["DELETE", "delete"] {
            let headers = [(header, value)];
            assert_insufficient(
                &probed.proxy("POST", "/orders/1", &headers).await,
                "orders:delete",
            );
            assert_insufficient(
                &probed.forward_auth("POST", "/orders/1", &headers).await,
                "orders:delete",
            );
        }
    }
    // nginx drops names with `_` or `.` (ignore_invalid_headers), so
    // those never reach the upstream.
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        probed
            .nginx_refuses("POST", "/orders/1", &[(header, "DELETE")])
            .await;
    }
    for path in [
        "/orders/1?_method=DELETE",
        "/orders/1?a=1&_method=delete",
        "/orders/1?%5Fmethod=DELETE",
        "/orders/1?_METHOD=DELETE",
        // Keys PHP folds into `_method` (Laravel, Symfony).
        "/orders/1?.method=DELETE",
        "/orders/1?[method=DELETE",
        "/orders/1?+_method=DELETE",
    ] {
        probed
            .refused_everywhere("POST", path, &[], "orders:delete")
            .await;
    }
    // A method in lower case, which frameworks upper-case before routing
    // (nginx refuses such a request line itself).
    for (method, path, scope) in [
        ("delete", "/orders/1", "orders:delete"),
        ("Delete", "/ORDERS/1", "orders:delete"),
        ("head", "/reports/q1", "reports:read"),
        ("get", "/reports/q1", "reports:read"),
    ] {
        let reply = probed.proxy(method, path, &[]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_insufficient(&probed.forward_auth(method, path, &[]).await, scope);
    }
    // A value that is not a method: every scope.
    probed
        .refused_everywhere(
            "POST",
            "/orders/1",
            &[("X-HTTP-Method-Override", "DEL ETE")],
            EVERY_PROBED_SCOPE,
        )
        .await;
    // A GET turned into a DELETE needs both: a token with only the
    // DELETE scope lacks the GET one.
    let deleter = probed.stack.mint(&["orders:delete"]).await;
    let reply = send_with(
        "GET",
        probed.stack.proxy,
        "/reports/q1",
        &deleter,
        &[("X-HTTP-Method-Override", "DELETE")],
    )
    .await;
    assert_insufficient(&reply, "reports:read");
    // Holding what both need, it passes with the override.
    let reply = send_with(
        "POST",
        probed.stack.proxy,
        "/orders/1?_method=DELETE",
        &deleter,
        &[("X-HTTP-Method-Override", "DELETE")],
    )
    .await;
    assert_admitted(&reply, Some("orders:delete"));
    assert_eq!(reply.seen("x-http-method-override"), ["DELETE"]);
    assert_eq!(reply.json()["uri"], "/orders/1?_method=DELETE");
}

/// docs/integrations/nginx.conf, pointed at `stack` and listening on
/// `port`.
fn nginx_snippet(stack: &Stack, port: u16) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/integrations/nginx.conf"
    ))
    .unwrap()
    .replace(
        "127.0.0.1:8082",
        &format!("127.0.0.1:{}", stack.forward_auth),
    )
    .replace("127.0.0.1:3000", &stack.upstream.addr.to_string())
    .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
    .replace("server_name api.example.com;", "server_name _;")
}

/// `[proxy] method_override = "strip"`: the override goes, in every
/// spelling and the query, so the upstream runs the request's own method
/// and only its scopes are needed; forward-auth, which cannot strip,
/// still checks both.
#[tokio::test]
async fn the_proxy_strips_method_overrides_when_told() {
    let stack = Stack::start_routes(PROBED, "method_override = \"strip\"", "").await;
    let reader = stack.mint(&["orders:read"]).await;
    let reply = send_with(
        "POST",
        stack.proxy,
        "/orders/1?a=1&_method=DELETE&b=2",
        &reader,
        &[
            ("X-HTTP-Method-Override", "DELETE"),
            ("X_Method_Override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
        ],
    )
    .await;
    assert_admitted(&reply, Some("orders:read"));
    let json = reply.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["uri"], "/orders/1?a=1&b=2");
    for name in reply.seen_names() {
        assert!(
            !name.to_ascii_lowercase().contains("method"),
            "{name} arrived"
        );
    }
    let auth = format!("Bearer {reader}");
    let reply = http(
        "GET",
        &format!("http://127.0.0.1:{}/", stack.forward_auth),
        &[
            ("authorization", auth.as_str()),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/orders/1"),
            ("x-http-method-override", "DELETE"),
        ],
        "",
    )
    .await;
    assert_insufficient(&reply, "orders:delete");
}

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

#[test]
fn the_cli_creates_scoped_tokens_and_refuses_bad_scopes_in_one_line() {
    let redis = RedisServer::start();
    let run = |args: &[&str]| cli(&redis, args);
    let out = run(&[
        "token",
        "create",
        "--account",
        "acme",
        "--name",
        "cli",
        "--scope",
        "orders:read",
        "--scope",
        "admin:*",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        created["scopes"],
        serde_json::json!(["admin:*", "orders:read"])
    );
    let id = created["id"].as_str().unwrap();
    let out = run(&["token", "get", "--account", "acme", "--id", id]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("scopes:    admin:* orders:read\n"), "{text}");

    let out = run(&[
        "token",
        "create",
        "--account",
        "acme",
        "--name",
        "cli",
        "--scope",
        "Orders",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--scope"), "{stderr}");
    assert!(stderr.contains("a scope is 1–64 characters"), "{stderr}");
}

/// `method` on acme's token `id` (then `rest` of the path) through
/// `replica`'s admin API, with the admin key.
async fn on_token(replica: &Replica, method: &str, id: &str, rest: &str, body: &str) -> HttpReply {
    let url = format!(
        "http://127.0.0.1:{}/v1/accounts/acme/tokens/{id}{rest}",
        replica.admin
    );
    let auth = format!("Bearer {ADMIN_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    http(method, &url, &headers, body).await
}

/// `PATCH …/tokens/{id}` through `replica`'s admin API.
async fn patch(replica: &Replica, id: &str, body: &str) -> HttpReply {
    on_token(replica, "PATCH", id, "", body).await
}

/// How long until `replica` answers `token`'s GET /orders with `status`
/// (polled every 20 ms; fails past 1 s).
async fn seen_within_a_second(replica: &Replica, token: &str, status: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let reply = replica.get(token).await;
        if reply.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still {} after 1 s, not {status}: {:?}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Disable, enable and a change of scopes made through one replica reach
/// another, which has the token cached, within a second; a revoked token
/// cannot be changed.
#[tokio::test]
async fn changes_reach_a_second_replica_within_a_second() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let routes = "[[routes]]\npath_prefix = \"/orders\"\nscopes = [\"orders:read\"]\n";
    let a = Replica::start(&redis.url(), &upstream.url(), routes);
    let b = Replica::start(&redis.url(), &upstream.url(), routes);
    let created = a
        .create(r#"{"name": "fleet", "scopes": ["orders:read"]}"#)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(b.get(token).await.status, StatusCode::OK, "cached on b");

    let reply = patch(&a, id, r#"{"enabled": false}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["enabled"], false);
    assert_eq!(reply.json()["status"], "disabled");
    let took = seen_within_a_second(&b, token, StatusCode::UNAUTHORIZED).await;
    eprintln!("disabled: refused by the other replica after {took:?}");
    let refused = b.get(token).await;
    assert_eq!(refused.json()["error"], "invalid_token");
    // The reason the client is not told, in the metrics.
    let metrics = http(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", b.admin),
        &[],
        "",
    )
    .await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let disabled = text
        .lines()
        .find_map(|l| l.strip_prefix("tokengate_invalid_tokens_total{reason=\"disabled\"} "))
        .unwrap_or_else(|| panic!("no disabled count in {text}"));
    assert!(disabled.parse::<u64>().unwrap() >= 2, "{disabled}");

    assert_eq!(
        patch(&a, id, r#"{"enabled": true}"#).await.status,
        StatusCode::OK
    );
    let took = seen_within_a_second(&b, token, StatusCode::OK).await;
    eprintln!("enabled: admitted by the other replica after {took:?}");

    let reply = patch(&a, id, r#"{"scopes": ["reports:read"], "name": "renamed"}"#).await;
    assert_eq!(reply.json()["scopes"], serde_json::json!(["reports:read"]));
    assert_eq!(reply.json()["name"], "renamed");
    let took = seen_within_a_second(&b, token, StatusCode::FORBIDDEN).await;
    eprintln!("scopes changed: 403 from the other replica after {took:?}");
    assert_eq!(
        patch(&a, id, r#"{"scopes": ["orders:*"]}"#).await.status,
        StatusCode::OK
    );
    seen_within_a_second(&b, token, StatusCode::OK).await;

    // Revoked: never changed again.
    let revoke = on_token(&a, "DELETE", id, "", "").await;
    assert_eq!(revoke.status, StatusCode::OK);
    let reply = patch(&a, id, r#"{"enabled": true}"#).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"], "revoked");
    seen_within_a_second(&b, token, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn updates_are_checked_like_creations() {
    let stack = Stack::start().await;
    let body = r#"{"name": "u"}"#;
    let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/accounts/acme/tokens/{id}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (body, field) in [
        (r#"{"scopes": ["BAD"]}"#.to_owned(), "scopes"),
        (r#"{"name": ""}"#.to_owned(), "name"),
        (format!(r#"{{"expires_at": {}}}"#, now - 1), "expires_at"),
        (
            format!(r#"{{"expires_at": {}}}"#, now + 3651 * 86_400),
            "expires_at",
        ),
    ] {
        let reply = stack.admin("PATCH", &path, &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json()["field"], field, "{body}");
    }
    for method in ["PATCH", "POST"] {
        let path = if method == "POST" {
            "/v1/accounts/acme/tokens"
        } else {
            path.as_str()
        };
        let reply = stack
            .admin(method, path, r#"{"name": "x", "colour": "red"}"#)
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{method}");
        assert_eq!(reply.json()["error"], "invalid_input");
        assert_eq!(reply.json()["field"], "colour");
    }
    let reply = stack.admin("PATCH", &path, r#"{"name": "#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_json");
    let reply = stack
        .admin("PATCH", "/v1/accounts/acme/tokens/not-an-id", "{}")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = stack
        .admin("PATCH", &format!("/v1/accounts/other/tokens/{id}"), "{}")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "another account's token"
    );

    // An expiry, then none: the expiry index follows.
    let at = now + 86_400;
    let reply = stack
        .admin("PATCH", &path, &format!(r#"{{"expires_at": {at}}}"#))
        .await;
    assert_eq!(reply.json()["expires_at"], at);
    let mut conn = stack.redis.connection().await;
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg("tokengate:expiry")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, Some(at));
    let reply = stack.admin("PATCH", &path, r#"{"expires_at": null}"#).await;
    assert_eq!(reply.json()["expires_at"], serde_json::Value::Null);
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg("tokengate:expiry")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, None);
}

#[test]
fn the_cli_updates_disables_and_enables_tokens() {
    let redis = RedisServer::start();
    let run = |args: &[&str]| cli(&redis, args);
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let created = json(&run(&[
        "token",
        "create",
        "--account",
        "acme",
        "--name",
        "cli",
        "--meta",
        r#"{"plan": "pro"}"#,
        "--json",
    ]));
    assert_eq!(created["meta"], serde_json::json!({"plan": "pro"}));
    let id = created["id"].as_str().unwrap();
    let update = |extra: &[&str]| {
        let mut args = vec!["token", "update", "--account", "acme", "--id", id];
        args.extend_from_slice(extra);
        run(&args)
    };
    let info = json(&update(&["--disable", "--name", "paused", "--json"]));
    assert_eq!(
        (&info["status"], &info["enabled"], &info["name"]),
        (&"disabled".into(), &false.into(), &"paused".into())
    );
    let info = json(&update(&[
        "--enable",
        "--scope",
        "orders:read",
        "--expires-in-days",
        "7",
        "--json",
    ]));
    assert_eq!(info["status"], "active");
    assert_eq!(info["scopes"], serde_json::json!(["orders:read"]));
    assert!(info["expires_at"].as_i64().is_some());
    let info = json(&update(&["--no-scopes", "--never-expires", "--json"]));
    assert_eq!(info["scopes"], serde_json::json!([]));
    assert_eq!(info["expires_at"], serde_json::Value::Null);
    let info = json(&update(&[
        "--allow-ip",
        "203.0.113.0/24",
        "--allow-ip",
        "::1",
        "--json",
    ]));
    assert_eq!(
        info["allowed_ips"],
        serde_json::json!(["203.0.113.0/24", "::1/128"])
    );
    let text = String::from_utf8(update(&["--any-ip"]).stdout).unwrap();
    assert!(text.contains("from:      any address\n"), "{text}");
    assert!(text.contains("meta:      {\"plan\":\"pro\"}\n"), "{text}");
    let info = json(&update(&["--meta", r#"{"plan": "free"}"#, "--json"]));
    assert_eq!(info["meta"], serde_json::json!({"plan": "free"}));
    let info = json(&update(&["--no-meta", "--json"]));
    assert_eq!(info["meta"], serde_json::json!({}));
    let text = String::from_utf8(update(&["--disable"]).stdout).unwrap();
    assert!(text.contains("status:    disabled\n"), "{text}");
    assert!(text.contains("enabled:   no\n"), "{text}");

    // Nothing to change, clashing flags, a revoked token: one line, non-zero.
    for (args, code, says) in [
        (vec![], 1, "nothing to change"),
        (vec!["--enable", "--disable"], 2, "cannot be used with"),
        (
            vec!["--scope", "x", "--no-scopes"],
            2,
            "cannot be used with",
        ),
        (
            vec!["--allow-ip", "10.0.0.0/8", "--any-ip"],
            2,
            "cannot be used with",
        ),
        (vec!["--allow-ip", "10.0.0.0/33"], 2, "give a CIDR block"),
        (
            vec!["--meta", "[1]"],
            2,
            "metadata must be a JSON object, not an array",
        ),
        (vec!["--meta", "{"], 2, "not JSON"),
        (vec!["--meta", "{}", "--no-meta"], 2, "cannot be used with"),
    ] {
        let out = update(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    assert!(
        run(&["token", "revoke", "--account", "acme", "--id", id])
            .status
            .success()
    );
    let out = update(&["--enable"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("is revoked: it cannot be changed"),
        "{stderr}"
    );
}

/// IP allowlists: the client as the failure limit sees it (the peer, or a
/// trusted proxy's X-Forwarded-For) must be inside; changed like the rest.
#[tokio::test]
async fn an_ip_allowlist_admits_only_its_networks() {
    let stack = Stack::start().await;
    let body =
        r#"{"name": "office", "allowed_ips": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]}"#;
    let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let created = reply.json();
    assert_eq!(
        created["allowed_ips"],
        serde_json::json!(["198.51.100.7/32", "203.0.113.0/24", "2001:db8::/32"])
    );
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let from = |xff: Option<&'static str>| {
        let auth = format!("Bearer {token}");
        let url = format!("http://127.0.0.1:{}/elsewhere", stack.proxy);
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(xff) = xff {
                headers.push(("x-forwarded-for", xff));
            }
            http("GET", &url, &headers, "").await
        }
    };
    // Loopback is a trusted proxy: X-Forwarded-For names the client.
    for inside in [
        "203.0.113.9",
        "2001:db8:5::1",
        "198.51.100.7",
        "192.0.2.1, 203.0.113.200",
    ] {
        assert_eq!(from(Some(inside)).await.status, StatusCode::OK, "{inside}");
    }
    for outside in [Some("198.51.100.8"), Some("203.0.114.1"), None] {
        let reply = from(outside).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{outside:?}");
        assert_eq!(reply.json()["error"], "ip_not_allowed");
        assert_eq!(
            reply.json()["message"],
            "The token may not be used from this address."
        );
        assert_eq!(reply.header("www-authenticate"), None);
    }
    // Bad networks: 422 naming the field, at creation and in a change.
    let path = format!("/v1/accounts/acme/tokens/{id}");
    for bad in [r#"["10.0.0.0/33"]"#, r#"["example.com"]"#, r#"[""]"#] {
        let body = format!(r#"{{"name": "x", "allowed_ips": {bad}}}"#);
        let reply = stack.admin("POST", "/v1/accounts/acme/tokens", &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(reply.json()["field"], "allowed_ips");
        let reply = stack
            .admin("PATCH", &path, &format!(r#"{{"allowed_ips": {bad}}}"#))
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(reply.json()["field"], "allowed_ips");
    }
    // Emptied: any address again.
    let reply = stack.admin("PATCH", &path, r#"{"allowed_ips": []}"#).await;
    assert_eq!(reply.json()["allowed_ips"], serde_json::json!([]));
    assert_eq!(from(None).await.status, StatusCode::OK);
    assert_eq!(from(Some("198.51.100.8")).await.status, StatusCode::OK);
}

/// Metadata: stored, returned, changed, checked, and forwarded upstream
/// (base64url of its JSON) when `[headers] meta` names a header.
#[tokio::test]
async fn metadata_is_returned_and_forwarded() {
    let stack = Stack::start_with("[headers]\nmeta = \"X-Token-Meta\"\n").await;
    let body = r#"{"name": "m", "meta": {"plan": "pro", "seats": 5}}"#;
    let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let created = reply.json();
    assert_eq!(
        created["meta"],
        serde_json::json!({"plan": "pro", "seats": 5})
    );
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/accounts/acme/tokens/{id}");
    let listed = stack
        .admin("GET", "/v1/accounts/acme/tokens", "")
        .await
        .json();
    assert_eq!(listed["tokens"][0]["meta"]["plan"], "pro");

    // Upstream: base64url of the compact JSON; a forged copy is dropped.
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-token-meta", "eyJwbGFuIjoiZW50ZXJwcmlzZSJ9"),
        ("X_Token_Meta", "forged"),
    ];
    let url = format!("http://127.0.0.1:{}/elsewhere", stack.proxy);
    let reply = http("GET", &url, &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    // {"plan":"pro","seats":5}
    assert_eq!(
        reply.seen("x-token-meta"),
        ["eyJwbGFuIjoicHJvIiwic2VhdHMiOjV9"]
    );
    assert!(!reply.seen_names().iter().any(|n| n == "x_token_meta"));

    // Replaced, then removed (null): no header at all.
    let reply = stack
        .admin("PATCH", &path, r#"{"meta": {"plan": "free"}}"#)
        .await;
    assert_eq!(reply.json()["meta"], serde_json::json!({"plan": "free"}));
    let reply = stack.admin("PATCH", &path, r#"{"meta": null}"#).await;
    assert_eq!(reply.json()["meta"], serde_json::json!({}));
    let reply = http("GET", &url, &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.seen("x-token-meta").is_empty(), "{:?}", reply.body);

    // Not an object, or over 4 KiB: 422 naming meta.
    let big = serde_json::json!({"k": "x".repeat(4089)}).to_string();
    for (meta, says) in [
        ("[1, 2]".to_owned(), "must be a JSON object, not an array"),
        ("\"pro\"".to_owned(), "must be a JSON object, not a string"),
        (big, "must be at most 4096 bytes as compact JSON (got 4097)"),
    ] {
        for (method, path) in [
            ("POST", "/v1/accounts/acme/tokens"),
            ("PATCH", path.as_str()),
        ] {
            let body = format!(r#"{{"name": "m", "meta": {meta}}}"#);
            let reply = stack.admin(method, path, &body).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{method}");
            assert_eq!(reply.json()["field"], "meta");
            let message = reply.json()["message"].as_str().unwrap().to_owned();
            assert!(message.contains(says), "{message}");
        }
    }
}

/// `POST /v1/verify` answers every code, through the same cache, limits
/// and quota as the doors.
#[tokio::test]
async fn the_verify_api_answers_every_code() {
    let stack = Stack::start_with(
        "[rate_limit]\nper_token_requests = 3\nper_token_period = \"1m\"\nper_token_burst = 3\n",
    )
    .await;
    async fn mint(stack: &Stack, body: &str) -> (String, String) {
        let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let json = reply.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }
    async fn verify(stack: &Stack, body: serde_json::Value) -> serde_json::Value {
        let reply = stack.admin("POST", "/v1/verify", &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.json()
    }
    async fn code(stack: &Stack, token: &str, ip: Option<&str>) -> String {
        let mut body = serde_json::json!({ "token": token });
        if let Some(ip) = ip {
            body["ip"] = ip.into();
        }
        verify(stack, body).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    let (token, id) = mint(
        &stack,
        r#"{"name": "v", "scopes": ["orders:*"], "meta": {"plan": "pro"}, "expires_in_days": 1}"#,
    )
    .await;
    let valid = verify(
        &stack,
        serde_json::json!({"token": token, "scopes": ["orders:read"]}),
    )
    .await;
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["account_id"], "acme");
    assert_eq!(valid["token_id"], id.as_str());
    assert_eq!(valid["scopes"], serde_json::json!(["orders:*"]));
    assert_eq!(valid["meta"], serde_json::json!({"plan": "pro"}));
    assert!(valid["expires_at"].as_i64().is_some());
    assert_eq!(valid.get("remaining"), None, "no quota: no remaining");
    let refused = verify(
        &stack,
        serde_json::json!({"token": token, "scopes": ["billing:read"]}),
    )
    .await;
    assert_eq!(refused["valid"], false);
    assert_eq!(refused["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(refused["token_id"], serde_json::Value::Null);

    // Not a token, another secret, an id never issued.
    assert_eq!(code(&stack, "mk_nope", None).await, "INVALID");
    let id_of = tokengate::token::parse(&token).unwrap();
    let forged = tokengate::Token::from_parts(id_of, "abcdefghijklmnopqrstuvwx");
    assert_eq!(code(&stack, forged.expose_secret(), None).await, "INVALID");
    let unknown = tokengate::Token::generate().unwrap();
    assert_eq!(
        code(&stack, unknown.expose_secret(), None).await,
        "NOT_FOUND"
    );

    // Disabled, revoked, expired (each a fresh token: nothing cached).
    let (disabled, id) = mint(&stack, r#"{"name": "d"}"#).await;
    let path = format!("/v1/accounts/acme/tokens/{id}");
    stack.admin("PATCH", &path, r#"{"enabled": false}"#).await;
    assert_eq!(code(&stack, &disabled, None).await, "DISABLED");
    let (revoked, id) = mint(&stack, r#"{"name": "r"}"#).await;
    let path = format!("/v1/accounts/acme/tokens/{id}");
    assert_eq!(
        stack.admin("DELETE", &path, "").await.status,
        StatusCode::OK
    );
    assert_eq!(code(&stack, &revoked, None).await, "REVOKED");
    let (expired, id) = mint(&stack, r#"{"name": "e", "expires_in_days": 1}"#).await;
    let mut conn = stack.redis.connection().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("tokengate:token:{id}"))
        .arg("expires_at")
        .arg("1000")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(code(&stack, &expired, None).await, "EXPIRED");

    // The allowlist needs the end client's address.
    let (office, _) = mint(
        &stack,
        r#"{"name": "o", "allowed_ips": ["203.0.113.0/24"]}"#,
    )
    .await;
    assert_eq!(code(&stack, &office, None).await, "IP_NOT_ALLOWED");
    assert_eq!(
        code(&stack, &office, Some("198.51.100.1")).await,
        "IP_NOT_ALLOWED"
    );
    assert_eq!(code(&stack, &office, Some("203.0.113.5")).await, "VALID");

    // Limits and quotas count verifications like requests.
    let (busy, _) = mint(&stack, r#"{"name": "b"}"#).await;
    for _ in 0..3 {
        assert_eq!(code(&stack, &busy, None).await, "VALID");
    }
    assert_eq!(code(&stack, &busy, None).await, "RATE_LIMITED");
    let (metered, _) = mint(&stack, r#"{"name": "q", "quota": {"remaining": 1}}"#).await;
    assert_eq!(code(&stack, &metered, None).await, "VALID");
    assert_eq!(code(&stack, &metered, None).await, "USAGE_EXCEEDED");
    let (five, _) = mint(&stack, r#"{"name": "f", "quota": {"remaining": 5}}"#).await;
    for left in [4, 3, 2] {
        let verdict = verify(&stack, serde_json::json!({ "token": five })).await;
        assert_eq!(verdict["remaining"], left);
    }

    // Bad input: 422 naming the field; the admin key is needed.
    for (body, field) in [
        (r#"{"token": "mk_x", "scopes": ["BAD"]}"#, "scopes"),
        (r#"{"token": "mk_x", "ip": "not an ip"}"#, "ip"),
        (r#"{"token": "mk_x", "colour": "red"}"#, "colour"),
    ] {
        let reply = stack.admin("POST", "/v1/verify", body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json()["field"], field);
    }
    let reply = http(
        "POST",
        &format!("http://127.0.0.1:{}/v1/verify", stack.admin),
        &[("content-type", "application/json")],
        r#"{"token": "mk_x"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// The admin API's listing pages with `limit` and `cursor`, filters by
/// `status`, and names a bad parameter; the CLI follows the pages.
#[tokio::test]
async fn listing_pages_with_a_cursor() {
    let stack = Stack::start().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let body = format!(r#"{{"name": "p{i}"}}"#);
        let reply = stack.admin("POST", "/v1/accounts/acme/tokens", &body).await;
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    let revoked = ids[3].clone();
    let path = format!("/v1/accounts/acme/tokens/{revoked}");
    assert_eq!(
        stack.admin("DELETE", &path, "").await.status,
        StatusCode::OK
    );

    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=10&cursor={c}"),
            None => "?limit=10".to_owned(),
        };
        let page = stack
            .admin("GET", &format!("/v1/accounts/acme/tokens{query}"), "")
            .await
            .json();
        let tokens = page["tokens"].as_array().unwrap();
        assert!(tokens.len() <= 10);
        seen.extend(tokens.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "each once, in id order");
    let page = stack
        .admin("GET", "/v1/accounts/acme/tokens?status=revoked", "")
        .await
        .json();
    assert_eq!(page["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(page["tokens"][0]["id"], revoked.as_str());
    assert_eq!(page["next"], serde_json::Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=nope", "cursor"),
        ("status=sleeping", "status"),
        ("colour=red", "query"),
    ] {
        let reply = stack
            .admin("GET", &format!("/v1/accounts/acme/tokens?{query}"), "")
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(reply.json()["field"], field, "{query}");
    }
}

#[test]
fn the_cli_lists_every_page_and_filters_by_status() {
    let redis = RedisServer::start();
    let run = |args: &[&str]| cli(&redis, args);
    let mut first = String::new();
    for i in 0..3 {
        let out = run(&[
            "token",
            "create",
            "--account",
            "acme",
            "--name",
            &format!("c{i}"),
            "--json",
        ]);
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if i == 0 {
            first = created["id"].as_str().unwrap().to_owned();
        }
    }
    assert!(
        run(&[
            "token",
            "update",
            "--account",
            "acme",
            "--id",
            &first,
            "--disable"
        ])
        .status
        .success()
    );
    let out = run(&["token", "list", "--account", "acme", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<(i64, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["created_at"].as_i64().unwrap(),
                t["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {listed:?}"
    );
    let out = run(&[
        "token",
        "list",
        "--account",
        "acme",
        "--status",
        "disabled",
        "--json",
    ]);
    let disabled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(disabled.as_array().unwrap().len(), 1);
    assert_eq!(disabled[0]["id"], first.as_str());
}

/// `POST …/tokens/{id}/rotate` through `replica`'s admin API.
async fn rotate(replica: &Replica, id: &str, body: &str) -> HttpReply {
    on_token(replica, "POST", id, "/rotate", body).await
}

/// Rotation: the new token copies the old one's policy, both work during
/// the grace (on another replica too), the old one is refused after it,
/// never outlives its own expiry, and a grace of 0 revokes it at once.
#[tokio::test]
async fn rotation_keeps_both_tokens_working_for_the_grace_only() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let routes = "[[routes]]\npath_prefix = \"/orders\"\nscopes = [\"orders:read\"]\n";
    let a = Replica::start(&redis.url(), &upstream.url(), routes);
    let b = Replica::start(&redis.url(), &upstream.url(), routes);
    let created = a
        .create(
            r#"{"name": "deploy", "scopes": ["orders:read"], "meta": {"team": "ops"},
                "allowed_ips": ["127.0.0.0/8"], "expires_in_days": 10,
                "quota": {"remaining": 50}}"#,
        )
        .await
        .json();
    let (old_token, old_id) = (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        b.get(&old_token).await.status,
        StatusCode::OK,
        "cached on b"
    );

    let reply = rotate(&a, &old_id, r#"{"grace": "2s"}"#).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let rotated = reply.json();
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(rotated["rotated_from"], old_id.as_str());
    assert_eq!(rotated["old"]["id"], old_id.as_str());
    assert_eq!(rotated["old"]["rotated_to"], new_id.as_str());
    assert!(
        rotated["old"].get("token").is_none(),
        "the old plaintext is gone"
    );
    for field in [
        "account_id",
        "name",
        "scopes",
        "meta",
        "allowed_ips",
        "expires_at",
    ] {
        assert_eq!(rotated[field], created[field], "{field} copied");
    }
    // The credits left in Redis (b leased some for its request).
    let credits = rotated["quota"]["remaining"].as_u64().unwrap();
    assert!((1..=50).contains(&credits), "{credits}");
    let now = unix_now();
    let old_expiry = rotated["old"]["expires_at"].as_i64().unwrap();
    assert!(
        (now + 1..=now + 2).contains(&old_expiry),
        "{old_expiry} vs {now}"
    );

    // During the grace: both, on both replicas.
    for replica in [&a, &b] {
        assert_eq!(replica.get(&old_token).await.status, StatusCode::OK);
        assert_eq!(replica.get(&new_token).await.status, StatusCode::OK);
    }
    let mut conn = redis.connection().await;
    let links: (Option<String>, Option<String>) = redis::pipe()
        .hget(format!("tokengate:token:{old_id}"), "rotated_to")
        .hget(format!("tokengate:token:{new_id}"), "rotated_from")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(links, (Some(new_id.clone()), Some(old_id.clone())));
    // Rotated once: the successor is the one to rotate.
    let again = rotate(&a, &old_id, r#"{"grace": "1h"}"#).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["error"], "already_rotated");

    // After the grace: the old one is refused everywhere, the new one not.
    let started = Instant::now();
    while b.get(&old_token).await.status != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "old token still admitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.get(&old_token).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.get(&new_token).await.status, StatusCode::OK);
    assert_eq!(a.get(&new_token).await.status, StatusCode::OK);

    // A grace longer than the lifetime left: the old expiry stays.
    let short = a
        .create(r#"{"name": "short", "scopes": ["orders:read"], "expires_in_days": 1}"#)
        .await
        .json();
    let id = short["id"].as_str().unwrap();
    let reply = rotate(&a, id, r#"{"grace": "30days"}"#).await.json();
    assert_eq!(
        reply["old"]["expires_at"], short["expires_at"],
        "never extended"
    );
    assert_eq!(reply["expires_at"], short["expires_at"]);

    // Grace 0: revoked at once, on the other replica within a second.
    let token = reply["token"].as_str().unwrap().to_owned();
    let id = reply["id"].as_str().unwrap().to_owned();
    assert_eq!(b.get(&token).await.status, StatusCode::OK, "cached on b");
    let reply = rotate(&a, &id, r#"{"grace": "0"}"#).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = reply.json();
    assert_eq!(reply["old"]["status"], "revoked");
    seen_within_a_second(&b, &token, StatusCode::UNAUTHORIZED).await;
    let newest = reply["token"].as_str().unwrap();
    assert_eq!(b.get(newest).await.status, StatusCode::OK);
    // Revoked: cannot be rotated.
    let reply = rotate(&a, &id, r#"{"grace": "1h"}"#).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"], "revoked");

    // Bad input: 422 naming the field.
    let newest_id = newest.to_owned();
    for body in [
        r#"{"grace": "soon"}"#,
        r#"{"grace": "4000d"}"#,
        r#"{"grace": 86400}"#,
        "{}",
    ] {
        let reply = rotate(&a, &newest_id, body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json()["field"], "grace", "{body}");
    }
    let reply = rotate(&a, &newest_id, r#"{"grace": "1h", "keep": true}"#).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["field"], "keep");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every change lands in the audit trail, in order, with who made it and
/// the fields it set, and nothing secret; the admin API and the CLI read
/// it page by page.
#[tokio::test]
async fn the_audit_trail_records_every_change_without_secrets() {
    let stack = Stack::start().await;
    let created = stack
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            r#"{"name": "audited", "scopes": ["orders:read"]}"#,
        )
        .await
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    let token = format!("/v1/accounts/acme/tokens/{id}");
    for body in [
        r#"{"name": "renamed", "meta": {"ticket": "OPS-1"}}"#,
        r#"{"enabled": false}"#,
        r#"{"enabled": true}"#,
    ] {
        let reply = stack.admin("PATCH", &token, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}");
    }
    let quota = stack
        .admin("PUT", &format!("{token}/quota"), r#"{"remaining": 10}"#)
        .await;
    assert_eq!(quota.status, StatusCode::OK);
    let rotated = stack
        .admin("POST", &format!("{token}/rotate"), r#"{"grace": "1h"}"#)
        .await
        .json();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let revoked = stack
        .admin("DELETE", &format!("/v1/accounts/acme/tokens/{new_id}"), "")
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    // Another account's change, and the CLI's, by its OS user.
    stack
        .admin("POST", "/v1/accounts/other/tokens", r#"{"name": "x"}"#)
        .await;
    let cleanup = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["--redis-url", &stack.redis.url()])
        .args(["token", "cleanup", "--retention-days", "0"])
        .env_clear()
        .env("USER", "auditor")
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{cleanup:?}");

    let page = stack.admin("GET", "/v1/audit?account=acme", "").await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    let page = page.json();
    let entries = page["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["token_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("create", id.as_str()),
            ("update", id.as_str()),
            ("disable", id.as_str()),
            ("enable", id.as_str()),
            ("update", id.as_str()),
            ("create", new_id.as_str()),
            ("rotate", id.as_str()),
            ("revoke", new_id.as_str()),
        ]
    );
    assert_eq!(page["next"], serde_json::Value::Null);
    for entry in entries {
        assert_eq!(entry["account_id"], "acme");
        assert_eq!(entry["actor"]["kind"], "admin-api");
        let caller = entry["actor"]["id"].as_str().unwrap();
        assert!(caller.starts_with("127.0.0.1:"), "{caller}");
    }
    assert_eq!(
        entries[0]["changes"]["scopes"],
        serde_json::json!(["orders:read"])
    );
    assert_eq!(
        entries[1]["changes"],
        serde_json::json!({"name": "renamed", "meta": {"ticket": "OPS-1"}})
    );
    assert_eq!(entries[2]["changes"], serde_json::json!({"enabled": false}));
    assert_eq!(entries[4]["changes"]["quota"]["remaining"], 10);
    assert_eq!(entries[5]["changes"]["rotated_from"], id.as_str());
    assert_eq!(entries[6]["changes"]["rotated_to"], new_id.as_str());
    assert_eq!(entries[6]["changes"]["grace_seconds"], 3600);
    assert!(entries[7]["changes"]["revoked_at"].is_i64());

    // Pages: two at a time, each entry once, across both accounts.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/v1/audit?limit=2&after={after}"),
            None => "/v1/audit?limit=2".to_owned(),
        };
        let page = stack.admin("GET", &path, "").await.json();
        all.extend(page["entries"].as_array().unwrap().clone());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.len(), 10, "{actions:?}");
    assert_eq!(all[8]["account_id"], "other");
    assert_eq!(actions[9], "cleanup");
    assert_eq!(
        all[9]["actor"],
        serde_json::json!({"kind": "cli", "id": "auditor"})
    );
    assert_eq!(all[9]["changes"]["retention_seconds"], 0);
    assert_eq!(all[9]["token_id"], serde_json::Value::Null);

    // Bad queries: 422 naming the parameter.
    for (query, field) in [
        ("after=yesterday", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("account=a%0Ab", "account"),
        ("sort=desc", "query"),
    ] {
        let reply = stack.admin("GET", &format!("/v1/audit?{query}"), "").await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(reply.json()["field"], field, "{query}");
    }
    let unauthorized = http(
        "GET",
        &format!("http://127.0.0.1:{}/v1/audit", stack.admin),
        &[],
        "",
    )
    .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);

    // No token, secret or hash anywhere in the stream.
    let dump = stack.redis.dump().await;
    let (_, stream) = dump
        .iter()
        .find(|(key, _)| key == "tokengate:audit")
        .expect("the audit stream");
    assert_eq!(stream.lines().count(), 10);
    for secret in ["mk_", "$2b$", "$2a$", "hmac-sha256", "hash"] {
        assert!(!stream.contains(secret), "{secret} in {stream}");
    }

    // The CLI: JSON, by account, and a table.
    let out = cli(&stack.redis, &["audit", "--account", "acme", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, entries.clone());
    let out = cli(&stack.redis, &["audit", "--limit", "3"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("ENTRY"), "{text}");
    assert!(lines[1].contains("admin-api (127.0.0.1:") && lines[1].contains("create"));
    let out = cli(&stack.redis, &["audit", "--after", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("after"), "{err}");
}

/// `tokengate token rotate` of acme's token `id` with `grace`.
fn cli_rotate(redis: &RedisServer, id: &str, grace: &str) -> std::process::Output {
    let args = [
        "token",
        "rotate",
        "--account",
        "acme",
        "--id",
        id,
        "--grace",
        grace,
    ];
    cli(redis, &args)
}

/// `tokengate token rotate`: the new token once, the old one's end, and a
/// bad `--grace` refused as a usage error.
#[test]
fn the_cli_rotates_tokens() {
    let redis = RedisServer::start();
    let out = cli(
        &redis,
        &[
            "token",
            "create",
            "--account",
            "acme",
            "--name",
            "ci",
            "--json",
        ],
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    let out = cli_rotate(&redis, id, "24h");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("Rotated token {id} (\"ci\")")),
        "{text}"
    );
    assert_eq!(text.matches("mk_").count(), 1, "{text}");
    assert!(text.contains("The old token works until "), "{text}");
    let out = cli_rotate(&redis, id, "1h");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("already rotated"), "{err}");
    assert_eq!(err.lines().count(), 1);
    let out = cli(&redis, &["token", "get", "--account", "acme", "--id", id]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rotated to:"), "{text}");
    let out = cli_rotate(&redis, id, "soon");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--grace"), "{err}");
}

/// A token's own rate limit and its quota, at creation and through PATCH,
/// reach another replica within a second; bad ones are 422 naming them.
#[tokio::test]
async fn a_token_limit_and_quota_change_across_replicas() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let a = Replica::start(&redis.url(), &upstream.url(), "");
    let b = Replica::start(&redis.url(), &upstream.url(), "");
    let created = a
        .create(r#"{"name": "slow", "rate_limit": {"requests": 1, "period": "1m", "burst": 2}}"#)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let created = created.json();
    assert_eq!(
        created["rate_limit"],
        serde_json::json!({"requests": 1, "period": "1m", "burst": 2})
    );
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(b.get(token).await.status, StatusCode::OK);
    assert_eq!(b.get(token).await.status, StatusCode::OK);
    let limited = b.get(token).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"], "rate_limited");

    // A generous limit of its own: b admits again within a second.
    let reply = patch(
        &a,
        id,
        r#"{"rate_limit": {"requests": 1000, "period": "1s"}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.json()["rate_limit"],
        serde_json::json!({"requests": 1000, "period": "1s", "burst": 1000}),
        "burst defaults to requests"
    );
    seen_within_a_second(&b, token, StatusCode::OK).await;
    let mut conn = redis.connection().await;
    let stored: String = redis::cmd("HGET")
        .arg(format!("tokengate:token:{id}"))
        .arg("rate_limit")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, "1000 1000000000 1000");

    // A quota through PATCH: used up at once, then removed.
    let reply = patch(&a, id, r#"{"quota": {"remaining": 0}}"#).await;
    assert_eq!(reply.json()["quota"]["remaining"], 0);
    seen_within_a_second(&b, token, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(b.get(token).await.json()["error"], "usage_exceeded");
    let reply = patch(&a, id, r#"{"quota": null, "rate_limit": null}"#).await;
    assert_eq!(reply.json()["quota"], serde_json::Value::Null);
    assert_eq!(reply.json()["rate_limit"], serde_json::Value::Null);
    seen_within_a_second(&b, token, StatusCode::OK).await;

    // Bad input: 422 naming the field, nothing changed.
    for (body, field) in [
        (
            r#"{"rate_limit": {"requests": 0, "period": "1s"}}"#,
            "rate_limit.requests",
        ),
        (
            r#"{"rate_limit": {"requests": 5, "period": "2days"}}"#,
            "rate_limit.period",
        ),
        (
            r#"{"rate_limit": {"requests": 5, "period": "1s", "burst": 20000000}}"#,
            "rate_limit.burst",
        ),
        (
            r#"{"rate_limit": {"requests": 5, "period": "soon"}}"#,
            "rate_limit",
        ),
        (
            r#"{"rate_limit": {"requests": 5, "period": "1s", "per": 1}}"#,
            "rate_limit",
        ),
        (r#"{"quota": {"remaining": -1}}"#, "quota"),
        (
            r#"{"quota": {"remaining": 1, "refill": {"amount": 0, "interval": "1d"}}}"#,
            "quota.refill.amount",
        ),
    ] {
        let reply = patch(&a, id, body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json()["field"], field, "{body}");
    }
    let reply = a
        .create(r#"{"name": "x", "rate_limit": {"requests": 0, "period": "1s"}}"#)
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["field"], "rate_limit.requests");

    // The CLI sets both too.
    let out = cli(
        &redis,
        &[
            "token",
            "update",
            "--account",
            "acme",
            "--id",
            id,
            "--rate-limit",
            "5/1s",
            "--burst",
            "7",
            "--quota",
            "100",
            "--refill",
            "100/1d",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["rate_limit"],
        serde_json::json!({"requests": 5, "period": "1s", "burst": 7})
    );
    assert_eq!(info["quota"]["remaining"], 100);
    // One line on stderr: a usage error (2), or a rule broken (1).
    for (flag, code, needle) in [
        ("5", 2, "REQUESTS/PERIOD"),
        ("0/1s", 1, "rate_limit.requests"),
    ] {
        let args = ["token", "update", "--account", "acme", "--id", id];
        let out = cli(&redis, &[&args[..], &["--rate-limit", flag]].concat());
        assert_eq!(out.status.code(), Some(code), "{flag}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }

    // Revoked: neither changes.
    let revoke = on_token(&a, "DELETE", id, "", "").await;
    assert_eq!(revoke.status, StatusCode::OK);
    let reply = patch(&a, id, r#"{"quota": {"remaining": 5}}"#).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let after: Option<String> = redis::cmd("HGET")
        .arg(format!("tokengate:token:{id}"))
        .arg("quota_remaining")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(after.as_deref(), Some("100"));
}
