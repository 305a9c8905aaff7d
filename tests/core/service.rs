//! The TokenService suite, run twice: on a real redis-server and on the
//! embedded in-memory store. Both must behave the same.

use std::time::Duration;

use tokengate::hashing::HashKey;
use tokengate::{
    CreateTokenParams, CreatedToken, QuotaParams, Refill, RefillInterval, Token, TokenError,
    TokenService, TokenStatus,
};

use crate::support::{DAY, Harness};

/// Instantiates every suite test once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Harness::redis().await).await;
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Harness::memory().await).await;
                }
            )*
        }
    };
}

on_both_stores!(
    create_then_validate_succeeds,
    wrong_secret_is_rejected_after_one_bcrypt_verify,
    unknown_or_malformed_tokens_never_reach_bcrypt,
    revoked_token_is_rejected,
    expired_token_is_rejected,
    list_shows_only_the_accounts_tokens_and_no_hash,
    another_accounts_token_is_not_found,
    revoking_twice_keeps_the_first_time,
    cleanup_removes_only_tokens_dead_beyond_retention,
    input_rules_name_the_field,
    last_accessed_never_moves_backwards,
    quota_credits_are_handed_out_once_and_refill_on_schedule,
    hmac_tokens_validate_without_bcrypt_and_store_no_usable_value,
    bcrypt_tokens_are_rehashed_to_hmac_on_their_first_successful_use,
    hmac_records_under_another_key_or_none_fail_closed,
    rotation_keeps_the_quota_schedule_and_rounds_the_grace_up,
);

async fn create(
    service: &TokenService,
    account: &str,
    name: &str,
    days: Option<u32>,
) -> CreatedToken {
    service
        .create_token(CreateTokenParams {
            account_id: account.into(),
            name: name.into(),
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

async fn create_then_validate_succeeds(h: Harness) {
    let created = create(&h.service, "acme", "ci", Some(30)).await;
    let info = &created.info;
    assert_eq!(
        (info.account_id.as_str(), info.name.as_str()),
        ("acme", "ci")
    );
    assert_eq!(info.status, TokenStatus::Active);
    assert_eq!(info.expires_at, Some(info.created_at + 30 * DAY));
    assert_eq!(created.token.id(), info.id);

    let auth = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(auth.account_id, "acme");
    assert_eq!(auth.token_id, info.id);
    assert_eq!(h.service.bcrypt_verifications(), 1);

    let forever = create(&h.service, "acme", "forever", None).await;
    assert_eq!(forever.info.expires_at, None);
    h.clock.advance(100 * 365 * DAY);
    h.service
        .validate_token(forever.token.expose_secret())
        .await
        .unwrap();
}

async fn wrong_secret_is_rejected_after_one_bcrypt_verify(h: Harness) {
    let created = create(&h.service, "acme", "ci", None).await;
    // Same id, valid checksum, different secret.
    let forged = Token::from_parts(created.info.id, "AAAAAAAAAAAAAAAAAAAAAAAA");
    let err = h
        .service
        .validate_token(forged.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongSecret), "{err:?}");
    assert!(err.is_invalid_token());
    assert_eq!(h.service.bcrypt_verifications(), 1);
}

async fn unknown_or_malformed_tokens_never_reach_bcrypt(h: Harness) {
    create(&h.service, "acme", "ci", None).await;
    let unknown = Token::generate().unwrap();
    let err = h
        .service
        .validate_token(unknown.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotFound), "{err:?}");

    let mut typo = unknown.expose_secret().to_owned();
    typo.replace_range(30..31, if &typo[30..31] == "x" { "y" } else { "x" });
    for bad in [
        "",
        "Bearer",
        "mk_",
        "sk_live_123",
        &typo,
        &"mk_".repeat(10_000),
    ] {
        let err = h.service.validate_token(bad).await.unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidFormat(_)),
            "{bad:.20}: {err:?}"
        );
        assert!(err.is_invalid_token());
    }
    assert_eq!(h.service.bcrypt_verifications(), 0);
}

async fn revoked_token_is_rejected(h: Harness) {
    let created = create(&h.service, "acme", "ci", None).await;
    let info = h
        .service
        .revoke_token(created.info.id, "acme")
        .await
        .unwrap();
    assert_eq!(info.status, TokenStatus::Revoked);
    assert!(info.revoked_at.is_some());
    let err = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Revoked), "{err:?}");
    assert_eq!(h.service.bcrypt_verifications(), 0);
    // Soft delete: the record is still listed.
    let listed = h.service.list_tokens("acme").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, TokenStatus::Revoked);
}

async fn expired_token_is_rejected(h: Harness) {
    let created = create(&h.service, "acme", "ci", Some(1)).await;
    h.clock.advance(DAY - 1);
    h.service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    h.clock.advance(1);
    let err = h
        .service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Expired), "{err:?}");
    assert_eq!(
        h.service.bcrypt_verifications(),
        1,
        "bcrypt ran for the expired token"
    );
    let info = h.service.get_token(created.info.id, "acme").await.unwrap();
    assert_eq!(info.status, TokenStatus::Expired);
}

async fn list_shows_only_the_accounts_tokens_and_no_hash(h: Harness) {
    let a1 = create(&h.service, "acme", "first", None).await;
    h.clock.advance(1);
    let a2 = create(&h.service, "acme", "second", Some(7)).await;
    let other = create(&h.service, "globex", "theirs", None).await;

    let listed = h.service.list_tokens("acme").await.unwrap();
    let ids: Vec<_> = listed.iter().map(|t| t.id).collect();
    assert_eq!(
        ids,
        vec![a1.info.id, a2.info.id],
        "oldest first, only acme's"
    );
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("hash") && !json.contains("$2"), "{json}");
    for token in [&a1.token, &a2.token, &other.token] {
        assert!(!json.contains(&token.expose_secret()[25..49]));
    }
    assert!(h.service.list_tokens("nobody").await.unwrap().is_empty());
}

async fn another_accounts_token_is_not_found(h: Harness) {
    let created = create(&h.service, "acme", "ci", None).await;
    let id = created.info.id;
    let err = h.service.get_token(id, "globex").await.unwrap_err();
    assert!(matches!(err, TokenError::NotFound), "{err:?}");
    let err = h.service.revoke_token(id, "globex").await.unwrap_err();
    assert!(matches!(err, TokenError::NotFound), "{err:?}");
    // The failed revoke changed nothing.
    h.service
        .validate_token(created.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(
        h.service.get_token(id, "acme").await.unwrap().status,
        TokenStatus::Active
    );
    let unknown = Token::generate().unwrap().id();
    assert!(matches!(
        h.service.get_token(unknown, "acme").await,
        Err(TokenError::NotFound)
    ));
    assert!(matches!(
        h.service.revoke_token(unknown, "acme").await,
        Err(TokenError::NotFound)
    ));
}

async fn revoking_twice_keeps_the_first_time(h: Harness) {
    let created = create(&h.service, "acme", "ci", None).await;
    let first = h
        .service
        .revoke_token(created.info.id, "acme")
        .await
        .unwrap();
    h.clock.advance(60);
    let second = h
        .service
        .revoke_token(created.info.id, "acme")
        .await
        .unwrap();
    assert_eq!(first.revoked_at, second.revoked_at);
    assert_eq!(second.status, TokenStatus::Revoked);
}

async fn cleanup_removes_only_tokens_dead_beyond_retention(h: Harness) {
    let expires_soon = create(&h.service, "acme", "1 day", Some(1)).await;
    let forever = create(&h.service, "acme", "forever", None).await;
    let revoked = create(&h.service, "acme", "revoked", None).await;
    let expires_later = create(&h.service, "globex", "10 days", Some(10)).await;
    h.service
        .revoke_token(revoked.info.id, "acme")
        .await
        .unwrap();

    // Day 32 with 30 days of retention: the cutoff is day 2. Dead by then: the
    // 1-day token (day 1) and the revoked one (day 0). The 10-day token died
    // on day 10, inside the retention, so it stays for now.
    h.clock.advance(32 * DAY);
    let removed = h
        .service
        .cleanup_expired(Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<_> = h
        .service
        .list_tokens("acme")
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left, vec![forever.info.id]);
    for gone in [&expires_soon, &revoked] {
        assert!(matches!(
            h.service.get_token(gone.info.id, "acme").await,
            Err(TokenError::NotFound)
        ));
        let err = h
            .service
            .validate_token(gone.token.expose_secret())
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::NotFound), "{err:?}");
    }
    assert_eq!(h.service.list_tokens("globex").await.unwrap().len(), 1);

    // Nothing left to do: a second run removes nothing.
    assert_eq!(
        h.service
            .cleanup_expired(Duration::from_secs(30 * 86_400))
            .await
            .unwrap(),
        0
    );
    // Retention zero takes the 10-day token too.
    assert_eq!(h.service.cleanup_expired(Duration::ZERO).await.unwrap(), 1);
    assert!(h.service.list_tokens("globex").await.unwrap().is_empty());
    let _ = expires_later;
}

async fn input_rules_name_the_field(h: Harness) {
    let params = |account: &str, name: &str, days: Option<u32>| CreateTokenParams {
        account_id: account.into(),
        name: name.into(),
        expires_in_days: days,
        scopes: Default::default(),
        allowed_ips: Default::default(),
        meta: Default::default(),
        quota: None,
        rate_limit: None,
    };
    let cases = [
        (params("", "n", None), "account_id"),
        (params("   ", "n", None), "account_id"),
        (params(&"a".repeat(129), "n", None), "account_id"),
        (params("acme\n", "n", None), "account_id"),
        (params(" acme", "n", None), "account_id"),
        (params("acme ", "n", None), "account_id"),
        (params("é", "n", None), "account_id"),
        (params("acme", "", None), "name"),
        (params("acme", &"n".repeat(257), None), "name"),
        (params("acme", "bell\u{7}", None), "name"),
        (params("acme", "n", Some(0)), "expires_in_days"),
        (params("acme", "n", Some(3651)), "expires_in_days"),
    ];
    for (p, field) in cases {
        match h.service.create_token(p.clone()).await {
            Err(TokenError::InvalidInput { field: f, .. }) => assert_eq!(f, field, "{p:?}"),
            other => panic!("{p:?} gave {other:?}"),
        }
    }
    assert!(h.service.list_tokens("").await.is_err());
    // The limits themselves are allowed; names count characters, not bytes.
    h.service
        .create_token(params(&"a".repeat(128), &"ñ".repeat(256), Some(3650)))
        .await
        .unwrap();
    h.service
        .create_token(params("acme", "n", Some(1)))
        .await
        .unwrap();
}

async fn last_accessed_never_moves_backwards(h: Harness) {
    let created = create(&h.service, "acme", "ci", None).await;
    let id = created.info.id;
    let last = |h: &Harness| {
        let service = h.service.clone();
        async move { service.get_token(id, "acme").await.unwrap().last_accessed }
    };
    assert_eq!(last(&h).await, None);
    h.service.update_last_accessed(id, 1_000).await.unwrap();
    assert_eq!(last(&h).await, Some(1_000));
    h.service.update_last_accessed(id, 500).await.unwrap();
    assert_eq!(last(&h).await, Some(1_000));
    h.service.update_last_accessed(id, 2_000).await.unwrap();
    assert_eq!(last(&h).await, Some(2_000));
    // An unknown (or deleted) token is not brought back to life.
    let unknown = Token::generate().unwrap().id();
    h.service
        .update_last_accessed(unknown, 3_000)
        .await
        .unwrap();
    assert!(h.service.store().get(unknown).await.unwrap().is_none());
}

/// A token of `acme` with a quota of `remaining` credits and `refill`.
async fn metered(h: &Harness, remaining: u64, refill: Option<Refill>) -> CreatedToken {
    h.service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "metered".into(),
            quota: Some(QuotaParams { remaining, refill }),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The same ledger on both stores (Lua and Rust run the same calendar):
/// credits handed out at most once, given back only within their period,
/// and set back to the refill amount on schedule, daily or monthly.
async fn quota_credits_are_handed_out_once_and_refill_on_schedule(h: Harness) {
    let daily = Refill {
        amount: 10,
        interval: RefillInterval::Every(DAY as u64),
    };
    let created = metered(&h, 10, Some(daily)).await;
    let (id, start) = (created.info.id, created.info.created_at);
    let quota = created.info.quota.unwrap();
    assert_eq!(
        (
            quota.remaining,
            quota.refill,
            quota.refilled_at,
            quota.next_refill_at
        ),
        (10, Some(daily), start, Some(start + DAY))
    );
    let store = h.service.store();
    let h = &h;
    let lease = |want| async move {
        let lease = store.lease_credits(id, want, h.clock_now()).await;
        lease.unwrap().unwrap()
    };
    let first = lease(4).await;
    assert_eq!((first.granted, first.remaining), (4, 6));
    assert_eq!(lease(100).await.granted, 6, "never more than is left");
    assert_eq!(lease(1).await.granted, 0);
    store.return_credits(id, 3, first.period).await.unwrap();
    let get = || async {
        h.service
            .get_token(id, "acme")
            .await
            .unwrap()
            .quota
            .unwrap()
    };
    assert_eq!(get().await.remaining, 3);

    // A day later: back to 10 (not 13: credits do not roll over), in a new
    // period into which the old period's credits cannot be given back.
    h.clock.advance(DAY + 5);
    assert_eq!(get().await.remaining, 10);
    let refilled = lease(1).await;
    assert_eq!(refilled.period, first.period + 1);
    assert_eq!(refilled.next_refill, Some(start + 2 * DAY));
    store.return_credits(id, 5, first.period).await.unwrap();
    assert_eq!(get().await.remaining, 9);

    // Removed: unlimited. Set again, monthly: a new period from now, the
    // next refill on the first of next month (the test clock starts on
    // 2026-01-01).
    let info = h.service.set_quota(id, "acme", None).await.unwrap();
    assert_eq!(info.quota, None);
    assert_eq!(
        store.lease_credits(id, 1, h.clock_now()).await.unwrap(),
        None
    );
    let monthly = Refill {
        amount: 5,
        interval: RefillInterval::Month,
    };
    let quota = QuotaParams {
        remaining: 2,
        refill: Some(monthly),
    };
    let info = h.service.set_quota(id, "acme", Some(quota)).await.unwrap();
    let feb_1 = 1_769_904_000;
    assert_eq!(info.quota.unwrap().next_refill_at, Some(feb_1));
    assert_eq!(lease(5).await.granted, 2);
    h.clock.advance(feb_1 - h.clock_now());
    let february = lease(9).await;
    assert_eq!(
        (february.granted, february.next_refill),
        (5, Some(1_772_323_200))
    );

    // Another account's token, and bad quotas.
    assert!(matches!(
        h.service.set_quota(id, "other", Some(quota)).await,
        Err(TokenError::NotFound)
    ));
    let zero_refill = QuotaParams {
        remaining: 1,
        refill: Some(Refill {
            amount: 0,
            ..monthly
        }),
    };
    let e = h
        .service
        .set_quota(id, "acme", Some(zero_refill))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("quota.refill.amount"), "{e}");
}

/// A server key (`TOKENGATE_HASH_KEY`) for the HMAC tests.
fn hash_key() -> HashKey {
    HashKey::new(b"0123456789abcdef0123456789abcdef-test".to_vec())
}

/// The token's stored hash: from the Redis hash field itself on Redis
/// (what a dump shows), from the store otherwise.
async fn stored_hash(h: &Harness, id: tokengate::TokenId) -> String {
    if let Some(server) = &h.redis {
        let mut conn = server.connection().await;
        let hash: String =
            redis::AsyncCommands::hget(&mut conn, format!("tokengate:token:{id}"), "hash")
                .await
                .unwrap();
        return hash;
    }
    h.service.store().get(id).await.unwrap().unwrap().hash
}

async fn hmac_tokens_validate_without_bcrypt_and_store_no_usable_value(h: Harness) {
    let service = h.service.clone().with_hmac(hash_key());
    let created = create(&service, "acme", "ci", None).await;
    let token = created.token.expose_secret();
    let auth = service.validate_token(token).await.unwrap();
    assert_eq!(auth.token_id, created.info.id);
    assert_eq!(
        (service.bcrypt_verifications(), service.hmac_verifications()),
        (0, 1)
    );

    let hash = stored_hash(&h, created.info.id).await;
    assert!(
        hash.starts_with(&format!("hmac-sha256${}$", hash_key().id())),
        "{hash}"
    );
    // Neither the token nor its secret is anywhere in the store, and the
    // one value derived from it is keyed: without the key it tells nothing.
    let secret = &token[25..49];
    if let Some(server) = &h.redis {
        for (key, value) in server.dump().await {
            assert!(
                !value.contains(secret) && !key.contains(secret),
                "{key}: {value}"
            );
        }
    }
    assert!(!hash.contains(secret));

    // A wrong secret for the id is a wrong secret, with no bcrypt either.
    let forged = Token::from_parts(created.info.id, "AAAAAAAAAAAAAAAAAAAAAAAA");
    let err = service
        .validate_token(forged.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongSecret), "{err:?}");
    assert_eq!(service.bcrypt_verifications(), 0);
}

/// Waits (the rehash runs in the background) until `id`'s stored hash
/// starts with `prefix`.
async fn wait_for_hash(h: &Harness, id: tokengate::TokenId, prefix: &str) -> String {
    for _ in 0..200 {
        let hash = stored_hash(h, id).await;
        if hash.starts_with(prefix) {
            return hash;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the hash of {id} never became {prefix}…: {}",
        stored_hash(h, id).await
    );
}

async fn bcrypt_tokens_are_rehashed_to_hmac_on_their_first_successful_use(h: Harness) {
    // Made before the switch: bcrypt.
    let used = create(&h.service, "acme", "used", None).await;
    let revoked = create(&h.service, "acme", "revoked", None).await;
    let forged_only = create(&h.service, "acme", "forged", None).await;
    h.service
        .revoke_token(revoked.info.id, "acme")
        .await
        .unwrap();
    for created in [&used, &revoked, &forged_only] {
        assert!(stored_hash(&h, created.info.id).await.starts_with("$2"));
    }

    // The switch: same store, new tokens HMAC, both kinds read.
    let hmac = h.service.clone().with_hmac(hash_key());
    let token = used.token.expose_secret();
    hmac.validate_token(token).await.unwrap();
    assert_eq!(hmac.bcrypt_verifications(), 1);
    let hash = wait_for_hash(&h, used.info.id, "hmac-sha256$").await;
    assert_eq!(hash, hash_key().hash(token));
    // From now on the token costs an HMAC, not a bcrypt.
    hmac.validate_token(token).await.unwrap();
    assert_eq!(
        (hmac.bcrypt_verifications(), hmac.hmac_verifications()),
        (1, 1)
    );

    // Never for a revoked token, nor for a wrong secret.
    let err = hmac
        .validate_token(revoked.token.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Revoked), "{err:?}");
    let forged = Token::from_parts(forged_only.info.id, "AAAAAAAAAAAAAAAAAAAAAAAA");
    let err = hmac
        .validate_token(forged.expose_secret())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongSecret), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for created in [&revoked, &forged_only] {
        assert!(stored_hash(&h, created.info.id).await.starts_with("$2"));
    }
    // The revoked record keeps its hash even if asked to change it.
    let old = stored_hash(&h, revoked.info.id).await;
    let store = h.service.store();
    assert!(
        !store
            .replace_hash(revoked.info.id, &old, "x")
            .await
            .unwrap()
    );
    // And a compare-and-set: only from the hash the caller verified.
    let current = stored_hash(&h, forged_only.info.id).await;
    assert!(
        !store
            .replace_hash(forged_only.info.id, "$2b$stale", "x")
            .await
            .unwrap()
    );
    assert_eq!(stored_hash(&h, forged_only.info.id).await, current);

    // And back: with hash = "bcrypt" and the key still set, the HMAC
    // record validates and is rehashed to bcrypt.
    let back = h.service.clone().with_hash_key(hash_key());
    back.validate_token(token).await.unwrap();
    assert_eq!(back.hmac_verifications(), 2);
    wait_for_hash(&h, used.info.id, "$2").await;
    back.validate_token(token).await.unwrap();
}

async fn hmac_records_under_another_key_or_none_fail_closed(h: Harness) {
    let service = h.service.clone().with_hmac(hash_key());
    let created = create(&service, "acme", "ci", None).await;
    let token = created.token.expose_secret();

    let other_key = HashKey::new(b"another key, also 32 bytes or more".to_vec());
    let elsewhere = h.service.clone().with_hmac(other_key.clone());
    let err = elsewhere.validate_token(token).await.unwrap_err();
    assert!(matches!(err, TokenError::HashKey(_)), "{err:?}");
    assert!(!err.is_invalid_token(), "a server fault, not the client's");
    let message = err.to_string();
    assert!(
        message.contains(hash_key().id()) && message.contains(other_key.id()),
        "{message}"
    );

    let keyless = h.service.clone();
    let err = keyless.validate_token(token).await.unwrap_err();
    assert!(matches!(err, TokenError::HashKey(_)), "{err:?}");
    assert!(
        err.to_string().contains("TOKENGATE_HASH_KEY is not set"),
        "{err}"
    );
    // Nothing was rewritten by the failed attempts.
    assert_eq!(
        stored_hash(&h, created.info.id).await,
        hash_key().hash(token)
    );
}

/// The new token's quota refills on the old one's schedule (not a period
/// restarted at the rotation), a grace under a second is a second (not a
/// revocation), and the audit trail tells both sides.
async fn rotation_keeps_the_quota_schedule_and_rounds_the_grace_up(h: Harness) {
    let refill = Refill {
        amount: 100,
        interval: RefillInterval::Every(DAY as u64),
    };
    let created = h
        .service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "metered".into(),
            expires_in_days: Some(30),
            quota: Some(QuotaParams {
                remaining: 40,
                refill: Some(refill),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    h.clock.advance(3_600);
    let rotated = h
        .service
        .rotate_token(created.info.id, "acme", Duration::from_millis(500))
        .await
        .unwrap();
    let (old, new) = (&rotated.old, &rotated.new.info);
    let quota = new.quota.unwrap();
    assert_eq!(quota.remaining, 40);
    assert_eq!(quota.refilled_at, created.info.created_at, "same schedule");
    assert_eq!(quota.next_refill_at, Some(created.info.created_at + DAY));
    assert_eq!(old.status, TokenStatus::Active, "not revoked");
    assert_eq!(old.expires_at, Some(created.info.created_at + 3_600 + 1));
    assert_eq!(new.expires_at, created.info.expires_at);
    assert_eq!(new.rotated_from, Some(old.id));
    // Both tokens work during the grace; the old one not after it.
    let secret = rotated.new.token.expose_secret();
    assert!(h.service.validate_token(secret).await.is_ok());
    let old_secret = created.token.expose_secret();
    assert!(h.service.validate_token(old_secret).await.is_ok());
    h.clock.advance(1);
    assert!(matches!(
        h.service.validate_token(old_secret).await,
        Err(TokenError::Expired)
    ));
    let trail = h
        .service
        .read_audit(&tokengate::AuditQuery {
            account: Some("acme".into()),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    let actions: Vec<_> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["create", "create", "rotate"]);
    assert_eq!(trail.entries[2].changes["grace_seconds"], 1);
    assert_eq!(trail.entries[2].actor.kind, "library");
}
