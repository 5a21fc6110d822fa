//! A queue's stored settings: the paused flag and the limits a lease obeys
//! (see [`rules::lease`](crate::rules::lease)), with the state of the rate
//! limit's token bucket.

use queue_proto::limits::{MAX_GROUP_MAX_LEASED, MAX_MAX_LEASED, MAX_RATE_JOBS, MAX_RATE_PER_MS};

use crate::{Error, Result};

pub(crate) use queue_proto::{QueueLimits as Limits, RateLimit};

/// The bucket's capacity in units (see [`Bucket`]).
pub(crate) fn capacity(rate: RateLimit) -> u64 {
    u64::from(rate.jobs).saturating_mul(rate.per_ms)
}

/// The state of a rate limit's token bucket, in integer units: one token is
/// `per_ms` units and a millisecond adds `jobs` units, so that refills are
/// exact (no rounding, however small the rate) and the capacity is
/// `jobs * per_ms` units (at most 8.64e13, far from overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Units left.
    pub(crate) units: u64,
    /// When the units were last refilled (unix ms).
    pub(crate) refilled_at: u64,
}

impl Bucket {
    /// A full bucket for `rate` at `now`.
    pub(crate) fn full(rate: RateLimit, now: u64) -> Bucket {
        Bucket {
            units: capacity(rate),
            refilled_at: now,
        }
    }

    /// The bucket refilled up to `now` (time going backwards refills
    /// nothing and keeps the later instant).
    pub(crate) fn refilled(self, rate: RateLimit, now: u64) -> Bucket {
        let elapsed = now.saturating_sub(self.refilled_at);
        let added = elapsed.saturating_mul(u64::from(rate.jobs));
        Bucket {
            units: self.units.saturating_add(added).min(capacity(rate)),
            refilled_at: self.refilled_at.max(now),
        }
    }

    /// Whole tokens available.
    pub(crate) fn tokens(self, rate: RateLimit) -> u64 {
        self.units / rate.per_ms.max(1)
    }

    /// When (unix ms) the next whole token is there, counted from
    /// `refilled_at`; `refilled_at` itself if one is there already.
    pub(crate) fn next_token_at(self, rate: RateLimit) -> u64 {
        let missing = rate.per_ms.saturating_sub(self.units);
        let jobs = u64::from(rate.jobs.max(1));
        self.refilled_at.saturating_add(missing.div_ceil(jobs))
    }
}

/// What is stored about a queue besides its jobs. A queue without stored
/// settings has the defaults (not paused, no limits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueSettings {
    /// Leasing is stopped; enqueues still work.
    pub(crate) paused: bool,
    /// The limits leases obey.
    pub(crate) limits: Limits,
    /// The token bucket, present exactly when `limits.rate_limit` is.
    pub(crate) bucket: Option<Bucket>,
}

/// A change of some settings; `None` fields keep their stored value, and
/// `Some(None)` removes a limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SettingsUpdate {
    pub(crate) paused: Option<bool>,
    pub(crate) max_leased: Option<Option<u32>>,
    pub(crate) rate_limit: Option<Option<RateLimit>>,
    pub(crate) group_max_leased: Option<Option<u32>>,
    /// When the update is made: a new rate limit's bucket starts full then.
    pub(crate) now: u64,
}

impl SettingsUpdate {
    /// The update a PATCH body asks for.
    pub(crate) fn from_patch(patch: &queue_proto::PatchQueueRequest) -> SettingsUpdate {
        SettingsUpdate {
            paused: patch.paused,
            max_leased: patch.max_leased,
            rate_limit: patch.rate_limit,
            group_max_leased: patch.group_max_leased,
            now: 0,
        }
    }

    /// Whether the update may let a waiting lease take more than before
    /// (resume, a limit raised or removed).
    pub(crate) fn may_free_capacity(&self, before: &QueueSettings) -> bool {
        let after = self.apply(before);
        let looser = |old: Option<u32>, new: Option<u32>| match (old, new) {
            (_, None) => old.is_some(),
            (None, Some(_)) => false,
            (Some(o), Some(n)) => n > o,
        };
        (before.paused && !after.paused)
            || looser(before.limits.max_leased, after.limits.max_leased)
            || looser(
                before.limits.group_max_leased,
                after.limits.group_max_leased,
            )
            || before.limits.rate_limit != after.limits.rate_limit
    }

    /// The settings after this update of `stored`.
    ///
    /// A rate limit set where there was none starts with a full bucket. A
    /// changed rate limit keeps the tokens the bucket held (refilled up to
    /// the update, fractions included, capped at the new capacity), so that
    /// changing the rate does not hand out a fresh burst.
    pub(crate) fn apply(&self, stored: &QueueSettings) -> QueueSettings {
        let limits = Limits {
            max_leased: self.max_leased.unwrap_or(stored.limits.max_leased),
            rate_limit: self.rate_limit.unwrap_or(stored.limits.rate_limit),
            group_max_leased: self
                .group_max_leased
                .unwrap_or(stored.limits.group_max_leased),
        };
        let bucket = match (stored.limits.rate_limit, stored.bucket, limits.rate_limit) {
            (_, _, None) => None,
            (Some(old), Some(bucket), Some(new)) if old == new => Some(bucket),
            (Some(old), Some(bucket), Some(new)) => {
                let held = bucket.refilled(old, self.now);
                // Tokens are units / per_ms: keep their number exactly.
                let units =
                    u128::from(held.units) * u128::from(new.per_ms) / u128::from(old.per_ms.max(1));
                Some(Bucket {
                    units: u64::try_from(units).unwrap_or(u64::MAX).min(capacity(new)),
                    refilled_at: held.refilled_at,
                })
            }
            (_, _, Some(new)) => Some(Bucket::full(new, self.now)),
        };
        QueueSettings {
            paused: self.paused.unwrap_or(stored.paused),
            limits,
            bucket,
        }
    }

    /// Checks the bounds of every limit the update sets.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(Some(n)) = self.max_leased {
            check_range("max_leased", u64::from(n), u64::from(MAX_MAX_LEASED))?;
        }
        if let Some(Some(n)) = self.group_max_leased {
            check_range(
                "group_max_leased",
                u64::from(n),
                u64::from(MAX_GROUP_MAX_LEASED),
            )?;
        }
        if let Some(Some(rate)) = self.rate_limit {
            check_range(
                "rate_limit.jobs",
                u64::from(rate.jobs),
                u64::from(MAX_RATE_JOBS),
            )?;
            check_range("rate_limit.per_ms", rate.per_ms, MAX_RATE_PER_MS)?;
        }
        Ok(())
    }
}

fn check_range(field: &'static str, value: u64, max: u64) -> Result<()> {
    if !(1..=max).contains(&value) {
        return Err(Error::invalid(
            field,
            format!("{value} is outside 1..={max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: RateLimit = RateLimit {
        jobs: 3,
        per_ms: 1000,
    };

    #[test]
    fn a_bucket_refills_exactly_and_caps_at_capacity() {
        let mut bucket = Bucket::full(RATE, 0);
        assert_eq!(bucket.tokens(RATE), 3);
        bucket.units = 0;
        // 3 tokens per second: one every 333.3 ms.
        assert_eq!(bucket.next_token_at(RATE), 334);
        assert_eq!(bucket.refilled(RATE, 333).tokens(RATE), 0);
        assert_eq!(bucket.refilled(RATE, 334).tokens(RATE), 1);
        // Refilling in many small steps loses nothing.
        let mut step = bucket;
        for now in 1..=1000 {
            step = step.refilled(RATE, now);
        }
        assert_eq!(step.tokens(RATE), 3);
        assert_eq!(bucket.refilled(RATE, 1_000_000).units, capacity(RATE));
        // Time going back refills nothing.
        let later = Bucket {
            units: 0,
            refilled_at: 500,
        };
        assert_eq!(later.refilled(RATE, 100), later);
    }

    #[test]
    fn a_slow_rate_still_refills() {
        let slow = RateLimit {
            jobs: 1,
            per_ms: 86_400_000,
        };
        let mut bucket = Bucket {
            units: 0,
            refilled_at: 0,
        };
        for now in (1..=86_400_000u64).step_by(1_000_000) {
            bucket = bucket.refilled(slow, now);
        }
        bucket = bucket.refilled(slow, 86_400_000);
        assert_eq!(bucket.tokens(slow), 1);
    }

    #[test]
    fn updates_keep_absent_fields_and_remove_nulls() {
        let stored = SettingsUpdate {
            max_leased: Some(Some(5)),
            rate_limit: Some(Some(RATE)),
            group_max_leased: Some(Some(1)),
            now: 10,
            ..SettingsUpdate::default()
        }
        .apply(&QueueSettings::default());
        assert_eq!(stored.limits.max_leased, Some(5));
        assert_eq!(stored.bucket, Some(Bucket::full(RATE, 10)));
        let paused = SettingsUpdate {
            paused: Some(true),
            now: 20,
            ..SettingsUpdate::default()
        }
        .apply(&stored);
        assert_eq!(paused.limits, stored.limits);
        assert_eq!(paused.bucket, stored.bucket);
        let removed = SettingsUpdate {
            rate_limit: Some(None),
            max_leased: Some(None),
            now: 30,
            ..SettingsUpdate::default()
        }
        .apply(&paused);
        assert_eq!(removed.limits.rate_limit, None);
        assert_eq!(removed.limits.max_leased, None);
        assert_eq!(removed.limits.group_max_leased, Some(1));
        assert_eq!(removed.bucket, None);
    }

    #[test]
    fn changing_the_rate_keeps_the_tokens_held() {
        let mut stored = SettingsUpdate {
            rate_limit: Some(Some(RATE)),
            now: 0,
            ..SettingsUpdate::default()
        }
        .apply(&QueueSettings::default());
        stored.bucket = Some(Bucket {
            units: 2 * RATE.per_ms,
            refilled_at: 0,
        });
        let faster = RateLimit {
            jobs: 100,
            per_ms: 10,
        };
        let changed = SettingsUpdate {
            rate_limit: Some(Some(faster)),
            now: 0,
            ..SettingsUpdate::default()
        }
        .apply(&stored);
        assert_eq!(changed.bucket.map(|b| b.tokens(faster)), Some(2));
        let smaller = RateLimit {
            jobs: 1,
            per_ms: 1000,
        };
        let capped = SettingsUpdate {
            rate_limit: Some(Some(smaller)),
            now: 0,
            ..SettingsUpdate::default()
        }
        .apply(&stored);
        assert_eq!(capped.bucket.map(|b| b.tokens(smaller)), Some(1));
    }

    #[test]
    fn bounds_name_the_field() {
        let bad = [
            (
                SettingsUpdate {
                    max_leased: Some(Some(0)),
                    ..SettingsUpdate::default()
                },
                "max_leased",
            ),
            (
                SettingsUpdate {
                    group_max_leased: Some(Some(MAX_GROUP_MAX_LEASED + 1)),
                    ..SettingsUpdate::default()
                },
                "group_max_leased",
            ),
            (
                SettingsUpdate {
                    rate_limit: Some(Some(RateLimit { jobs: 0, per_ms: 1 })),
                    ..SettingsUpdate::default()
                },
                "rate_limit.jobs",
            ),
            (
                SettingsUpdate {
                    rate_limit: Some(Some(RateLimit {
                        jobs: 1,
                        per_ms: MAX_RATE_PER_MS + 1,
                    })),
                    ..SettingsUpdate::default()
                },
                "rate_limit.per_ms",
            ),
        ];
        for (update, field) in bad {
            match update.validate() {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(
            SettingsUpdate {
                max_leased: Some(Some(MAX_MAX_LEASED)),
                rate_limit: Some(Some(RateLimit {
                    jobs: MAX_RATE_JOBS,
                    per_ms: MAX_RATE_PER_MS
                })),
                group_max_leased: Some(Some(1)),
                ..SettingsUpdate::default()
            }
            .validate()
            .is_ok()
        );
    }
}
