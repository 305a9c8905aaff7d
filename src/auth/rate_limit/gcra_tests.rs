use super::gcra::GcraState;
use super::*;
use crate::store::LimitState;

const MS: Nanos = 1_000_000;

/// 10 per second (one per 100 ms), burst 3.
pub(super) fn policy() -> Policy {
    Policy::new(
        "token",
        10,
        Duration::from_secs(1),
        3,
        Duration::from_secs(1),
    )
    .unwrap()
}

#[test]
fn a_limiter_admits_its_burst_then_one_per_interval() {
    let (policy, mut gcra) = (policy(), GcraState::default());
    let start = 1_000 * MS;
    for _ in 0..3 {
        assert_eq!(gcra.admit(&policy, start), Ok(()));
    }
    assert_eq!(gcra.admit(&policy, start), Err(100 * MS));
    assert_eq!(gcra.admit(&policy, start + 60 * MS), Err(40 * MS));
    assert_eq!(gcra.admit(&policy, start + 100 * MS), Ok(()));
    assert!(gcra.admit(&policy, start + 100 * MS).is_err());
    // Idle for its whole burst: full again, and no more than full.
    let later = start + 10_000 * MS;
    for _ in 0..3 {
        assert_eq!(gcra.admit(&policy, later), Ok(()));
    }
    assert!(gcra.admit(&policy, later).is_err());
    assert_eq!(gcra.unreported, 7);
}

#[test]
fn the_fleet_state_and_the_others_share_hold_a_replica_back() {
    let (policy, mut gcra) = (policy(), GcraState::default());
    let start = 1_000 * MS;
    assert_eq!(gcra.admit(&policy, start), Ok(()));
    // The fleet has run 150 ms ahead (this replica's one included): one
    // more request fits in the 300 ms tolerance, not two.
    let first = LimitState {
        ahead_us: 150_000,
        counted: 10,
    };
    let reported = std::mem::take(&mut gcra.unreported);
    gcra.learn(&policy, reported, first, start, start);
    assert_eq!(gcra.others, 0.0, "no share is known before a second report");
    assert_eq!(gcra.admit(&policy, start), Ok(()));
    assert!(gcra.admit(&policy, start).is_err());
    // A second later the others had admitted 5 requests, half of the
    // limit: this replica now assumes they go on at that pace, so it
    // gets one request per 200 ms instead of one per 100 ms.
    let now = start + 1_000 * MS;
    let second = LimitState {
        ahead_us: 300_000,
        counted: 10 + 1 + 5,
    };
    let reported = std::mem::take(&mut gcra.unreported);
    assert_eq!(reported, 1);
    gcra.learn(&policy, reported, second, now, now);
    assert!((gcra.others - 0.5).abs() < 1e-9, "{}", gcra.others);
    assert!(gcra.admit(&policy, now).is_err());
    assert!(gcra.admit(&policy, now + 100 * MS).is_err());
    assert_eq!(gcra.admit(&policy, now + 200 * MS), Ok(()));
    assert!(gcra.admit(&policy, now + 300 * MS).is_err());
    assert_eq!(gcra.admit(&policy, now + 400 * MS), Ok(()));
    // After a long pause the others' pace is not extrapolated over all
    // of it (two rounds at most): admitted at once, not refused for the
    // 50 s that half of a 100 s pause would add.
    let mut paused = GcraState { ..gcra };
    assert_eq!(paused.admit(&policy, now + 100_000 * MS), Ok(()));
    // Without the store, it decides alone again: the full rate.
    gcra.alone();
    assert_eq!(gcra.admit(&policy, now + 500 * MS), Ok(()));
    assert_eq!(gcra.admit(&policy, now + 600 * MS), Ok(()));
}

#[test]
fn the_account_limit_spans_tokens_and_a_refusal_costs_the_token_nothing() {
    let limits = Limits::new(
        &RateLimitConfig {
            per_token_requests: 1,
            per_token_period: Duration::from_secs(60),
            per_token_burst: 2,
            per_account_requests: 1,
            per_account_period: Duration::from_secs(60),
            per_account_burst: 3,
            ..RateLimitConfig::default()
        },
        false,
    );
    let (a, b) = (
        TokenId::from_uuid(uuid::Uuid::from_u128(1)),
        TokenId::from_uuid(uuid::Uuid::from_u128(2)),
    );
    assert!(limits.check(a, "acme", None).is_ok());
    assert!(limits.check(a, "acme", None).is_ok());
    assert!(limits.check(b, "acme", None).is_ok());
    let Err(Rejection::RateLimited { policy, .. }) = limits.check(b, "acme", None) else {
        panic!("the account's fourth request must be refused");
    };
    assert_eq!(policy, "account");
    // Another account is not held back; b's own refusal by the account
    // limit did not spend b's token allowance.
    assert!(limits.check(b, "other", None).is_ok());
    let Err(Rejection::RateLimited { policy, .. }) = limits.check(a, "other", None) else {
        panic!("token a has spent its burst");
    };
    assert_eq!(policy, "token");
}

#[test]
fn a_token_limiter_lives_until_its_burst_refilled() {
    let limit = |requests, period, burst| TokenRateLimit {
        requests,
        period: Duration::from_secs(period),
        burst,
    };
    assert_eq!(
        OwnRefill::refill(&limit(1, 86_400, 1)),
        Duration::from_secs(86_400)
    );
    assert_eq!(
        OwnRefill::refill(&limit(10, 60, 20)),
        Duration::from_secs(120)
    );
    assert_eq!(
        OwnRefill::refill(&limit(1000, 1, 10)),
        Duration::from_secs(1)
    );
}

#[test]
fn a_token_with_its_own_limit_is_held_to_it_alone() {
    // No configured token limit: only the token's own applies.
    let limits = Limits::new(
        &RateLimitConfig {
            per_token_requests: 0,
            ..RateLimitConfig::default()
        },
        false,
    );
    let (a, b) = (
        TokenId::from_uuid(uuid::Uuid::from_u128(1)),
        TokenId::from_uuid(uuid::Uuid::from_u128(2)),
    );
    let own = TokenRateLimit {
        requests: 1,
        period: Duration::from_secs(60),
        burst: 2,
    };
    assert!(limits.check(a, "acme", Some(&own)).is_ok());
    assert!(limits.check(a, "acme", Some(&own)).is_ok());
    let Err(Rejection::RateLimited { policy, quota, .. }) = limits.check(a, "acme", Some(&own))
    else {
        panic!("a's own burst of 2 is spent");
    };
    assert_eq!((policy, quota), ("token", 1));
    for _ in 0..1_000 {
        assert!(limits.check(b, "acme", None).is_ok(), "b has no limit");
    }
    // A configured limit is replaced, not added to.
    let limits = Limits::new(
        &RateLimitConfig {
            per_token_requests: 1,
            per_token_period: Duration::from_secs(60),
            per_token_burst: 1,
            ..RateLimitConfig::default()
        },
        false,
    );
    let generous = TokenRateLimit {
        requests: 100,
        period: Duration::from_secs(1),
        burst: 100,
    };
    for _ in 0..50 {
        assert!(limits.check(a, "acme", Some(&generous)).is_ok());
    }
    assert!(limits.check(b, "acme", None).is_ok());
    assert!(limits.check(b, "acme", None).is_err());
}
