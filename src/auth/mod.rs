//! The [`Authenticator`]: the hot path every front door shares
//! (docs/reference/http-contract.md, "Order of the steps").
//!
//! ```text
//! public route? → client IP over the failure limit? → extract the token
//!   → parse + checksum → cache (SHA-256 of the token) → [miss, single-flight]
//!     store read by id → revoked / expired → bcrypt (bounded) → cache
//!   → per-token and per-account rate limits → AuthContext, last-accessed noted in memory
//! ```
//!
//! A refusal is a [`Rejection`], which front doors answer with
//! [`Rejection::to_response`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use http::{HeaderMap, Method, Uri};
//! use tokengate::{AuthConfig, AuthRequest, Authenticator, Decision, MemoryStore, Rejection, TokenService};
//!
//! let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
//! let auth = Authenticator::new(service, &AuthConfig::default()).unwrap();
//! let (method, uri, headers) = (Method::GET, Uri::from_static("/orders"), HeaderMap::new());
//! let request = AuthRequest { method: &method, uri: &uri, headers: &headers, peer: None };
//! assert_eq!(auth.check(request).await, Err(Rejection::MissingToken));
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri};
use tokio::task::JoinHandle;

use crate::service::{AuthContext, TokenError, TokenService};
use crate::settings::InvalidConfig;
use crate::store::RevocationSink;
use crate::token;

mod cache;
mod changes;
mod config;
mod extract;
mod headers;
mod last_accessed;
mod lookup;
mod method_override;
mod outcome;
mod quota;
mod rate_limit;
mod rejection;
mod routes;
mod sessions;
#[cfg(test)]
mod tests;
mod timing;

pub use self::cache::CacheConfig;
use self::cache::{AuthCache, Cached};
use self::changes::Changes;
pub use self::config::AuthConfig;
use self::extract::{ClientIp, Presented, Sources};
pub use self::extract::{ClientIpConfig, SourcesConfig};
#[cfg(feature = "server")]
pub(crate) use self::headers::folds_to;
pub use self::headers::{HeadersConfig, IdentityHeaders, fold_header_name};
pub use self::last_accessed::{LastAccessed, LastAccessedConfig};
use self::lookup::{Miss, look_up};
use self::method_override::Named;
#[cfg(feature = "server")]
pub(crate) use self::method_override::strip as strip_method_overrides;
pub use self::outcome::Outcome;
use self::quota::Quotas;
use self::rate_limit::Limits;
pub use self::rate_limit::RateLimitConfig;
pub use self::rejection::{InvalidReason, Rejection};
use self::routes::Need;
pub use self::routes::{PublicRoute, PublicRoutes, ScopedRoute, ScopedRoutes};
use self::sessions::Sessions;
pub use self::sessions::{Ended, TokenWatch};
use self::timing::VerifyTime;

/// When to retry after the store failed to answer.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// When to retry after bcrypt verification was overloaded.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the Authenticator needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The method (for public routes).
    pub method: &'a Method,
    /// The URI (path for public routes, query for the query-parameter source).
    pub uri: &'a Uri,
    /// The headers (token sources, `X-Forwarded-For`).
    pub headers: &'a HeaderMap,
    /// The socket peer, if known (for the per-IP failure limit).
    pub peer: Option<IpAddr>,
}

/// An admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A public route: no token needed, no identity given.
    Public,
    /// A valid token.
    Authenticated(AuthContext),
}

impl Decision {
    /// The identity, if a token was authenticated.
    pub fn auth(&self) -> Option<&AuthContext> {
        match self {
            Self::Public => None,
            Self::Authenticated(auth) => Some(auth),
        }
    }
}

/// What a front door keeps of an admitted request to watch a connection
/// that outlives it ([`Authenticator::watch_grant`]): what the request
/// needed, and from where it came.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grant {
    need: Need,
    client: Option<IpAddr>,
    /// The token's expiry, as the check saw it.
    expires_at: Option<i64>,
}

/// A token [`Authenticator::verify`] admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Who it is.
    pub auth: AuthContext,
    /// When it expires (unix seconds), `None` for never.
    pub expires_at: Option<i64>,
    /// For a token with a usage quota, about how many requests it has left
    /// after this one (docs/reference/quotas.md); `None` without a quota.
    pub remaining: Option<u64>,
    /// The client it was checked for: handed back, so a request's future
    /// need not keep its own copy across the check.
    client: Option<IpAddr>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthStats {
    /// Validations answered from the cache.
    pub cache_hits: u64,
    /// Validations that had to ask the store (concurrent misses on one token
    /// count each, though they share one lookup).
    pub cache_misses: u64,
    /// Entries in the cache.
    pub cache_entries: u64,
    /// bcrypt verifications run.
    pub bcrypt_verifications: u64,
    /// Verifications waiting for a bcrypt slot.
    pub bcrypt_queue_depth: usize,
    /// Last-accessed ids waiting to be written.
    pub last_accessed_pending: usize,
    /// Last-accessed batches written.
    pub last_accessed_flushes: u64,
    /// Requests refused because the token's usage quota was used up.
    pub quota_exceeded: u64,
    /// Decisions so far, by outcome, in the order of [`Outcome::ALL`]
    /// (`outcomes[outcome.index()]`).
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Invalid tokens presented so far, by reason, in the order of
    /// [`InvalidReason::ALL`] (`invalid_tokens[reason as usize]`).
    pub invalid_tokens: [u64; InvalidReason::ALL.len()],
}

/// Authenticates requests. Cheap to clone; clones share the cache, limits
/// and background tasks, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    service: TokenService,
    cache: Arc<AuthCache>,
    sources: Sources,
    client_ip: ClientIp,
    limits: Arc<Limits>,
    quotas: Arc<Quotas>,
    headers: IdentityHeaders,
    routes: PublicRoutes,
    scoped_routes: ScopedRoutes,
    /// Connections that outlive their request, watched for changes.
    sessions: Arc<Sessions>,
    last_accessed: LastAccessed,
    verify_time: Arc<VerifyTime>,
    /// The cache and the quotas, told of token changes: held here, for
    /// the service and the store hold it weakly.
    _sink: Arc<dyn RevocationSink>,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    invalid_tokens: [AtomicU64; InvalidReason::ALL.len()],
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.sessions.stop();
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An Authenticator over `service`, configured by `config` (checked
    /// here). Starts the last-accessed flusher and, on Redis, the revocation
    /// subscriber: call within a Tokio runtime.
    pub fn new(service: TokenService, config: &AuthConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let headers = IdentityHeaders::from_config(&config.headers)?;
        let cache = Arc::new(AuthCache::new(&config.cache));
        let quotas = Arc::new(Quotas::new(service.clone(), config.rate_limit.max_keys));
        let store = service.store().clone();
        let limits = Arc::new(Limits::new(&config.rate_limit, store.shares_limits()));
        let sessions = Arc::new(Sessions::new(service.clone()));
        let sink: Arc<dyn RevocationSink> = Arc::new(Changes {
            cache: cache.clone(),
            quotas: quotas.clone(),
            limits: limits.clone(),
            sessions: sessions.clone(),
        });
        service.add_revocation_sink(Arc::downgrade(&sink));
        let (last_accessed, flusher) =
            LastAccessed::start(service.store().clone(), &config.last_accessed);
        let verify_time = VerifyTime::calibrated(service.hash_kind(), service.bcrypt_cost());
        let mut tasks = vec![
            flusher,
            tokio::spawn(sessions::patrol(
                Arc::downgrade(&sessions),
                config.cache.ttl,
                config.cache.degraded_ttl.min(config.cache.ttl),
            )),
        ];
        tasks.extend(store.watch_revocations(Arc::downgrade(&sink)));
        if store.shares_limits() {
            tasks.push(tokio::spawn(rate_limit::reconcile(
                Arc::downgrade(&limits),
                store,
                config.rate_limit.sync_interval,
            )));
            tasks.push(tokio::spawn(quota::sweep(Arc::downgrade(&quotas))));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                cache,
                sources: Sources::new(&config.sources),
                client_ip: ClientIp::new(&config.client_ip),
                limits,
                quotas,
                _sink: sink,
                headers,
                routes: PublicRoutes::new(&config.public_routes),
                scoped_routes: ScopedRoutes::new(&config.routes),
                sessions,
                last_accessed,
                verify_time,
                outcomes: Default::default(),
                invalid_tokens: Default::default(),
                tasks,
            }),
        })
    }

    /// The service behind this Authenticator.
    pub fn service(&self) -> &TokenService {
        &self.inner.service
    }

    /// The identity headers helper (shared with the proxy).
    pub fn identity_headers(&self) -> &IdentityHeaders {
        &self.inner.headers
    }

    /// The last-accessed recorder.
    pub fn last_accessed(&self) -> &LastAccessed {
        &self.inner.last_accessed
    }

    /// Whether tokens are also read from `X-API-Key` (which the proxy then
    /// does not pass on).
    pub fn reads_api_key_header(&self) -> bool {
        self.inner.sources.api_key_header()
    }

    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.inner.client_ip.is_trusted(ip)
    }

    /// The client's address: `peer`, or what trusted proxies say of it
    /// (`[client_ip]`), as the limits see it.
    #[cfg(feature = "server")]
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.inner.client_ip.resolve(peer, headers)
    }

    /// Counters.
    pub fn stats(&self) -> AuthStats {
        let inner = &self.inner;
        AuthStats {
            cache_hits: inner.cache.hits(),
            cache_misses: inner.cache.misses(),
            cache_entries: inner.cache.entry_count(),
            bcrypt_verifications: inner.service.bcrypt_verifications(),
            bcrypt_queue_depth: inner.service.bcrypt_queue_depth(),
            last_accessed_pending: inner.last_accessed.pending(),
            last_accessed_flushes: inner.last_accessed.flushes(),
            quota_exceeded: inner.quotas.exceeded(),
            outcomes: std::array::from_fn(|i| inner.outcomes[i].load(Ordering::Relaxed)),
            invalid_tokens: std::array::from_fn(|i| {
                inner.invalid_tokens[i].load(Ordering::Relaxed)
            }),
        }
    }

    /// Decides on one request.
    pub async fn check(&self, request: AuthRequest<'_>) -> Result<Decision, Rejection> {
        let result = self.decide(request).await.map(|(decision, _)| decision);
        self.count(result.as_ref());
        result
    }

    /// [`Authenticator::check`], also returning what a front door needs to
    /// watch a connection that outlives the request
    /// ([`Authenticator::watch_grant`]).
    #[cfg(feature = "server")]
    pub(crate) async fn check_granted(
        &self,
        request: AuthRequest<'_>,
    ) -> Result<(Decision, Grant), Rejection> {
        let result = self.decide(request).await;
        self.count(result.as_ref().map(|(decision, _)| decision));
        result
    }

    /// Counts a decision under its outcome.
    fn count(&self, result: Result<&Decision, &Rejection>) {
        self.count_outcome(Outcome::of(result));
    }

    fn count_outcome(&self, outcome: Outcome) {
        self.inner.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    async fn decide(&self, request: AuthRequest<'_>) -> Result<(Decision, Grant), Rejection> {
        let inner = &self.inner;
        if self.is_public(&request) {
            return Ok((Decision::Public, Grant::default()));
        }
        let ip = inner.client_ip.resolve(request.peer, request.headers);
        inner.limits.check_ip(ip)?;
        let token = match inner.sources.extract(request.headers, request.uri)? {
            Presented::Nothing => return Err(Rejection::MissingToken),
            Presented::Garbage => return Err(self.failed(ip, None, InvalidReason::Format)),
            Presented::Token(token) => token,
        };
        let need = self.need(&request);
        let admitted = self
            .admit(&token, ip, inner.scoped_routes.scopes(&need))
            .await?;
        Ok((
            Decision::Authenticated(admitted.auth),
            Grant {
                need,
                client: admitted.client,
                expires_at: admitted.expires_at,
            },
        ))
    }

    /// Whether a request skips authentication: a public route for its
    /// method, and for every method a method override names (a public
    /// `GET /health` must not become a tokenless `DELETE /health`).
    #[inline]
    fn is_public(&self, request: &AuthRequest<'_>) -> bool {
        let (routes, path) = (&self.inner.routes, request.uri.path());
        if !routes.is_public(request.method, path) {
            return false;
        }
        match Named::of(request.headers, request.uri) {
            Named::None => true,
            Named::Methods(methods) => methods.iter().all(|m| routes.is_public(m, path)),
            Named::Unreadable => false,
        }
    }

    /// What the route table asks of a request: for its method and path,
    /// and for every method a method override names (docs/reference/http-contract.md,
    /// "Method overrides").
    #[inline]
    fn need(&self, request: &AuthRequest<'_>) -> Need {
        let routes = &self.inner.scoped_routes;
        if routes.is_empty() {
            return Need::Nothing;
        }
        routes.need_lazily(request.method, request.uri.path(), || {
            let mut named = Named::of(request.headers, request.uri);
            // `delete` is not DELETE to the route table, but frameworks
            // upper-case the method before routing: it needs what both need.
            let own = request.method.as_str();
            if own.bytes().any(|b| b.is_ascii_lowercase()) {
                named.add(own.as_bytes());
            }
            if let Named::Methods(methods) = &named {
                tracing::debug!(method = %request.method, named = ?methods, "method override: the scopes of every method named are needed");
            }
            named
        })
    }

    /// Watches the token that admitted a request, for a connection that
    /// outlives it (a WebSocket or other upgrade, a stream of events):
    /// [`TokenWatch::ended`] completes when the token is revoked, disabled
    /// or expires, or no longer holds a scope (or allows the client
    /// address) that `request` needed, here or on any replica sharing the
    /// store (docs/reference/http-contract.md, "Open connections").
    ///
    /// `auth` is the identity [`Authenticator::check`] gave `request`, and
    /// `request` is what it was given: the method, the URI as the Layer saw
    /// it (under axum's `nest`, the `OriginalUri`), the headers and the
    /// same peer (`None` ends a token with an IP allowlist at once). The
    /// scopes re-checked are what `[[routes]]` asks of it; for scopes a
    /// route requires in code (`RequireScopes`), use
    /// [`Authenticator::watch_scopes`].
    pub fn watch(&self, auth: &AuthContext, request: AuthRequest<'_>) -> TokenWatch {
        let grant = Grant {
            need: self.need(&request),
            client: self.inner.client_ip.resolve(request.peer, request.headers),
            expires_at: None,
        };
        self.watch_grant(auth.token_id, &grant)
    }

    /// [`Authenticator::watch`] with the scopes to re-check given (every
    /// one of them is needed), and the client address the token's
    /// allowlist must keep admitting (`None` ends a token with an
    /// allowlist at once).
    pub fn watch_scopes<S: AsRef<str>>(
        &self,
        auth: &AuthContext,
        scopes: &[S],
        client: Option<IpAddr>,
    ) -> TokenWatch {
        let needed: Arc<[String]> = scopes.iter().map(|s| s.as_ref().to_owned()).collect();
        self.inner
            .sessions
            .open(auth.token_id, needed, client, None)
    }

    /// What a request answered now would get, for a token whose watch
    /// ended for `why` (the proxy's answer to a handshake its token stopped
    /// admitting while the upstream answered).
    #[cfg(feature = "server")]
    pub(crate) fn refusal(&self, grant: &Grant, why: Ended) -> Rejection {
        match why {
            Ended::Revoked => Rejection::InvalidToken(InvalidReason::Revoked),
            Ended::Disabled => Rejection::InvalidToken(InvalidReason::Disabled),
            Ended::Expired => Rejection::InvalidToken(InvalidReason::Expired),
            Ended::InsufficientScope => Rejection::InsufficientScope {
                scope: self.inner.scoped_routes.scopes(&grant.need).join(" "),
            },
            Ended::IpNotAllowed => Rejection::IpNotAllowed,
            Ended::Unverified | Ended::Stopped => Rejection::Unavailable {
                retry_after: STORE_RETRY_AFTER,
            },
        }
    }

    /// [`Authenticator::watch`], from what [`Authenticator::check_granted`]
    /// kept of the request.
    pub(crate) fn watch_grant(&self, token_id: token::TokenId, grant: &Grant) -> TokenWatch {
        let needed: Arc<[String]> = self.inner.scoped_routes.scopes(&grant.need).into();
        self.inner
            .sessions
            .open(token_id, needed, grant.client, grant.expires_at)
    }

    /// Checks a token for a service that asks in its own code (the admin
    /// API's `POST /v1/verify`, docs/reference/http-contract.md "Verify API"):
    /// through the same cache, refusal limits, rate limits and quota as a
    /// request, with the scopes `needed` (all of them) and the end client's
    /// address for its IP allowlist and failure limit (`None`: unknown; a
    /// token with an allowlist is then refused).
    pub async fn verify(
        &self,
        token: &str,
        needed: &[String],
        client: Option<IpAddr>,
    ) -> Result<Verified, Rejection> {
        let result = match self.inner.limits.check_ip(client) {
            Ok(()) => self.admit(token, client, needed).await,
            Err(limited) => Err(limited),
        };
        self.count_outcome(match &result {
            Ok(_) => Outcome::Authenticated,
            Err(rejection) => rejection.outcome(),
        });
        result
    }

    /// A presented token, from parse to admission: the cache (one lookup
    /// on a miss), the refusal limits, the scopes `needed`, the IP
    /// allowlist, the rate limits and the quota.
    async fn admit(
        &self,
        token: &str,
        ip: Option<IpAddr>,
        needed: &[String],
    ) -> Result<Verified, Rejection> {
        let inner = &self.inner;
        // Parse before anything else: no hashing, cache or store work for a
        // string that cannot be a token (however long it is).
        let token_id = match token::parse(token) {
            Ok(id) => id,
            Err(_) => return Err(self.failed(ip, None, InvalidReason::Format)),
        };
        // Built only on a miss: a cache hit pays no clone and no allocation.
        let lookup = || {
            look_up(
                inner.service.clone(),
                inner.verify_time.clone(),
                inner.limits.clone(),
                token.to_owned(),
                token_id,
                inner.cache.epoch(),
            )
        };
        let entry = inner
            .cache
            .get_or_lookup(AuthCache::key(token), lookup)
            .await
            .map_err(|miss: Arc<Miss>| match &*miss {
                Miss::Refused(rejection) => rejection.clone(),
                Miss::Failed(e) => {
                    let retry_after = match e {
                        TokenError::Overloaded => OVERLOAD_RETRY_AFTER,
                        _ => STORE_RETRY_AFTER,
                    };
                    tracing::warn!(%token_id, error = %e, "cannot validate token");
                    Rejection::Unavailable { retry_after }
                }
            })?;
        match &*entry {
            Cached::Invalid { reason, .. } => Err(self.failed(ip, Some(token_id), *reason)),
            Cached::Valid {
                auth,
                has_quota,
                allowed_ips,
                expires_at,
                rate_limit,
                ..
            } => {
                // The entry may outlive its token's expiry by most of a
                // second (its lifetime counts whole seconds from when this
                // replica cached it): the expiry itself decides, by the
                // clock every replica reads, so all refuse from that second.
                let now = inner.service.now();
                if expires_at.is_some_and(|at| at <= now) {
                    return Err(self.failed(ip, Some(token_id), InvalidReason::Expired));
                }
                // Before the limits: a request the token may not make spends
                // nothing.
                if let Some(missing) = auth.scopes.first_missing(needed) {
                    tracing::debug!(token_id = %auth.token_id, missing, "insufficient scope");
                    return Err(Rejection::InsufficientScope {
                        scope: needed.join(" "),
                    });
                }
                // The client as the failure limit sees it: the peer, or
                // what a trusted proxy says of it.
                if !allowed_ips.allows(ip) {
                    tracing::debug!(token_id = %auth.token_id, client_ip = ip.map(tracing::field::display), "client outside the token's IP allowlist");
                    return Err(Rejection::IpNotAllowed);
                }
                inner
                    .limits
                    .check(auth.token_id, &auth.account_id, rate_limit.as_ref())?;
                let remaining = if *has_quota {
                    inner.quotas.spend(auth.token_id).await?
                } else {
                    None
                };
                inner.last_accessed.record(auth.token_id, now);
                Ok(Verified {
                    auth: auth.clone(),
                    expires_at: *expires_at,
                    remaining,
                    client: ip,
                })
            }
        }
    }

    /// Checks an HTTP request and, when admitted, prepares it for the
    /// service: identity headers stripped and set, the query-parameter token
    /// removed from the URI, the [`AuthContext`] put in its extensions.
    pub async fn authorize<B>(
        &self,
        mut request: Request<B>,
        peer: Option<IpAddr>,
    ) -> Result<Request<B>, Rejection> {
        let decision = self
            .check(AuthRequest {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers(),
                peer,
            })
            .await?;
        self.prepare_with(&mut request, decision);
        Ok(request)
    }

    /// Strips and sets identity headers, removes the query-parameter token,
    /// and stores the identity in the extensions.
    pub fn prepare<B>(&self, request: &mut Request<B>, decision: &Decision) {
        self.prepare_with(request, decision.clone());
    }

    /// [`Authenticator::prepare`], the identity moved into the extensions
    /// rather than copied (on every admitted request of the Layer).
    fn prepare_with<B>(&self, request: &mut Request<B>, decision: Decision) {
        self.inner
            .headers
            .apply(request.headers_mut(), decision.auth());
        self.remove_query_token(request.uri_mut());
        if let Decision::Authenticated(auth) = decision {
            request.extensions_mut().insert(auth);
        }
    }

    /// Removes the query-parameter token source (when configured) from `uri`.
    pub fn remove_query_token(&self, uri: &mut Uri) {
        if let Some(name) = self.inner.sources.query_param() {
            *uri = extract::remove_query_param(uri, name);
        }
    }

    /// Writes pending last-accessed times and gives back unspent quota
    /// credits: call once on shutdown.
    pub async fn shutdown(&self) {
        let returned = self.inner.quotas.give_back(true).await;
        if returned > 0 {
            tracing::info!(credits = returned, "unspent quota credits given back");
        }
        if let Err(e) = self.inner.last_accessed.shutdown().await {
            tracing::warn!(error = %e, "last-accessed times could not be written on shutdown");
        }
    }

    fn failed(
        &self,
        ip: Option<IpAddr>,
        token_id: Option<token::TokenId>,
        reason: InvalidReason,
    ) -> Rejection {
        // Absent fields are left out, present ones are plain text (not
        // `Debug`'s `Some(…)`), in human and JSON logs alike.
        tracing::debug!(
            token_id = token_id.map(tracing::field::display),
            client_ip = ip.map(tracing::field::display),
            reason = reason.as_str(),
            "token rejected"
        );
        if let Some(count) = self.inner.invalid_tokens.get(reason as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let limits = &self.inner.limits;
        // Every refusal of a well-formed id counts, live or not: counting
        // only wrong secrets would make a 429 tell that an id is live, which
        // the timing of refusals hides (docs/reference/http-contract.md, "Timing").
        let per_id = token_id.map_or(Ok(()), |id| limits.record_wrong_secret(id));
        match limits.record_failure(ip).and(per_id) {
            Err(limited) => limited,
            Ok(()) => Rejection::InvalidToken(reason),
        }
    }
}
