//! What a committed batch may wake, here and in every other process on the
//! database: the payload of its `NOTIFY queue_wake`.

use std::collections::BTreeSet;

use queue_proto::JobState;

use super::Change;
use crate::rules::{self, TimerKind};
use crate::{JobId, Retention};

/// The most queues and jobs a payload names; beyond them it wakes all
/// (a payload stays far below PostgreSQL's 8000 bytes).
const MAX_NAMED: usize = 40;

/// What to wake after a commit (see [`Engine::announce`](crate::engine::Engine::announce),
/// which wakes the same in the process that committed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// Queues that may have a job to lease (one became ready, or capacity
    /// freed up).
    pub(crate) queues: BTreeSet<String>,
    /// Jobs that reached a terminal state (their waiters).
    pub(crate) jobs: BTreeSet<JobId>,
    /// The earliest new timer deadline (retention included).
    pub(crate) deadline: Option<u64>,
    /// A callback attempt may have become due.
    pub(crate) callbacks: bool,
    /// Schedules changed: the timer recomputes its next tick.
    pub(crate) timer: bool,
    /// The latest event id committed (0: none).
    pub(crate) latest_event: u64,
    /// Too much to name: wake every waiter.
    pub(crate) all: bool,
}

impl Wake {
    /// Everything: after a lost connection, when notifications may have
    /// been missed.
    pub(crate) fn everything() -> Wake {
        Wake {
            all: true,
            timer: true,
            callbacks: true,
            ..Wake::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == Wake::default()
    }

    /// Gathers what the applied `change` wakes.
    pub(crate) fn change(&mut self, change: &Change, retention: &Retention) {
        let Some(job) = change.new_job() else {
            return;
        };
        for deadline in rules::deadlines(job) {
            let offset = match deadline.kind {
                TimerKind::Callback => {
                    self.callbacks = true;
                    continue;
                }
                TimerKind::RetainCompleted => retention.completed,
                TimerKind::RetainDead => retention.dead,
                TimerKind::RetainCancelled => retention.cancelled,
                TimerKind::Promote | TimerKind::Expire | TimerKind::Ttl => {
                    std::time::Duration::ZERO
                }
            };
            let at = deadline
                .at
                .saturating_add(u64::try_from(offset.as_millis()).unwrap_or(u64::MAX));
            self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        }
        let old = change.old.as_ref();
        if old.map(|o| o.state) == Some(job.state) {
            return;
        }
        let left_leased = old.is_some_and(|o| o.state == JobState::Leased);
        if job.state == JobState::Ready || left_leased {
            self.queues.insert(job.queue.clone());
        }
        if job.state.is_terminal() {
            self.jobs.insert(job.id);
        }
    }

    pub(crate) fn absorb(&mut self, other: Wake) {
        self.queues.extend(other.queues);
        self.jobs.extend(other.jobs);
        self.deadline = match (self.deadline, other.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.callbacks |= other.callbacks;
        self.timer |= other.timer;
        self.latest_event = self.latest_event.max(other.latest_event);
        self.all |= other.all;
    }

    /// The `NOTIFY` payload, from the process `origin`.
    pub(crate) fn payload(&self, origin: u64) -> String {
        let all = self.all || self.queues.len() > MAX_NAMED || self.jobs.len() > MAX_NAMED;
        let named = |items: Vec<String>| if all { String::new() } else { items.join(",") };
        format!(
            "{origin};{};{};{};{};{};{};{}",
            self.latest_event,
            u8::from(all),
            named(self.queues.iter().cloned().collect()),
            named(self.jobs.iter().map(|id| id.as_u64().to_string()).collect()),
            self.deadline.map(|d| d.to_string()).unwrap_or_default(),
            u8::from(self.callbacks),
            u8::from(self.timer),
        )
    }

    /// Parses a payload: its origin and what it wakes (`None`: not ours to
    /// read, e.g. from another release).
    pub(crate) fn parse(payload: &str) -> Option<(u64, Wake)> {
        let parts: Vec<&str> = payload.split(';').collect();
        let [
            origin,
            latest,
            all,
            queues,
            jobs,
            deadline,
            callbacks,
            timer,
        ] = parts.as_slice()
        else {
            return None;
        };
        fn list(s: &str) -> impl Iterator<Item = String> + '_ {
            s.split(',').filter(|x| !x.is_empty()).map(str::to_owned)
        }
        let wake = Wake {
            latest_event: latest.parse().ok()?,
            all: *all == "1",
            queues: list(queues).collect(),
            jobs: list(jobs)
                .map(|id| id.parse().map(JobId::from_u64))
                .collect::<Result<_, _>>()
                .ok()?,
            deadline: if deadline.is_empty() {
                None
            } else {
                Some(deadline.parse().ok()?)
            },
            callbacks: *callbacks == "1",
            timer: *timer == "1",
        };
        Some((origin.parse().ok()?, wake))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_as_written() {
        let wake = Wake {
            queues: ["a".to_owned(), "b.c".to_owned()].into(),
            jobs: [JobId::from_u64(3), JobId::from_u64(9)].into(),
            deadline: Some(17),
            callbacks: true,
            timer: false,
            latest_event: 42,
            all: false,
        };
        assert_eq!(Wake::parse(&wake.payload(7)), Some((7, wake)));
    }

    #[test]
    fn a_payload_with_too_many_names_wakes_all() {
        let wake = Wake {
            jobs: (0..100).map(JobId::from_u64).collect(),
            ..Wake::default()
        };
        let (_, read) = Wake::parse(&wake.payload(1)).unwrap();
        assert!(read.all);
        assert!(read.jobs.is_empty());
        assert!(wake.payload(1).len() < 8000);
    }
}
