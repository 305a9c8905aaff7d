//! `[security]`: how tokens are hashed (docs/guide/configuration.md).

use serde::{Deserialize, Serialize};

use crate::hashing::{HASH_KEY_ENV, HashKey, HashKind, MIN_HASH_KEY_LEN};
use crate::settings::{InvalidConfig, in_range, invalid};

/// `[security]`: hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// How new tokens are hashed: `bcrypt` (the default) or `hmac-sha256`
    /// (needs `TOKENGATE_HASH_KEY`). Records of either kind are read, and a
    /// record of the other kind is rehashed the first time its token is
    /// used successfully (docs/reference/token-format.md, "What is stored").
    pub hash: HashKind,
    /// bcrypt cost for new tokens, 4–15. Each step doubles the time of every
    /// hash and of every cache-miss verification.
    pub bcrypt_cost: u32,
    /// bcrypt verifications run at once (0: one less than the CPUs, at
    /// least one). More cannot go faster, only starve the rest of the
    /// process.
    pub bcrypt_concurrency: usize,
    /// Cache misses that may wait for a bcrypt slot; past this they get 503
    /// at once instead of queueing without bound.
    pub bcrypt_queue: usize,
    /// The HMAC key: from `TOKENGATE_HASH_KEY` only (the loader fills it
    /// in), never from the file, and never serialized. With it, HMAC
    /// records are read whatever `hash` says.
    #[serde(skip)]
    pub hash_key: Option<HashKey>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            hash: HashKind::Bcrypt,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            bcrypt_concurrency: 0,
            bcrypt_queue: 1_000,
            hash_key: None,
        }
    }
}

impl SecurityConfig {
    /// Range checks: the bcrypt cost within 4–15, bounded concurrency and
    /// queue; a hash key of at least 32 bytes, and one at all for
    /// `hash = "hmac-sha256"`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        match &self.hash_key {
            Some(key) if key.len() < MIN_HASH_KEY_LEN => {
                return Err(InvalidConfig::Environment(format!(
                    "{HASH_KEY_ENV} must be at least {MIN_HASH_KEY_LEN} bytes (it has {})",
                    key.len()
                )));
            }
            None if self.hash == HashKind::HmacSha256 => {
                return Err(InvalidConfig::Environment(format!(
                    "[security] hash = \"hmac-sha256\" needs {HASH_KEY_ENV} \
                     (at least {MIN_HASH_KEY_LEN} bytes, in the environment only)"
                )));
            }
            _ => {}
        }
        let cost = self.bcrypt_cost;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(invalid(
                "security.bcrypt_cost",
                format!("{cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST}"),
            ));
        }
        in_range(
            "security.bcrypt_concurrency",
            self.bcrypt_concurrency,
            0,
            1_024,
        )?;
        in_range("security.bcrypt_queue", self.bcrypt_queue, 0, 1_000_000)
    }
}

/// bcrypt cost used unless configured otherwise.
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// Lowest bcrypt cost accepted (bcrypt's own minimum).
pub const MIN_BCRYPT_COST: u32 = 4;
/// Highest bcrypt cost accepted: 15 already takes seconds per hash, and every
/// cache miss pays it.
pub const MAX_BCRYPT_COST: u32 = 15;
