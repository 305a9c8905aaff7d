//! Rotation: both tokens work for the grace only, on every replica; the CLI's
//! `rotate`.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{cli, on_token, seen_within_a_second, unix_now};
use crate::support::procs::Replica;
use crate::support::upstream::Upstream;
use crate::support::{HttpReply, RedisServer};

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

    grace_past_expiry_zero_and_bad(&a, &b).await;
}

/// A grace longer than the lifetime left keeps the old expiry; a grace of
/// 0 revokes at once (on the other replica within a second); a revoked
/// token cannot be rotated; a bad grace is 422 naming it.
async fn grace_past_expiry_zero_and_bad(a: &Replica, b: &Replica) {
    // A grace longer than the lifetime left: the old expiry stays.
    let short = a
        .create(r#"{"name": "short", "scopes": ["orders:read"], "expires_in_days": 1}"#)
        .await
        .json();
    let id = short["id"].as_str().unwrap();
    let reply = rotate(a, id, r#"{"grace": "30days"}"#).await.json();
    assert_eq!(
        reply["old"]["expires_at"], short["expires_at"],
        "never extended"
    );
    assert_eq!(reply["expires_at"], short["expires_at"]);

    // Grace 0: revoked at once, on the other replica within a second.
    let token = reply["token"].as_str().unwrap().to_owned();
    let id = reply["id"].as_str().unwrap().to_owned();
    assert_eq!(b.get(&token).await.status, StatusCode::OK, "cached on b");
    let reply = rotate(a, &id, r#"{"grace": "0"}"#).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = reply.json();
    assert_eq!(reply["old"]["status"], "revoked");
    seen_within_a_second(b, &token, StatusCode::UNAUTHORIZED).await;
    let newest = reply["token"].as_str().unwrap();
    assert_eq!(b.get(newest).await.status, StatusCode::OK);
    // Revoked: cannot be rotated.
    let reply = rotate(a, &id, r#"{"grace": "1h"}"#).await;
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
        let reply = rotate(a, &newest_id, body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json()["field"], "grace", "{body}");
    }
    let reply = rotate(a, &newest_id, r#"{"grace": "1h", "keep": true}"#).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["field"], "keep");
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
