//! The consistency check: every index entry, timer entry and count is
//! recomputed from the records and compared with what is stored.

use std::collections::BTreeMap;

use super::keys::{COUNT, Family, count_key, decode_u64, entries, job_key};
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
    for item in store.jobs.iter() {
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
        for entry in entries(&job) {
            let tree = match entry.family {
                Family::Index => {
                    expected_index += 1;
                    &store.index
                }
                Family::Timers => {
                    expected_timers += 1;
                    &store.timers
                }
            };
            match tree.get(&entry.key).map_err(storage)? {
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
    let index_len = store.index.len();
    if index_len != expected_index {
        problems.push(format!(
            "index holds {index_len} entries, the records imply {expected_index}"
        ));
    }
    let timers_len = store.timers.len();
    if timers_len != expected_timers {
        problems.push(format!(
            "timers hold {timers_len} entries, the records imply {expected_timers}"
        ));
    }
    let mut stored_counts = BTreeMap::new();
    for item in store.meta.scan_prefix([COUNT]) {
        let (key, value) = item.map_err(storage)?;
        stored_counts.insert(key.to_vec(), decode_u64(&value)?);
    }
    if stored_counts != counts {
        problems.push(format!(
            "stored counts {stored_counts:?} differ from the records' {counts:?}"
        ));
    }
    // The event log is a contiguous run of ids ending at the latest.
    let mut previous: Option<u64> = None;
    for item in store.events.iter() {
        let (key, value) = item.map_err(storage)?;
        let Some(id) = super::keys::u64_at(&key, 0) else {
            problems.push(format!("event key {key:?} is short"));
            continue;
        };
        if let Err(e) = codec::decode_event(id, &value) {
            problems.push(format!("event {id}: {e}"));
        }
        if previous.is_some_and(|p| p + 1 != id) {
            problems.push(format!("event log skips from {previous:?} to {id}"));
        }
        previous = Some(id);
    }
    let latest = store.event_seq.load(std::sync::atomic::Ordering::Acquire);
    if previous.is_some_and(|p| p != latest) {
        problems.push(format!(
            "event log ends at {previous:?}, the latest event is {latest}"
        ));
    }
    Ok(Verification {
        jobs: by_state.iter().sum(),
        by_state,
        problems,
    })
}
