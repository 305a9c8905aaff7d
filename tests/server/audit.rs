//! The audit trail: every change recorded, without secrets.

use std::process::Command;

use http::StatusCode;

use crate::common::{cli, scoped_stack};
use crate::support::http;
use crate::support::stack::Stack;

/// Every change lands in the audit trail, in order, with who made it and
/// the fields it set, and nothing secret; the admin API and the CLI read
/// it page by page.
#[tokio::test]
async fn the_audit_trail_records_every_change_without_secrets() {
    let stack = scoped_stack().await;
    let (id, new_id) = make_every_change(&stack).await;

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
    let all = every_page(&stack).await;
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

    assert_bad_queries_refused(&stack).await;

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

/// Every kind of change to one token of `acme` through the admin API
/// (create, update, disable, enable, quota, rotate, revoke), one token of
/// another account, and the CLI's cleanup: (the token's id, its successor's).
async fn make_every_change(stack: &Stack) -> (String, String) {
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
    (id, new_id)
}

/// The whole trail, two entries a page.
async fn every_page(stack: &Stack) -> Vec<serde_json::Value> {
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
    all
}

/// Bad queries: 422 naming the parameter; no key: 401.
async fn assert_bad_queries_refused(stack: &Stack) {
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
}
