//! The verify API (`POST /v1/verify`): every answer code.

use http::StatusCode;

use crate::common::scoped_stack_with;
use crate::support::http;
use crate::support::stack::Stack;

/// `POST /v1/verify` answers every code, through the same cache, limits
/// and quota as the doors.
#[tokio::test]
async fn the_verify_api_answers_every_code() {
    let stack = scoped_stack_with(
        "[rate_limit]\nper_token_requests = 3\nper_token_period = \"1m\"\nper_token_burst = 3\n",
    )
    .await;
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

    ended_tokens_answer_their_code(&stack).await;

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

/// Mints a token of `acme` from a creation body: (token, id).
async fn mint(stack: &Stack, body: &str) -> (String, String) {
    let reply = stack.admin("POST", "/v1/accounts/acme/tokens", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let json = reply.json();
    (
        json["token"].as_str().unwrap().to_owned(),
        json["id"].as_str().unwrap().to_owned(),
    )
}
/// `POST /v1/verify` with `body`: the verdict.
async fn verify(stack: &Stack, body: serde_json::Value) -> serde_json::Value {
    let reply = stack.admin("POST", "/v1/verify", &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()
}
/// The verdict's code for `token`, from the end client `ip`.
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

/// Disabled, revoked, expired (each a fresh token: nothing cached).
async fn ended_tokens_answer_their_code(stack: &Stack) {
    let (disabled, id) = mint(stack, r#"{"name": "d"}"#).await;
    let path = format!("/v1/accounts/acme/tokens/{id}");
    stack.admin("PATCH", &path, r#"{"enabled": false}"#).await;
    assert_eq!(code(stack, &disabled, None).await, "DISABLED");
    let (revoked, id) = mint(stack, r#"{"name": "r"}"#).await;
    let path = format!("/v1/accounts/acme/tokens/{id}");
    assert_eq!(
        stack.admin("DELETE", &path, "").await.status,
        StatusCode::OK
    );
    assert_eq!(code(stack, &revoked, None).await, "REVOKED");
    let (expired, id) = mint(stack, r#"{"name": "e", "expires_in_days": 1}"#).await;
    let mut conn = stack.redis.connection().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("tokengate:token:{id}"))
        .arg("expires_at")
        .arg("1000")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(code(stack, &expired, None).await, "EXPIRED");
}
