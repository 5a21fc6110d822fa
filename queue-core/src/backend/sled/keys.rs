//! Key layouts and the entries derived from records.
//!
//! Trees and their keys (big-endian numbers, so range scans come back in
//! order):
//!
//! - `jobs`: job id → job record ([`codec`](super::codec)).
//! - `index`: entries derived from records, one family per prefix byte:
//!   `r` ready by (queue, priority desc, run_at, id) for leasing: the
//!   ready jobs without a group (value empty), and the head (first in
//!   lease order) of each group's ready jobs (value: the group),
//!   `g` ready jobs with a group by (queue, group, priority desc, run_at,
//!   id): each group's own lease order,
//!   `a` ready by (queue, run_at, id) for the oldest-ready age,
//!   `j` every job by (queue, state, id) for listing a queue's jobs in a
//!   state (the dead-letter list included), ([`state_key`]),
//!   `o` jobs with a correlation id by (correlation id, id) for listing
//!   the jobs of one request across queues ([`correlation_key`]),
//!   `i` idempotency (queue, key) → id,
//!   `k` callbacks by (state, id), for listing deliveries;
//!   format 2 kept `d` dead by (queue, id) for the dead-letter list,
//!   which `j` replaces (the upgrade to format 3 removes them).
//! - `timers`: (kind, at, id) → lease id or nothing ([`rules::deadlines`]).
//! - `meta`: `c` per-(queue, state) counts, `l` per-(queue, group) counts
//!   of leased jobs, `h` per-(queue, group) pointers to the group's head
//!   entry in `r`, `s` queue settings records,
//!   `e` the latest event id when the log was last pruned, `m` schedule
//!   records by name, `n` active schedules by (`next_run_at`, name) for the
//!   timer ([`schedule_due_key`]), `y` history minutes by (queue, minute
//!   start) ([`history_key`]; records of their own, not derived from the
//!   jobs); format 1 stored `p` paused flags.
//! - `events`: first event id → a chunk of consecutive events.
//! - `wal`: the checkpoint: the batch up to which the trees hold every
//!   write (batches write their records to the `journal` files, see
//!   `journal.rs`); the pieces of the format upgrade's records (16-byte
//!   keys: sequence, piece, pieces), removed once applied; and, in
//!   directories of older releases, the slots of `Durability::Periodic`
//!   batches (8-byte keys), replayed at open. Committed writes reach the
//!   trees at checkpoints only; until then they are read from an overlay
//!   (`pending.rs`).
//!
//! Every entry of `index` and `timers` and every count is a function of the
//! records: [`entries`] gives those of one record; the group heads (an `r`
//! entry and an `h` pointer per group with ready jobs) and the `l` counts
//! are functions of all the records of a group, kept by the batch
//! (`Tx::apply` and `Tx::update_heads`) and recomputed by `verify`.
//!
//! Why heads: a lease scans `r` in lease order; with a ready job per group
//! in it rather than every grouped job, a group whose limit is reached
//! costs the scan one entry, however many ready jobs it holds, and the
//! round continues a group it takes from in `g`.
//!
//! [`rules::deadlines`]: crate::rules::deadlines

use queue_proto::JobState;

use crate::rules::{TimerKind, deadlines};
use crate::{CallbackStatus, Error, Job, JobId, Result};

pub(crate) const READY: u8 = b'r';
pub(crate) const GROUP_READY: u8 = b'g';
/// Per-(queue, group) count of leased jobs (in `meta`).
pub(crate) const GROUP_LEASED: u8 = b'l';
/// Per-(queue, group) pointer to the group's head entry in `r` (in `meta`).
pub(crate) const GROUP_HEAD: u8 = b'h';
pub(crate) const AGE: u8 = b'a';
/// Format 2's dead-letter entries (`d` + queue + 0 + id), replaced by
/// [`STATE`] entries.
pub(crate) const DEAD_V2: u8 = b'd';
/// Every job by (queue, state, id).
pub(crate) const STATE: u8 = b'j';
/// Jobs with a correlation id by (correlation id, id).
pub(crate) const CORRELATION: u8 = b'o';
pub(crate) const IDEM: u8 = b'i';
pub(crate) const CALLBACKS: u8 = b'k';
pub(crate) const COUNT: u8 = b'c';
pub(crate) const SETTINGS: u8 = b's';
pub(crate) const SCHEDULE: u8 = b'm';
pub(crate) const SCHEDULE_DUE: u8 = b'n';
/// A queue's history minute (in `meta`): (queue, minute start) → rollup.
pub(crate) const HISTORY: u8 = b'y';
/// Format 1's paused flag (`p` + queue → empty), migrated to settings.
pub(crate) const PAUSED_V1: u8 = b'p';
/// The latest event id when the log was last pruned: the log's own end
/// says it otherwise.
pub(crate) const EVENT_SEQ: &[u8] = b"e";

/// Tree ids in write sets and write-ahead records.
pub(crate) const JOBS: u8 = 0;
pub(crate) const INDEX: u8 = 1;
pub(crate) const TIMERS: u8 = 2;
pub(crate) const META: u8 = 3;
pub(crate) const EVENTS: u8 = 4;
/// The `wal` tree, written by batches only for the checkpoint.
pub(crate) const WAL: u8 = 5;

/// The key of the checkpoint in the `wal` tree: the batch sequence number
/// up to which no slot needs replaying.
pub(crate) const CHECKPOINT: &[u8] = b"checkpoint";

pub(crate) fn job_key(id: JobId) -> [u8; 8] {
    id.as_u64().to_be_bytes()
}

/// A slot of the write-ahead log (8 bytes; pieces of large records have
/// 16-byte keys). Batches under `Durability::Periodic` wrote their records
/// to slots before they went to the journal too; a reopen still replays
/// the slots a directory holds, and tests write them.
#[cfg(test)]
pub(crate) fn slot_key(slot: u64) -> [u8; 8] {
    slot.to_be_bytes()
}

pub(crate) fn event_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub(crate) fn id_at_end(key: &[u8]) -> Result<JobId> {
    key.len()
        .checked_sub(8)
        .and_then(|start| u64_at(key, start))
        .map(JobId::from_u64)
        .ok_or_else(|| Error::Corrupt(format!("short index key {key:?}")))
}

/// The id of the job whose key `key` of `tree` is, if it is one: a record
/// (`jobs`), an `index` entry that ends with its job's id (`r`, `g`, `a`,
/// `j`, `o`, `k`, format 2's `d`), a timer; `None` for every other key
/// (counts, idempotency entries, settings, events, ...). No such key is written
/// before its job's id is generated: a batch writes the keys of jobs it
/// holds the ids of (see `Pending::never_stored`).
pub(crate) fn job_of_key(tree: u8, key: &[u8]) -> Option<u64> {
    match tree {
        JOBS if key.len() == 8 => u64_at(key, 0),
        INDEX => match key.first() {
            Some(&(READY | GROUP_READY | AGE | STATE | CORRELATION | CALLBACKS | DEAD_V2))
                if key.len() > 8 =>
            {
                u64_at(key, key.len() - 8)
            }
            _ => None,
        },
        TIMERS if key.len() == 17 => u64_at(key, 9),
        _ => None,
    }
}

/// The smallest key after `key` (`key` and a 0 byte): where a range that
/// excludes `key` starts.
pub(crate) fn just_after(key: &[u8]) -> Vec<u8> {
    let mut after = Vec::with_capacity(key.len() + 1);
    after.extend_from_slice(key);
    after.push(0);
    after
}

/// `family` + queue name + 0 (a byte no queue name contains).
pub(crate) fn queue_prefix(family: u8, queue: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue.len() + 40);
    key.push(family);
    key.extend_from_slice(queue.as_bytes());
    key.push(0);
    key
}

/// Higher priorities sort first.
pub(crate) fn priority_key(priority: i32) -> [u8; 4] {
    (!((priority as u32) ^ 0x8000_0000)).to_be_bytes()
}

/// The lease order of a ready job: priority (high first), `run_at`, id;
/// the last 20 bytes of its `r` and `g` keys.
pub(crate) fn order_suffix(job: &Job) -> [u8; 20] {
    let mut suffix = [0u8; 20];
    suffix[..4].copy_from_slice(&priority_key(job.priority));
    suffix[4..12].copy_from_slice(&job.run_at.to_be_bytes());
    suffix[12..].copy_from_slice(&job_key(job.id));
    suffix
}

/// Length of [`order_suffix`].
pub(crate) const ORDER_LEN: usize = 20;

pub(crate) fn ready_key(job: &Job) -> Vec<u8> {
    ready_key_of(&job.queue, &order_suffix(job))
}

/// The `r` key of the job of `queue` with lease order `suffix`.
pub(crate) fn ready_key_of(queue: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = queue_prefix(READY, queue);
    key.extend_from_slice(suffix);
    key
}

/// `family` + queue + 0 + group length (one byte: groups are at most 128
/// bytes) + group: the keys of one group, none a prefix of another's.
pub(crate) fn group_prefix(family: u8, queue: &str, group: &str) -> Vec<u8> {
    let mut key = queue_prefix(family, queue);
    key.push(u8::try_from(group.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(group.as_bytes());
    key
}

fn group_ready_key(job: &Job, group: &str) -> Vec<u8> {
    let mut key = group_prefix(GROUP_READY, &job.queue, group);
    key.extend_from_slice(&order_suffix(job));
    key
}

/// The count of leased jobs of (`queue`, `group`), in `meta`.
pub(crate) fn group_leased_key(queue: &str, group: &str) -> Vec<u8> {
    group_prefix(GROUP_LEASED, queue, group)
}

/// The pointer to the head entry of (`queue`, `group`), in `meta`.
pub(crate) fn group_head_key(queue: &str, group: &str) -> Vec<u8> {
    group_prefix(GROUP_HEAD, queue, group)
}

fn age_key(job: &Job) -> Vec<u8> {
    age_key_of(&job.queue, &order_suffix(job))
}

/// The `a` key of the job of `queue` whose lease order is `order`
/// ([`order_suffix`]): its `run_at` and id, the priority left out.
pub(crate) fn age_key_of(queue: &str, order: &[u8]) -> Vec<u8> {
    let mut key = queue_prefix(AGE, queue);
    key.extend_from_slice(order.get(4..).unwrap_or_default());
    key
}

/// The prefix of the `j` entries of `queue`'s jobs in `state`:
/// `j` + queue + 0 + the state's byte ([`state_byte`]).
pub(crate) fn state_prefix(queue: &str, state: JobState) -> Vec<u8> {
    let mut key = queue_prefix(STATE, queue);
    key.push(state_byte(state));
    key
}

/// The `j` entry of job `id` of `queue` in `state`: [`state_prefix`] + id.
/// Ids increase with creation, so a scan comes back oldest first.
pub(crate) fn state_key(queue: &str, state: JobState, id: JobId) -> Vec<u8> {
    let mut key = state_prefix(queue, state);
    key.extend_from_slice(&job_key(id));
    key
}

/// The prefix of the `o` entries of `correlation_id`: `o` + its length
/// (one byte: correlation ids are at most 128 bytes) + the id, so that no
/// correlation id's keys are a prefix of another's.
pub(crate) fn correlation_prefix(correlation_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(correlation_id.len() + 10);
    key.push(CORRELATION);
    key.push(u8::try_from(correlation_id.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(correlation_id.as_bytes());
    key
}

/// The `o` entry of job `id` with `correlation_id`: the prefix + id.
pub(crate) fn correlation_key(correlation_id: &str, id: JobId) -> Vec<u8> {
    let mut key = correlation_prefix(correlation_id);
    key.extend_from_slice(&job_key(id));
    key
}

pub(crate) fn idem_key(queue: &str, idempotency_key: &str) -> Vec<u8> {
    let mut key = queue_prefix(IDEM, queue);
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}

/// The first byte of a `timers` key. Stored: never renumber.
pub(crate) fn timer_byte(kind: TimerKind) -> u8 {
    match kind {
        TimerKind::Promote => 0,
        TimerKind::Expire => 1,
        TimerKind::RetainCompleted => 2,
        TimerKind::RetainDead => 3,
        TimerKind::RetainCancelled => 4,
        TimerKind::Callback => 5,
        TimerKind::Ttl => 6,
    }
}

/// The byte of a callback state in the `k` index. Stored: never renumber.
pub(crate) fn callback_byte(status: CallbackStatus) -> u8 {
    match status {
        CallbackStatus::Pending => 0,
        CallbackStatus::Delivered => 1,
        CallbackStatus::Failed => 2,
    }
}

/// The `k` index entry of job `id` whose callback is in `status`.
pub(crate) fn callback_key(status: CallbackStatus, id: JobId) -> Vec<u8> {
    let mut key = vec![CALLBACKS, callback_byte(status)];
    key.extend_from_slice(&job_key(id));
    key
}

pub(crate) fn timer_key(kind: TimerKind, at: u64, id: JobId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = timer_byte(kind);
    key[1..9].copy_from_slice(&at.to_be_bytes());
    key[9..].copy_from_slice(&job_key(id));
    key
}

/// The byte of a state in count keys. Stored: never renumber.
pub(crate) fn state_byte(state: JobState) -> u8 {
    match state {
        JobState::Scheduled => 0,
        JobState::Ready => 1,
        JobState::Leased => 2,
        JobState::Completed => 3,
        JobState::Dead => 4,
        JobState::Cancelled => 5,
    }
}

pub(crate) fn count_key(queue: &str, state: JobState) -> Vec<u8> {
    let mut key = queue_prefix(COUNT, queue);
    key.push(state_byte(state));
    key
}

pub(crate) fn settings_key(queue: &str) -> Vec<u8> {
    let mut key = vec![SETTINGS];
    key.extend_from_slice(queue.as_bytes());
    key
}

/// The key of `queue`'s history record for the minute starting at
/// `minute` (unix ms): big-endian, so a queue's minutes sort in time order.
pub(crate) fn history_key(queue: &str, minute: u64) -> Vec<u8> {
    let mut key = queue_prefix(HISTORY, queue);
    key.extend_from_slice(&minute.to_be_bytes());
    key
}

/// The key of schedule `name`'s record in `meta`.
pub(crate) fn schedule_key(name: &str) -> Vec<u8> {
    let mut key = vec![SCHEDULE];
    key.extend_from_slice(name.as_bytes());
    key
}

/// The `meta` entry of an active schedule, due at its `next_run_at`:
/// `n`, the time (big-endian), the name. A paused schedule (or one that
/// never fires again) has none.
pub(crate) fn schedule_due_key(schedule: &crate::Schedule) -> Option<Vec<u8>> {
    let at = schedule.next_run_at.filter(|_| !schedule.paused)?;
    let mut key = vec![SCHEDULE_DUE];
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(schedule.name.as_bytes());
    Some(key)
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("bad counter value {bytes:?}")))
}

/// Which tree an [`Entry`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    Index,
    Timers,
}

impl Family {
    pub(crate) fn tree(self) -> u8 {
        match self {
            Family::Index => INDEX,
            Family::Timers => TIMERS,
        }
    }
}

/// One index or timer entry implied by a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) family: Family,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Every index and timer entry `job` implies. This function is the single
/// definition of what the secondary trees hold; the timer entries follow
/// [`rules::deadlines`](crate::rules::deadlines).
pub(crate) fn entries(job: &Job) -> Vec<Entry> {
    let index = |key: Vec<u8>, value: Vec<u8>| Entry {
        family: Family::Index,
        key,
        value,
    };
    let mut out = Vec::with_capacity(4);
    if let Some(key) = &job.idempotency_key {
        out.push(index(idem_key(&job.queue, key), job_key(job.id).to_vec()));
    }
    out.push(index(state_key(&job.queue, job.state, job.id), Vec::new()));
    if let Some(correlation_id) = &job.correlation_id {
        out.push(index(correlation_key(correlation_id, job.id), Vec::new()));
    }
    match job.state {
        JobState::Ready => {
            match &job.group {
                Some(group) => out.push(index(group_ready_key(job, group), Vec::new())),
                None => out.push(index(ready_key(job), Vec::new())),
            }
            out.push(index(age_key(job), Vec::new()));
        }
        JobState::Scheduled
        | JobState::Leased
        | JobState::Completed
        | JobState::Dead
        | JobState::Cancelled => {}
    }
    if let Some(callback) = &job.callback {
        out.push(index(callback_key(callback.status, job.id), Vec::new()));
    }
    for deadline in deadlines(job) {
        out.push(Entry {
            family: Family::Timers,
            key: timer_key(deadline.kind, deadline.at, job.id).to_vec(),
            value: deadline
                .lease
                .map(|lease| lease.as_u64().to_be_bytes().to_vec())
                .unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{leased_job, ready_job};

    #[test]
    fn priority_keys_sort_high_first() {
        let order = [i32::MAX, 10, 1, 0, -1, -10, i32::MIN];
        let keys: Vec<_> = order.iter().map(|p| priority_key(*p)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn entries_follow_the_state() {
        let ready = ready_job();
        assert_eq!(entries(&ready).len(), 3);
        let leased = leased_job(1);
        let e = entries(&leased);
        assert_eq!(e.len(), 2);
        let timers: Vec<_> = e.iter().filter(|e| e.family == Family::Timers).collect();
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].value, 1u64.to_be_bytes().to_vec());
        let mut keyed = ready_job();
        keyed.idempotency_key = Some("k".into());
        assert_eq!(entries(&keyed).len(), 4);
    }

    #[test]
    fn every_job_has_one_state_entry_and_one_correlation_entry_if_it_has_an_id() {
        let keys =
            |job: &Job| -> Vec<Vec<u8>> { entries(job).into_iter().map(|e| e.key).collect() };
        for state in JobState::ALL {
            let mut job = ready_job();
            job.state = state;
            let of_state: Vec<_> = keys(&job)
                .into_iter()
                .filter(|k| k.first() == Some(&STATE))
                .collect();
            assert_eq!(of_state, [state_key("q", state, job.id)], "{state:?}");
            assert!(of_state[0].starts_with(&state_prefix("q", state)));
            assert!(!keys(&job).iter().any(|k| k.first() == Some(&CORRELATION)));
        }
        let mut job = ready_job();
        job.correlation_id = Some("req-1".into());
        let of_correlation: Vec<_> = keys(&job)
            .into_iter()
            .filter(|k| k.first() == Some(&CORRELATION))
            .collect();
        assert_eq!(of_correlation, [correlation_key("req-1", job.id)]);
        // Nothing of a dead job goes to format 2's `d` family any more.
        job.state = JobState::Dead;
        assert!(!keys(&job).iter().any(|k| k.first() == Some(&DEAD_V2)));
    }

    #[test]
    fn every_key_of_a_job_names_it_and_no_other_key_does() {
        let id = 0x0102_0304_0506_0708;
        let mut jobs = Vec::new();
        for state in JobState::ALL {
            for grouped in [false, true] {
                let mut job = ready_job();
                job.id = JobId::from_u64(id);
                job.state = state;
                job.correlation_id = Some("req-1".into());
                job.idempotency_key = Some("idem-1".into());
                job.callback_url = Some("http://127.0.0.1:9/hook".into());
                job.group = grouped.then(|| "g".to_string());
                if state.is_terminal() {
                    job.finished_at = Some(job.updated_at);
                    job = crate::rules::callback::retry(&job, job.updated_at)
                        .unwrap()
                        .job
                        .unwrap();
                }
                jobs.push(job);
            }
        }
        let mut families = std::collections::BTreeSet::new();
        for job in &jobs {
            assert_eq!(job_of_key(JOBS, &job_key(job.id)), Some(id));
            for entry in entries(job) {
                let tree = entry.family.tree();
                let expected = (entry.key[0] != IDEM).then_some(id);
                assert_eq!(job_of_key(tree, &entry.key), expected, "{entry:?}");
                families.insert((tree, entry.key[0]));
            }
            let group = job.group.as_deref().unwrap_or("g");
            for key in [
                count_key(&job.queue, job.state),
                settings_key(&job.queue),
                group_head_key(&job.queue, group),
                group_leased_key(&job.queue, group),
                history_key(&job.queue, 60_000),
            ] {
                assert_eq!(job_of_key(META, &key), None, "{key:?}");
            }
        }
        // Every family of `entries` was seen: r, g, a, j, o, k, i and
        // timers of several kinds.
        for family in [READY, GROUP_READY, AGE, STATE, CORRELATION, CALLBACKS, IDEM] {
            assert!(families.contains(&(INDEX, family)), "{}", family as char);
        }
        assert!(families.iter().filter(|(tree, _)| *tree == TIMERS).count() > 1);
        // Keys too short to end with an id, and other trees' keys.
        assert_eq!(job_of_key(INDEX, &[READY]), None);
        assert_eq!(job_of_key(INDEX, &[READY; 8]), None);
        assert_eq!(job_of_key(JOBS, &[1; 9]), None);
        assert_eq!(job_of_key(TIMERS, &[1; 16]), None);
        assert_eq!(job_of_key(EVENTS, &event_key(id)), None);
        assert_eq!(job_of_key(WAL, CHECKPOINT), None);
    }

    #[test]
    fn listing_keys_sort_by_id_and_never_mix_prefixes() {
        let id = JobId::from_u64;
        let mut keys = vec![
            state_key("q", JobState::Ready, id(300)),
            state_key("q", JobState::Ready, id(2)),
            state_key("q", JobState::Ready, id(1 << 40)),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                state_key("q", JobState::Ready, id(2)),
                state_key("q", JobState::Ready, id(300)),
                state_key("q", JobState::Ready, id(1 << 40)),
            ]
        );
        // Queue `q` is not a prefix of queue `q1`, nor one state of another.
        assert!(
            !state_key("q1", JobState::Ready, id(1))
                .starts_with(&state_prefix("q", JobState::Ready))
        );
        assert!(
            !state_key("q", JobState::Dead, id(1)).starts_with(&state_prefix("q", JobState::Ready))
        );
        // Correlation id `a` is not a prefix of `ab`.
        assert!(!correlation_key("ab", id(1)).starts_with(&correlation_prefix("a")));
        assert!(correlation_key("a", id(1)) < correlation_key("a", id(2)));
    }

    #[test]
    fn stored_numbering_is_stable() {
        let bytes: Vec<u8> = TimerKind::ALL.iter().map(|k| timer_byte(*k)).collect();
        assert_eq!(bytes, [0, 1, 2, 3, 4, 5, 6]);
        let states: Vec<u8> = JobState::ALL.iter().map(|s| state_byte(*s)).collect();
        assert_eq!(states, [0, 1, 2, 3, 4, 5]);
    }
}
