//! Changing tokens across replicas: updates, disabling, IP allowlists,
//! metadata, per-token limits and quotas, and listing pages.

use http::StatusCode;

use crate::common::{cli, on_token, patch, scoped_stack, scoped_stack_with, seen_within_a_second};
use crate::support::procs::Replica;
use crate::support::upstream::Upstream;
use crate::support::{RedisServer, http};

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
    let stack = scoped_stack().await;
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

/// `token update` refusals: the flags, the exit code, what the one line
/// says.
const UPDATE_REFUSALS: [(&[&str], i32, &str); 8] = [
    (&[], 1, "nothing to change"),
    (&["--enable", "--disable"], 2, "cannot be used with"),
    (&["--scope", "x", "--no-scopes"], 2, "cannot be used with"),
    (
        &["--allow-ip", "10.0.0.0/8", "--any-ip"],
        2,
        "cannot be used with",
    ),
    (&["--allow-ip", "10.0.0.0/33"], 2, "give a CIDR block"),
    (
        &["--meta", "[1]"],
        2,
        "metadata must be a JSON object, not an array",
    ),
    (&["--meta", "{"], 2, "not JSON"),
    (&["--meta", "{}", "--no-meta"], 2, "cannot be used with"),
];

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
    for (args, code, says) in UPDATE_REFUSALS {
        let out = update(args);
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
    let stack = scoped_stack().await;
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
    let stack = scoped_stack_with("[headers]\nmeta = \"X-Token-Meta\"\n").await;
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

/// The admin API's listing pages with `limit` and `cursor`, filters by
/// `status`, and names a bad parameter; the CLI follows the pages.
#[tokio::test]
async fn listing_pages_with_a_cursor() {
    let stack = scoped_stack().await;
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

/// Bad limits and quotas for PATCH, and the field each 422 names.
const BAD_LIMITS: [(&str, &str); 7] = [
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
];

/// `token update` sets a token's own limit and its quota; a bad limit is
/// one line on stderr: a usage error (2), or a rule broken (1).
fn cli_sets_limit_and_quota(redis: &RedisServer, id: &str) {
    let out = cli(
        redis,
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
        let out = cli(redis, &[&args[..], &["--rate-limit", flag]].concat());
        assert_eq!(out.status.code(), Some(code), "{flag}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
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
    for (body, field) in BAD_LIMITS {
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
    cli_sets_limit_and_quota(&redis, id);

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
