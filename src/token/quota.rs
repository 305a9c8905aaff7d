//! Usage quotas (credits) as the store keeps them, and the refill calendar
//! both stores share (docs/reference/quotas.md). The Redis store runs the same rules
//! in Lua (`LEASE_LUA`); `tests/core/service.rs` checks both stores agree.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SECONDS_PER_DAY: i64 = 86_400;
/// Most credits a quota may hold.
pub const MAX_QUOTA: u64 = 1_000_000_000_000;
/// Shortest refill interval: a second (anything shorter is a rate limit).
const MIN_REFILL_SECONDS: u64 = 1;
/// Longest refill interval: about ten years.
const MAX_REFILL_SECONDS: u64 = 3_650 * 86_400;

/// How often a quota refills: a fixed interval from the quota's start, or
/// on the first of each calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillInterval {
    /// Every so many seconds.
    Every(u64),
    /// At 00:00 UTC on the first of each month.
    Month,
}

impl RefillInterval {
    /// The start of the period that contains `now`, for a quota whose
    /// current period started at `start`; `start` itself when `now` is
    /// still within it.
    pub fn period_start(self, start: i64, now: i64) -> i64 {
        match self {
            Self::Every(seconds) => {
                let seconds = i64::try_from(seconds.max(1)).unwrap_or(i64::MAX);
                if now < start.saturating_add(seconds) {
                    start
                } else {
                    start + (now - start) / seconds * seconds
                }
            }
            Self::Month => month_start(now).max(start),
        }
    }

    /// When the period that started at `start` ends.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Self::Every(seconds) => {
                start.saturating_add(i64::try_from(seconds.max(1)).unwrap_or(i64::MAX))
            }
            Self::Month => month_start(month_start(start) + 32 * SECONDS_PER_DAY),
        }
    }

    /// As stored in Redis: seconds, or `month`.
    pub(crate) fn to_field(self) -> String {
        match self {
            Self::Every(seconds) => seconds.to_string(),
            Self::Month => "month".to_owned(),
        }
    }

    pub(crate) fn from_field(text: &str) -> Option<Self> {
        match text {
            "month" => Some(Self::Month),
            seconds => seconds.parse().ok().map(Self::Every),
        }
    }
}

/// `"1d"`, `"12h"`, `"30m"` (any humantime duration of whole seconds,
/// 1 s to 10 years), or `"month"`.
impl FromStr for RefillInterval {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "month" {
            return Ok(Self::Month);
        }
        let duration: Duration = humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not an interval like \"1d\", \"1h\" or \"month\": {e}")
        })?;
        let seconds = duration.as_secs();
        if duration.subsec_nanos() != 0
            || !(MIN_REFILL_SECONDS..=MAX_REFILL_SECONDS).contains(&seconds)
        {
            return Err(format!(
                "{text:?} must be whole seconds between 1s and 3650d, or \"month\""
            ));
        }
        Ok(Self::Every(seconds))
    }
}

impl fmt::Display for RefillInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Every(seconds) => {
                write!(
                    f,
                    "{}",
                    humantime::format_duration(Duration::from_secs(*seconds))
                )
            }
            Self::Month => f.write_str("month"),
        }
    }
}

impl Serialize for RefillInterval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RefillInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A refill: the quota's credits are set back to `amount` (not added to:
/// unused credits do not roll over) at the start of every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// Credits at the start of each period.
    pub amount: u64,
    /// How often.
    pub interval: RefillInterval,
}

/// A token's usage quota as stored: the credits not yet handed out, and
/// how they refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Credits left in the store. Replicas hold up to a lease each besides.
    pub remaining: u64,
    /// How the credits refill; `None`: never (a one-off allowance).
    pub refill: Option<Refill>,
    /// When the current period started (creation, the last refill, or the
    /// last change), unix seconds.
    pub refilled_at: i64,
    /// Counts refills and changes: a lease of an older period is void, so
    /// its unused credits are not given back into the new one.
    pub period: u64,
}

impl Quota {
    /// A new quota, its period starting at `now`.
    pub fn new(remaining: u64, refill: Option<Refill>, now: i64) -> Self {
        Self {
            remaining,
            refill,
            refilled_at: now,
            period: 0,
        }
    }

    /// The quota as of `now`: refilled if a refill came due since
    /// `refilled_at` (the store writes it back when it hands out credits).
    pub fn at(&self, now: i64) -> Self {
        let Some(refill) = self.refill else {
            return *self;
        };
        let start = refill.interval.period_start(self.refilled_at, now);
        if start == self.refilled_at {
            return *self;
        }
        Self {
            remaining: refill.amount,
            refill: self.refill,
            refilled_at: start,
            period: self.period + 1,
        }
    }

    /// When the next refill comes, if any.
    pub fn next_refill(&self) -> Option<i64> {
        self.refill.map(|r| r.interval.next(self.refilled_at))
    }
}

/// Credits handed to one replica by [`TokenStore::lease_credits`](crate::store::TokenStore::lease_credits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Credits granted (0: the quota is used up).
    pub granted: u64,
    /// The quota's period: give unused credits back with it.
    pub period: u64,
    /// When the period ends (the lease is void from then), unix seconds.
    pub next_refill: Option<i64>,
    /// Credits left in the store after this lease.
    pub remaining: u64,
}

/// The first second of the UTC month that contains `t` (unix seconds).
fn month_start(t: i64) -> i64 {
    let days = t.div_euclid(SECONDS_PER_DAY);
    (days - (day_of_month(days) - 1)) * SECONDS_PER_DAY
}

/// The day of the month (1–31) of a day counted from 1970-01-01: Howard
/// Hinnant's `civil_from_days`, of which only the day is needed.
fn day_of_month(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    doy - (153 * mp + 2) / 5 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29 12:00:00 UTC, a leap day.
    const LEAP_NOON: i64 = 1_709_208_000;

    #[test]
    fn months_start_on_the_first_at_midnight_utc() {
        assert_eq!(month_start(LEAP_NOON), 1_706_745_600); // 2024-02-01
        assert_eq!(RefillInterval::Month.next(LEAP_NOON), 1_709_251_200); // 2024-03-01
        assert_eq!(RefillInterval::Month.next(1_735_603_200), 1_735_689_600); // 2024-12-31 → 2025-01-01
        assert_eq!(month_start(0), 0);
        assert_eq!(month_start(-1), -2_678_400); // 1969-12-01
    }

    #[test]
    fn a_quota_refills_to_its_amount_once_per_period() {
        let refill = Refill {
            amount: 100,
            interval: RefillInterval::Every(60),
        };
        let quota = Quota {
            remaining: 7,
            refill: Some(refill),
            refilled_at: 1_000,
            period: 3,
        };
        assert_eq!(quota.at(1_059), quota);
        let refilled = quota.at(1_185);
        assert_eq!(
            (refilled.remaining, refilled.refilled_at, refilled.period),
            (100, 1_180, 4)
        );
        assert_eq!(refilled.next_refill(), Some(1_240));
        let monthly = Quota {
            refill: Some(Refill {
                amount: 5,
                interval: RefillInterval::Month,
            }),
            refilled_at: LEAP_NOON,
            ..quota
        };
        assert_eq!(monthly.at(1_709_251_199), monthly);
        assert_eq!(monthly.at(1_709_251_200).refilled_at, 1_709_251_200);
        // No refill: never changes.
        let once = Quota {
            refill: None,
            ..quota
        };
        assert_eq!(once.at(i64::MAX), once);
    }

    #[test]
    fn intervals_read_as_people_write_them() {
        assert_eq!("1d".parse(), Ok(RefillInterval::Every(86_400)));
        assert_eq!("month".parse(), Ok(RefillInterval::Month));
        assert!("500ms".parse::<RefillInterval>().is_err());
        assert!("0s".parse::<RefillInterval>().is_err());
        assert!("weekly".parse::<RefillInterval>().is_err());
        assert_eq!(RefillInterval::Every(86_400).to_string(), "1day");
    }
}
