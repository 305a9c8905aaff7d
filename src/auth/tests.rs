/// Every request's future is built, moved into the Layer's box and
/// polled: its size is copied on each request (memmove was 13-15% of a
/// cache hit's profile, docs/design/performance.md). Rarely used awaits are
/// boxed, and the cache holds its entries behind an `Arc`, to keep it
/// small; this keeps them so, a little above their sizes today. The check
/// holds what a front door keeps to watch a connection that outlives the
/// request (`Grant`: the admission hands the client address back rather
/// than the check keeping a copy).
#[tokio::test]
async fn the_request_future_stays_small() {
    let service =
        crate::service::TokenService::new(std::sync::Arc::new(crate::store::MemoryStore::new()));
    let auth = super::Authenticator::new(service, &super::AuthConfig::default()).unwrap();
    let admit = auth.admit("x", None, &[]);
    let size = std::mem::size_of_val(&admit);
    assert!(size <= 1_100, "the admission future grew to {size} bytes");
    drop(admit);
    let (m, u, h) = (
        http::Method::GET,
        http::Uri::from_static("/"),
        http::HeaderMap::new(),
    );
    let check = auth.check(super::AuthRequest {
        method: &m,
        uri: &u,
        headers: &h,
        peer: None,
    });
    let size = std::mem::size_of_val(&check);
    assert!(size <= 1_270, "the check future grew to {size} bytes");
}
