use super::input::check_account_id;
use super::*;
use crate::store::TokenRecord;
use crate::token::{AllowedIps, Meta, Scopes};

#[test]
fn bcrypt_leaves_a_core_to_cached_requests_by_default() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(default_bcrypt_concurrency(), (cpus - 1).max(1));
}

#[test]
fn account_ids_are_a_safe_set() {
    for good in [
        "acme",
        "org:acme",
        "a.b-c_d",
        "user+tag@example.com",
        "ZW5j=",
        &"a".repeat(128),
    ] {
        assert!(check_account_id(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        " acme",
        "acme ",
        "ac me",
        "\tacme",
        "a,b",
        "a;b",
        "a/b",
        "a\"b",
        "é",
        "a\u{a0}",
        &"a".repeat(129),
    ] {
        let err = check_account_id(bad).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid account_id: "),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn text_rules_name_the_field() {
    assert!(check_text("name", "ok", 4).is_ok());
    assert!(check_text("name", "four", 4).is_ok());
    assert!(check_text("name", "ééééé", 4).is_err());
    for bad in ["", "  ", "a\nb", "tab\there", "nul\0"] {
        let err = check_text("account_id", bad, 10).unwrap_err();
        assert!(err.to_string().starts_with("invalid account_id: "), "{err}");
    }
}

#[test]
fn status_prefers_revoked_over_expired() {
    let record = TokenRecord {
        id: TokenId::from_uuid(uuid::Uuid::nil()),
        account_id: "a".into(),
        name: "n".into(),
        hash: String::new(),
        created_at: 0,
        updated_at: 0,
        expires_at: Some(10),
        last_accessed: None,
        revoked_at: Some(20),
        quota: None,
        scopes: Scopes::default(),
        disabled_at: None,
        allowed_ips: AllowedIps::default(),
        meta: Meta::default(),
        rotated_from: None,
        rotated_to: None,
        rate_limit: None,
    };
    assert_eq!(
        TokenInfo::from_record(record.clone(), 30).status,
        TokenStatus::Revoked
    );
    let active = TokenRecord {
        revoked_at: None,
        quota: None,
        ..record
    };
    assert_eq!(
        TokenInfo::from_record(active.clone(), 9).status,
        TokenStatus::Active
    );
    assert_eq!(
        TokenInfo::from_record(active, 10).status,
        TokenStatus::Expired
    );
}
