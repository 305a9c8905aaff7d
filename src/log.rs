//! Logging: the `[log]` section and the subscriber `tokengate` installs
//! (human lines or JSON, on stderr).

use serde::{Deserialize, Serialize};

use crate::settings::{InvalidConfig, invalid};

/// `[log]`: log format and level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"human"` or `"json"` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter: `"info"`, `"debug"`, `"tokengate=debug,info"`.
    /// `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    /// The level must be a `tracing` filter.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a log filter like \"info\" or \"tokengate=debug\"",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logs go to stderr, so stdout stays clean for `--json`. `RUST_LOG`
/// overrides `level`.
pub(crate) fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.level));
    // Colours only on a terminal, and not with NO_COLOR set: a log file or a
    // collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
