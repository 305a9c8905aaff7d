//! Scopes and `[[routes]]` end to end: the proxy, forward-auth behind real
//! nginx, the admin API and the CLI; letter case, HEAD and method overrides
//! never walk around a route.

use http::StatusCode;

use crate::common::{cli, scoped_stack};
use crate::support::procs::Nginx;
use crate::support::stack::Stack;
use crate::support::{HttpReply, RedisServer, free_port, http};

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
    let stack = scoped_stack().await;
    let reader = stack.mint_scoped(&["orders:read"]).await;
    let writer = stack.mint_scoped(&["orders:*"]).await;
    let both = stack.mint_scoped(&["reports:read", "orders:read"]).await;
    let none = stack.mint_scoped(&[]).await;
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
    let stack = scoped_stack().await;
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
    let stack = scoped_stack().await;
    let reader = stack.mint_scoped(&["orders:read"]).await;
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

/// The route table of the walk-around probes: /admin needs admin, DELETE on
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
        let stack = Stack::builder()
            .routes(PROBED)
            .proxy("")
            .extra("")
            .start()
            .await;
        let reader = stack.mint_scoped(&["orders:read"]).await;
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
    let absolute = crate::support::raw(
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
    let deleter = probed.stack.mint_scoped(&["orders:delete"]).await;
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

/// docs/guide/integrations/nginx.conf, pointed at `stack` and listening on
/// `port`.
fn nginx_snippet(stack: &Stack, port: u16) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/guide/integrations/nginx.conf"
    ))
    .unwrap()
    .replace(
        "127.0.0.1:8082",
        &format!("127.0.0.1:{}", stack.forward_auth),
    )
    .replace("127.0.0.1:3000", &stack.upstream().addr.to_string())
    .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
    .replace("server_name api.example.com;", "server_name _;")
}

/// `[proxy] method_override = "strip"`: the override goes, in every
/// spelling and the query, so the upstream runs the request's own method
/// and only its scopes are needed; forward-auth, which cannot strip,
/// still checks both.
#[tokio::test]
async fn the_proxy_strips_method_overrides_when_told() {
    let stack = Stack::builder()
        .routes(PROBED)
        .proxy("method_override = \"strip\"")
        .extra("")
        .start()
        .await;
    let reader = stack.mint_scoped(&["orders:read"]).await;
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
