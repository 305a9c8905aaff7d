//! The command line as clap declares it: every command, argument and its
//! help (docs/guide/cli.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use super::DEFAULT_RETENTION_DAYS;
use super::parse::{parse_grace, parse_meta, parse_network, parse_rate, parse_refill, parse_scope};
use crate::service::{MAX_EXPIRES_IN_DAYS, TokenStatus};
use crate::token::{MAX_QUOTA, Meta, Refill, TokenId};

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
    Create(CreateArgs),
    /// Set, replace or remove a token's usage quota (a new period starts now).
    Quota(QuotaArgs),
    /// List an account's tokens (never the tokens themselves).
    List(ListArgs),
    /// Show one token's record.
    Get(GetArgs),
    /// Revoke a token (it stops working at once; the record stays until cleanup).
    Revoke(RevokeArgs),
    /// Change a token: its name, scopes or expiry, or disable / enable it
    /// (every replica sees the change within about a second).
    Update(UpdateArgs),
    /// Rotate a token: print a new one with the same account, name, scopes,
    /// metadata, allowlist and expiry; the old one keeps working for the
    /// grace period (never past its own expiry), 0 revokes it at once.
    Rotate(RotateArgs),
    /// Delete tokens that expired or were revoked more than N days ago.
    Cleanup(CleanupArgs),
}

// The arguments of `tokengate token create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Account the token acts for (1–128 characters).
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// A label for people (1–256 characters).
    #[arg(long)]
    pub(crate) name: String,
    /// Days until the token expires; omit for a token that never expires.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPIRES_IN_DAYS)))]
    pub(crate) expires_in_days: Option<u32>,
    /// A usage quota: requests the token may make (omit for unlimited).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
    pub(crate) quota: Option<u64>,
    /// Refill the quota: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
    #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "quota")]
    pub(crate) refill: Option<Refill>,
    /// A scope the token holds, e.g. orders:read or orders:* (repeat for
    /// several, at most 32).
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope)]
    pub(crate) scopes: Vec<String>,
    /// A network the token may be used from, e.g. 203.0.113.0/24 or
    /// 198.51.100.7 (repeat for several; omit for any address).
    #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse_network)]
    pub(crate) allowed_ips: Vec<String>,
    /// Metadata: a JSON object of at most 4 KiB, e.g. '{"plan": "pro"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_meta)]
    pub(crate) meta: Option<Meta>,
    /// The token's own rate limit, REQUESTS/PERIOD (e.g. 10/1s or
    /// 600/1m), instead of [rate_limit] per_token_*.
    #[arg(long, value_name = "REQUESTS/PERIOD", value_parser = parse_rate)]
    pub(crate) rate_limit: Option<(u32, Duration)>,
    /// Requests at once after being idle, with --rate-limit (default:
    /// REQUESTS).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub(crate) burst: Option<u32>,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token quota`.
#[derive(Debug, Args)]
pub(crate) struct QuotaArgs {
    /// The account that owns the token.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// The token id.
    #[arg(long, value_name = "TOKEN_ID")]
    pub(crate) id: TokenId,
    /// Requests the token may make from now (until the next refill).
    #[arg(long, value_name = "N", required_unless_present = "remove",
          value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
    pub(crate) remaining: Option<u64>,
    /// Refill: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
    #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "remaining")]
    pub(crate) refill: Option<Refill>,
    /// Remove the quota (unlimited use).
    #[arg(long, conflicts_with_all = ["remaining", "refill"])]
    pub(crate) remove: bool,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The account.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// Only tokens in this state.
    #[arg(long, value_parser = PossibleValuesParser::new(TokenStatus::NAMES)
        .try_map(|name| name.parse::<TokenStatus>()))]
    pub(crate) status: Option<TokenStatus>,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The account that owns the token.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// The token id (UUID, or the 22 characters after `mk_` in the token).
    #[arg(long, value_name = "TOKEN_ID")]
    pub(crate) id: TokenId,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The account that owns the token.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// The token id.
    #[arg(long, value_name = "TOKEN_ID")]
    pub(crate) id: TokenId,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token update`.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The account that owns the token.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// The token id.
    #[arg(long, value_name = "TOKEN_ID")]
    pub(crate) id: TokenId,
    /// A new label (1–256 characters).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Replace the scopes with these (repeat for several).
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope,
          conflicts_with = "no_scopes")]
    pub(crate) scopes: Vec<String>,
    /// Remove every scope.
    #[arg(long)]
    pub(crate) no_scopes: bool,
    /// Replace the IP allowlist with these networks (repeat for several).
    #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse_network,
          conflicts_with = "any_ip")]
    pub(crate) allowed_ips: Vec<String>,
    /// Remove the IP allowlist: any address.
    #[arg(long)]
    pub(crate) any_ip: bool,
    /// Replace the metadata: a JSON object of at most 4 KiB.
    #[arg(long, value_name = "JSON", value_parser = parse_meta, conflicts_with = "no_meta")]
    pub(crate) meta: Option<Meta>,
    /// Remove the metadata.
    #[arg(long)]
    pub(crate) no_meta: bool,
    /// Expire N days from now.
    #[arg(long, value_name = "N", conflicts_with = "never_expires",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPIRES_IN_DAYS)))]
    pub(crate) expires_in_days: Option<u32>,
    /// Never expire.
    #[arg(long)]
    pub(crate) never_expires: bool,
    /// Refuse the token until it is enabled again.
    #[arg(long, conflicts_with = "enable")]
    pub(crate) disable: bool,
    /// Accept a disabled token again.
    #[arg(long)]
    pub(crate) enable: bool,
    /// Give the token its own rate limit, REQUESTS/PERIOD (e.g. 10/1s).
    #[arg(long, value_name = "REQUESTS/PERIOD", value_parser = parse_rate,
          conflicts_with = "default_rate_limit")]
    pub(crate) rate_limit: Option<(u32, Duration)>,
    /// Requests at once after being idle, with --rate-limit (default:
    /// REQUESTS).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub(crate) burst: Option<u32>,
    /// Back to the configured limit ([rate_limit] per_token_*).
    #[arg(long)]
    pub(crate) default_rate_limit: bool,
    /// Set a usage quota: requests the token may make from now.
    #[arg(long, value_name = "N", conflicts_with = "no_quota",
          value_parser = clap::value_parser!(u64).range(0..=MAX_QUOTA))]
    pub(crate) quota: Option<u64>,
    /// Refill the quota: AMOUNT/INTERVAL, e.g. 10000/1d or 50000/month.
    #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "quota")]
    pub(crate) refill: Option<Refill>,
    /// Remove the quota (unlimited use).
    #[arg(long)]
    pub(crate) no_quota: bool,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token rotate`.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The account that owns the token.
    #[arg(long, value_name = "ID")]
    pub(crate) account: String,
    /// The token id.
    #[arg(long, value_name = "TOKEN_ID")]
    pub(crate) id: TokenId,
    /// How long the old token keeps working, e.g. 24h, 30m or 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    pub(crate) grace: Duration,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

// The arguments of `tokengate token cleanup`.
#[derive(Debug, Args)]
pub(crate) struct CleanupArgs {
    /// Keep dead tokens this many days (0 deletes them all at once).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_EXPIRES_IN_DAYS)))]
    pub(crate) retention_days: u32,
    /// Output format.
    #[command(flatten)]
    pub(crate) output: Output,
}

/// Output format flags shared by the token commands.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
