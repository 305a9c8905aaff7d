//! What the Redis store leaves in a real redis-server: the key layout of
//! docs/design/redis-layout.md, no plaintext anywhere, consistent indexes, and
//! failing closed when Redis is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokengate::{
    CreateTokenParams, CreatedToken, RedisStore, StoreError, TokenError, TokenService,
};

use crate::support::{DAY, Harness, RedisServer, TEST_BCRYPT_COST};

async fn create(service: &TokenService, account: &str, days: Option<u32>) -> CreatedToken {
    service
        .create_token(CreateTokenParams {
            account_id: account.into(),
            name: format!("token of {account}"),
            expires_in_days: days,
            scopes: Default::default(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            quota: None,
            rate_limit: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn create_writes_record_account_index_and_expiry_index() {
    let h = Harness::redis().await;
    let redis = h.redis.as_ref().unwrap();
    let expiring = create(&h.service, "acme", Some(7)).await;
    let forever = create(&h.service, "acme", None).await;
    let mut conn = redis.connection().await;

    let key = format!("tokengate:token:{}", expiring.info.id);
    let record: HashMap<String, String> = conn.hgetall(&key).await.unwrap();
    assert_eq!(record["id"], expiring.info.id.to_string());
    assert_eq!(record["account_id"], "acme");
    assert_eq!(record["name"], "token of acme");
    assert!(record["hash"].starts_with("$2"), "bcrypt hash expected");
    assert_eq!(record["created_at"], expiring.info.created_at.to_string());
    assert_eq!(
        record["expires_at"],
        (expiring.info.created_at + 7 * DAY).to_string()
    );
    assert!(!record.contains_key("revoked_at") && !record.contains_key("last_accessed"));

    let members: Vec<String> = conn.smembers("tokengate:account:acme").await.unwrap();
    let mut expected = vec![expiring.info.id.to_string(), forever.info.id.to_string()];
    let mut members = members;
    members.sort();
    expected.sort();
    assert_eq!(members, expected);

    let expiry: Vec<(String, i64)> = conn
        .zrange_withscores("tokengate:expiry", 0, -1)
        .await
        .unwrap();
    assert_eq!(
        expiry,
        vec![(
            expiring.info.id.to_string(),
            expiring.info.created_at + 7 * DAY
        )],
        "a token that never expires is not in the expiry index until revoked"
    );
}

#[tokio::test]
async fn no_key_or_value_anywhere_holds_a_plaintext_token() {
    let h = Harness::redis().await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        let days = if i % 2 == 0 { Some(30) } else { None };
        tokens.push(create(&h.service, &format!("account-{}", i % 3), days).await);
    }
    h.service
        .revoke_token(tokens[1].info.id, "account-1")
        .await
        .unwrap();
    h.service
        .update_last_accessed(tokens[2].info.id, 1)
        .await
        .unwrap();

    let dump = h.redis.as_ref().unwrap().dump().await;
    assert_eq!(
        dump.len(),
        20 + 3 + 1 + 1 + 1,
        "records, account sets, expiry index, events stream, audit trail"
    );
    for created in &tokens {
        let text = created.token.expose_secret();
        let secret = &text[25..49];
        for (key, value) in &dump {
            for haystack in [key, value] {
                assert!(!haystack.contains(text), "plaintext token in {key}");
                assert!(!haystack.contains(secret), "token secret in {key}");
            }
        }
    }
}

#[tokio::test]
async fn expires_at_set_in_the_past_in_redis_is_rejected() {
    let h = Harness::redis().await;
    let created = create(&h.service, "acme", Some(30)).await;
    h.service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    let mut conn = h.redis.as_ref().unwrap().connection().await;
    let past = created.info.created_at - 10;
    let _: () = conn
        .hset(
            format!("tokengate:token:{}", created.info.id),
            "expires_at",
            past,
        )
        .await
        .unwrap();
    let err = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Expired), "{err:?}");
    assert_eq!(
        h.service.bcrypt_verifications(),
        1,
        "no bcrypt for the expired token"
    );
}

#[tokio::test]
async fn revoke_marks_the_record_indexes_it_and_appends_an_event() {
    let h = Harness::redis().await;
    let redis = h.redis.as_ref().unwrap();
    let created = create(&h.service, "acme", None).await;
    let id = created.info.id.to_string();

    let info = h
        .service
        .revoke_token(created.info.id, "acme")
        .await
        .unwrap();
    let revoked_at = info.revoked_at.unwrap();

    let mut conn = redis.connection().await;
    // The event every replica reads: {type: revoked, id}.
    let events: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("tokengate:events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, ["type", "revoked", "id", id.as_str()]);

    let key = format!("tokengate:token:{id}");
    let stored: Option<i64> = conn.hget(&key, "revoked_at").await.unwrap();
    assert_eq!(stored, Some(revoked_at));
    let score: Option<i64> = conn.zscore("tokengate:expiry", &id).await.unwrap();
    assert_eq!(
        score,
        Some(revoked_at),
        "cleanup finds revoked tokens through the expiry index"
    );
    let member: bool = conn.sismember("tokengate:account:acme", &id).await.unwrap();
    assert!(member, "revoke is a soft delete");
}

#[tokio::test]
async fn cleanup_removes_dead_tokens_from_every_key() {
    let h = Harness::redis().await;
    let redis = h.redis.as_ref().unwrap();
    let dead = create(&h.service, "gone", Some(1)).await;
    let revoked = create(&h.service, "acme", None).await;
    let alive = create(&h.service, "acme", None).await;
    h.service
        .revoke_token(revoked.info.id, "acme")
        .await
        .unwrap();
    h.clock.advance(40 * DAY);
    let removed = h
        .service
        .cleanup_expired(Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(removed, 2);

    let mut conn = redis.connection().await;
    for gone in [&dead, &revoked] {
        let id = gone.info.id.to_string();
        let exists: bool = conn.exists(format!("tokengate:token:{id}")).await.unwrap();
        assert!(!exists, "record of {id} left behind");
        let score: Option<f64> = conn.zscore("tokengate:expiry", &id).await.unwrap();
        assert_eq!(score, None, "expiry entry of {id} left behind");
        for account in ["gone", "acme"] {
            let member: bool = conn
                .sismember(format!("tokengate:account:{account}"), &id)
                .await
                .unwrap();
            assert!(!member, "account entry of {id} left behind");
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "tokengate:account:acme".to_owned(),
            // The audit trail and the revocation's event: the streams are
            // capped, not cleaned up.
            "tokengate:audit".to_owned(),
            "tokengate:events".to_owned(),
            format!("tokengate:token:{}", alive.info.id),
        ],
        "an emptied account set disappears with its last member"
    );
}

#[tokio::test]
async fn cleanup_handles_more_tokens_than_one_batch() {
    let h = Harness::redis().await;
    // Records written straight through the store: bcrypt is not under test.
    let store = h.service.store();
    let now = 1_767_225_600;
    for i in 0..1_200 {
        let id = tokengate::Token::generate().unwrap().id();
        store
            .insert(&tokengate::TokenRecord {
                id,
                account_id: format!("a{}", i % 7),
                name: "bulk".into(),
                hash: "$2b$04$notarealhashnotarealhashnotarealhashnotarealhashnotar".into(),
                created_at: now - 10 * DAY,
                updated_at: now - 10 * DAY,
                expires_at: Some(now - 5 * DAY + i64::from(i % 2)),
                last_accessed: None,
                revoked_at: None,
                quota: None,
                scopes: tokengate::Scopes::default(),
                disabled_at: None,
                allowed_ips: tokengate::AllowedIps::default(),
                meta: tokengate::Meta::default(),
                rotated_from: None,
                rotated_to: None,
                rate_limit: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        h.service.cleanup_expired(Duration::ZERO).await.unwrap(),
        1_200
    );
    let dump = tokens_left(h.redis.as_ref().unwrap()).await;
    assert!(dump.is_empty(), "{} keys left", dump.len());
}

#[tokio::test]
async fn key_prefix_is_applied_to_every_key() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "team-a/").await.unwrap();
    let service = TokenService::new(Arc::new(store)).with_bcrypt_cost(TEST_BCRYPT_COST);
    let created = create(&service, "acme", Some(1)).await;
    service.revoke_token(created.info.id, "acme").await.unwrap();
    let keys: Vec<String> = server.dump().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys.len(),
        5,
        "record, account, expiry, events, audit: {keys:?}"
    );
    assert!(keys.iter().all(|k| k.starts_with("team-a/")), "{keys:?}");

    // A service with the default prefix on the same Redis sees none of it.
    let other = TokenService::new(Arc::new(
        RedisStore::connect(&server.url(), "tokengate:")
            .await
            .unwrap(),
    ));
    assert!(other.list_tokens("acme").await.unwrap().is_empty());
}

#[tokio::test]
async fn touch_never_recreates_a_deleted_record() {
    let h = Harness::redis().await;
    let created = create(&h.service, "acme", Some(1)).await;
    h.clock.advance(2 * DAY);
    assert_eq!(h.service.cleanup_expired(Duration::ZERO).await.unwrap(), 1);
    h.service
        .update_last_accessed(created.info.id, 5)
        .await
        .unwrap();
    assert!(tokens_left(h.redis.as_ref().unwrap()).await.is_empty());
}

#[tokio::test]
async fn a_corrupt_record_is_a_store_error_not_a_panic() {
    let h = Harness::redis().await;
    let created = create(&h.service, "acme", None).await;
    let mut conn = h.redis.as_ref().unwrap().connection().await;
    let _: () = conn
        .hset(
            format!("tokengate:token:{}", created.info.id),
            "created_at",
            "yesterday",
        )
        .await
        .unwrap();
    let err = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap_err();
    match err {
        TokenError::Store(StoreError::Corrupt { field, .. }) => assert_eq!(field, "created_at"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_without_a_restart() {
    let mut h = Harness::redis().await;
    let created = create(&h.service, "acme", None).await;
    let token = created.token.expose_secret().to_owned();
    h.redis.as_mut().unwrap().stop();

    let err = h.service.validate_token(&token).await.unwrap_err();
    assert!(matches!(err, TokenError::Store(_)), "{err:?}");
    assert!(!err.is_invalid_token(), "an outage is not a bad token");

    // Same port, empty database: the service reconnects by itself and answers
    // from the new (empty) store.
    h.redis.as_mut().unwrap().restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match h.service.validate_token(&token).await {
            Err(TokenError::NotFound) => break,
            Err(TokenError::Store(e)) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after restart: {other:?}"),
        }
    }
    create(&h.service, "acme", None).await;
}

#[tokio::test]
async fn a_connection_closed_by_redis_costs_no_call_an_error() {
    let mut h = Harness::redis().await;
    let created = create(&h.service, "acme", None).await;
    let token = created.token.expose_secret().to_owned();
    let store = h.service.store().clone();
    let redis = h.redis.as_ref().unwrap();

    // Each kind of call, first after its connection was killed: a read, a
    // listing, each write, the readiness ping.
    redis.kill_clients().await;
    let auth = h.service.validate_token(&token).await.unwrap();
    assert_eq!(auth.account_id, "acme");
    redis.kill_clients().await;
    assert_eq!(h.service.list_tokens("acme").await.unwrap().len(), 1);
    redis.kill_clients().await;
    let second = create(&h.service, "acme", None).await;
    redis.kill_clients().await;
    store.touch(&[(second.info.id, 1_000)]).await.unwrap();
    redis.kill_clients().await;
    store.ping().await.unwrap();
    redis.kill_clients().await;
    let revoked = h
        .service
        .revoke_token(second.info.id, "acme")
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    redis.kill_clients().await;
    store.remove_dead(0).await.unwrap();

    // Redis restarting (here with an empty database) costs latency only.
    let redis = h.redis.as_mut().unwrap();
    redis.stop();
    redis.restart();
    store.ping().await.unwrap();
    redis.stop();
    redis.restart();
    assert!(matches!(
        h.service.validate_token(&token).await,
        Err(TokenError::NotFound)
    ));
}

/// An ACL user limited to tokengate's keys and to the command categories
/// docs/design/redis-layout.md lists ("Connection") runs the whole lifecycle,
/// the event reader included; a wrong password is an error that does not
/// show the password.
#[tokio::test]
async fn an_acl_user_limited_to_the_prefix_is_enough() {
    let server = RedisServer::start();
    let mut admin = server.connection().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("tokengate")
        .arg("on")
        .arg(">s3cret-pass")
        .arg("resetkeys")
        .arg("~tokengate:*")
        .arg("-@all")
        .arg("+@read")
        .arg("+@write")
        .arg("+@scripting")
        .arg("+@connection")
        .arg("-@dangerous")
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = server.port();
    let url = format!("redis://tokengate:s3cret-pass@127.0.0.1:{port}");
    let store = Arc::new(RedisStore::connect(&url, "tokengate:").await.unwrap());
    let service = TokenService::new(store.clone()).with_bcrypt_cost(TEST_BCRYPT_COST);
    let auth =
        tokengate::Authenticator::new(service.clone(), &tokengate::AuthConfig::default()).unwrap();
    let created = create(&service, "acme", Some(1)).await;
    let token = created.token.expose_secret().to_owned();
    service.validate_token(&token).await.unwrap();
    service.list_tokens("acme").await.unwrap();
    service
        .update_last_accessed(created.info.id, 1)
        .await
        .unwrap();
    service.revoke_token(created.info.id, "acme").await.unwrap();
    assert_eq!(service.cleanup_expired(Duration::ZERO).await.unwrap(), 1);
    // The event reader (XINFO, XREAD) works under the same user: a
    // revocation by another process reaches this Authenticator.
    let other = create(&service, "acme", None).await;
    let request = |token: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    };
    let (method, uri) = (http::Method::GET, http::Uri::from_static("/"));
    let headers = request(other.token.expose_secret());
    let check = || {
        auth.check(tokengate::AuthRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            peer: None,
        })
    };
    assert!(check().await.is_ok());
    let elsewhere = TokenService::new(Arc::new(
        RedisStore::connect(&url, "tokengate:").await.unwrap(),
    ));
    elsewhere.revoke_token(other.info.id, "acme").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while check().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "revocation not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(auth);

    let wrong = format!("redis://tokengate:wrong-pass@127.0.0.1:{port}");
    let err = RedisStore::connect(&wrong, "tokengate:")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("wrong-pass"), "{err}");
    assert_eq!(
        tokengate::store::redact_url(&wrong),
        format!("redis://tokengate:***@127.0.0.1:{port}")
    );
}

/// `rediss://` with the CA that signed Redis's certificate: the whole
/// lifecycle works over TLS. With another CA, connecting fails at once with
/// an error that says why.
#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_with_a_ca_file_works_and_a_wrong_ca_is_refused() {
    use crate::support::TlsFiles;
    use tokengate::RedisConfig;

    let tls = TlsFiles::generate();
    let (server, tls_port) = RedisServer::start_tls(&tls);
    let config = RedisConfig {
        url: Some(format!("rediss://127.0.0.1:{tls_port}")),
        tls_ca_file: Some(tls.path("ca.crt")),
        ..RedisConfig::default()
    };
    config.validate().unwrap();
    let store = Arc::new(RedisStore::open(&config).await.unwrap());
    let service = TokenService::new(store).with_bcrypt_cost(TEST_BCRYPT_COST);
    let created = create(&service, "acme", Some(1)).await;
    service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    service.revoke_token(created.info.id, "acme").await.unwrap();
    // It went through this server (its plain port shows the record).
    let mut conn = server.connection().await;
    let revoked: Option<i64> = conn
        .hget(format!("tokengate:token:{}", created.info.id), "revoked_at")
        .await
        .unwrap();
    assert!(revoked.is_some());

    let wrong = RedisConfig {
        tls_ca_file: Some(tls.path("other-ca.crt")),
        ..config.clone()
    };
    let err = RedisStore::open(&wrong).await.unwrap_err().to_string();
    assert_eq!(err, "redis: invalid peer certificate: UnknownIssuer");

    // The TLS files are checked when the config is read.
    let missing = RedisConfig {
        tls_ca_file: Some(tls.path("nope.crt")),
        ..config.clone()
    };
    let err = missing.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("config key redis.tls_ca_file: cannot read"),
        "{err}"
    );
    let plain = RedisConfig {
        url: Some(server.url()),
        ..config
    };
    let err = plain.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "config key redis.tls_ca_file: only with a rediss:// url"
    );
}

/// Records written before scopes existed have no `scopes` field: they load
/// with none and keep validating. A damaged field fails closed.
#[tokio::test]
async fn records_without_scopes_load_and_a_damaged_scopes_field_fails_closed() {
    let h = Harness::redis().await;
    let redis = h.redis.as_ref().unwrap();
    let created = h
        .service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "scoped".into(),
            scopes: tokengate::Scopes::new(["b:write", "a:read"]).unwrap(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = format!("tokengate:token:{}", created.info.id);
    let mut conn = redis.connection().await;
    let stored: String = conn.hget(&key, "scopes").await.unwrap();
    assert_eq!(stored, "a:read b:write");
    let plain = create(&h.service, "acme", None).await;
    let plain_key = format!("tokengate:token:{}", plain.info.id);
    let fields: HashMap<String, String> = conn.hgetall(&plain_key).await.unwrap();
    assert!(!fields.contains_key("scopes"), "no field for no scopes");

    // As an older version wrote it.
    let _: () = conn.hdel(&key, "scopes").await.unwrap();
    let info = h.service.get_token(created.info.id, "acme").await.unwrap();
    assert!(info.scopes.is_empty());
    let valid = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    assert!(valid.scopes.is_empty());

    let _: () = conn.hset(&key, "scopes", "NOT A SCOPE").await.unwrap();
    assert!(matches!(
        h.service
            .validate_token(created.token.expose_secret())
            .await,
        Err(TokenError::Store(StoreError::Corrupt { .. }))
    ));
}

/// Paging through 2,500 tokens of one account (1,000 at a time, then with
/// a status filter) returns each exactly once, on Redis and in memory.
#[tokio::test]
async fn paging_through_2500_tokens_returns_each_exactly_once() {
    for h in [Harness::redis().await, Harness::memory().await] {
        let store = h.service.store();
        let now = h.clock_now();
        let mut expected = std::collections::BTreeSet::new();
        for i in 0..2_500 {
            let id = tokengate::Token::generate().unwrap().id();
            expected.insert(id);
            store
                .insert(&tokengate::TokenRecord {
                    id,
                    account_id: "big".into(),
                    name: format!("t{i}"),
                    hash: "$2b$04$notarealhashnotarealhashnotarealhashnotarealhashnotar".into(),
                    created_at: now,
                    updated_at: now,
                    expires_at: None,
                    last_accessed: None,
                    // Every tenth is revoked, for the status filter.
                    revoked_at: (i % 10 == 0).then_some(now),
                    quota: None,
                    scopes: tokengate::Scopes::default(),
                    disabled_at: None,
                    allowed_ips: tokengate::AllowedIps::default(),
                    meta: tokengate::Meta::default(),
                    rotated_from: None,
                    rotated_to: None,
                    rate_limit: None,
                })
                .await
                .unwrap();
        }
        // Another account's token never shows up.
        create(&h.service, "other", None).await;

        let walk = |limit: usize, status: Option<tokengate::TokenStatus>| {
            let service = h.service.clone();
            async move {
                let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None);
                loop {
                    let (page, next) = service
                        .list_tokens_page("big", cursor, limit, status)
                        .await
                        .unwrap();
                    assert!(page.len() <= limit);
                    pages += 1;
                    seen.extend(page.into_iter().map(|t| t.id));
                    cursor = next;
                    if cursor.is_none() {
                        return (seen, pages);
                    }
                }
            }
        };
        let (seen, pages) = walk(1_000, None).await;
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 2_500, "no token twice");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in id order");
        assert_eq!(
            seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
            expected
        );
        let (revoked, _) = walk(100, Some(tokengate::TokenStatus::Revoked)).await;
        assert_eq!(revoked.len(), 250);
        let (active, _) = walk(1_000, Some(tokengate::TokenStatus::Active)).await;
        assert_eq!(active.len(), 2_250);
        assert!(matches!(
            h.service.list_tokens_page("big", None, 1_001, None).await,
            Err(TokenError::InvalidInput { field: "limit", .. })
        ));
    }
}

/// Every key but the audit trail, which outlives the tokens it tells of.
async fn tokens_left(redis: &RedisServer) -> Vec<(String, String)> {
    let mut dump = redis.dump().await;
    dump.retain(|(key, _)| key != "tokengate:audit");
    dump
}
