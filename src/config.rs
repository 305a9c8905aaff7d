//! Configuration: one TOML file, then `TOKENGATE_<SECTION>_<KEY>` environment
//! variables, then command-line flags (applied by the caller), then checks.
//!
//! Parsing is strict: an unknown key or a value of the wrong type stops
//! start-up with a one-line message naming the key. config/tokengate.toml is
//! the commented reference.
//!
//! ```
//! use tokengate::Config;
//!
//! let config = Config::from_toml_str("[security]\nbcrypt_cost = 12\n").unwrap();
//! assert_eq!(config.security.bcrypt_cost, 12);
//! assert_eq!(config.redis.key_prefix, "tokengate:");
//! assert!(Config::from_toml_str("[security]\nbcrypt_cots = 12\n").is_err());
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::service::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};

/// Key prefix used unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "tokengate:";
/// Longest key prefix accepted.
pub const MAX_KEY_PREFIX_LEN: usize = 64;
/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "TOKENGATE_";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[redis]`: the production token store.
    pub redis: RedisConfig,
    /// `[security]`: hashing.
    pub security: SecurityConfig,
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. Unset: the embedded in-memory
    /// store (single process, tokens lost on restart).
    pub url: Option<String>,
    /// Prepended to every key and channel name, so several deployments can
    /// share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// bcrypt cost for new tokens, 4–15. Each step doubles the time of every
    /// hash and of every cache-miss verification.
    pub bcrypt_cost: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

/// Why the configuration cannot be used. Whose fault: the operator's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a wrong type.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and the key.
        message: String,
    },
    /// An environment variable names an unknown key or has a wrong value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("config key {key}: {message}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The configuration from `path` (or the defaults when `None`), with the
    /// process environment's `TOKENGATE_*` overrides, checked.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            None => Self::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                parse_toml(&text).map_err(|message| ConfigError::File {
                    path: path.to_owned(),
                    message,
                })?
            }
        };
        let mut vars: Vec<_> = vars.into_iter().collect();
        vars.sort(); // apply in a fixed order, whatever the environment's
        for (var, value) in vars {
            config.apply_env(&var, &value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks TOML text, without environment overrides.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(text).map_err(|message| ConfigError::File {
            path: PathBuf::from("<string>"),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `TOKENGATE_<SECTION>_<KEY>=value` if `var` names a section of
    /// this file; other variables (`TOKENGATE_CONFIG`, …) are not config keys
    /// and are left alone. An empty value counts as unset.
    fn apply_env(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        if value.is_empty() {
            return Ok(());
        }
        let env_error = |message: String| ConfigError::Env {
            var: var.to_owned(),
            message,
        };
        let mut table = toml::Table::try_from(&*self).map_err(|e| env_error(e.to_string()))?;
        let Some((section, key)) = table.keys().find_map(|section| {
            let upper = section.to_ascii_uppercase();
            let key = rest.strip_prefix(&upper)?.strip_prefix('_')?;
            Some((section.clone(), key.to_ascii_lowercase()))
        }) else {
            return Ok(());
        };
        if let Some(toml::Value::Table(entries)) = table.get_mut(&section) {
            entries.insert(key, env_value(value));
        }
        *self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| env_error(e.message().to_owned()))?;
        Ok(())
    }

    /// Range and shape checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cost = self.security.bcrypt_cost;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(ConfigError::Invalid {
                key: "security.bcrypt_cost",
                message: format!("{cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST}"),
            });
        }
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_KEY_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::Invalid {
                key: "redis.key_prefix",
                message: format!(
                    "must be 1–{MAX_KEY_PREFIX_LEN} printable ASCII characters without spaces"
                ),
            });
        }
        if let Some(url) = &self.redis.url {
            check_redis_url(url).map_err(|message| ConfigError::Invalid {
                key: "redis.url",
                message,
            })?;
        }
        Ok(())
    }
}

/// Checks a Redis URL without connecting.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a usable Redis URL ({}): {e}", redact_url(url)))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

/// Deserializes TOML text, turning the error into one line that names the
/// line and the key: `line 2, key security.bcrypt_cost: invalid type …`.
fn parse_toml(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => format!("{}: {message}", locate(text, span.start)),
            None => message,
        }
    })
}

/// `line N`, plus `key section.key` when that line assigns a key.
fn locate(text: &str, offset: usize) -> String {
    let line_no = text[..offset.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let section = text
        .lines()
        .take(line_no)
        .filter_map(|l| l.trim().strip_prefix('[')?.split(']').next())
        .last();
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            let key = key.trim();
            match section {
                Some(section) => format!("line {line_no}, key {section}.{key}"),
                None => format!("line {line_no}, key {key}"),
            }
        }
        _ => format!("line {line_no}"),
    }
}

/// An environment value as TOML would read it: a number or boolean when it
/// is one, else the string as given (no quoting needed).
fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => match table.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("tokengate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", crc32fast::hash(text.as_bytes())));
        std::fs::write(&path, text).unwrap();
        let result = Config::load_with_env(Some(&path), env(vars));
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn defaults_without_a_file() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.redis.url, None);
        assert_eq!(config.security.bcrypt_cost, 10);
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokengate.toml");
        Config::load_with_env(Some(&path), env(&[])).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = load("[redis]\nurll = \"redis://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, key redis.urll"), "{err}");
        let err = load("[reddis]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("reddis"), "{err}");
        let err = load("[security]\nbcrypt_cost = \"ten\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, key security.bcrypt_cost"), "{err}");
        let err = load("[security]\nbcrypt_cost = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.bcrypt_cost"), "{err}");
        let err = load("[redis]\nkey_prefix = \"a b\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.key_prefix"), "{err}");
        let err = load("[redis]\nurl = \"http://nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.url"), "{err}");
        let err = load("not toml at all", &[]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "[redis]\nurl = \"redis://file:6379\"\n[security]\nbcrypt_cost = 11\n";
        let config = load(
            text,
            &[
                ("TOKENGATE_REDIS_URL", "redis://env:6379"),
                ("TOKENGATE_SECURITY_BCRYPT_COST", "12"),
                ("TOKENGATE_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(config.redis.url.as_deref(), Some("redis://env:6379"));
        assert_eq!(config.security.bcrypt_cost, 12);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let err = load("", &[("TOKENGATE_REDIS_PASSWORD", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKENGATE_REDIS_PASSWORD"), "{err}");
        let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKENGATE_SECURITY_BCRYPT_COST"), "{err}");
        let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "99")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.bcrypt_cost"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host"),
            "redis://user:***@host"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
