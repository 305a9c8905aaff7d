//! Tokens that carry policy (issue 13), end to end: the `tokengate` binary
//! with `[[routes]]`, a real redis-server, a real upstream, and real nginx
//! in front of forward-auth.

mod support;

use std::process::Command;

use http::StatusCode;
use support::procs::{Nginx, Tokengate};
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
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let (proxy, forward_auth, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "[redis]\nurl = \"{redis}\"\n[security]\nbcrypt_cost = 4\n\
             [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{upstream}\"\n\
             [forward_auth]\nlisten = \"127.0.0.1:{forward_auth}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n{ROUTES}",
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
    let snippet = std::fs::read_to_string(concat!(
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
    .replace("server_name api.example.com;", "server_name _;");
    let _nginx = Nginx::start(&snippet, port);
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

#[test]
fn the_cli_creates_scoped_tokens_and_refuses_bad_scopes_in_one_line() {
    let redis = RedisServer::start();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["--redis-url", &redis.url()])
            .args(args)
            .env_clear()
            .env("TOKENGATE_SECURITY_BCRYPT_COST", "4")
            .output()
            .unwrap()
    };
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
