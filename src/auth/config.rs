//! The Authenticator's sections, together (docs/guide/configuration.md).

use serde::{Deserialize, Serialize};

use crate::auth::{
    CacheConfig, ClientIpConfig, HeadersConfig, LastAccessedConfig, PublicRoute, RateLimitConfig,
    ScopedRoute, SourcesConfig,
};
use crate::settings::InvalidConfig;

/// The Authenticator's settings: the sections of the config file it reads,
/// each defined (with its defaults and checks) beside the code that uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[cache]`: the validation cache.
    pub cache: CacheConfig,
    /// `[rate_limit]`: per-token and per-client-IP limits.
    pub rate_limit: RateLimitConfig,
    /// `[headers]`: names of the identity headers.
    pub headers: HeadersConfig,
    /// `[last_accessed]`: batching of last-accessed writes.
    pub last_accessed: LastAccessedConfig,
    /// `[sources]`: where tokens are read from, besides `Authorization: Bearer`.
    pub sources: SourcesConfig,
    /// `[client_ip]`: which peers may say who the client is.
    pub client_ip: ClientIpConfig,
    /// `[[public_routes]]`: requests that skip authentication.
    pub public_routes: Vec<PublicRoute>,
    /// `[[routes]]`: the scopes requests need.
    pub routes: Vec<ScopedRoute>,
}

impl AuthConfig {
    /// Checks every section (the first wrong key is reported).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.cache.validate()?;
        self.rate_limit.validate()?;
        self.headers.validate()?;
        self.last_accessed.validate()?;
        self.sources.validate()?;
        self.public_routes
            .iter()
            .try_for_each(PublicRoute::validate)?;
        self.routes.iter().try_for_each(ScopedRoute::validate)?;
        ScopedRoute::check_overlaps(&self.routes)
    }
}
