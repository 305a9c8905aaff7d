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
    /// The access log: one line per request of every listener of `serve`
    /// (target `tokengate::access`, level info; docs/reference/http-contract.md,
    /// "Access log").
    pub access: bool,
    /// Percentage of requests the access log shows, 1–100, evenly spread
    /// (10: every tenth request).
    pub access_sample_percent: u8,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
            access: true,
            access_sample_percent: 100,
        }
    }
}

impl LogConfig {
    /// The level must be a `tracing` filter; the sample a percentage.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        crate::settings::in_range(
            "log.access_sample_percent",
            self.access_sample_percent,
            1,
            100,
        )?;
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
