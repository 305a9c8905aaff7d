//! The config sections, each declared once: its name in the file, its type,
//! what it is for and how it is checked. [`Config`], its checks (in this
//! order: when several keys are wrong, the first is reported) and the keys
//! `TOKENGATE_<SECTION>_<KEY>` can set all come from the one list below, so
//! a new section is one line here and a field in its component's own
//! config type.

use serde::{Deserialize, Serialize};

use super::fields_of;
use crate::auth::{
    CacheConfig, ClientIpConfig, HeadersConfig, LastAccessedConfig, PublicRoute, RateLimitConfig,
    ScopedRoute, SourcesConfig,
};
use crate::doors::admin::AdminConfig;
use crate::doors::forward_auth::ForwardAuthConfig;
use crate::doors::proxy::ProxyConfig;
use crate::server::{MetricsConfig, ServerConfig};
use crate::service::SecurityConfig;
use crate::settings::InvalidConfig;
use crate::store::RedisConfig;
use crate::telemetry::log::LogConfig;

/// Declares [`Config`] and what follows from its list of sections.
macro_rules! sections {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty $(, checked by $check:path)?;
    )*) => {
        /// The whole configuration file.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Config {
            /// Every section's checks, in the order declared.
            pub(super) fn check_sections(&self) -> Result<(), InvalidConfig> {
                $( $( $check(&self.$name)?; )? )*
                Ok(())
            }
        }

        /// The keys of each section that `TOKENGATE_<SECTION>_<KEY>` can
        /// set, as serde reads them (so a new key is settable without a list
        /// to update). `[[public_routes]]` and `[[routes]]`, lists of
        /// tables, have none: they are set in the file only.
        pub(super) fn section_keys(section: &str) -> &'static [&'static str] {
            match section {
                $( stringify!($name) => fields_of::<$ty>(), )*
                _ => &[],
            }
        }
    };
}

sections! {
    /// `[security]`: hashing.
    security: SecurityConfig, checked by SecurityConfig::validate;
    /// `[redis]`: the production token store.
    redis: RedisConfig, checked by RedisConfig::validate;
    /// `[cache]`: the validation cache.
    cache: CacheConfig, checked by CacheConfig::validate;
    /// `[rate_limit]`: per-token and per-client-IP limits.
    rate_limit: RateLimitConfig, checked by RateLimitConfig::validate;
    /// `[headers]`: names of the identity headers.
    headers: HeadersConfig, checked by HeadersConfig::validate;
    /// `[last_accessed]`: batching of last-accessed writes.
    last_accessed: LastAccessedConfig, checked by LastAccessedConfig::validate;
    /// `[sources]`: where tokens are read from, besides `Authorization: Bearer`.
    sources: SourcesConfig, checked by SourcesConfig::validate;
    /// `[client_ip]`: which peers may say who the client is.
    client_ip: ClientIpConfig;
    /// `[proxy]`: the sidecar reverse proxy (`tokengate serve`).
    proxy: ProxyConfig, checked by ProxyConfig::validate;
    /// `[forward_auth]`: the forward-auth endpoint (`tokengate serve`).
    forward_auth: ForwardAuthConfig, checked by ForwardAuthConfig::validate;
    /// `[server]`: limits and timeouts shared by every listener.
    server: ServerConfig, checked by ServerConfig::validate;
    /// `[metrics]`: a listener for Prometheus alone (`tokengate serve`).
    metrics: MetricsConfig, checked by MetricsConfig::validate;
    /// `[log]`: log format and level, and the access log.
    log: LogConfig, checked by LogConfig::validate;
    /// `[admin]`: the admin API, health and metrics (`tokengate serve`).
    admin: AdminConfig, checked by AdminConfig::validate_file;
    /// `[[public_routes]]`: requests that skip authentication.
    public_routes: Vec<PublicRoute>, checked by public_routes;
    /// `[[routes]]`: the scopes requests need.
    routes: Vec<ScopedRoute>, checked by routes;
}

fn public_routes(routes: &[PublicRoute]) -> Result<(), InvalidConfig> {
    routes.iter().try_for_each(PublicRoute::validate)
}

fn routes(routes: &[ScopedRoute]) -> Result<(), InvalidConfig> {
    routes.iter().try_for_each(ScopedRoute::validate)?;
    ScopedRoute::check_overlaps(routes)
}
