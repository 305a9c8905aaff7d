//! The Lua scripts the Redis store runs, one file each in `scripts/`. Each
//! file's opening comment says what it does and what its KEYS and ARGV
//! hold; docs/design/redis-layout.md says which keys they touch.

/// scripts/insert.lua
pub(super) const INSERT_LUA: &str = include_str!("scripts/insert.lua");

/// scripts/pending.lua
pub(super) const PENDING_LUA: &str = include_str!("scripts/pending.lua");

/// scripts/commit.lua
pub(super) const COMMIT_LUA: &str = include_str!("scripts/commit.lua");

/// scripts/revoke.lua
pub(super) const REVOKE_LUA: &str = include_str!("scripts/revoke.lua");

/// scripts/revoke_index.lua
pub(super) const REVOKE_INDEX_LUA: &str = include_str!("scripts/revoke_index.lua");

/// scripts/touch.lua
pub(super) const TOUCH_LUA: &str = include_str!("scripts/touch.lua");

/// scripts/replace_hash.lua
pub(super) const REPLACE_HASH_LUA: &str = include_str!("scripts/replace_hash.lua");

/// scripts/remove.lua
pub(super) const REMOVE_LUA: &str = include_str!("scripts/remove.lua");

/// scripts/remove_record.lua
pub(super) const REMOVE_RECORD_LUA: &str = include_str!("scripts/remove_record.lua");

/// scripts/limit.lua
pub(super) const LIMIT_LUA: &str = include_str!("scripts/limit.lua");

/// scripts/refill.lua
pub(super) const REFILL_LUA: &str = include_str!("scripts/refill.lua");

/// scripts/lease.lua
pub(super) const LEASE_LUA: &str = include_str!("scripts/lease.lua");

/// scripts/return.lua
pub(super) const RETURN_LUA: &str = include_str!("scripts/return.lua");

/// scripts/set_quota.lua
pub(super) const SET_QUOTA_LUA: &str = include_str!("scripts/set_quota.lua");

/// scripts/update.lua
pub(super) const UPDATE_LUA: &str = include_str!("scripts/update.lua");
