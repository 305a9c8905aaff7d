//! A record, an audit entry and a quota as Redis HASH and stream fields
//! (docs/design/redis-layout.md).

use std::collections::HashMap;
use std::str::FromStr;

use crate::audit::{Actor, AuditAction, AuditEntry};
use crate::store::{StoreError, TokenRecord};
use crate::token::{
    AllowedIps, Meta, Quota, Refill, RefillInterval, Scopes, TokenId, TokenRateLimit,
};

/// The HASH fields of a record. Absent options are absent fields.
pub(super) fn encode(record: &TokenRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", record.id.to_string()),
        ("account_id", record.account_id.clone()),
        ("name", record.name.clone()),
        ("hash", record.hash.clone()),
        ("created_at", record.created_at.to_string()),
        ("updated_at", record.updated_at.to_string()),
    ];
    let optional = [
        ("expires_at", record.expires_at),
        ("last_accessed", record.last_accessed),
        ("revoked_at", record.revoked_at),
        ("disabled_at", record.disabled_at),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?.to_string()))),
    );
    if !record.scopes.is_empty() {
        fields.push(("scopes", record.scopes.to_spaced()));
    }
    if !record.allowed_ips.is_empty() {
        fields.push(("allowed_ips", record.allowed_ips.to_spaced()));
    }
    if !record.meta.is_empty() {
        fields.push(("meta", record.meta.as_json().to_owned()));
    }
    if let Some(from) = record.rotated_from {
        fields.push(("rotated_from", from.to_string()));
    }
    if let Some(to) = record.rotated_to {
        fields.push(("rotated_to", to.to_string()));
    }
    if let Some(rate_limit) = record.rate_limit {
        fields.push(("rate_limit", rate_limit.to_field()));
    }
    if let Some(quota) = &record.quota {
        fields.push(("quota_remaining", quota.remaining.to_string()));
        fields.push(("quota_refilled_at", quota.refilled_at.to_string()));
        fields.push(("quota_period", quota.period.to_string()));
        if let Some(refill) = quota.refill {
            fields.push(("quota_refill_amount", refill.amount.to_string()));
            fields.push(("quota_refill_interval", refill.interval.to_field()));
        }
    }
    fields
}

/// Reads a record back from its HASH fields; `None` for an absent key.
pub(super) fn decode(
    id: TokenId,
    fields: &HashMap<String, String>,
) -> Result<Option<TokenRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let corrupt = |field| StoreError::Corrupt {
        id: id.to_string(),
        field,
    };
    let required = |name: &'static str| fields.get(name).cloned().ok_or_else(|| corrupt(name));
    let number = |name: &'static str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|v| i64::from_str(v).map_err(|_| corrupt(name)))
            .transpose()
    };
    let id_field = |name: &'static str| -> Result<Option<TokenId>, StoreError> {
        fields
            .get(name)
            .map(|v| v.parse().map_err(|_| corrupt(name)))
            .transpose()
    };
    let stored_id: TokenId = required("id")?.parse().map_err(|_| corrupt("id"))?;
    if stored_id != id {
        return Err(corrupt("id"));
    }
    Ok(Some(TokenRecord {
        id,
        account_id: required("account_id")?,
        name: required("name")?,
        hash: required("hash")?,
        created_at: number("created_at")?.ok_or_else(|| corrupt("created_at"))?,
        updated_at: number("updated_at")?.ok_or_else(|| corrupt("updated_at"))?,
        expires_at: number("expires_at")?,
        last_accessed: number("last_accessed")?,
        revoked_at: number("revoked_at")?,
        quota: decode_quota(fields, &corrupt)?,
        disabled_at: number("disabled_at")?,
        // Absent (records older than scopes, or none given): no scopes.
        scopes: fields
            .get("scopes")
            .map(|s| Scopes::parse_spaced(s).map_err(|_| corrupt("scopes")))
            .transpose()?
            .unwrap_or_default(),
        allowed_ips: fields
            .get("allowed_ips")
            .map(|s| AllowedIps::parse_spaced(s).map_err(|_| corrupt("allowed_ips")))
            .transpose()?
            .unwrap_or_default(),
        meta: fields
            .get("meta")
            .map(|s| Meta::parse(s).map_err(|_| corrupt("meta")))
            .transpose()?
            .unwrap_or_default(),
        rotated_from: id_field("rotated_from")?,
        rotated_to: id_field("rotated_to")?,
        rate_limit: fields
            .get("rate_limit")
            .map(|s| TokenRateLimit::from_field(s).ok_or_else(|| corrupt("rate_limit")))
            .transpose()?,
    }))
}

/// An audit entry from its stream fields.
pub(super) fn decode_audit(
    id: String,
    fields: &HashMap<String, String>,
) -> Result<AuditEntry, StoreError> {
    let corrupt = |field| StoreError::Corrupt {
        id: format!("audit {id}"),
        field,
    };
    let text = |name: &'static str| fields.get(name).cloned().ok_or_else(|| corrupt(name));
    let optional = |name: &'static str| text(name).map(|v| (!v.is_empty()).then_some(v));
    let changes = match serde_json::from_str(&text("changes")?) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(corrupt("changes")),
    };
    Ok(AuditEntry {
        at: text("at")?.parse().map_err(|_| corrupt("at"))?,
        actor: Actor {
            kind: text("actor")?,
            id: text("actor_id")?,
        },
        account_id: optional("account")?,
        token_id: optional("token")?
            .map(|t| t.parse().map_err(|_| corrupt("token")))
            .transpose()?,
        action: AuditAction::parse(&text("action")?).ok_or_else(|| corrupt("action"))?,
        changes,
        id,
    })
}

/// The quota fields of a record (docs/design/redis-layout.md): absent without
/// `quota_remaining`.
pub(super) fn decode_quota(
    fields: &HashMap<String, String>,
    corrupt: &dyn Fn(&'static str) -> StoreError,
) -> Result<Option<Quota>, StoreError> {
    let Some(remaining) = fields.get("quota_remaining") else {
        return Ok(None);
    };
    let parse = |name: &'static str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|v| v.parse::<i64>().map_err(|_| corrupt(name)))
            .transpose()
    };
    let count = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
    let remaining = remaining
        .parse::<i64>()
        .map_err(|_| corrupt("quota_remaining"))?;
    let refill = match (
        parse("quota_refill_amount")?,
        fields.get("quota_refill_interval"),
    ) {
        (Some(amount), Some(interval)) => Some(Refill {
            amount: count(amount),
            interval: RefillInterval::from_field(interval)
                .ok_or_else(|| corrupt("quota_refill_interval"))?,
        }),
        (None, None) => None,
        _ => return Err(corrupt("quota_refill_interval")),
    };
    Ok(Some(Quota {
        remaining: count(remaining),
        refill,
        refilled_at: parse("quota_refilled_at")?.unwrap_or(0),
        period: count(parse("quota_period")?.unwrap_or(0)),
    }))
}
