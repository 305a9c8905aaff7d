//! `[proxy]`: the sidecar proxy's listener, upstream and limits
//! (docs/guide/configuration.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::settings::{self, InvalidConfig, invalid};
use crate::tls::listener_tls;

/// `[proxy]`: the sidecar reverse proxy (`tokengate serve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the proxy listens (`"127.0.0.1:8080"`); unset: no proxy.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// The API behind it: `http://host:port` or `https://host:port`.
    pub upstream: Option<Upstream>,
    /// For an `https://` upstream: the CA certificates (PEM) to verify it
    /// against, instead of the system's roots (nginx's
    /// `proxy_ssl_trusted_certificate`).
    pub upstream_ca_file: Option<PathBuf>,
    /// The listener's certificate chain (PEM): with `tls_key`, the proxy
    /// serves HTTPS (docs/guide/tls.md).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How long the upstream has to answer (response headers) once the
    /// request, body included, has been sent to it; then 504. While a body
    /// streams, the upstream not reading any of it for this long is 504 too;
    /// a response body the upstream stops sending for this long is cut.
    #[serde(with = "crate::settings::duration")]
    pub upstream_timeout: Duration,
    /// A client that sends no byte of its request body for this long gets
    /// 408 (nginx's `client_body_timeout`).
    #[serde(with = "crate::settings::duration")]
    pub client_body_timeout: Duration,
    /// Pass the client's `Authorization` header on to the upstream.
    pub forward_authorization: bool,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    #[serde(with = "crate::settings::duration")]
    pub tunnel_idle_timeout: Duration,
    /// A path (`"/ping"`) the proxy answers itself, for load balancers that
    /// see only the proxy's port: `GET` / `HEAD` get 200 without a token and
    /// are never forwarded. Unset: none.
    pub health_path: Option<String>,
    /// What to do with a request that names another method for the
    /// upstream to run (`X-HTTP-Method-Override`, `?_method=`):
    /// docs/reference/http-contract.md, "Method overrides".
    pub method_override: MethodOverride,
}

listener_tls!(ProxyConfig, "proxy");

/// `[proxy] method_override`: what the proxy does with a request that names
/// another method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// Pass it on, after checking the scopes of its own method and of
    /// every method it names (the default: the upstream runs what the
    /// client asked for, or the request is refused).
    #[default]
    Check,
    /// Remove every override header and `_method` query parameter before
    /// the check, so the upstream runs the request's own method.
    Strip,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            upstream_ca_file: None,
            tls_cert: None,
            tls_key: None,
            upstream_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(60),
            forward_authorization: false,
            tunnel_idle_timeout: Duration::from_secs(600),
            health_path: None,
            method_override: MethodOverride::Check,
        }
    }
}

impl ProxyConfig {
    /// An upstream whenever there is a listener; timeouts in range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.listen.is_some() && self.upstream.is_none() {
            return Err(invalid(
                "proxy.upstream",
                "is required when proxy.listen is set",
            ));
        }
        if let Some(Err(message)) = self.upstream.as_ref().map(|u| &u.parsed) {
            return Err(invalid("proxy.upstream", message.clone()));
        }
        if self.upstream_ca_file.is_some()
            && !self.upstream.as_ref().is_some_and(Upstream::is_https)
        {
            return Err(invalid(
                "proxy.upstream_ca_file",
                "is for an https:// proxy.upstream only",
            ));
        }
        self.tls().validate()?;
        settings::within(
            "proxy.upstream_timeout",
            self.upstream_timeout,
            Duration::from_millis(10),
            Duration::from_secs(3_600),
        )?;
        settings::within(
            "proxy.client_body_timeout",
            self.client_body_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        )?;
        settings::within(
            "proxy.tunnel_idle_timeout",
            self.tunnel_idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        if let Some(path) = &self.health_path
            && (!path.starts_with('/')
                || path.len() > 256
                || !path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#'))
        {
            return Err(invalid(
                "proxy.health_path",
                "must be a path like \"/ping\": `/` first, at most 256 printable ASCII \
                 characters, no `?` or `#`",
            ));
        }
        Ok(())
    }
}

impl ProxyConfig {}

/// The API behind the proxy: `http://host[:port]` or `https://host[:port]`,
/// with no path, query or credentials. Parsed when the config is read; a bad one is reported by
/// [`ProxyConfig::validate`] under its key, after the environment has had
/// its say (`TOKENGATE_PROXY_UPSTREAM` may replace the file's).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Upstream {
    /// As written.
    text: String,
    /// `host[:port]` and whether it is `https://`, or why the text is not a
    /// usable upstream.
    parsed: Result<(http::uri::Authority, bool), String>,
}

impl Upstream {
    /// `host[:port]`, sent as `Host` and used to connect; `None` for an
    /// upstream that [`ProxyConfig::validate`] refuses.
    pub fn authority(&self) -> Option<&http::uri::Authority> {
        self.parsed.as_ref().ok().map(|(authority, _)| authority)
    }

    /// Whether the proxy talks TLS to it (`https://`).
    pub fn is_https(&self) -> bool {
        self.parsed.as_ref().is_ok_and(|(_, https)| *https)
    }

    fn parse(upstream: &str) -> Result<(http::uri::Authority, bool), String> {
        let uri: Uri = upstream
            .parse()
            .map_err(|e| format!("{upstream:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{upstream:?}: only http:// and https:// upstreams are supported"
                ));
            }
        };
        let authority = match uri.authority() {
            Some(a) if !a.as_str().contains('@') => a.clone(),
            _ => return Err(format!("{upstream:?} needs a host, and no credentials")),
        };
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(format!(
                "{upstream:?}: no path or query (requests keep their own path)"
            ));
        }
        Ok((authority, https))
    }
}

impl From<String> for Upstream {
    fn from(text: String) -> Self {
        let parsed = Self::parse(&text);
        Self { text, parsed }
    }
}

impl From<Upstream> for String {
    fn from(upstream: Upstream) -> Self {
        upstream.text
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({:?})", self.text)
    }
}
