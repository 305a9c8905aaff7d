//! What every component's config section shares: the error for a value that
//! cannot be used, range checks, and durations written as `"30s"`.
//!
//! Each component defines its own section type (`CacheConfig` beside the
//! cache, `ProxyConfig` beside the proxy, …) with its defaults and a
//! `validate()` built from these helpers; the loader in `config` only puts
//! the sections together. This module imports nothing from the crate, so
//! any layer may use it.

use std::time::Duration;

/// A setting that cannot be used. Whose fault: the operator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// A key's value is out of range or malformed.
    #[error("config key {key}: {message}")]
    Key {
        /// `section.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A setting kept only in the environment (the admin key) is missing or
    /// malformed; the message names the variable.
    #[error("{0}")]
    Environment(String),
}

/// `key` is invalid because of `message` (whose control characters are
/// escaped: a message quotes values, and it stays one line).
pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig::Key {
        key,
        message: escape_controls(&message.into()),
    }
}

/// Control characters escaped (`\r`, `\n`, `\u{0}`), so that a message
/// quoting what an operator wrote (a key with a lone carriage return, a URL
/// with a `\n` escape) stays on one line.
pub(crate) fn escape_controls(text: &str) -> String {
    if !text.contains(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Checks `min <= value <= max`.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), InvalidConfig> {
    if value < min || value > max {
        return Err(invalid(key, format!("{value} is outside {min}–{max}")));
    }
    Ok(())
}

/// Checks `min <= value <= max` for a duration, naming them as written.
pub(crate) fn within(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), InvalidConfig> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!(
                "{} is outside {}–{}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// Serde for durations as humantime strings: `"30s"`, `"5m"`, `"1h 30m"`,
/// `"250ms"` (`#[serde(with = "crate::settings::duration")]`).
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"30s"`.
    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    /// Reads `"30s"`, `"5m"`, `"1h 30m"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"30s\" or \"5m\": {e}"
            ))
        })
    }
}

/// Serde for a listener's address (`#[serde(with = "crate::settings::listen")]`):
/// an IP address and port, or `localhost:PORT` for 127.0.0.1 (host names
/// are not resolved: a listener's address should not depend on DNS). Other
/// names are refused with the forms that work. Listeners are `serve`'s.
#[cfg(feature = "server")]
pub(crate) mod listen {
    use std::net::{Ipv4Addr, SocketAddr};

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"127.0.0.1:8080"`; nothing when unset.
    pub(crate) fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_none(),
        }
    }

    /// Reads `"127.0.0.1:8080"`, `"[::]:8080"` or `"localhost:8080"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Some).map_err(serde::de::Error::custom)
    }

    pub(super) fn parse(text: &str) -> Result<SocketAddr, String> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        if let Some(port) = text.strip_prefix("localhost:")
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        Err(format!(
            "{text:?} is not an IP address and port: write \"127.0.0.1:8080\" (this machine \
             only), \"0.0.0.0:8080\" (every IPv4 interface) or \"[::]:8080\" (every interface)"
        ))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn addresses_and_localhost() {
            assert_eq!(parse("127.0.0.1:80").unwrap().to_string(), "127.0.0.1:80");
            assert_eq!(parse("[::1]:80").unwrap().to_string(), "[::1]:80");
            assert_eq!(
                parse("localhost:8080").unwrap().to_string(),
                "127.0.0.1:8080"
            );
            for bad in [
                "example.com:80",
                "localhost",
                "localhost:http",
                ":8080",
                "8080",
            ] {
                let err = parse(bad).unwrap_err();
                assert!(err.contains("0.0.0.0:8080"), "{bad}: {err}");
            }
        }

        use super::parse;
    }
}
