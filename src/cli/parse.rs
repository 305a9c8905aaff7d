//! The value parsers of the arguments: each says in one line what is wrong.

use std::time::Duration;

use crate::service::TokenError;
use crate::token::{AllowedIps, MAX_QUOTA, Meta, Refill, is_valid_scope};

/// `--rate-limit`: `REQUESTS/PERIOD`, e.g. `10/1s` or `600/1m`.
pub(super) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
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
pub(super) fn parse_grace(text: &str) -> Result<Duration, String> {
    crate::service::grace_input(text).map_err(|e| match e {
        TokenError::InvalidInput { reason, .. } => reason,
        e => e.to_string(),
    })
}

/// One `--scope`, in the scope syntax (docs/reference/token-format.md, "Scopes").
pub(super) fn parse_scope(text: &str) -> Result<String, String> {
    if is_valid_scope(text) {
        Ok(text.to_owned())
    } else {
        Err("a scope is 1–64 characters from a-z 0-9 : . _ - with a * only at the end".to_owned())
    }
}

/// `--meta`: a JSON object of at most 4 KiB.
pub(super) fn parse_meta(text: &str) -> Result<Meta, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    Meta::new(value).map_err(|e| format!("metadata {e}"))
}

/// One `--allow-ip`: a CIDR block or an address.
pub(super) fn parse_network(text: &str) -> Result<String, String> {
    AllowedIps::new([text])
        .map(|_| text.to_owned())
        .map_err(|_| "give a CIDR block (203.0.113.0/24, 2001:db8::/32) or an address".to_owned())
}

/// `AMOUNT/INTERVAL`: `10000/1d`, `50000/month`.
pub(super) fn parse_refill(text: &str) -> Result<Refill, String> {
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
