use std::sync::Arc;

use super::*;
use crate::service::{Clock, CreateTokenParams, TokenUpdate};
use crate::store::MemoryStore;
use crate::token::Scopes;

struct Fixed(std::sync::atomic::AtomicI64);

impl Clock for Fixed {
    fn now(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

async fn token(service: &TokenService, scopes: &[&str], days: Option<u32>) -> TokenId {
    service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "t".into(),
            expires_in_days: days,
            scopes: Scopes::new(scopes.iter().copied()).unwrap(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            quota: None,
            rate_limit: None,
        })
        .await
        .unwrap()
        .info
        .id
}

fn needed(scopes: &[&str]) -> Arc<[String]> {
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

async fn within_a_second(watch: &mut TokenWatch) -> Option<Ended> {
    tokio::time::timeout(Duration::from_secs(1), watch.ended())
        .await
        .ok()
}

#[tokio::test]
async fn a_revocation_ends_every_watch_of_the_token_and_no_other() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let sessions = Arc::new(Sessions::new(service.clone()));
    let (a, b) = (
        token(&service, &[], None).await,
        token(&service, &[], None).await,
    );
    let mut first = sessions.open(a, needed(&[]), None, None);
    let mut second = sessions.open(a, needed(&[]), None, None);
    let mut other = sessions.open(b, needed(&[]), None, None);
    assert_eq!(sessions.ids().len(), 2);
    sessions.revoked(a);
    assert_eq!(within_a_second(&mut first).await, Some(Ended::Revoked));
    assert_eq!(within_a_second(&mut second).await, Some(Ended::Revoked));
    assert_eq!(within_a_second(&mut other).await, None);
    drop((first, second));
    assert_eq!(sessions.ids(), vec![b]);
}

#[tokio::test]
async fn a_change_is_judged_by_the_record() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let sessions = Arc::new(Sessions::new(service.clone()));
    let id = token(&service, &["orders:read", "reports:read"], None).await;
    let mut orders = sessions.open(id, needed(&["orders:read"]), None, None);
    let mut reports = sessions.open(id, needed(&["reports:read"]), None, None);
    let update = TokenUpdate {
        scopes: Some(Scopes::new(["orders:*"]).unwrap()),
        ..TokenUpdate::default()
    };
    service.update_token(id, "acme", update).await.unwrap();
    sessions.changed(id);
    assert_eq!(
        within_a_second(&mut reports).await,
        Some(Ended::InsufficientScope)
    );
    assert_eq!(within_a_second(&mut orders).await, None);
    let disable = TokenUpdate {
        enabled: Some(false),
        ..TokenUpdate::default()
    };
    service.update_token(id, "acme", disable).await.unwrap();
    sessions.changed(id);
    assert_eq!(within_a_second(&mut orders).await, Some(Ended::Disabled));
}

#[tokio::test]
async fn expiry_ends_a_watch_at_its_second() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let sessions = Arc::new(Sessions::new(service.clone()));
    let id = token(&service, &[], None).await;
    let mut watch = sessions.open(id, needed(&[]), None, None);
    let at = service.now() + 2;
    let update = TokenUpdate {
        expires_at: Some(Some(at)),
        ..TokenUpdate::default()
    };
    service.update_token(id, "acme", update).await.unwrap();
    sessions.changed(id);
    let ended = tokio::time::timeout(Duration::from_secs(3), watch.ended()).await;
    assert_eq!(ended, Ok(Ended::Expired));
    assert!(service.now() >= at, "ended before its expiry");
}

#[tokio::test]
async fn a_record_read_after_a_change_judges_expiry_by_the_service_clock() {
    let clock = Arc::new(Fixed(std::sync::atomic::AtomicI64::new(1_000_000)));
    let service = TokenService::new(Arc::new(MemoryStore::new()))
        .with_bcrypt_cost(4)
        .with_clock(clock.clone());
    let sessions = Arc::new(Sessions::new(service.clone()));
    let id = token(&service, &[], Some(1)).await;
    let mut watch = sessions.open(id, needed(&[]), None, None);
    assert_eq!(within_a_second(&mut watch).await, None);
    clock.0.fetch_add(86_400, Ordering::Relaxed);
    sessions.changed(id);
    assert_eq!(within_a_second(&mut watch).await, Some(Ended::Expired));
}

#[tokio::test]
async fn has_ended_tells_without_waiting() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let sessions = Arc::new(Sessions::new(service.clone()));
    let id = token(&service, &[], None).await;
    let watch = sessions.open(id, needed(&[]), None, None);
    assert_eq!(watch.has_ended(), None);
    sessions.revoked(id);
    assert_eq!(watch.has_ended(), Some(Ended::Revoked));
    let expired = sessions.open(id, needed(&[]), None, Some(service.now() - 1));
    assert_eq!(expired.has_ended(), Some(Ended::Expired));
}

/// Two reads finishing out of order: the older one is not applied over
/// the newer (a shortened expiry is not undone).
#[tokio::test]
async fn an_older_read_never_overrides_a_newer_one() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let id = token(&service, &[], None).await;
    let mut record = service.store().get(id).await.unwrap().unwrap();
    let (state, receiver) = watch::channel(State::Open { expires_at: None });
    let entry = Entry {
        needed: needed(&[]),
        client: None,
        state,
        judged: AtomicU64::new(0),
    };
    let now = service.now();
    record.expires_at = Some(now + 10);
    entry.judge(&record, now, 2);
    record.expires_at = None;
    entry.judge(&record, now, 1);
    assert_eq!(
        *receiver.borrow(),
        State::Open {
            expires_at: Some(now + 10)
        }
    );
    entry.judge(&record, now, 3);
    assert_eq!(*receiver.borrow(), State::Open { expires_at: None });
}

#[tokio::test]
async fn stopping_ends_every_watch() {
    let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
    let sessions = Arc::new(Sessions::new(service.clone()));
    let id = token(&service, &[], None).await;
    let mut watch = sessions.open(id, needed(&[]), None, None);
    sessions.stop();
    assert_eq!(within_a_second(&mut watch).await, Some(Ended::Stopped));
}
