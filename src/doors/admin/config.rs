//! `[admin]`: the admin listener and its key (docs/guide/configuration.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{InvalidConfig, invalid};
use crate::tls::listener_tls;

/// The environment variable holding the admin API's bearer key.
pub(crate) const ADMIN_KEY_ENV: &str = "TOKENGATE_ADMIN_KEY";
/// Shortest admin key accepted.
pub(crate) const MIN_ADMIN_KEY_LEN: usize = 16;

/// `[admin]`: the admin API, health and metrics (`tokengate serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; unset: off.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// Serve the token routes without `TOKENGATE_ADMIN_KEY`, allowed only on
    /// a loopback address (for trying tokengate on a laptop).
    pub allow_unauthenticated_loopback: bool,
    /// The listener's certificate chain (PEM): with `tls_key`, the admin
    /// API serves HTTPS (docs/guide/tls.md).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The token routes' bearer key: from `TOKENGATE_ADMIN_KEY` only (the
    /// loader fills it in), never from the file, and never serialized.
    #[serde(skip)]
    pub key: Option<AdminKey>,
}

listener_tls!(AdminConfig, "admin");

impl AdminConfig {
    /// The rules on the file's keys alone: keyless only on loopback; a
    /// certificate and its key together.
    pub fn validate_file(&self) -> Result<(), InvalidConfig> {
        self.tls().validate()?;
        if self.allow_unauthenticated_loopback && self.listen.is_some_and(|a| !a.ip().is_loopback())
        {
            return Err(invalid(
                "admin.allow_unauthenticated_loopback",
                "only allowed when admin.listen is a loopback address",
            ));
        }
        Ok(())
    }

    /// Keyless only on loopback; with a listener, a key of at least
    /// 16 characters unless keyless is allowed. `serve`
    /// checks this; loading a file checks only [`AdminConfig::validate_file`]
    /// (the token commands read the same file and need no admin key).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.validate_file()?;
        let Some(addr) = self.listen else {
            return Ok(());
        };
        match &self.key {
            Some(key) if key.0.len() < MIN_ADMIN_KEY_LEN => Err(InvalidConfig::Environment(
                format!("{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_LEN} characters"),
            )),
            Some(_) => Ok(()),
            None if self.allow_unauthenticated_loopback => Ok(()),
            None => Err(InvalidConfig::Environment(format!(
                "the admin listener ({addr}) needs {ADMIN_KEY_ENV}, or a loopback address with \
                 [admin] allow_unauthenticated_loopback = true"
            ))),
        }
    }
}

/// The admin API's bearer key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(pub(super) String);

impl AdminKey {
    /// A key (checked by [`AdminConfig::validate`]).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(***)")
    }
}
