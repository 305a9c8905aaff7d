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

/// `key` is invalid because of `message`.
pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig::Key {
        key,
        message: message.into(),
    }
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
