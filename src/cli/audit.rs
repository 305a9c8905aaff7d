//! `tokengate audit`: the audit trail, page by page.

use super::args::Output;
use super::cli_service;
use super::print::{grid, json_line, timestamp};
use crate::audit::{AuditQuery, MAX_AUDIT_PAGE};
use crate::config::Config;

/// `tokengate audit`: the trail page by page, oldest first.
pub(super) async fn audit(
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
