//! `tokengate token …`: one function per command.

use std::time::Duration;

use super::args::{
    CleanupArgs, CreateArgs, GetArgs, ListArgs, QuotaArgs, RevokeArgs, RotateArgs, TokenCommand,
    UpdateArgs,
};
use super::cli_service;
use super::print::{details, json_line, not_found, table, timestamp};
use crate::config::Config;
use crate::service::{
    Clock, CreateTokenParams, CreatedTokenBody, MAX_PAGE, QuotaParams, SystemClock, TokenError,
    TokenService, TokenUpdate, allowed_ips_input, rotated_json, scopes_input,
};
use crate::token::{AllowedIps, Meta, Scopes, TokenRateLimit};

pub(super) async fn run_token(config: &Config, command: TokenCommand) -> Result<String, String> {
    let service = cli_service(config).await?;
    match command {
        TokenCommand::Create(args) => token_create(&service, args).await,
        TokenCommand::List(args) => token_list(&service, args).await,
        TokenCommand::Get(args) => token_get(&service, args).await,
        TokenCommand::Revoke(args) => token_revoke(&service, args).await,
        TokenCommand::Update(args) => token_update(&service, args).await,
        TokenCommand::Quota(args) => token_quota(&service, args).await,
        TokenCommand::Rotate(args) => token_rotate(&service, args).await,
        TokenCommand::Cleanup(args) => token_cleanup(&service, args).await,
    }
}

/// `tokengate token create`.
async fn token_create(service: &TokenService, args: CreateArgs) -> Result<String, String> {
    let CreateArgs {
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
    } = args;
    let fail = |e: TokenError| e.to_string();
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
        let value =
            serde_json::to_value(CreatedTokenBody::new(&created)).map_err(|e| e.to_string())?;
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

/// `tokengate token list`.
async fn token_list(service: &TokenService, args: ListArgs) -> Result<String, String> {
    let ListArgs {
        account,
        status,
        output,
    } = args;
    let fail = |e: TokenError| e.to_string();
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

/// `tokengate token get`.
async fn token_get(service: &TokenService, args: GetArgs) -> Result<String, String> {
    let GetArgs {
        account,
        id,
        output,
    } = args;
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

/// `tokengate token revoke`.
async fn token_revoke(service: &TokenService, args: RevokeArgs) -> Result<String, String> {
    let RevokeArgs {
        account,
        id,
        output,
    } = args;
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

/// `tokengate token update`.
async fn token_update(service: &TokenService, args: UpdateArgs) -> Result<String, String> {
    let UpdateArgs {
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
    } = args;
    let fail = |e: TokenError| e.to_string();
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

/// `tokengate token quota`.
async fn token_quota(service: &TokenService, args: QuotaArgs) -> Result<String, String> {
    let QuotaArgs {
        account,
        id,
        remaining,
        refill,
        remove: _,
        output,
    } = args;
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

/// `tokengate token rotate`.
async fn token_rotate(service: &TokenService, args: RotateArgs) -> Result<String, String> {
    let RotateArgs {
        account,
        id,
        grace,
        output,
    } = args;
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

/// `tokengate token cleanup`.
async fn token_cleanup(service: &TokenService, args: CleanupArgs) -> Result<String, String> {
    let CleanupArgs {
        retention_days,
        output,
    } = args;
    let fail = |e: TokenError| e.to_string();
    let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
    let removed = service.cleanup_expired(retention).await.map_err(fail)?;
    Ok(if output.json {
        json_line(&serde_json::json!({ "removed": removed, "retention_days": retention_days }))
    } else {
        format!(
            "Removed {removed} token(s) expired or revoked more than {retention_days} day(s) ago.\n"
        )
    })
}
