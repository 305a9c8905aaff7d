//! How the commands print: tables and details for people, one JSON line
//! for scripts (`--json`).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::service::{TokenError, TokenInfo};
use crate::token::TokenId;

pub(super) fn not_found(e: TokenError, id: TokenId, account: &str) -> String {
    match e {
        TokenError::NotFound => format!("token {id} not found for account {account:?}"),
        e => e.to_string(),
    }
}

pub(super) fn json_line(value: &impl serde::Serialize) -> String {
    // Serializing our own plain structs cannot fail.
    let mut out = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    out.push('\n');
    out
}

pub(super) fn timestamp(unix: i64) -> String {
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

pub(super) fn table(tokens: &[TokenInfo]) -> String {
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
pub(super) fn grid(header: &[&str], rows: &[Vec<String>]) -> String {
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

pub(super) fn details(info: &TokenInfo) -> String {
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
