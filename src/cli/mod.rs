//! The `tokengate` command line: `tokengate serve`, `tokengate token
//! create|list|get|update|rotate|revoke|quota|cleanup`, `tokengate audit`
//! and `tokengate migrate`.
//!
//! Built for people and scripts alike: `--json` prints machine-readable
//! output, errors are one line on stderr, and the exit code is 0 on success,
//! 2 for a usage error and 1 for anything else.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::audit::{Actor, AuditQuery, MAX_AUDIT_PAGE};
use crate::config::Config;
use crate::service::{
    Clock, CreateTokenParams, MAX_EXPIRES_IN_DAYS, MAX_PAGE, QuotaParams, SystemClock, TokenError,
    TokenInfo, TokenService, TokenStatus, TokenUpdate, allowed_ips_input, scopes_input,
};
use crate::service::{CreatedTokenBody, rotated_json};
use crate::store::{RedisStore, TokenStore, redact_url};
use crate::token::{AllowedIps, Meta, Scopes, TokenId, is_valid_scope};
use crate::token::{MAX_QUOTA, Refill, TokenRateLimit};

mod generate;
mod healthcheck;

/// Exit code for a usage error (bad flag, missing argument, bad value).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for every other failure.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Retention used by `token cleanup` unless `--retention-days` says otherwise.
pub(crate) const DEFAULT_RETENTION_DAYS: u32 = 30;

/// tokengate: API-token gateway.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file (TOML); see config/tokengate.toml.
    #[arg(long, global = true, env = "TOKENGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis URL; overrides TOKENGATE_REDIS_URL and the file's `[redis] url`.
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the front doors the config enables ([proxy], [forward_auth],
    /// [admin]) until SIGTERM / SIGINT.
    Serve,
    /// Manage API tokens in Redis.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Copy every token from the configured Redis to another one, e.g. from
    /// one Redis to a Redis Cluster (records, quotas, revocations and
    /// indexes; tokens already there are kept). Safe to run again.
    Migrate {
        /// The Redis to copy to (redis://, rediss://, redis+sentinel://,
        /// redis+cluster://).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Key prefix on the destination (default: the same as the source's).
        #[arg(long, value_name = "PREFIX")]
        to_key_prefix: Option<String>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Check that a running `tokengate serve` is up: GET its admin
    /// listener's /healthz, exit 0 on 200 (for container health checks).
    Healthcheck {
        /// What to GET; default: /healthz on the config's [admin] listen
        /// (0.0.0.0 and [::] as loopback).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print a shell completion script on stdout (e.g. `tokengate
    /// completions bash > /etc/bash_completion.d/tokengate`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (`tokengate man | man -l -`).
    Man,
    /// Show the audit trail: every token change made through the admin API
    /// or the CLI, oldest first (never a token or a hash).
    Audit {
        /// Only this account's entries.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Start after this entry id (the last one printed before).
        #[arg(long, value_name = "ENTRY_ID")]
        after: Option<String>,
        /// Print at most N entries (default: all there are).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
}

/// `tokengate token …`
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it (the only time it is ever shown).
    Create {
        /// Account the token acts for (1–128 characters).
        #[arg(long, value_name = "ID")]
        account: String,
        /// A label for people (1–256 characters).
        #[arg(long)]
        name: String,
        /// Days until the token expires; omit for a token that never expires.
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPIRES_IN_DAYS)))]
        expires_in_days: Option<u32>,
        /// A usage quota: requests the token may make (omit for unlimited).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
        quota: Option<u64>,
        /// Refill the quota: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
        #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "quota")]
        refill: Option<Refill>,
        /// A scope the token holds, e.g. orders:read or orders:* (repeat for
        /// several, at most 32).
        #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope)]
        scopes: Vec<String>,
        /// A network the token may be used from, e.g. 203.0.113.0/24 or
        /// 198.51.100.7 (repeat for several; omit for any address).
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse_network)]
        allowed_ips: Vec<String>,
        /// Metadata: a JSON object of at most 4 KiB, e.g. '{"plan": "pro"}'.
        #[arg(long, value_name = "JSON", value_parser = parse_meta)]
        meta: Option<Meta>,
        /// The token's own rate limit, REQUESTS/PERIOD (e.g. 10/1s or
        /// 600/1m), instead of [rate_limit] per_token_*.
        #[arg(long, value_name = "REQUESTS/PERIOD", value_parser = parse_rate)]
        rate_limit: Option<(u32, Duration)>,
        /// Requests at once after being idle, with --rate-limit (default:
        /// REQUESTS).
        #[arg(long, value_name = "N", requires = "rate_limit")]
        burst: Option<u32>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Set, replace or remove a token's usage quota (a new period starts now).
    Quota {
        /// The account that owns the token.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The token id.
        #[arg(long, value_name = "TOKEN_ID")]
        id: TokenId,
        /// Requests the token may make from now (until the next refill).
        #[arg(long, value_name = "N", required_unless_present = "remove",
              value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
        remaining: Option<u64>,
        /// Refill: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
        #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "remaining")]
        refill: Option<Refill>,
        /// Remove the quota (unlimited use).
        #[arg(long, conflicts_with_all = ["remaining", "refill"])]
        remove: bool,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// List an account's tokens (never the tokens themselves).
    List {
        /// The account.
        #[arg(long, value_name = "ID")]
        account: String,
        /// Only tokens in this state.
        #[arg(long, value_parser = ["active", "expired", "revoked", "disabled"])]
        status: Option<String>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Show one token's record.
    Get {
        /// The account that owns the token.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The token id (UUID, or the 22 characters after `mk_` in the token).
        #[arg(long, value_name = "TOKEN_ID")]
        id: TokenId,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Revoke a token (it stops working at once; the record stays until cleanup).
    Revoke {
        /// The account that owns the token.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The token id.
        #[arg(long, value_name = "TOKEN_ID")]
        id: TokenId,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Change a token: its name, scopes or expiry, or disable / enable it
    /// (every replica sees the change within about a second).
    Update {
        /// The account that owns the token.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The token id.
        #[arg(long, value_name = "TOKEN_ID")]
        id: TokenId,
        /// A new label (1–256 characters).
        #[arg(long)]
        name: Option<String>,
        /// Replace the scopes with these (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope,
              conflicts_with = "no_scopes")]
        scopes: Vec<String>,
        /// Remove every scope.
        #[arg(long)]
        no_scopes: bool,
        /// Replace the IP allowlist with these networks (repeat for several).
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse_network,
              conflicts_with = "any_ip")]
        allowed_ips: Vec<String>,
        /// Remove the IP allowlist: any address.
        #[arg(long)]
        any_ip: bool,
        /// Replace the metadata: a JSON object of at most 4 KiB.
        #[arg(long, value_name = "JSON", value_parser = parse_meta, conflicts_with = "no_meta")]
        meta: Option<Meta>,
        /// Remove the metadata.
        #[arg(long)]
        no_meta: bool,
        /// Expire N days from now.
        #[arg(long, value_name = "N", conflicts_with = "never_expires",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPIRES_IN_DAYS)))]
        expires_in_days: Option<u32>,
        /// Never expire.
        #[arg(long)]
        never_expires: bool,
        /// Refuse the token until it is enabled again.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Accept a disabled token again.
        #[arg(long)]
        enable: bool,
        /// Give the token its own rate limit, REQUESTS/PERIOD (e.g. 10/1s).
        #[arg(long, value_name = "REQUESTS/PERIOD", value_parser = parse_rate,
              conflicts_with = "default_rate_limit")]
        rate_limit: Option<(u32, Duration)>,
        /// Requests at once after being idle, with --rate-limit (default:
        /// REQUESTS).
        #[arg(long, value_name = "N", requires = "rate_limit")]
        burst: Option<u32>,
        /// Back to the configured limit ([rate_limit] per_token_*).
        #[arg(long)]
        default_rate_limit: bool,
        /// Set a usage quota: requests the token may make from now.
        #[arg(long, value_name = "N", conflicts_with = "no_quota",
              value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
        quota: Option<u64>,
        /// Refill the quota: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
        #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "quota")]
        refill: Option<Refill>,
        /// Remove the quota (unlimited use).
        #[arg(long)]
        no_quota: bool,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Rotate a token: print a new one with the same account, name, scopes,
    /// metadata, allowlist and expiry; the old one keeps working for the
    /// grace period (never past its own expiry), 0 revokes it at once.
    Rotate {
        /// The account that owns the token.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The token id.
        #[arg(long, value_name = "TOKEN_ID")]
        id: TokenId,
        /// How long the old token keeps working, e.g. 24h, 30m or 0.
        #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
        grace: Duration,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Delete tokens that expired or were revoked more than N days ago.
    Cleanup {
        /// Keep dead tokens this many days (0 deletes them all at once).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_RETENTION_DAYS,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_EXPIRES_IN_DAYS)))]
        retention_days: u32,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
}

/// Output format flags shared by the token commands.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

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

/// `tokengate audit`: the trail page by page, oldest first.
async fn audit(
    config: &Config,
    account: Option<String>,
    after: Option<String>,
    limit: Option<u64>,
    output: Output,
) -> Result<String, String> {
    let service = cli_service(config).await?;
    let mut query = AuditQuery {
        account,
        after,
        limit: MAX_AUDIT_PAGE,
    };
    let mut entries = Vec::new();
    loop {
        let left = limit.map_or(u64::MAX, |l| l - entries.len() as u64);
        query.limit = usize::try_from(left.min(MAX_AUDIT_PAGE as u64)).unwrap_or(MAX_AUDIT_PAGE);
        let page = service
            .read_audit(&query)
            .await
            .map_err(|e| e.to_string())?;
        entries.extend(page.entries);
        if page.next.is_none() || limit.is_some_and(|l| entries.len() as u64 >= l) {
            break;
        }
        query.after = page.next;
    }
    if output.json {
        return Ok(json_line(&entries));
    }
    if entries.is_empty() {
        return Ok("No audit entries.\n".to_owned());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                timestamp(e.at),
                if e.actor.id.is_empty() {
                    e.actor.kind.clone()
                } else {
                    format!("{} ({})", e.actor.kind, e.actor.id)
                },
                e.action.as_str().to_owned(),
                e.account_id.clone().unwrap_or_else(|| "-".to_owned()),
                e.token_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                serde_json::Value::Object(e.changes.clone()).to_string(),
            ]
        })
        .collect();
    Ok(grid(
        &[
            "ENTRY", "TIME", "ACTOR", "ACTION", "ACCOUNT", "TOKEN", "CHANGES",
        ],
        &rows,
    ))
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

/// `tokengate migrate`: every record of the source inserted into the
/// destination as it is (the store's insert writes the record and its
/// indexes in the destination's layout).
async fn migrate(
    config: &Config,
    to: &str,
    to_key_prefix: Option<String>,
    output: Output,
) -> Result<String, String> {
    let Some(from) = config.redis.url.as_deref() else {
        return Err("migrate copies from Redis, and no Redis URL is set \
                    (use --redis-url, TOKENGATE_REDIS_URL or [redis] url)"
            .to_owned());
    };
    let destination = crate::store::RedisConfig {
        url: Some(to.to_owned()),
        key_prefix: to_key_prefix.unwrap_or_else(|| config.redis.key_prefix.clone()),
        ..crate::store::RedisConfig::default()
    };
    destination.validate().map_err(|e| format!("--to: {e}"))?;
    if destination.url.as_deref() == Some(from) && destination.key_prefix == config.redis.key_prefix
    {
        return Err("--to is the source itself".to_owned());
    }
    let source = RedisStore::open(&config.redis)
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact_url(from)))?;
    let target = RedisStore::open(&destination)
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact_url(to)))?;
    let ids = source.token_ids().await.map_err(|e| e.to_string())?;
    let (mut copied, mut updated) = (0u64, 0u64);
    for &id in &ids {
        // Gone since the scan (cleanup ran): nothing to copy.
        let Some(record) = source.get(id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let failed = |e: crate::store::StoreError| format!("copying token {id}: {e}");
        match target.insert(&record).await {
            Ok(()) => copied += 1,
            Err(crate::store::StoreError::Duplicate(_)) => {
                return Err(format!(
                    "token {id} exists on the destination with another hash: not overwritten"
                ));
            }
            Err(e) => return Err(failed(e)),
        }
        // Copied by an earlier run: bring over what changed since.
        let Some(copy) = target.get(id).await.map_err(failed)? else {
            continue;
        };
        if bring_changes(&target, &record, &copy)
            .await
            .map_err(failed)?
        {
            updated += 1;
        }
    }
    Ok(if output.json {
        json_line(&serde_json::json!({ "copied": copied, "updated": updated }))
    } else {
        format!(
            "Copied {copied} token(s) from {} to {} ({updated} changed since an earlier copy, \
             brought up to date).\n",
            redact_url(from),
            redact_url(to)
        )
    })
}

/// Makes `copy` (on `target`) say what `record` says about revocation,
/// quota and last use; whether anything changed.
async fn bring_changes(
    target: &RedisStore,
    record: &crate::store::TokenRecord,
    copy: &crate::store::TokenRecord,
) -> Result<bool, crate::store::StoreError> {
    let mut changed = false;
    if let (Some(at), None) = (record.revoked_at, copy.revoked_at) {
        target.revoke(record.id, &record.account_id, at).await?;
        changed = true;
    }
    let shown = |q: &Option<crate::token::Quota>| q.map(|q| (q.remaining, q.refill, q.refilled_at));
    if shown(&record.quota) != shown(&copy.quota) {
        let at = record.quota.map_or(record.updated_at, |q| q.refilled_at);
        target
            .set_quota(record.id, &record.account_id, record.quota, at)
            .await?;
        changed = true;
    }
    if let Some(at) = record.last_accessed
        && copy.last_accessed < Some(at)
    {
        target.touch(&[(record.id, at)]).await?;
        changed = true;
    }
    Ok(changed)
}

async fn run_token(config: &Config, command: TokenCommand) -> Result<String, String> {
    let service = cli_service(config).await?;
    let fail = |e: TokenError| e.to_string();
    match command {
        TokenCommand::Create {
            account,
            name,
            expires_in_days,
            quota,
            refill,
            scopes,
            allowed_ips,
            meta,
            rate_limit,
            burst,
            output,
        } => {
            let created = service
                .create_token(CreateTokenParams {
                    account_id: account,
                    name,
                    expires_in_days,
                    quota: quota.map(|remaining| QuotaParams { remaining, refill }),
                    scopes: scopes_input(scopes).map_err(fail)?,
                    allowed_ips: allowed_ips_input(&allowed_ips).map_err(fail)?,
                    meta: meta.unwrap_or_default(),
                    rate_limit: rate_limit.map(|(requests, period)| TokenRateLimit {
                        requests,
                        period,
                        burst: burst.unwrap_or(0),
                    }),
                })
                .await
                .map_err(fail)?;
            if output.json {
                // Through a Value, whose keys are sorted (as the admin API's).
                let value = serde_json::to_value(CreatedTokenBody::new(&created))
                    .map_err(|e| e.to_string())?;
                return Ok(json_line(&value));
            }
            let info = &created.info;
            Ok(format!(
                "Created token {} ({:?}) for account {:?}, {}.\n\n    {}\n\n\
                 Store this token now: it is shown only once and cannot be recovered.\n",
                info.id,
                info.name,
                info.account_id,
                match info.expires_at {
                    Some(at) => format!("expires {}", timestamp(at)),
                    None => "never expires".to_owned(),
                },
                created.token.expose_secret(),
            ))
        }
        TokenCommand::List {
            account,
            status,
            output,
        } => {
            let status = status.map(|s| match s.as_str() {
                "active" => TokenStatus::Active,
                "expired" => TokenStatus::Expired,
                "revoked" => TokenStatus::Revoked,
                _ => TokenStatus::Disabled,
            });
            // Page by page (1,000 at a time), then oldest first.
            let mut tokens = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = service
                    .list_tokens_page(&account, cursor, MAX_PAGE, status)
                    .await
                    .map_err(fail)?;
                tokens.extend(page);
                cursor = next;
                if cursor.is_none() {
                    break;
                }
            }
            tokens.sort_by_key(|t| (t.created_at, t.id));
            if output.json {
                return Ok(json_line(&tokens));
            }
            if tokens.is_empty() {
                return Ok(format!("No tokens for account {account:?}.\n"));
            }
            Ok(table(&tokens))
        }
        TokenCommand::Get {
            account,
            id,
            output,
        } => {
            let info = service
                .get_token(id, &account)
                .await
                .map_err(|e| not_found(e, id, &account))?;
            Ok(if output.json {
                json_line(&info)
            } else {
                details(&info)
            })
        }
        TokenCommand::Revoke {
            account,
            id,
            output,
        } => {
            let info = service
                .revoke_token(id, &account)
                .await
                .map_err(|e| not_found(e, id, &account))?;
            Ok(if output.json {
                json_line(&info)
            } else {
                format!(
                    "Revoked token {} ({:?}) of account {:?} at {}.\n",
                    info.id,
                    info.name,
                    info.account_id,
                    info.revoked_at.map_or_else(|| "?".to_owned(), timestamp)
                )
            })
        }
        TokenCommand::Update {
            account,
            id,
            name,
            scopes,
            no_scopes,
            allowed_ips,
            any_ip,
            meta,
            no_meta,
            expires_in_days,
            never_expires,
            disable,
            enable,
            rate_limit,
            burst,
            default_rate_limit,
            quota,
            refill,
            no_quota,
            output,
        } => {
            let scopes = if no_scopes {
                Some(Scopes::default())
            } else if scopes.is_empty() {
                None
            } else {
                Some(scopes_input(scopes).map_err(fail)?)
            };
            let now = SystemClock.now();
            let expires_at = match (expires_in_days, never_expires) {
                (Some(days), _) => Some(Some(now + i64::from(days) * 86_400)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let enabled = match (disable, enable) {
                (true, _) => Some(false),
                (_, true) => Some(true),
                _ => None,
            };
            let allowed_ips = if any_ip {
                Some(AllowedIps::default())
            } else if allowed_ips.is_empty() {
                None
            } else {
                Some(allowed_ips_input(&allowed_ips).map_err(fail)?)
            };
            let update = TokenUpdate {
                name,
                scopes,
                expires_at,
                enabled,
                allowed_ips,
                meta: if no_meta { Some(Meta::default()) } else { meta },
                rate_limit: match (rate_limit, default_rate_limit) {
                    (Some((requests, period)), _) => Some(Some(TokenRateLimit {
                        requests,
                        period,
                        burst: burst.unwrap_or(0),
                    })),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                quota: match (quota, no_quota) {
                    (Some(remaining), _) => Some(Some(QuotaParams { remaining, refill })),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            if update == TokenUpdate::default() {
                return Err("nothing to change: give --name, --scope, --no-scopes, \
                     --allow-ip, --any-ip, --meta, --no-meta, --expires-in-days, --never-expires, \
                     --disable, --enable, --rate-limit, --default-rate-limit, --quota or --no-quota"
                    .to_owned());
            }
            let info = service
                .update_token(id, &account, update)
                .await
                .map_err(|e| match e {
                    TokenError::Revoked => {
                        format!("token {id} is revoked: it cannot be changed")
                    }
                    e => not_found(e, id, &account),
                })?;
            Ok(if output.json {
                json_line(&info)
            } else {
                details(&info)
            })
        }
        TokenCommand::Quota {
            account,
            id,
            remaining,
            refill,
            remove: _,
            output,
        } => {
            let quota = remaining.map(|remaining| QuotaParams { remaining, refill });
            let info = service
                .set_quota(id, &account, quota)
                .await
                .map_err(|e| not_found(e, id, &account))?;
            Ok(if output.json {
                json_line(&info)
            } else {
                details(&info)
            })
        }
        TokenCommand::Rotate {
            account,
            id,
            grace,
            output,
        } => {
            let rotated = service
                .rotate_token(id, &account, grace)
                .await
                .map_err(|e| match e {
                    TokenError::Revoked => format!("token {id} is revoked: it cannot be rotated"),
                    TokenError::Expired => format!("token {id} has expired: it cannot be rotated"),
                    TokenError::AlreadyRotated(to) => {
                        format!("token {id} was already rotated to {to}: rotate that one")
                    }
                    e => not_found(e, id, &account),
                })?;
            if output.json {
                let value = rotated_json(&rotated).map_err(|e| e.to_string())?;
                return Ok(json_line(&value));
            }
            let old = &rotated.old;
            Ok(format!(
                "Rotated token {} ({:?}) of account {:?} to {}.\n\n    {}\n\n\
                 Store this token now: it is shown only once and cannot be recovered.\n\
                 The old token {}.\n",
                old.id,
                old.name,
                old.account_id,
                rotated.new.info.id,
                rotated.new.token.expose_secret(),
                match (old.revoked_at, old.expires_at) {
                    (Some(_), _) => "is revoked".to_owned(),
                    (None, Some(at)) => format!("works until {}", timestamp(at)),
                    (None, None) => "never expires".to_owned(),
                },
            ))
        }
        TokenCommand::Cleanup {
            retention_days,
            output,
        } => {
            let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
            let removed = service.cleanup_expired(retention).await.map_err(fail)?;
            Ok(if output.json {
                json_line(
                    &serde_json::json!({ "removed": removed, "retention_days": retention_days }),
                )
            } else {
                format!(
                    "Removed {removed} token(s) expired or revoked more than {retention_days} day(s) ago.\n"
                )
            })
        }
    }
}

/// `--rate-limit`: `REQUESTS/PERIOD`, e.g. `10/1s` or `600/1m`.
fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let (requests, period) = text
        .split_once('/')
        .ok_or("must be REQUESTS/PERIOD, e.g. 10/1s")?;
    let requests: u32 = requests
        .trim()
        .parse()
        .map_err(|_| format!("{requests:?} is not a number of requests"))?;
    let period = humantime::parse_duration(period.trim())
        .map_err(|e| format!("{period:?} is not a period like 1s or 1m: {e}"))?;
    Ok((requests, period))
}

/// `--grace`: as the admin API's `grace`.
fn parse_grace(text: &str) -> Result<Duration, String> {
    crate::service::grace_input(text).map_err(|e| match e {
        TokenError::InvalidInput { reason, .. } => reason,
        e => e.to_string(),
    })
}

fn not_found(e: TokenError, id: TokenId, account: &str) -> String {
    match e {
        TokenError::NotFound => format!("token {id} not found for account {account:?}"),
        e => e.to_string(),
    }
}

fn json_line(value: &impl serde::Serialize) -> String {
    // Serializing our own plain structs cannot fail.
    let mut out = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    out.push('\n');
    out
}

fn timestamp(unix: i64) -> String {
    u64::try_from(unix).map_or_else(
        |_| unix.to_string(),
        |secs| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        },
    )
}

fn optional_timestamp(unix: Option<i64>, none: &str) -> String {
    unix.map_or_else(|| none.to_owned(), timestamp)
}

fn table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.status.as_str().to_owned(),
                timestamp(t.created_at),
                optional_timestamp(t.expires_at, "never"),
                optional_timestamp(t.last_accessed, "never"),
            ]
        })
        .collect();
    grid(
        &["ID", "NAME", "STATUS", "CREATED", "EXPIRES", "LAST USED"],
        &rows,
    )
}

/// Rows under a header, in columns as wide as their widest cell.
fn grid(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|&h| h.to_owned()).collect();
    let mut widths = vec![0usize; header.len()];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn details(info: &TokenInfo) -> String {
    let mut out = String::new();
    let fields = [
        ("id", info.id.to_string()),
        ("account", info.account_id.clone()),
        ("name", info.name.clone()),
        ("status", info.status.as_str().to_owned()),
        ("created", timestamp(info.created_at)),
        ("updated", timestamp(info.updated_at)),
        ("expires", optional_timestamp(info.expires_at, "never")),
        ("last used", optional_timestamp(info.last_accessed, "never")),
        ("revoked", optional_timestamp(info.revoked_at, "no")),
        (
            "enabled",
            if info.enabled { "yes" } else { "no" }.to_owned(),
        ),
        (
            "from",
            if info.allowed_ips.is_empty() {
                "any address".to_owned()
            } else {
                info.allowed_ips.to_spaced()
            },
        ),
        ("quota", quota_text(info)),
        (
            "limit",
            info.rate_limit.map_or_else(
                || "as configured".to_owned(),
                |l| {
                    format!(
                        "{} per {}, burst {}",
                        l.requests,
                        humantime::format_duration(l.period),
                        l.burst
                    )
                },
            ),
        ),
        ("meta", info.meta.as_json().to_owned()),
        (
            "scopes",
            if info.scopes.is_empty() {
                "none".to_owned()
            } else {
                info.scopes.to_spaced()
            },
        ),
    ];
    let lineage = [
        ("rotated from", info.rotated_from),
        ("rotated to", info.rotated_to),
    ];
    let lineage = lineage
        .into_iter()
        .filter_map(|(name, id)| Some((name, id?.to_string())));
    for (name, value) in fields.into_iter().chain(lineage) {
        let _ = writeln!(out, "{:<10} {value}", format!("{name}:"));
    }
    out
}

/// `"740 left, refills to 1000 every 1day (next 2026-11-28 00:00:00 UTC)"`.
fn quota_text(info: &TokenInfo) -> String {
    let Some(quota) = &info.quota else {
        return "none (unlimited)".to_owned();
    };
    match quota.refill {
        Some(refill) => format!(
            "{} left, refills to {} every {} (next {})",
            quota.remaining,
            refill.amount,
            refill.interval,
            optional_timestamp(quota.next_refill_at, "?")
        ),
        None => format!("{} left, no refill", quota.remaining),
    }
}

/// One `--scope`, in the scope syntax (docs/reference/token-format.md, "Scopes").
fn parse_scope(text: &str) -> Result<String, String> {
    if is_valid_scope(text) {
        Ok(text.to_owned())
    } else {
        Err("a scope is 1–64 characters from a-z 0-9 : . _ - with a * only at the end".to_owned())
    }
}

/// `--meta`: a JSON object of at most 4 KiB.
fn parse_meta(text: &str) -> Result<Meta, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    Meta::new(value).map_err(|e| format!("metadata {e}"))
}

/// One `--allow-ip`: a CIDR block or an address.
fn parse_network(text: &str) -> Result<String, String> {
    AllowedIps::new([text])
        .map(|_| text.to_owned())
        .map_err(|_| "give a CIDR block (203.0.113.0/24, 2001:db8::/32) or an address".to_owned())
}

/// `AMOUNT/INTERVAL`: `10000/1d`, `50000/month`.
fn parse_refill(text: &str) -> Result<Refill, String> {
    let (amount, interval) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month"))?;
    let amount: u64 = amount
        .parse()
        .ok()
        .filter(|a| (1..=MAX_QUOTA).contains(a))
        .ok_or_else(|| format!("refill amount {amount:?} must be between 1 and {MAX_QUOTA}"))?;
    Ok(Refill {
        amount,
        interval: interval.parse()?,
    })
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
