//! Stored token hashes: bcrypt or HMAC-SHA256 under a server key
//! (docs/reference/token-format.md, "What is stored").
//!
//! A record's `hash` field is one of:
//!
//! ```text
//! $2b$10$…                                   bcrypt(token), as the bcrypt crate writes it
//! hmac-sha256$<key id: 8 hex>$<64 hex>       HMAC-SHA256(key, token)
//! ```
//!
//! Both are over the whole 55-byte token. The key id is the first 8 hex
//! digits of SHA-256("tokengate key id" ‖ key): it tells which key made a
//! hash, so a record made under another key is refused as such (fail
//! closed) rather than as a wrong secret. The key comes from
//! `TOKENGATE_HASH_KEY` only, never from the config file or the store.
//!
//! ```
//! use tokengate::hashing::{HashKey, StoredHash};
//!
//! let key = HashKey::new(b"a server key of at least 32 bytes!".to_vec());
//! let stored = key.hash("mk_0LYIR9BOliq35bNvGV2CAZZq3RkT9vLm2XcP7wYh4NsB8d0kp3eP");
//! assert!(stored.starts_with("hmac-sha256$"));
//! assert!(matches!(StoredHash::parse(&stored), StoredHash::Hmac { .. }));
//! ```

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The environment variable holding the HMAC key.
pub const HASH_KEY_ENV: &str = "TOKENGATE_HASH_KEY";
/// Shortest key accepted, in bytes: SHA-256's block-independent security
/// level; a shorter key would be the weakest link.
pub const MIN_HASH_KEY_LEN: usize = 32;
/// What an HMAC hash starts with.
pub const HMAC_PREFIX: &str = "hmac-sha256$";

/// Domain separation for the key id, so it is no other use of SHA-256 over
/// the key.
const KEY_ID_CONTEXT: &[u8] = b"tokengate key id";

/// How new tokens are hashed (`[security] hash`). Existing records keep
/// theirs until they are used (rehash on successful use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashKind {
    /// bcrypt at `[security] bcrypt_cost`: slow on purpose, which buys
    /// nothing for a 143-bit random secret and costs ~50 ms of CPU a miss.
    #[default]
    #[serde(rename = "bcrypt")]
    Bcrypt,
    /// HMAC-SHA256 keyed by `TOKENGATE_HASH_KEY`: a miss costs
    /// microseconds.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl HashKind {
    /// `"bcrypt"` or `"hmac-sha256"`, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bcrypt => "bcrypt",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's HMAC key. `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey {
    bytes: Vec<u8>,
    id: String,
}

impl HashKey {
    /// A key: the bytes of `TOKENGATE_HASH_KEY`, used as they are (its
    /// length is checked by the configuration, [`MIN_HASH_KEY_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let digest = Sha256::new()
            .chain_update(KEY_ID_CONTEXT)
            .chain_update(&bytes)
            .finalize();
        let id = hex(&digest[..4]);
        Self { bytes, id }
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The key's id: 8 hex digits, not secret, written in every hash it
    /// makes.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.bytes).expect("HMAC takes any key length")
    }

    /// The stored form of `token`'s hash under this key:
    /// `hmac-sha256$<key id>$<64 hex>`.
    pub fn hash(&self, token: &str) -> String {
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{HMAC_PREFIX}{}${}", self.id, hex(&tag))
    }

    /// Whether `mac` (32 bytes) is the HMAC of `token` under this key,
    /// compared in constant time.
    fn verify(&self, token: &str, mac: &[u8]) -> bool {
        let mut state = self.mac();
        state.update(token.as_bytes());
        state.verify_slice(mac).is_ok()
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashKey(id {}, ***)", self.id)
    }
}

/// A record's `hash` field, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredHash<'a> {
    /// A bcrypt hash (or anything that is not an HMAC one: bcrypt decides).
    Bcrypt(&'a str),
    /// An HMAC-SHA256 hash made under the key with id `key_id`.
    Hmac {
        /// The id of the key that made it.
        key_id: &'a str,
        /// The 32-byte MAC; `None` if the field is malformed (never
        /// matches).
        mac: Option<[u8; 32]>,
    },
}

impl<'a> StoredHash<'a> {
    /// Reads a stored hash.
    pub fn parse(stored: &'a str) -> Self {
        let Some(rest) = stored.strip_prefix(HMAC_PREFIX) else {
            return Self::Bcrypt(stored);
        };
        let (key_id, mac) = rest.split_once('$').unwrap_or((rest, ""));
        Self::Hmac {
            key_id,
            mac: unhex32(mac),
        }
    }

    /// The kind of hash this is.
    pub fn kind(&self) -> HashKind {
        match self {
            Self::Bcrypt(_) => HashKind::Bcrypt,
            Self::Hmac { .. } => HashKind::HmacSha256,
        }
    }
}

/// Why an HMAC hash could not be checked: this process lacks its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No `TOKENGATE_HASH_KEY` at all.
    #[error("the token's hash is hmac-sha256 (key {key_id}) and {HASH_KEY_ENV} is not set")]
    Missing {
        /// The id written in the hash.
        key_id: String,
    },
    /// A key, but not the one that made the hash.
    #[error(
        "the token's hash was made with hash key {stored}, and {HASH_KEY_ENV} is key {ours}: \
         records made under another key cannot be checked"
    )]
    Other {
        /// The id written in the hash.
        stored: String,
        /// This process's key's id.
        ours: String,
    },
}

/// Checks `token` against an HMAC hash: `Ok(true)` if it matches,
/// `Ok(false)` if not (or the field is malformed), `Err` if `key` is absent
/// or is not the key that made it.
pub fn verify_hmac(
    key: Option<&HashKey>,
    key_id: &str,
    mac: Option<&[u8; 32]>,
    token: &str,
) -> Result<bool, KeyError> {
    let Some(key) = key else {
        return Err(KeyError::Missing {
            key_id: key_id.to_owned(),
        });
    };
    if key.id != key_id {
        return Err(KeyError::Other {
            stored: key_id.to_owned(),
            ours: key.id.clone(),
        });
    }
    Ok(mac.is_some_and(|mac| key.verify(token, mac)))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// 64 lowercase hex digits into 32 bytes.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *slot = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "mk_0LYIR9BOliq35bNvGV2CAZZq3RkT9vLm2XcP7wYh4NsB8d0kp3eP";

    #[test]
    fn hashes_round_trip_and_name_their_key() {
        let key = HashKey::new(vec![7u8; 32]);
        let stored = key.hash(TOKEN);
        assert_eq!(stored.len(), HMAC_PREFIX.len() + 8 + 1 + 64);
        let StoredHash::Hmac { key_id, mac } = StoredHash::parse(&stored) else {
            panic!("{stored}")
        };
        assert_eq!(key_id, key.id());
        assert_eq!(
            verify_hmac(Some(&key), key_id, mac.as_ref(), TOKEN),
            Ok(true)
        );
        let other_token = TOKEN.replace("Zq3", "Zq4");
        assert_eq!(
            verify_hmac(Some(&key), key_id, mac.as_ref(), &other_token),
            Ok(false)
        );
        // Another key, or none: refused as such, not as a wrong secret.
        let other = HashKey::new(vec![8u8; 32]);
        assert_ne!(other.id(), key.id());
        assert!(matches!(
            verify_hmac(Some(&other), key_id, mac.as_ref(), TOKEN),
            Err(KeyError::Other { .. })
        ));
        assert!(matches!(
            verify_hmac(None, key_id, mac.as_ref(), TOKEN),
            Err(KeyError::Missing { .. })
        ));
        // The key's bytes never show.
        assert!(!format!("{key:?}").contains("7, 7"));
    }

    #[test]
    fn known_answer() {
        // RFC 4231 test case 2 ("Jefe"), to pin the construction.
        let key = HashKey::new(b"Jefe".to_vec());
        let stored = key.hash("what do ya want for nothing?");
        assert!(
            stored.ends_with("$5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            "{stored}"
        );
    }

    #[test]
    fn anything_else_is_bcrypt_and_malformed_macs_never_match() {
        assert_eq!(StoredHash::parse("$2b$04$abc").kind(), HashKind::Bcrypt);
        let key = HashKey::new(vec![1u8; 32]);
        for bad in ["", "zz", &"0".repeat(63), &"G".repeat(64)] {
            let stored = format!("{HMAC_PREFIX}{}${bad}", key.id());
            let StoredHash::Hmac { key_id, mac } = StoredHash::parse(&stored) else {
                panic!()
            };
            assert_eq!(mac, None);
            assert_eq!(
                verify_hmac(Some(&key), key_id, mac.as_ref(), TOKEN),
                Ok(false)
            );
        }
    }
}
