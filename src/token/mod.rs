//! The `mk_` token format: generate, render and parse (docs/reference/token-format.md).
//!
//! ```text
//! mk_ <id: 22 base62> <secret: 24 base62> <checksum: 6 base62>      55 chars
//! ```
//!
//! The id is the token's UUID as a big-endian 128-bit integer in base62; the
//! secret comes from the OS CSPRNG; the checksum is the CRC32 (IEEE) of the
//! first 49 bytes. [`parse`] is total and does no I/O, so garbage, typos and
//! truncated tokens are rejected before any cache, store or bcrypt work.
//!
//! ```
//! use tokengate::token::{parse, Token};
//!
//! let token = Token::generate().unwrap();
//! assert_eq!(parse(token.expose_secret()).unwrap(), token.id());
//! assert!(parse("mk_not-a-token").is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use rand::TryRng;
use rand::rngs::SysRng;
use uuid::Uuid;

mod allow;
mod meta;
mod quota;
mod rate_limit;
mod scope;
pub use self::allow::{AllowError, AllowedIps, MAX_ALLOWED_NETWORKS};
pub use self::meta::{MAX_META_BYTES, Meta, MetaError};
pub use self::quota::{Lease, MAX_QUOTA, Quota, Refill, RefillInterval};
pub use self::rate_limit::TokenRateLimit;
pub use self::scope::{MAX_SCOPE_LEN, MAX_SCOPES, ScopeError, Scopes, is_valid_scope};

/// Every token starts with this prefix (it lets secret scanners find leaks).
pub const PREFIX: &str = "mk_";
/// Length of the base62 id part.
pub const ID_LEN: usize = 22;
/// Length of the base62 secret part.
pub const SECRET_LEN: usize = 24;
/// Length of the base62 checksum part.
pub const CHECKSUM_LEN: usize = 6;
/// Length of a whole token, in bytes (all of them ASCII).
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + SECRET_LEN + CHECKSUM_LEN;

/// Bytes the checksum covers: the prefix, the id and the secret.
const CHECKSUMMED_LEN: usize = TOKEN_LEN - CHECKSUM_LEN;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed token.
///
/// Kept apart for logs and tests only: clients always get one generic message,
/// so a probe cannot learn which part of a token was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The string does not start with `mk_`.
    #[error("token does not start with `mk_`")]
    Prefix,
    /// The string is not 55 bytes long.
    #[error("token is {0} bytes long, not 55")]
    Length(usize),
    /// A byte outside `0-9A-Za-z` after the prefix.
    #[error("token has a byte outside the base62 alphabet at position {0}")]
    Alphabet(usize),
    /// The id part encodes a number wider than 128 bits.
    #[error("token id is out of range")]
    IdRange,
    /// The checksum does not match the rest of the token.
    #[error("token checksum does not match")]
    Checksum,
}

/// A token's id: a UUID, shown in its hyphenated form in records, logs and
/// headers. It is not secret.
///
/// It parses from the hyphenated UUID or from the 22-character base62 form
/// that is embedded in the token (characters 4–25), so an id can be read
/// straight off a leaked token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(Uuid);

impl TokenId {
    /// Wraps a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The 22-character base62 form embedded in the token.
    pub fn to_base62(&self) -> String {
        let mut out = [0u8; ID_LEN];
        encode_base62(self.0.as_u128(), &mut out);
        ascii_string(&out)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl serde::Serialize for TokenId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TokenId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The string is neither a hyphenated UUID, a 22-character base62 id, nor
/// a well-formed token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a token id (expected a UUID like 0b6c0e5e-5bd5-4f5e-9a43-5f1a2c3d4e5f, 22 base62 characters, or the whole mk_ token)"
)]
pub struct InvalidTokenId;

impl FromStr for TokenId {
    type Err = InvalidTokenId;

    /// Also reads the whole token (checksum checked), so a leaked token can
    /// be revoked from its text alone; only its id is kept.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with(PREFIX) {
            return parse(s).map_err(|_| InvalidTokenId);
        }
        if s.len() == ID_LEN {
            return decode_base62(s.as_bytes())
                .map(|n| Self(Uuid::from_u128(n)))
                .ok_or(InvalidTokenId);
        }
        // Only the canonical 36-character form: braces, URNs and the simple
        // form are accepted by `Uuid::parse_str` but are not what we print.
        if s.len() != 36 {
            return Err(InvalidTokenId);
        }
        Uuid::parse_str(s).map(Self).map_err(|_| InvalidTokenId)
    }
}

/// A plaintext token. It exists only between generation and the one response
/// that shows it; `Debug` never prints the secret.
#[derive(Clone)]
pub struct Token {
    id: TokenId,
    text: String,
}

/// The OS random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(String);

impl Token {
    /// Generates a new token: a random UUID v4 id and a 24-character secret,
    /// both from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut id_bytes = [0u8; 16];
        SysRng
            .try_fill_bytes(&mut id_bytes)
            .map_err(|e| RandomError(e.to_string()))?;
        let id = TokenId(uuid::Builder::from_random_bytes(id_bytes).into_uuid());
        Ok(Self::assemble(id, &random_secret()?))
    }

    /// Renders the token for `id` and `secret` (24 base62 characters), adding
    /// the checksum. Use [`Token::generate`] for new tokens; this exists for
    /// test vectors and compatible implementations.
    ///
    /// # Panics
    /// If `secret` is not 24 base62 characters.
    pub fn from_parts(id: TokenId, secret: &str) -> Self {
        let secret = secret.as_bytes();
        assert!(
            secret.len() == SECRET_LEN && secret.iter().all(|&c| digit(c).is_some()),
            "a token secret is 24 base62 characters"
        );
        let mut buf = [0u8; SECRET_LEN];
        buf.copy_from_slice(secret);
        Self::assemble(id, &buf)
    }

    fn assemble(id: TokenId, secret: &[u8; SECRET_LEN]) -> Self {
        let mut buf = [0u8; TOKEN_LEN];
        buf[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        encode_base62(
            id.0.as_u128(),
            &mut buf[PREFIX.len()..PREFIX.len() + ID_LEN],
        );
        buf[PREFIX.len() + ID_LEN..CHECKSUMMED_LEN].copy_from_slice(secret);
        let crc = crc32fast::hash(&buf[..CHECKSUMMED_LEN]);
        encode_base62(u128::from(crc), &mut buf[CHECKSUMMED_LEN..]);
        Self {
            id,
            text: ascii_string(&buf),
        }
    }

    /// The token's id.
    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The plaintext. Show it to the user once; never log or store it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("text", &"[redacted]")
            .finish()
    }
}

/// Checks a presented token's prefix, length, alphabet and checksum, and
/// returns the id embedded in it. No I/O, no allocation.
pub fn parse(token: &str) -> Result<TokenId, FormatError> {
    let bytes = token.as_bytes();
    if !bytes.starts_with(PREFIX.as_bytes()) {
        return Err(FormatError::Prefix);
    }
    if bytes.len() != TOKEN_LEN {
        return Err(FormatError::Length(bytes.len()));
    }
    if let Some(pos) = bytes[PREFIX.len()..]
        .iter()
        .position(|&c| digit(c).is_none())
    {
        return Err(FormatError::Alphabet(PREFIX.len() + pos));
    }
    let expected = decode_base62(&bytes[CHECKSUMMED_LEN..]).ok_or(FormatError::Checksum)?;
    if expected != u128::from(crc32fast::hash(&bytes[..CHECKSUMMED_LEN])) {
        return Err(FormatError::Checksum);
    }
    decode_base62(&bytes[PREFIX.len()..PREFIX.len() + ID_LEN])
        .map(|n| TokenId(Uuid::from_u128(n)))
        .ok_or(FormatError::IdRange)
}

/// 24 base62 characters, uniform: bytes from the OS CSPRNG, rejection-sampled
/// to the 248 values (4 × 62) that map onto the alphabet without modulo bias.
fn random_secret() -> Result<[u8; SECRET_LEN], RandomError> {
    const ACCEPT_BELOW: u8 = (ALPHABET.len() * 4) as u8;
    let mut secret = [0u8; SECRET_LEN];
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < SECRET_LEN {
        SysRng
            .try_fill_bytes(&mut pool)
            .map_err(|e| RandomError(e.to_string()))?;
        for &b in pool.iter().filter(|&&b| b < ACCEPT_BELOW) {
            if filled == SECRET_LEN {
                break;
            }
            secret[filled] = ALPHABET[usize::from(b) % ALPHABET.len()];
            filled += 1;
        }
    }
    Ok(secret)
}

/// Writes `n` in base62 into all of `out`, left-padded with `0`.
fn encode_base62(mut n: u128, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    debug_assert_eq!(n, 0, "value does not fit the field");
}

/// Reads base62 digits; `None` on a byte outside the alphabet or overflow.
fn decode_base62(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &c| {
        acc.checked_mul(62)?.checked_add(u128::from(digit(c)?))
    })
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests;
