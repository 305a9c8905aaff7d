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

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::doors::admin::{ADMIN_KEY_ENV, AdminKey};
use crate::hashing::{HASH_KEY_ENV, HashKey};
use crate::server::ServeConfig;
use crate::settings::{InvalidConfig, escape_controls};

mod sections;

pub use self::sections::Config;
use self::sections::section_keys;

#[cfg(test)]
mod tests;

/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "TOKENGATE_";
/// `TOKENGATE_*` variables that are not config keys: the config file's path,
/// the admin key and the hash key (secrets, kept out of files on purpose).
pub const NOT_CONFIG_KEYS: [&str; 3] = ["TOKENGATE_CONFIG", ADMIN_KEY_ENV, HASH_KEY_ENV];

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
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
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
        let text = match path {
            None => None,
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
        };
        let mut config = match (path, &text) {
            (Some(path), Some(text)) => parse_toml(text).map_err(|message| ConfigError::File {
                path: path.to_owned(),
                message,
            })?,
            _ => Self::default(),
        };
        let mut vars: Vec<_> = vars.into_iter().collect();
        vars.sort(); // apply in a fixed order, whatever the environment's
        let mut from_env = Vec::new();
        for (var, value) in &vars {
            if let Some(key) = config.apply_env(var, value)? {
                from_env.push((key, var.clone()));
            }
        }
        // Never in a file, never serialized: only from the environment.
        config.admin.key = vars
            .iter()
            .find(|(var, value)| var == ADMIN_KEY_ENV && !value.is_empty())
            .map(|(_, key)| AdminKey::new(key.clone()));
        // The same for the hash key: its bytes as they are, never logged.
        config.security.hash_key = vars
            .iter()
            .find(|(var, value)| var == HASH_KEY_ENV && !value.is_empty())
            .map(|(_, key)| HashKey::new(key.as_bytes()));
        config.validate().map_err(|error| {
            let ConfigError::Invalid(InvalidConfig::Key { key, message }) = error else {
                return error;
            };
            // Say where the bad value came from: the variable, else the
            // file's line with the value as written.
            if let Some((_, var)) = from_env.iter().find(|(k, _)| k == key) {
                return ConfigError::Env {
                    var: var.clone(),
                    message: format!("{key}: {message}"),
                };
            }
            match (path, text.as_deref().and_then(|t| find_key(t, key))) {
                (Some(path), Some((line, written))) => ConfigError::File {
                    path: path.to_owned(),
                    message: if message.contains(written) {
                        format!("line {line}, key {key}: {message}")
                    } else {
                        format!("line {line}, key {key} = {written}: {message}")
                    },
                },
                _ => ConfigError::Invalid(InvalidConfig::Key { key, message }),
            }
        })?;
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

    /// Applies `TOKENGATE_<SECTION>_<KEY>=value` and returns the key
    /// (`section.key`) it set. Every `TOKENGATE_*` variable must name a
    /// setting or be one of [`NOT_CONFIG_KEYS`]: a typo stops start-up
    /// with the nearest valid name, rather than leave a setting (the Redis
    /// URL!) at its default. An empty value counts as unset.
    fn apply_env(&mut self, var: &str, value: &str) -> Result<Option<String>, ConfigError> {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            return Ok(None);
        };
        if NOT_CONFIG_KEYS.contains(&var) {
            return Ok(None);
        }
        let env_error = |message: String| ConfigError::Env {
            var: escape_controls(var),
            message: escape_controls(&message),
        };
        let Some((section, key)) = env_setting(rest) else {
            return Err(env_error(unknown_variable(var)));
        };
        if value.is_empty() {
            return Ok(None);
        }
        let mut table = toml::Table::try_from(&*self).map_err(|e| env_error(e.to_string()))?;
        if let Some(toml::Value::Table(entries)) = table.get_mut(section) {
            // A list key takes a comma-separated value.
            let parsed = match entries.get(key) {
                Some(toml::Value::Array(_)) => toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(env_value)
                        .collect(),
                ),
                _ => env_value(value),
            };
            entries.insert(key.to_owned(), parsed);
        }
        *self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| env_error(e.message().to_owned()))?;
        Ok(Some(format!("{section}.{key}")))
    }

    /// Range and shape checks that types alone cannot express: each
    /// section's own (the order of `sections.rs`; when several keys are
    /// wrong, the first is reported). The admin key's presence is checked
    /// by `serve` (the token commands read the same file and need none).
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(self.check_sections()?)
    }

    /// The Authenticator's sections.
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            cache: self.cache.clone(),
            rate_limit: self.rate_limit.clone(),
            headers: self.headers.clone(),
            last_accessed: self.last_accessed.clone(),
            sources: self.sources.clone(),
            client_ip: self.client_ip.clone(),
            public_routes: self.public_routes.clone(),
            routes: self.routes.clone(),
        }
    }

    /// What `serve` needs: every section but `[log]`.
    pub fn serve_config(&self) -> ServeConfig {
        ServeConfig {
            redis: self.redis.clone(),
            security: self.security.clone(),
            auth: self.auth(),
            proxy: self.proxy.clone(),
            forward_auth: self.forward_auth.clone(),
            admin: self.admin.clone(),
            server: self.server.clone(),
            metrics: self.metrics.clone(),
            log: self.log.clone(),
        }
    }
}

/// Every setting as `(section, key, SECTION_KEY)`.
fn env_settings() -> impl Iterator<Item = (&'static str, &'static str, String)> {
    fields_of::<Config>().iter().flat_map(|&section| {
        section_keys(section).iter().map(move |&key| {
            let var = format!("{section}_{key}").to_ascii_uppercase();
            (section, key, var)
        })
    })
}

/// The setting `TOKENGATE_<rest>` names: `(section, key)`.
fn env_setting(rest: &str) -> Option<(&'static str, &'static str)> {
    let (section, key, _) = env_settings().find(|(_, _, var)| var == rest)?;
    Some((section, key))
}

/// Why `var` (a `TOKENGATE_*` variable) is refused, with the nearest valid
/// name when one is close.
fn unknown_variable(var: &str) -> String {
    let valid = env_settings()
        .map(|(_, _, rest)| format!("{ENV_PREFIX}{rest}"))
        .chain(NOT_CONFIG_KEYS.iter().map(|&v| v.to_owned()));
    let nearest = valid
        .map(|name| (strsim::levenshtein(var, &name), name))
        .min()
        .filter(|(distance, _)| *distance <= var.len() / 4);
    let hint = match nearest {
        Some((_, name)) => format!("did you mean {name}? "),
        None if var.starts_with("TOKENGATE_PUBLIC_ROUTES") => {
            "[[public_routes]] is set in the config file only; ".to_owned()
        }
        None if var.starts_with("TOKENGATE_ROUTES") => {
            "[[routes]] is set in the config file only; ".to_owned()
        }
        None => String::new(),
    };
    format!(
        "names no setting ({hint}every TOKENGATE_* variable is TOKENGATE_<SECTION>_<KEY> of a \
         key in config/tokengate.toml, or one of {})",
        NOT_CONFIG_KEYS.join(", ")
    )
}

/// The fields of a struct as its derived `Deserialize` names them to
/// `deserialize_struct`; empty for anything else.
pub(super) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use std::cell::Cell;

    use serde::de::{Error as _, Visitor, value::Error};

    struct Probe<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            self.0.set(fields);
            Err(Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

/// Where the file sets `key` (`section.key`): its line number and the
/// value as written.
fn find_key<'t>(text: &'t str, key: &str) -> Option<(usize, &'t str)> {
    let (want_section, want_key) = key.split_once('.')?;
    let mut section = "";
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_matches(|c| c == '[' || c == ']').trim();
        } else if let Some((k, v)) = line.split_once('=')
            && section == want_section
            && k.trim() == want_key
        {
            return Some((n + 1, v.trim()));
        }
    }
    None
}

/// Deserializes TOML text, turning the error into one line that names the
/// line and the key: `line 2, key security.bcrypt_cost: invalid type …`.
fn parse_toml(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim().replace('\n', " ");
        let error = match e.span() {
            Some(span) => format!("{}: {message}", locate(text, span.start)),
            None => message,
        };
        escape_controls(&error)
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
