//! Authentication benchmarks: what a request costs to check.
//!
//! - `layer/cached`: a request with a cached valid token through
//!   [`TokenGateLayer`] around a no-op service, beside `layer/no-auth
//!   baseline`, the same service without the layer, and `layer/cached,
//!   scopes + 50 routes`, a token with scopes on a path of a 50-route
//!   `[[routes]]` table.
//! - `miss/memory bcrypt4`: a cache miss, i.e. `TokenService::validate_token`
//!   on the in-memory store at bcrypt cost 4 (one store read by id and one
//!   bcrypt verify); `miss/layer bcrypt4 (fresh token)` is a miss through the
//!   layer, each iteration presenting a token never seen before;
//!   `miss/memory hmac-sha256` the same miss with the token hashed by
//!   HMAC-SHA256 under a server key (`[security] hash = "hmac-sha256"`),
//!   and `miss/memory bcrypt10` at the default cost, the cost a restarted
//!   replica pays per active token.
//! - `lookup/ours/N` beside `lookup/seed/N` for N = 10, 100, 1,000 stored
//!   tokens: our lookup by the id inside the token, against the seed's design
//!   of comparing the presented token with every stored bcrypt hash in turn
//!   (worst case: the match is the last hash, which is also what every
//!   invalid token costs).
//!
//! Run: `cargo bench --bench auth`. See `docs/design/performance.md`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokengate::hashing::HashKey;
use tokengate::{
    AuthConfig, Authenticator, CreateTokenParams, MemoryStore, TokenGateLayer, TokenService,
};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

/// bcrypt cost for every benchmark here: the lowest bcrypt allows.
const COST: u32 = 4;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A service over a fresh in-memory store at bcrypt cost 4.
fn memory_service() -> TokenService {
    TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(COST)
}

/// The default configuration, with the per-token rate limit raised out of
/// reach (the limiter still runs on every request) and the cache TTL at its
/// maximum, so a benchmark measures admitted, cached requests.
fn bench_config() -> AuthConfig {
    let mut config = AuthConfig::default();
    config.rate_limit.per_token_requests = 1_000_000;
    config.rate_limit.per_token_period = Duration::from_millis(1);
    config.rate_limit.per_token_burst = 10_000_000;
    config.cache.ttl = Duration::from_secs(3_600);
    config
}

async fn create(service: &TokenService, name: &str) -> String {
    create_scoped(service, name, &[]).await
}

async fn create_scoped(service: &TokenService, name: &str, scopes: &[&str]) -> String {
    service
        .create_token(CreateTokenParams {
            account_id: "bench".into(),
            name: name.into(),
            expires_in_days: None,
            scopes: tokengate::Scopes::new(scopes.iter().copied()).expect("scopes"),
            allowed_ips: Default::default(),
            meta: Default::default(),
            quota: None,
            rate_limit: None,
        })
        .await
        .expect("create token")
        .token
        .expose_secret()
        .to_owned()
}

fn request(bearer: &HeaderValue) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::default());
    request.headers_mut().insert(AUTHORIZATION, bearer.clone());
    request
}

/// A path of an API's, as the route benchmarks use.
const API_PATH: &str = "/svc24/items/7?page=2";

fn request_to(bearer: &HeaderValue, uri: &http::Uri) -> Request<Full<Bytes>> {
    let mut request = request(bearer);
    *request.uri_mut() = uri.clone();
    request
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header value")
}

async fn noop(_request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::default()))
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let service = memory_service();
    let token = rt.block_on(create(&service, "layer"));
    let auth = rt.block_on(async { Authenticator::new(service, &bench_config()) });
    let auth = auth.expect("valid config");
    let bearer = bearer(&token);

    let mut baseline = tower::service_fn(noop);
    let mut gated = TokenGateLayer::new(auth.clone()).layer(tower::service_fn(noop));

    // Warm the cache, and make sure what follows is a 200, not a 401 or 429.
    let status = rt.block_on(async {
        let svc = gated.ready().await.expect("ready");
        svc.call(request(&bearer))
            .await
            .expect("infallible")
            .status()
    });
    assert_eq!(status, StatusCode::OK, "warm-up request was not admitted");
    assert_eq!(auth.stats().bcrypt_verifications, 1);

    let mut group = c.benchmark_group("layer");
    group.bench_function("cached", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = gated.ready().await.expect("ready");
                let response = svc.call(request(&bearer)).await.expect("infallible");
                debug_assert_eq!(response.status(), StatusCode::OK);
                black_box(response)
            })
        })
    });
    // The same token on an API path (the route benchmark's, without
    // routes): the figure `cached, scopes + 50 routes` is compared with.
    let api_path = http::Uri::from_static(API_PATH);
    group.bench_function("cached, API path", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = gated.ready().await.expect("ready");
                let response = svc
                    .call(request_to(&bearer, &api_path))
                    .await
                    .expect("infallible");
                debug_assert_eq!(response.status(), StatusCode::OK);
                black_box(response)
            })
        })
    });
    group.bench_function("no-auth baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = baseline.ready().await.expect("ready");
                black_box(svc.call(request(&bearer)).await.expect("infallible"))
            })
        })
    });

    // Issue 13: the same with 50 `[[routes]]` and a token holding four
    // scopes, on a path that a route in the middle of the table matches
    // (its scope granted by a prefix scope), so the request carries
    // X-Token-Scopes upstream.
    let mut config = bench_config();
    config.routes = (0..50)
        .map(|i| tokengate::auth::ScopedRoute {
            path_prefix: format!("/svc{i}/items"),
            methods: if i % 2 == 0 {
                vec![]
            } else {
                vec!["POST".into()]
            },
            scopes: vec![format!("svc{i}:read")],
            ..Default::default()
        })
        .collect();
    let service = memory_service();
    let scoped = rt.block_on(create_scoped(
        &service,
        "scoped",
        &["svc1:read", "svc24:*", "svc3:read", "reports:read"],
    ));
    let scoped_auth = rt.block_on(async { Authenticator::new(service, &config) });
    let mut scoped_gated =
        TokenGateLayer::new(scoped_auth.expect("valid config")).layer(tower::service_fn(noop));
    let scoped_bearer = self::bearer(&scoped);
    let scoped_request = || request_to(&scoped_bearer, &api_path);
    let status = rt.block_on(async {
        let svc = scoped_gated.ready().await.expect("ready");
        svc.call(scoped_request())
            .await
            .expect("infallible")
            .status()
    });
    assert_eq!(
        status,
        StatusCode::OK,
        "scoped warm-up request was not admitted"
    );
    group.bench_function("cached, scopes + 50 routes", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = scoped_gated.ready().await.expect("ready");
                let response = svc.call(scoped_request()).await.expect("infallible");
                debug_assert_eq!(response.status(), StatusCode::OK);
                black_box(response)
            })
        })
    });
    group.finish();

    // Every benchmarked request was answered from the cache.
    let stats = auth.stats();
    assert_eq!(stats.bcrypt_verifications, 1, "a cached request ran bcrypt");
    assert_eq!(stats.cache_misses, 1, "a cached request missed the cache");
}

fn miss(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("miss");
    // About 1.4 ms an iteration: 100 samples need more than the default 5 s.
    group.measurement_time(Duration::from_secs(8));

    // The miss path itself: parse, one store read by id, revoked / expired
    // checks, one bcrypt verify on the blocking pool.
    let service = memory_service();
    let token = rt.block_on(create(&service, "miss"));
    group.bench_function("memory bcrypt4", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    service
                        .validate_token(black_box(&token))
                        .await
                        .expect("valid"),
                )
            })
        })
    });

    // The same miss with an HMAC-SHA256 record: no blocking pool, no gate.
    let service = TokenService::new(Arc::new(MemoryStore::new()))
        .with_hmac(HashKey::new(b"benchmark key, 32 bytes or more..".to_vec()));
    let token = rt.block_on(create(&service, "miss hmac"));
    group.bench_function("memory hmac-sha256", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    service
                        .validate_token(black_box(&token))
                        .await
                        .expect("valid"),
                )
            })
        })
    });
    assert_eq!(service.bcrypt_verifications(), 0, "an HMAC miss ran bcrypt");

    // And bcrypt at the default cost (10), what every active token costs a
    // restarted replica: ~50 ms an iteration, so few samples.
    let service = TokenService::new(Arc::new(MemoryStore::new()));
    let token = rt.block_on(create(&service, "miss bcrypt10"));
    group.sample_size(10);
    group.bench_function("memory bcrypt10", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    service
                        .validate_token(black_box(&token))
                        .await
                        .expect("valid"),
                )
            })
        })
    });
    group.sample_size(100);

    // The same through the layer: each iteration presents a token created
    // (outside the timing) and never presented before, so it cannot be
    // cached.
    let service = memory_service();
    let auth = rt.block_on(async { Authenticator::new(service.clone(), &bench_config()) });
    let auth = auth.expect("valid config");
    let mut gated = TokenGateLayer::new(auth.clone()).layer(tower::service_fn(noop));
    // Creating each token (outside the timing) doubles the wall time.
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("layer bcrypt4 (fresh token)", |b| {
        b.iter_batched(
            || request(&bearer(&rt.block_on(create(&service, "fresh")))),
            |request| {
                rt.block_on(async {
                    let svc = gated.ready().await.expect("ready");
                    let response = svc.call(request).await.expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                    black_box(response)
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let stats = auth.stats();
    assert_eq!(stats.cache_hits, 0, "a fresh token was found in the cache");
    assert_eq!(stats.cache_misses, stats.bcrypt_verifications);
}

/// The seed's design: no id in the token, so compare it with every stored
/// hash until one matches.
fn seed_lookup(hashes: &[String], presented: &str) -> Option<usize> {
    hashes
        .iter()
        .position(|hash| bcrypt::verify(presented, hash).expect("bcrypt hash"))
}

fn lookup(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("lookup");
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));

    for n in [10_usize, 100, 1_000] {
        let service = memory_service();
        let (hashes, last) = rt.block_on(async {
            let mut hashes = Vec::with_capacity(n);
            let mut last = String::new();
            for i in 0..n {
                last = create(&service, &format!("token {i}")).await;
                let id = tokengate::token::parse(&last).expect("well-formed");
                let record = service
                    .store()
                    .get(id)
                    .await
                    .expect("store")
                    .expect("stored");
                hashes.push(record.hash);
            }
            (hashes, last)
        });
        // The presented token matches the last stored hash: the seed pays n
        // verifies, as it does for every invalid token.
        assert_eq!(seed_lookup(&hashes, &last), Some(n - 1));

        group.sample_size(30);
        group.measurement_time(Duration::from_secs(3));
        group.bench_with_input(BenchmarkId::new("ours", n), &last, |b, token| {
            b.iter(|| rt.block_on(service.validate_token(black_box(token))))
        });

        // About 1 ms per verify at cost 4: 10 samples of one iteration at
        // 1,000 tokens already take over 10 s.
        group.sample_size(10);
        group.measurement_time(Duration::from_millis(n as u64 * 15).max(Duration::from_secs(3)));
        group.bench_with_input(BenchmarkId::new("seed", n), &last, |b, token| {
            b.iter(|| seed_lookup(&hashes, black_box(token)))
        });
    }
    group.finish();
}

criterion_group!(benches, layer, miss, lookup);
criterion_main!(benches);
