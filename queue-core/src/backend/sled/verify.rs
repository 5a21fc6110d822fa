//! The consistency check: every index entry, timer entry and count is
//! recomputed from the records and compared with what is stored, the
//! group heads and per-group leased counts included.

use std::collections::BTreeMap;
use std::ops::Bound;

use queue_proto::JobState;

use super::keys::{
    COUNT, EVENTS, Family, GROUP_HEAD, GROUP_LEASED, INDEX, JOBS, META, TIMERS, count_key,
    decode_u64, entries, group_head_key, group_leased_key, job_key, order_suffix, ready_key_of,
};
use super::{Store, codec, storage};
use crate::counts::state_index;
use crate::verification::invariant_problems;
use crate::{Result, Verification};

pub(crate) fn verify(store: &Store) -> Result<Verification> {
    let mut problems = Vec::new();
    let mut expected_index = 0usize;
    let mut expected_timers = 0usize;
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut by_state = [0u64; 6];
    // (queue, group) → the lease order of its first ready job.
    let mut heads: BTreeMap<(String, String), [u8; 20]> = BTreeMap::new();
    let mut group_leased: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for item in store.scan(JOBS, Bound::Unbounded, Bound::Unbounded) {
        let (key, bytes) = item.map_err(storage)?;
        let job = match codec::decode_job(&bytes) {
            Ok((job, _)) => job,
            Err(e) => {
                problems.push(format!("record {key:?}: {e}"));
                continue;
            }
        };
        if key.as_ref() != job_key(job.id) {
            problems.push(format!("record under key {key:?} has id {}", job.id));
        }
        problems.extend(invariant_problems(&job));
        by_state[state_index(job.state)] += 1;
        *counts.entry(count_key(&job.queue, job.state)).or_default() += 1;
        if let Some(group) = &job.group {
            match job.state {
                JobState::Leased => {
                    *group_leased
                        .entry(group_leased_key(&job.queue, group))
                        .or_default() += 1;
                }
                JobState::Ready => {
                    let order = order_suffix(&job);
                    let head = heads
                        .entry((job.queue.clone(), group.clone()))
                        .or_insert(order);
                    if order < *head {
                        *head = order;
                    }
                }
                JobState::Scheduled
                | JobState::Completed
                | JobState::Dead
                | JobState::Cancelled => {}
            }
        }
        for entry in entries(&job) {
            match entry.family {
                Family::Index => expected_index += 1,
                Family::Timers => expected_timers += 1,
            }
            match store.get(entry.family.tree(), &entry.key)? {
                Some(v) if v.as_ref() == entry.value.as_slice() => {}
                Some(_) => problems.push(format!(
                    "{:?} entry of job {} has a wrong value",
                    entry.family, job.id
                )),
                None => problems.push(format!(
                    "{:?} entry of job {} ({:?}) is missing",
                    entry.family, job.id, job.state
                )),
            }
        }
    }
    let mut pointers = BTreeMap::new();
    for ((queue, group), order) in &heads {
        let key = ready_key_of(queue, order);
        expected_index += 1;
        match store.get(INDEX, &key)? {
            Some(value) if value.as_ref() == group.as_bytes() => {}
            Some(_) => problems.push(format!(
                "the head entry of group {group:?} of queue {queue} names another group"
            )),
            None => problems.push(format!(
                "the head entry of group {group:?} of queue {queue} is missing"
            )),
        }
        pointers.insert(group_head_key(queue, group), key);
    }
    let mut stored_pointers = BTreeMap::new();
    for item in store.scan_prefix(META, &[GROUP_HEAD]) {
        let (key, value) = item.map_err(storage)?;
        stored_pointers.insert(key.to_vec(), value.to_vec());
    }
    if stored_pointers != pointers {
        problems.push(format!(
            "stored group heads {stored_pointers:?} differ from the records' {pointers:?}"
        ));
    }
    let mut stored_group_leased = BTreeMap::new();
    for item in store.scan_prefix(META, &[GROUP_LEASED]) {
        let (key, value) = item.map_err(storage)?;
        stored_group_leased.insert(key.to_vec(), decode_u64(&value)?);
    }
    if stored_group_leased != group_leased {
        problems.push(format!(
            "stored leased counts by group {stored_group_leased:?} differ from the records' \
             {group_leased:?}"
        ));
    }
    let index_len = store
        .scan(INDEX, Bound::Unbounded, Bound::Unbounded)
        .count();
    if index_len != expected_index {
        problems.push(format!(
            "index holds {index_len} entries, the records imply {expected_index}"
        ));
    }
    let timers_len = store
        .scan(TIMERS, Bound::Unbounded, Bound::Unbounded)
        .count();
    if timers_len != expected_timers {
        problems.push(format!(
            "timers hold {timers_len} entries, the records imply {expected_timers}"
        ));
    }
    // Every active schedule has its due entry, and every due entry is one
    // that a schedule record implies.
    let mut expected_due = std::collections::BTreeSet::new();
    for item in store.scan_prefix(META, &[super::keys::SCHEDULE]) {
        let (key, bytes) = item.map_err(storage)?;
        match codec::decode_schedule(&bytes) {
            Ok((schedule, _)) => {
                if key.as_ref() != super::keys::schedule_key(&schedule.name) {
                    problems.push(format!(
                        "schedule under key {key:?} is named {:?}",
                        schedule.name
                    ));
                }
                if schedule.cron.is_some() == schedule.every_ms.is_some() {
                    problems.push(format!(
                        "schedule {:?} has neither or both of cron and every_ms",
                        schedule.name
                    ));
                }
                if let Some(due) = super::keys::schedule_due_key(&schedule) {
                    expected_due.insert(due);
                }
            }
            Err(e) => problems.push(format!("schedule {key:?}: {e}")),
        }
    }
    let mut stored_due = std::collections::BTreeSet::new();
    for entry in store.scan_prefix(META, &[super::keys::SCHEDULE_DUE]) {
        stored_due.insert(entry.map_err(storage)?.0.to_vec());
    }
    if stored_due != expected_due {
        problems.push(format!(
            "{} schedule due entries are stored, the schedules imply {} ({} missing, {} extra)",
            stored_due.len(),
            expected_due.len(),
            expected_due.difference(&stored_due).count(),
            stored_due.difference(&expected_due).count()
        ));
    }
    // History minutes are records of their own (not derived from the
    // jobs): each must decode, under a key naming a queue and a minute.
    for item in store.scan_prefix(META, &[super::keys::HISTORY]) {
        let (key, bytes) = item.map_err(storage)?;
        let minute = key
            .iter()
            .position(|b| *b == 0)
            .and_then(|end| super::keys::u64_at(&key, end + 1).filter(|_| key.len() == end + 9));
        match minute {
            Some(minute) if minute % queue_proto::HISTORY_MINUTE_MS == 0 => {}
            _ => problems.push(format!("history key {key:?} names no (queue, minute)")),
        }
        if let Err(e) = codec::decode_rollup(&bytes) {
            problems.push(format!("history minute {key:?}: {e}"));
        }
    }
    let mut stored_counts = BTreeMap::new();
    for item in store.scan_prefix(META, &[COUNT]) {
        let (key, value) = item.map_err(storage)?;
        stored_counts.insert(key.to_vec(), decode_u64(&value)?);
    }
    if stored_counts != counts {
        problems.push(format!(
            "stored counts {stored_counts:?} differ from the records' {counts:?}"
        ));
    }
    // The event log is a contiguous run of ids ending at the latest, in
    // chunks, with no write-ahead record left unapplied.
    let mut previous: Option<u64> = None;
    for item in store.scan(EVENTS, Bound::Unbounded, Bound::Unbounded) {
        let (key, value) = item.map_err(storage)?;
        let Some(first) = super::keys::u64_at(&key, 0) else {
            problems.push(format!("event key {key:?} is short"));
            continue;
        };
        match codec::decode_chunk(first, &value) {
            Ok(events) => {
                if previous.is_some_and(|p| p + 1 != first) {
                    problems.push(format!("event log skips from {previous:?} to {first}"));
                }
                previous = events.last().map(|e| e.event_id);
            }
            Err(e) => problems.push(format!("events at {first}: {e}")),
        }
    }
    // The events not yet in a chunk follow the last one, up to the latest.
    let latest = store.event_seq.load(std::sync::atomic::Ordering::Acquire);
    let gathered: Vec<u64> = {
        let gathered = store.published.lock().unwrap_or_else(|p| p.into_inner());
        match codec::decode_items(gathered.first, &gathered.items) {
            Ok(events) => events.iter().map(|e| e.event_id).collect(),
            Err(e) => {
                problems.push(format!("gathered events: {e}"));
                Vec::new()
            }
        }
    };
    let expected_first =
        previous.map_or(gathered.first().copied().unwrap_or(latest + 1), |p| p + 1);
    let whole = gathered
        .iter()
        .zip(expected_first..)
        .all(|(id, expected)| *id == expected);
    let end = gathered.last().copied().or(previous);
    if !whole || end.is_some_and(|end| end != latest) {
        problems.push(format!(
            "event log ends at {previous:?} with {} gathered events, the latest event is {latest}",
            gathered.len()
        ));
    }
    for item in store.wal.iter() {
        let (key, value) = item.map_err(storage)?;
        match (key.len(), codec::decode_slot(&value)) {
            (8, Ok(_)) => {}
            (8, Err(e)) => problems.push(format!("write-ahead slot {key:?}: {e}")),
            _ if key.as_ref() == super::keys::CHECKPOINT => {}
            _ => problems.push(format!("write-ahead record {key:?} left between batches")),
        }
    }
    Ok(Verification {
        jobs: by_state.iter().sum(),
        by_state,
        problems,
    })
}
