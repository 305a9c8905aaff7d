//! The `tokengate` command line; `args.rs` declares every command
//! (`tokengate --help` lists them; docs/guide/cli.md explains them).
//!
//! Built for people and scripts alike: `--json` prints machine-readable
//! output, errors are one line on stderr, and the exit code is 0 on success,
//! 2 for a usage error and 1 for anything else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use self::args::{Cli, Command};
use self::audit::audit;
use self::migrate::migrate;
use self::token::run_token;
use crate::audit::Actor;
use crate::config::Config;
use crate::service::TokenService;
use crate::store::{RedisStore, redact_url};

mod args;
mod audit;
mod generate;
mod healthcheck;
mod migrate;
mod parse;
mod print;
mod token;

/// Exit code for a usage error (bad flag, missing argument, bad value).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for every other failure.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Retention used by `token cleanup` unless `--retention-days` says otherwise.
pub(crate) const DEFAULT_RETENTION_DAYS: u32 = 30;

/// Parses the arguments, runs the command and returns the exit code. Usage
/// errors print one line and exit 2; `--help` and `--version` print as usual.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version: clap prints to stdout and exits 0.
            e.exit();
        }
        Err(e) => {
            eprintln!("{}", one_line_usage_error(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if matches!(cli.command, Command::Serve) {
        let config = match load_config(&cli) {
            Ok(config) => config,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        crate::telemetry::log::init(&config.log);
        return match runtime.block_on(crate::server::serve(config.serve_config())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // Once: as a JSON log line for a collector, else as the
                // CLI's one-line error.
                match config.log.format {
                    crate::telemetry::log::LogFormat::Json => tracing::error!("{e}"),
                    crate::telemetry::log::LogFormat::Human => eprintln!("error: {e}"),
                }
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    crate::telemetry::log::init(&crate::telemetry::log::LogConfig {
        level: "warn".to_owned(),
        ..Default::default()
    });
    match runtime.block_on(run(cli)) {
        Ok(output) => {
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs a parsed command and returns what to print on stdout, or the one-line
/// error message.
pub(crate) async fn run(cli: Cli) -> Result<String, String> {
    // These read no config, so a broken one cannot stop them.
    match &cli.command {
        Command::Completions { shell } => return Ok(generate::completions(*shell)),
        Command::Man => return generate::man_page(),
        Command::Healthcheck { url: Some(url) } => return healthcheck::check(url).await,
        _ => {}
    }
    let config = load_config(&cli)?;
    match cli.command {
        Command::Token(command) => run_token(&config, command).await,
        Command::Audit {
            account,
            after,
            limit,
            output,
        } => audit(&config, account, after, limit, output).await,
        Command::Migrate {
            to,
            to_key_prefix,
            output,
        } => migrate(&config, &to, to_key_prefix, output).await,
        Command::Serve => crate::server::serve(config.serve_config())
            .await
            .map(|()| String::new())
            .map_err(|e| e.to_string()),
        Command::Healthcheck { url } => match url {
            Some(url) => healthcheck::check(&url).await,
            None => healthcheck::check(&healthcheck::admin_url(&config)?).await,
        },
        Command::Completions { shell } => Ok(generate::completions(shell)),
        Command::Man => generate::man_page(),
    }
}

/// The service the token commands and `audit` use: on the configured Redis,
/// hashing as configured, its changes audited as the OS user's.
async fn cli_service(config: &Config) -> Result<TokenService, String> {
    let Some(url) = config.redis.url.as_deref() else {
        return Err("token commands need Redis, and no Redis URL is set \
                    (use --redis-url, TOKENGATE_REDIS_URL or [redis] url): \
                    the in-memory store lives inside one running server and is gone when it stops"
            .to_owned());
    };
    let store = RedisStore::open(&config.redis)
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact_url(url)))?;
    // Hashed as configured: with hash = "hmac-sha256", the CLI needs
    // TOKENGATE_HASH_KEY too (the config loader checked it is there).
    Ok(TokenService::from_config(Arc::new(store), &config.security)
        .acting_as(Actor::cli(&os_user())))
}

/// Who runs the CLI: `$USER` (or `$LOGNAME`), else the uid.
fn os_user() -> String {
    use std::os::unix::fs::MetadataExt;
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| {
            std::fs::metadata("/proc/self")
                .map_or_else(|_| "unknown".to_owned(), |m| format!("uid {}", m.uid()))
        })
}

/// The file (if any), `TOKENGATE_*` overrides, then the flags.
fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(url) = &cli.redis_url {
        config.redis.url = Some(url.clone());
        config.validate().map_err(|e| format!("--redis-url: {e}"))?;
    }
    Ok(config)
}

/// clap's error as one line: its first paragraph, lines joined, plus a pointer
/// to `--help`.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let lines: Vec<&str> = rendered.lines().map(str::trim).collect();
    // The message, and clap's "tip: a similar subcommand exists: 'token'".
    let message: Vec<&str> = lines
        .iter()
        .copied()
        .take_while(|line| !line.is_empty())
        .collect();
    let mut line = message.join(" ");
    for tip in lines.iter().filter(|line| line.starts_with("tip:")) {
        line = format!("{line}; {tip}");
    }
    format!("{line} (see --help)")
}
