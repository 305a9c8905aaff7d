//! The TokenService suite, run twice: on a real redis-server and on the
//! embedded in-memory store. Both must behave the same.

mod support;

use std::time::Duration;

use support::{DAY, Harness};
use tokengate::{
    CreateTokenParams, CreatedToken, QuotaParams, Refill, RefillInterval, Token, TokenError,
    TokenService, TokenStatus,
};

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
            quota: None,
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
        quota: None,
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

/// The same ledger on both stores (Lua and Rust run the same calendar):
/// credits handed out at most once, given back only within their period,
/// and set back to the refill amount on schedule, daily or monthly.
async fn quota_credits_are_handed_out_once_and_refill_on_schedule(h: Harness) {
    let daily = Refill {
        amount: 10,
        interval: RefillInterval::Every(DAY as u64),
    };
    let created = h
        .service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "metered".into(),
            expires_in_days: None,
            quota: Some(QuotaParams {
                remaining: 10,
                refill: Some(daily),
            }),
        })
        .await
        .unwrap();
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
