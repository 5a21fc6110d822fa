//! Schedules: when a schedule's ticks fall, which of them fire after a
//! pause of the server, and how the stored schedule changes when they do.
//!
//! A schedule's timing is a cron expression read in an IANA time zone
//! (parsed by `croner`, over `jiff`'s time zones and its bundled tz
//! database), or a fixed period (`every_ms`, plain elapsed time).
//!
//! **Daylight saving.** A cron tick is a wall-clock time in the schedule's
//! zone, as croner resolves it:
//!
//! - a fixed time of day (single seconds, minute and hour values, such as
//!   `0 2 * * *`) that does not exist because the clock jumps forward fires
//!   at the first instant after the jump (03:00 local in Europe/Paris on
//!   the last Sunday of March); a fixed time that happens twice because the
//!   clock goes back fires once, at the earlier instant (02:00 CEST);
//! - an interval or wildcard pattern (`*/15 * * * *`, `0 * * * *`) skips the
//!   wall-clock times that do not exist and fires at both instants of the
//!   ones that happen twice, as a clock on the wall would show them.
//!
//! **Missed ticks.** When the timer looks at a schedule at `now`, the ticks
//! due are those from the stored `next_run_at` up to `now`. The latest of
//! them is on time if it is at most [`MISSED_AFTER_MS`] old (the timer is
//! merely a little late); every other due tick was missed. `catch_up` then
//! decides: `all` fires every due tick (the latest
//! [`MAX_CATCH_UP_TICKS`] of them; older ones are skipped and logged),
//! `latest` fires the latest due tick only, `none` fires the latest only if
//! it is on time. In every case the next tick is the first one after `now`.

use std::cmp::Ordering;
use std::collections::VecDeque;

use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use queue_proto::limits::{
    MAX_CATCH_UP_TICKS, MAX_CRON_LEN, MAX_SCHEDULE_EVERY_MS, MIN_SCHEDULE_EVERY_MS,
};
use queue_proto::{CatchUp, ScheduleRequest};

use crate::{Error, JobId, Result, Schedule};

/// A due tick older than this when the timer sees it was missed (the
/// misfire threshold of Quartz, 60 s); a younger one is on time.
pub(crate) const MISSED_AFTER_MS: u64 = 60_000;

/// Cron ticks walked forward before the walk jumps to the latest
/// [`MAX_CATCH_UP_TICKS`] (a long outage of a per-second schedule).
const FORWARD_WALK: usize = 10 * MAX_CATCH_UP_TICKS;

/// When a schedule's ticks fall.
#[derive(Debug, Clone)]
pub(crate) enum Timing {
    /// A cron expression in a time zone.
    Cron(Box<Cron>, TimeZone),
    /// A fixed period in ms.
    Every(u64),
}

/// Parses `cron` the way schedules read it: five fields, an optional
/// leading seconds field, the `@hourly`-style aliases (`@midnight` is
/// `@daily`).
fn parse_cron(expr: &str) -> std::result::Result<Cron, String> {
    let trimmed = expr.trim();
    let expr = if trimmed.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        trimmed
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

impl Timing {
    /// Checks the timing fields of a schedule: exactly one of `cron` and
    /// `every_ms`, a known time zone, a cron expression that parses and
    /// fires at least once after `now`.
    pub(crate) fn parse(
        cron: Option<&str>,
        every_ms: Option<u64>,
        timezone: &str,
        now: u64,
    ) -> Result<Timing> {
        let tz = TimeZone::get(timezone).map_err(|_| {
            Error::invalid(
                "timezone",
                format!("unknown time zone {timezone:?} (an IANA name such as \"Europe/Paris\")"),
            )
        })?;
        let timing = match (cron, every_ms) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::invalid(
                    "cron",
                    "give exactly one of cron and every_ms",
                ));
            }
            (None, Some(ms)) => {
                if !(MIN_SCHEDULE_EVERY_MS..=MAX_SCHEDULE_EVERY_MS).contains(&ms) {
                    return Err(Error::invalid(
                        "every_ms",
                        format!(
                            "{ms} is outside {MIN_SCHEDULE_EVERY_MS}..={MAX_SCHEDULE_EVERY_MS}"
                        ),
                    ));
                }
                Timing::Every(ms)
            }
            (Some(expr), None) => {
                if expr.len() > MAX_CRON_LEN {
                    return Err(Error::invalid(
                        "cron",
                        format!("at most {MAX_CRON_LEN} bytes, got {}", expr.len()),
                    ));
                }
                let parsed = parse_cron(expr).map_err(|e| {
                    Error::invalid("cron", format!("{expr:?} is not a cron expression: {e}"))
                })?;
                let timing = Timing::Cron(Box::new(parsed), tz);
                if timing.next_after(now).is_none() {
                    return Err(Error::invalid(
                        "cron",
                        format!("{expr:?} never fires (no date matches it)"),
                    ));
                }
                timing
            }
        };
        Ok(timing)
    }

    /// The timing of a stored schedule (checked when it was stored).
    pub(crate) fn of(schedule: &Schedule) -> Result<Timing> {
        let tz = TimeZone::get(&schedule.timezone).map_err(|e| {
            Error::Corrupt(format!(
                "schedule {:?} has time zone {:?}: {e}",
                schedule.name, schedule.timezone
            ))
        })?;
        match (&schedule.cron, schedule.every_ms) {
            (None, Some(ms)) => Ok(Timing::Every(ms.max(1))),
            (Some(expr), None) => parse_cron(expr)
                .map(|cron| Timing::Cron(Box::new(cron), tz))
                .map_err(|e| Error::Corrupt(format!("schedule {:?}: {e}", schedule.name))),
            _ => Err(Error::Corrupt(format!(
                "schedule {:?} has neither or both of cron and every_ms",
                schedule.name
            ))),
        }
    }

    /// The first tick strictly after `t` (unix ms); `None` if there is none
    /// (a cron expression that matches no later date).
    pub(crate) fn next_after(&self, t: u64) -> Option<u64> {
        match self {
            Timing::Every(ms) => t.checked_add(*ms),
            Timing::Cron(cron, tz) => {
                let start = Zoned::at(t, tz)?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                next.millis()
            }
        }
    }

    /// The latest tick at or before `t`.
    fn latest_at_or_before(&self, t: u64) -> Option<u64> {
        match self {
            Timing::Every(_) => None,
            Timing::Cron(cron, tz) => {
                let start = Zoned::at(t, tz)?;
                let previous = cron.find_previous_occurrence(&start, true).ok()?;
                previous.millis()
            }
        }
    }

    /// The ticks from `first` (a tick) up to `now`: the latest
    /// [`MAX_CATCH_UP_TICKS`] of them, and how many there are in all (a
    /// lower bound when the walk jumped).
    fn due(&self, first: u64, now: u64) -> (VecDeque<u64>, u64) {
        let mut ticks = VecDeque::new();
        if first > now {
            return (ticks, 0);
        }
        if let Timing::Every(ms) = self {
            let ms = (*ms).max(1);
            let periods = (now - first) / ms;
            let total = periods + 1;
            let keep = total.min(MAX_CATCH_UP_TICKS as u64);
            for i in (total - keep)..total {
                ticks.push_back(first + i * ms);
            }
            return (ticks, total);
        }
        let mut total = 0u64;
        let mut tick = Some(first);
        for _ in 0..FORWARD_WALK {
            let Some(t) = tick.filter(|t| *t <= now) else {
                return (ticks, total);
            };
            total += 1;
            if ticks.len() == MAX_CATCH_UP_TICKS {
                ticks.pop_front();
            }
            ticks.push_back(t);
            tick = self.next_after(t);
        }
        if tick.is_none_or(|t| t > now) {
            return (ticks, total);
        }
        // A long outage: walk back from `now` instead.
        let mut latest = VecDeque::new();
        let mut at = now;
        while latest.len() < MAX_CATCH_UP_TICKS {
            match self.latest_at_or_before(at) {
                Some(t) if t >= first => {
                    latest.push_front(t);
                    match t.checked_sub(1) {
                        Some(before) => at = before,
                        None => break,
                    }
                }
                _ => break,
            }
        }
        let found = latest.len() as u64;
        (latest, total.max(found))
    }
}

/// What the timer does with a schedule that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TickPlan {
    /// The ticks to fire, oldest first.
    pub(crate) fire: Vec<u64>,
    /// The schedule's next tick after them (`None`: it never fires again).
    pub(crate) next_run_at: Option<u64>,
    /// Due ticks that are not fired (skipped by the policy or the cap); a
    /// lower bound after a very long outage.
    pub(crate) skipped: u64,
}

/// The ticks of a schedule due at `now` (see the module docs), or `None`
/// if it is paused or not due.
pub(crate) fn plan(schedule: &Schedule, timing: &Timing, now: u64) -> Option<TickPlan> {
    if schedule.paused {
        return None;
    }
    let first = schedule.next_run_at.filter(|at| *at <= now)?;
    let (ticks, total) = timing.due(first, now);
    let latest = *ticks.back()?;
    let fire: Vec<u64> = match schedule.catch_up {
        CatchUp::All => ticks.into_iter().collect(),
        CatchUp::Latest => vec![latest],
        CatchUp::None if now - latest <= MISSED_AFTER_MS => vec![latest],
        CatchUp::None => Vec::new(),
    };
    Some(TickPlan {
        skipped: total.saturating_sub(fire.len() as u64),
        // A period keeps its grid: the next tick follows the latest due one.
        next_run_at: match timing {
            Timing::Every(ms) => latest.checked_add(*ms),
            Timing::Cron(..) => timing.next_after(now),
        },
        fire,
    })
}

/// A stored schedule (`existing`) replaced, or a new one, as `request`
/// describes it; checked beforehand with [`Timing::parse`]. The next tick
/// is kept when the timing did not change and the schedule stays active
/// (re-sending the same schedule, as a deploy script does, moves nothing);
/// otherwise it is the first tick after `now`.
pub(crate) fn put(
    name: &str,
    existing: Option<&Schedule>,
    request: &ScheduleRequest,
    job: String,
    timing: &Timing,
    now: u64,
) -> Schedule {
    let timezone = request.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    let paused = request.paused.unwrap_or(false);
    let same_timing = existing.is_some_and(|old| {
        old.cron == request.cron && old.every_ms == request.every_ms && old.timezone == timezone
    });
    let kept = existing
        .filter(|old| same_timing && !old.paused && !paused)
        .and_then(|old| old.next_run_at);
    Schedule {
        name: name.to_owned(),
        queue: request.queue.clone(),
        cron: request.cron.clone(),
        every_ms: request.every_ms,
        timezone,
        job,
        catch_up: request.catch_up.unwrap_or_default(),
        paused,
        next_run_at: if paused {
            None
        } else {
            kept.or_else(|| timing.next_after(now))
        },
        last_run_at: existing.and_then(|old| old.last_run_at),
        last_job_id: existing.and_then(|old| old.last_job_id),
        created_at: existing.map_or(now, |old| old.created_at),
        updated_at: now,
    }
}

/// `schedule` paused: it keeps no next tick.
pub(crate) fn pause(schedule: &Schedule, now: u64) -> Schedule {
    Schedule {
        paused: true,
        next_run_at: None,
        updated_at: now,
        ..schedule.clone()
    }
}

/// `schedule` resumed: its next tick is the first after `now` (the ticks
/// of the pause are not caught up). Resuming an active schedule changes
/// nothing.
pub(crate) fn resume(schedule: &Schedule, timing: &Timing, now: u64) -> Schedule {
    if !schedule.paused {
        return schedule.clone();
    }
    Schedule {
        paused: false,
        next_run_at: timing.next_after(now),
        updated_at: now,
        ..schedule.clone()
    }
}

/// `schedule` after firing up to the tick `last` (with the job `job`, or
/// none when every due tick was skipped), its next tick `next_run_at`.
pub(crate) fn advance(
    schedule: &Schedule,
    last: Option<(u64, JobId)>,
    next_run_at: Option<u64>,
    now: u64,
) -> Schedule {
    let mut next = schedule.clone();
    if let Some((at, job)) = last {
        next.last_run_at = Some(at);
        next.last_job_id = Some(job);
    }
    next.next_run_at = next_run_at;
    next.updated_at = now;
    next
}

/// `schedule` after a manual trigger that enqueued `job`: the next tick
/// does not move.
pub(crate) fn triggered(schedule: &Schedule, job: JobId, now: u64) -> Schedule {
    Schedule {
        last_job_id: Some(job),
        updated_at: now,
        ..schedule.clone()
    }
}

/// The idempotency key of the tick at `at` of schedule `name`.
pub(crate) fn tick_key(name: &str, at: u64) -> String {
    format!("schedule:{name}:{at}")
}

// ---- croner over jiff 1 ------------------------------------------------------

/// A zoned date and time that croner can search over (croner ships glue
/// for jiff 0.2 only; this is the same glue for jiff 1).
#[derive(Debug, Clone)]
struct Zoned(ZonedDateTime);

impl Zoned {
    fn at(ms: u64, tz: &TimeZone) -> Option<Zoned> {
        let ms = i64::try_from(ms).ok()?;
        let ts = Timestamp::from_millisecond(ms).ok()?;
        Some(Zoned(ts.to_zoned_datetime(tz.clone())))
    }

    fn millis(&self) -> Option<u64> {
        u64::try_from(self.0.timestamp().as_millisecond()).ok()
    }
}

fn to_civil(dt: jiff::civil::DateTime) -> CivilDateTime {
    CivilDateTime::new(
        CivilDate::from_parts_unchecked(
            i32::from(dt.year()),
            u32::try_from(dt.month()).unwrap_or(1),
            u32::try_from(dt.day()).unwrap_or(1),
        ),
        CivilTime::from_parts_unchecked(
            u32::try_from(dt.hour()).unwrap_or(0),
            u32::try_from(dt.minute()).unwrap_or(0),
            u32::try_from(dt.second()).unwrap_or(0),
        ),
    )
}

fn to_jiff(
    civil: CivilDateTime,
) -> std::result::Result<jiff::civil::DateTime, croner::errors::CronError> {
    let bad = |_| croner::errors::CronError::InvalidDate;
    jiff::civil::DateTime::new(
        i16::try_from(civil.year()).map_err(bad)?,
        i8::try_from(civil.month()).map_err(bad)?,
        i8::try_from(civil.day()).map_err(bad)?,
        i8::try_from(civil.hour()).map_err(bad)?,
        i8::try_from(civil.minute()).map_err(bad)?,
        i8::try_from(civil.second()).map_err(bad)?,
        0,
    )
    .map_err(|_| croner::errors::CronError::InvalidDate)
}

impl CronDateTime for Zoned {
    fn to_civil(&self) -> CivilDateTime {
        to_civil(self.0.datetime())
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(u32::from(
            self.0.weekday().to_sunday_zero_offset().unsigned_abs(),
        ))
    }

    fn resolve_civil(
        &self,
        civil: CivilDateTime,
    ) -> std::result::Result<Resolution<Self>, croner::errors::CronError> {
        let invalid = |_| croner::errors::CronError::InvalidTime;
        let datetime = to_jiff(civil)?;
        let ambiguous = self.0.time_zone().to_ambiguous_zoned_datetime(datetime);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } => {
                Resolution::Single(Zoned(ambiguous.unambiguous().map_err(invalid)?))
            }
            AmbiguousOffset::Fold { .. } => {
                let earlier = ambiguous.clone().earlier().map_err(invalid)?;
                let later = ambiguous.later().map_err(invalid)?;
                Resolution::Ambiguous(Zoned(earlier), Zoned(later))
            }
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()
            .map(Zoned)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> u64 {
        let dt = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).unwrap();
        let zoned = dt.to_zoned_datetime(TimeZone::UTC).unwrap();
        u64::try_from(zoned.timestamp().as_millisecond()).unwrap()
    }

    fn cron(expr: &str, tz: &str) -> Timing {
        Timing::parse(Some(expr), None, tz, utc(2026, 1, 1, 0, 0, 0)).unwrap()
    }

    /// Every tick in `[from, to)`.
    fn ticks(timing: &Timing, from: u64, to: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = from.saturating_sub(1);
        while let Some(next) = timing.next_after(at).filter(|t| *t < to) {
            out.push(next);
            at = next;
            assert!(out.len() < 10_000);
        }
        out
    }

    fn schedule(timing: (&str, Option<u64>), catch_up: CatchUp, next: u64) -> Schedule {
        let (cron, every_ms) = timing;
        Schedule {
            name: "s".into(),
            queue: "q".into(),
            cron: (!cron.is_empty()).then(|| cron.to_owned()),
            every_ms,
            timezone: "UTC".into(),
            job: r#"{"payload":{}}"#.into(),
            catch_up,
            paused: false,
            next_run_at: Some(next),
            last_run_at: None,
            last_job_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_daily_two_oclock_in_paris_fires_at_three_on_the_spring_forward_night() {
        // 2026-03-29: Paris goes from 02:00 CET straight to 03:00 CEST.
        let t = cron("0 2 * * *", "Europe/Paris");
        let day = ticks(&t, utc(2026, 3, 28, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0));
        assert_eq!(
            day,
            vec![
                utc(2026, 3, 28, 1, 0, 0), // 02:00 CET
                utc(2026, 3, 29, 1, 0, 0), // 03:00 CEST, the first instant after the gap
                utc(2026, 3, 30, 0, 0, 0), // 02:00 CEST
            ]
        );
    }

    #[test]
    fn a_daily_two_oclock_in_paris_fires_once_on_the_fall_back_night() {
        // 2026-10-25: Paris goes from 03:00 CEST back to 02:00 CET, so
        // 02:00..03:00 happens twice; the tick fires at the first 02:00.
        let t = cron("0 2 * * *", "Europe/Paris");
        let day = ticks(&t, utc(2026, 10, 24, 0, 0, 0), utc(2026, 10, 27, 0, 0, 0));
        assert_eq!(
            day,
            vec![
                utc(2026, 10, 24, 0, 0, 0), // 02:00 CEST
                utc(2026, 10, 25, 0, 0, 0), // 02:00 CEST, the earlier of the two
                utc(2026, 10, 26, 1, 0, 0), // 02:00 CET
            ]
        );
    }

    #[test]
    fn an_hourly_pattern_follows_the_wall_clock_through_both_changes() {
        let t = cron("30 * * * *", "Europe/Paris");
        // Spring forward: 23 local hours, 02:30 does not exist.
        let spring = ticks(&t, utc(2026, 3, 28, 23, 0, 0), utc(2026, 3, 29, 22, 0, 0));
        assert_eq!(spring.len(), 23);
        assert!(spring.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        // Fall back: 25 local hours, 02:30 happens twice and fires twice.
        let fall = ticks(&t, utc(2026, 10, 24, 22, 0, 0), utc(2026, 10, 25, 23, 0, 0));
        assert_eq!(fall.len(), 25);
        assert!(fall.contains(&utc(2026, 10, 25, 0, 30, 0)));
        assert!(fall.contains(&utc(2026, 10, 25, 1, 30, 0)));
    }

    #[test]
    fn a_time_zone_moves_the_ticks() {
        let utc_t = cron("0 9 * * *", "UTC");
        let ny = cron("0 9 * * *", "America/New_York");
        let from = utc(2026, 6, 1, 0, 0, 0);
        assert_eq!(utc_t.next_after(from), Some(utc(2026, 6, 1, 9, 0, 0)));
        assert_eq!(ny.next_after(from), Some(utc(2026, 6, 1, 13, 0, 0)));
    }

    #[test]
    fn aliases_and_the_seconds_field() {
        let from = utc(2026, 5, 13, 10, 17, 42);
        let next = |expr: &str| cron(expr, "UTC").next_after(from);
        assert_eq!(next("@hourly"), Some(utc(2026, 5, 13, 11, 0, 0)));
        assert_eq!(next("@daily"), Some(utc(2026, 5, 14, 0, 0, 0)));
        assert_eq!(next("@midnight"), Some(utc(2026, 5, 14, 0, 0, 0)));
        assert_eq!(next("@weekly"), Some(utc(2026, 5, 17, 0, 0, 0)));
        assert_eq!(next("@monthly"), Some(utc(2026, 6, 1, 0, 0, 0)));
        assert_eq!(next("@yearly"), Some(utc(2027, 1, 1, 0, 0, 0)));
        assert_eq!(next("@annually"), Some(utc(2027, 1, 1, 0, 0, 0)));
        // Five fields: minutes; six: seconds first.
        assert_eq!(next("*/5 * * * *"), Some(utc(2026, 5, 13, 10, 20, 0)));
        assert_eq!(next("*/10 * * * * *"), Some(utc(2026, 5, 13, 10, 17, 50)));
        assert_eq!(next("15 0 * * * *"), Some(utc(2026, 5, 13, 11, 0, 15)));
        let every_second = ticks(&cron("* * * * * *", "UTC"), from, from + 5_000);
        assert_eq!(every_second.len(), 5);
    }

    #[test]
    fn every_ms_is_elapsed_time_whatever_the_zone() {
        let t = Timing::parse(None, Some(90_000), "Europe/Paris", 0).unwrap();
        let from = utc(2026, 3, 29, 0, 59, 0);
        let all = ticks(&t, from + 1, from + 10 * 90_000 + 1);
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[1] - w[0] == 90_000));
    }

    #[test]
    fn bad_timings_name_their_field() {
        let field = |cron: Option<&str>, every: Option<u64>, tz: &str| match Timing::parse(
            cron, every, tz, 0,
        ) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(Some("* * * * *"), Some(1000), "UTC"), "cron");
        assert_eq!(field(None, None, "UTC"), "cron");
        assert_eq!(field(Some("61 * * * *"), None, "UTC"), "cron");
        assert_eq!(field(Some("not cron"), None, "UTC"), "cron");
        assert_eq!(field(Some("* * * * * * *"), None, "UTC"), "cron");
        assert_eq!(field(Some("0 0 30 2 *"), None, "UTC"), "cron");
        assert_eq!(field(None, Some(999), "UTC"), "every_ms");
        assert_eq!(field(None, Some(31_536_000_001), "UTC"), "every_ms");
        assert_eq!(field(Some("* * * * *"), None, "Mars/Olympus"), "timezone");
        assert!(Timing::parse(None, Some(31_536_000_000), "UTC", 0).is_ok());
    }

    #[test]
    fn a_due_schedule_fires_by_its_catch_up_policy() {
        let minute = 60_000;
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let every = Timing::Every(minute);
        // Ten ticks due, the latest at `now` exactly.
        let now = t0 + 9 * minute;
        let plan_of = |catch_up| plan(&schedule(("", Some(minute)), catch_up, t0), &every, now);
        let all = plan_of(CatchUp::All).unwrap();
        assert_eq!(
            all.fire,
            (0..10).map(|i| t0 + i * minute).collect::<Vec<_>>()
        );
        assert_eq!((all.next_run_at, all.skipped), (Some(now + minute), 0));
        let latest = plan_of(CatchUp::Latest).unwrap();
        assert_eq!((latest.fire, latest.skipped), (vec![now], 9));
        // The latest tick is on time (0 ms late): `none` fires it.
        assert_eq!(plan_of(CatchUp::None).unwrap().fire, vec![now]);
        // More than a minute late, it was missed too (five-minute ticks).
        let five = Timing::Every(5 * minute);
        let late = t0 + 9 * 5 * minute + MISSED_AFTER_MS + 1;
        let s = schedule(("", Some(5 * minute)), CatchUp::None, t0);
        let none = plan(&s, &five, late).unwrap();
        assert_eq!((none.fire.len(), none.skipped), (0, 10));
        assert_eq!(none.next_run_at, Some(t0 + 10 * 5 * minute));
        let on_time = plan(&s, &five, late - 1).unwrap();
        assert_eq!(on_time.fire, vec![t0 + 9 * 5 * minute]);
        // Not due, or paused: nothing.
        assert!(
            plan(
                &schedule(("", Some(minute)), CatchUp::All, now + 1),
                &every,
                now
            )
            .is_none()
        );
        let mut paused = schedule(("", Some(minute)), CatchUp::All, t0);
        paused.paused = true;
        assert!(plan(&paused, &every, now).is_none());
    }

    #[test]
    fn catching_up_all_fires_at_most_the_latest_thousand() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let now = t0 + 5_000 * 1_000;
        for timing in [Timing::Every(1_000), cron("* * * * * *", "UTC")] {
            let s = schedule(("", None), CatchUp::All, t0);
            let p = plan(&s, &timing, now).unwrap();
            assert_eq!(p.fire.len(), MAX_CATCH_UP_TICKS);
            assert_eq!(p.fire.first(), Some(&(now - 999_000)));
            assert_eq!(p.fire.last(), Some(&now));
            assert_eq!(p.skipped, 4_001);
            assert_eq!(p.next_run_at, Some(now + 1_000));
        }
        // A per-second cron down for a day: the walk jumps to the end.
        let timing = cron("* * * * * *", "UTC");
        let later = t0 + 86_400_000;
        let p = plan(&schedule(("", None), CatchUp::All, t0), &timing, later).unwrap();
        assert_eq!(p.fire.len(), MAX_CATCH_UP_TICKS);
        assert_eq!(p.fire.last(), Some(&later));
        assert!(p.fire.windows(2).all(|w| w[1] - w[0] == 1_000));
        assert!(p.skipped >= 10_000 - 1_000);
    }

    #[test]
    fn replacing_keeps_the_next_tick_unless_the_timing_changed() {
        let now = utc(2026, 1, 1, 0, 0, 30);
        let request = |cron: &str| -> ScheduleRequest {
            serde_json::from_value(serde_json::json!({
                "queue": "q", "cron": cron, "job": {"payload": 1}
            }))
            .unwrap()
        };
        let first = request("* * * * *");
        let t = Timing::parse(first.cron.as_deref(), None, "UTC", now).unwrap();
        let created = put("s", None, &first, "{}".into(), &t, now);
        assert_eq!(created.next_run_at, Some(utc(2026, 1, 1, 0, 1, 0)));
        let later = now + 45_000;
        let same = put("s", Some(&created), &first, "{}".into(), &t, later);
        assert_eq!(same.next_run_at, created.next_run_at);
        assert_eq!(same.created_at, now);
        let other = request("*/5 * * * *");
        let t5 = Timing::parse(other.cron.as_deref(), None, "UTC", later).unwrap();
        let changed = put("s", Some(&created), &other, "{}".into(), &t5, later);
        assert_eq!(changed.next_run_at, Some(utc(2026, 1, 1, 0, 5, 0)));
        // Pause drops the next tick; resume takes the first after now.
        let paused = pause(&changed, later);
        assert_eq!((paused.paused, paused.next_run_at), (true, None));
        let resumed = resume(&paused, &t5, utc(2026, 1, 1, 0, 7, 0));
        assert_eq!(resumed.next_run_at, Some(utc(2026, 1, 1, 0, 10, 0)));
        // A trigger does not move it.
        let triggered = triggered(&resumed, JobId::from_u64(9), later + 1);
        assert_eq!(triggered.next_run_at, resumed.next_run_at);
        assert_eq!(triggered.last_job_id, Some(JobId::from_u64(9)));
    }
}
