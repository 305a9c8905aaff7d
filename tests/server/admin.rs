//! The admin API of a real `tokengate serve`: token management, health,
//! readiness, the cross-site guard.

use http::StatusCode;

use crate::common::{bearer, start_stack};
use crate::support::procs::{ADMIN_KEY, Tokengate};
use crate::support::stack::Stack;
use crate::support::{free_port, http};

#[tokio::test]
async fn the_admin_api_manages_tokens() {
    let stack = start_stack("", "").await;
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
    let mut stack = start_stack("", "").await;
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
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference/openapi.json"
        ))
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
async fn account_ids_outside_the_safe_set_are_refused() {
    let stack = start_stack("", "").await;
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
    let stack = start_stack("", "").await;
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
