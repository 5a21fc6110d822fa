//! Stored records and their versions.
//!
//! Every value this backend stores starts with its format version, and every
//! version ever written keeps decoding: the structs of each version are
//! frozen here (never edited, only added to), and `tests/fixtures` keeps
//! bytes written by each release.
//!
//! | record | version | layout |
//! |---|---|---|
//! | job | 1 | `1`, bincode of [`JobV1`] (revision 0) |
//! | job | 2 | `2`, revision (u64 big-endian), bincode of [`JobV1`] |
//! | settings | 1 | `1`, bincode of [`SettingsV1`] |
//! | event chunk | 1 | `c`, `1`, bincode of `[`[`EventV1`]`]`: consecutive events, the first one's id is the key |
//! | write-ahead | 1 | `1`, bincode of `[(tree, key, value?)]`, trees 0..=3 |
//! | write-ahead | 2 | `2`, the same, trees 0..=5 (5: the `wal` tree, for the checkpoint) |
//! | slot | 1 | `s`, batch sequence (u64), events length (u32), the batch's events (first id and chunk, or nothing), its write-ahead record |
//!
//! Slots are the write-ahead log of ordinary batches: [`SLOTS`] keys of the
//! `wal` tree used in turn (overwriting a key costs sled far less than
//! growing a tree or removing a key). A batch's record stays in its slot
//! after it is applied, and so do its events, until a later batch writes
//! the events gathered so far as one chunk of the `events` tree together
//! with a checkpoint: the sequence number up to which no slot needs
//! replaying. A reopen replays, in order, every slot after the checkpoint
//! (records already applied rewrite the values they wrote, which later
//! records then rewrite in turn: the result is the state after the last),
//! and gathers their events into a chunk.
//!
//! [`SLOTS`]: super::batch::SLOTS
//!
//! Job record version 2 adds the revision in front of the body, where a
//! commit's compare-and-swap reads it without decoding the body; the body
//! is still version 1's. A version 1 record reads as revision 0 and is
//! written as version 2 by its next change.
//!
//! bincode is positional: a field added to a struct changes the bytes, which
//! is why a new field means a new version here, decoded alongside the old.
//! [`JobState`] and [`Transition`] are stored by their position in these
//! lists, which must therefore never be reordered.

use queue_proto::JobState;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::backend::Revision;
use crate::rules::EventDraft;
use crate::settings::QueueSettings;
use crate::{Error, Event, Job, JobId, Lease, LeaseId, Result, Transition};

/// The job record version this build writes.
pub(crate) const JOB_VERSION: u8 = 2;
/// The write-ahead record version this build writes.
pub(crate) const WAL_VERSION: u8 = 2;
const SETTINGS_VERSION: u8 = 1;
const EVENT_VERSION: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("undecodable {what}: {e}"))
}

/// Decodes all of `body` as a `T`; trailing bytes are damage.
fn decode_all<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| corrupt(what, e))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "{what} has {} trailing bytes",
            body.len() - used
        )));
    }
    Ok(value)
}

fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T, what: &str) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("cannot encode {what}: {e}")))
}

// ---- jobs ------------------------------------------------------------------

/// Bytes, read in one piece (serde's `Vec<u8>` reads byte by byte); the
/// stored layout is the same: a length, then the bytes.
#[derive(Debug)]
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Borrowed bytes, written as [`ByteBuf`] reads them.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The job body of versions 1 and 2 (frozen).
#[derive(Deserialize)]
struct JobV1 {
    id: u64,
    queue: String,
    state: JobState,
    payload: ByteBuf,
    priority: i32,
    attempts: u32,
    max_attempts: u32,
    backoff_ms: u64,
    created_at: u64,
    updated_at: u64,
    run_at: u64,
    lease: Option<LeaseV1>,
    idempotency_key: Option<String>,
    result: Option<ByteBuf>,
    last_error: Option<String>,
    finished_at: Option<u64>,
}

/// The lease inside [`JobV1`] (frozen).
#[derive(Serialize, Deserialize)]
struct LeaseV1 {
    id: u64,
    expires_at: u64,
    lease_ms: u64,
    leased_at: u64,
    worker: Option<String>,
}

/// [`JobV1`] borrowed from a [`Job`], for writing.
#[derive(Serialize)]
struct JobV1Ref<'a> {
    id: u64,
    queue: &'a str,
    state: JobState,
    payload: Bytes<'a>,
    priority: i32,
    attempts: u32,
    max_attempts: u32,
    backoff_ms: u64,
    created_at: u64,
    updated_at: u64,
    run_at: u64,
    lease: Option<LeaseV1Ref<'a>>,
    idempotency_key: Option<&'a str>,
    result: Option<Bytes<'a>>,
    last_error: Option<&'a str>,
    finished_at: Option<u64>,
}

#[derive(Serialize)]
struct LeaseV1Ref<'a> {
    id: u64,
    expires_at: u64,
    lease_ms: u64,
    leased_at: u64,
    worker: Option<&'a str>,
}

impl<'a> From<&'a Job> for JobV1Ref<'a> {
    fn from(job: &'a Job) -> Self {
        JobV1Ref {
            id: job.id.as_u64(),
            queue: &job.queue,
            state: job.state,
            payload: Bytes(&job.payload),
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            backoff_ms: job.backoff_ms,
            created_at: job.created_at,
            updated_at: job.updated_at,
            run_at: job.run_at,
            lease: job.lease.as_ref().map(|lease| LeaseV1Ref {
                id: lease.id.as_u64(),
                expires_at: lease.expires_at,
                lease_ms: lease.lease_ms,
                leased_at: lease.leased_at,
                worker: lease.worker.as_deref(),
            }),
            idempotency_key: job.idempotency_key.as_deref(),
            result: job.result.as_deref().map(Bytes),
            last_error: job.last_error.as_deref(),
            finished_at: job.finished_at,
        }
    }
}

impl From<JobV1> for Job {
    fn from(v: JobV1) -> Self {
        Job {
            id: JobId::from_u64(v.id),
            queue: v.queue,
            state: v.state,
            payload: v.payload.0,
            priority: v.priority,
            attempts: v.attempts,
            max_attempts: v.max_attempts,
            backoff_ms: v.backoff_ms,
            created_at: v.created_at,
            updated_at: v.updated_at,
            run_at: v.run_at,
            lease: v.lease.map(|lease| Lease {
                id: LeaseId::from_u64(lease.id),
                expires_at: lease.expires_at,
                lease_ms: lease.lease_ms,
                leased_at: lease.leased_at,
                worker: lease.worker,
            }),
            idempotency_key: v.idempotency_key,
            result: v.result.map(|b| b.0),
            last_error: v.last_error,
            finished_at: v.finished_at,
        }
    }
}

/// A job record of the current version at `revision`.
pub(crate) fn encode_job(job: &Job, revision: Revision) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + job.payload.len());
    out.push(JOB_VERSION);
    out.extend_from_slice(&revision.0.to_be_bytes());
    encode_into(&mut out, &JobV1Ref::from(job), "a job record")?;
    Ok(out)
}

/// The revision of a stored job record, read without decoding its body.
pub(crate) fn job_revision(bytes: &[u8]) -> Result<Revision> {
    match bytes.first() {
        Some(1) => Ok(Revision(0)),
        Some(2) => bytes
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| Revision(u64::from_be_bytes(b)))
            .ok_or_else(|| Error::Corrupt("job record shorter than its header".into())),
        Some(v) => Err(unknown_version("job record", *v, JOB_VERSION)),
        None => Err(Error::Corrupt("empty job record".into())),
    }
}

/// A stored job record of any version, with its revision.
pub(crate) fn decode_job(bytes: &[u8]) -> Result<(Job, Revision)> {
    let revision = job_revision(bytes)?;
    let body = match bytes[0] {
        1 => &bytes[1..],
        _ => &bytes[9..],
    };
    let job: JobV1 = decode_all(body, "job record")?;
    Ok((Job::from(job), revision))
}

fn unknown_version(what: &str, version: u8, newest: u8) -> Error {
    Error::Corrupt(format!(
        "{what} version {version}; this build reads versions 1 to {newest} \
         (was the data directory written by a newer release?)"
    ))
}

// ---- settings ----------------------------------------------------------------

/// Queue settings, version 1 (frozen).
#[derive(Serialize, Deserialize)]
struct SettingsV1 {
    paused: bool,
}

pub(crate) fn encode_settings(settings: &QueueSettings) -> Result<Vec<u8>> {
    let mut out = vec![SETTINGS_VERSION];
    encode_into(
        &mut out,
        &SettingsV1 {
            paused: settings.paused,
        },
        "queue settings",
    )?;
    Ok(out)
}

pub(crate) fn decode_settings(bytes: &[u8]) -> Result<QueueSettings> {
    match bytes.split_first() {
        Some((1, body)) => {
            let v: SettingsV1 = decode_all(body, "queue settings")?;
            Ok(QueueSettings { paused: v.paused })
        }
        Some((v, _)) => Err(unknown_version("settings record", *v, SETTINGS_VERSION)),
        None => Err(Error::Corrupt("empty settings record".into())),
    }
}

// ---- events ------------------------------------------------------------------

/// An event of the log, version 1 (frozen); its id is the key.
#[derive(Deserialize)]
struct EventV1 {
    job: u64,
    queue: String,
    state: JobState,
    attempts: u32,
    at: u64,
    transition: u8,
}

#[derive(Serialize)]
struct EventV1Ref<'a> {
    job: u64,
    queue: &'a str,
    state: JobState,
    attempts: u32,
    at: u64,
    transition: u8,
}

/// [`Transition`]s by their stored code (the position in this list).
const TRANSITIONS: [Transition; 11] = [
    Transition::Enqueue,
    Transition::Promote,
    Transition::Lease,
    Transition::Heartbeat,
    Transition::Complete,
    Transition::Fail,
    Transition::Expire,
    Transition::Release,
    Transition::Cancel,
    Transition::Requeue,
    Transition::Remove,
];

fn transition_code(transition: Transition) -> u8 {
    match transition {
        Transition::Enqueue => 0,
        Transition::Promote => 1,
        Transition::Lease => 2,
        Transition::Heartbeat => 3,
        Transition::Complete => 4,
        Transition::Fail => 5,
        Transition::Expire => 6,
        Transition::Release => 7,
        Transition::Cancel => 8,
        Transition::Requeue => 9,
        Transition::Remove => 10,
    }
}

/// The tag of an event chunk in the `events` tree.
pub(crate) const CHUNK: u8 = b'c';
/// The tag of a slot record.
const SLOT: u8 = b's';

/// Appends the encoding of one event (its id is implied by its place) to
/// `out`. Events are encoded once, when their change is prepared, and the
/// bytes travel from there to the slot, the chunk and the in-memory tail.
pub(crate) fn encode_item(event: &EventDraft, out: &mut Vec<u8>) -> Result<()> {
    encode_into(
        out,
        &EventV1Ref {
            job: event.job.as_u64(),
            queue: &event.queue,
            state: event.state,
            attempts: event.attempts,
            at: event.at,
            transition: transition_code(event.transition),
        },
        "an event",
    )
}

/// Decodes consecutive encoded events, the first with id `first`.
pub(crate) fn decode_items(first: u64, mut bytes: &[u8]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut event_id = first;
    while !bytes.is_empty() {
        let (v, used): (EventV1, usize) =
            bincode::serde::decode_from_slice(bytes, config()).map_err(|e| corrupt("event", e))?;
        bytes = &bytes[used..];
        let transition = TRANSITIONS
            .get(usize::from(v.transition))
            .copied()
            .ok_or_else(|| {
                Error::Corrupt(format!("event {event_id}: transition {}", v.transition))
            })?;
        events.push(Event {
            event_id,
            id: JobId::from_u64(v.job),
            queue: v.queue,
            state: v.state,
            attempts: v.attempts,
            at: v.at,
            transition,
        });
        event_id += 1;
    }
    Ok(events)
}

/// A chunk record holding the encoded events `items`.
pub(crate) fn chunk_value(items: &[&[u8]]) -> Vec<u8> {
    let len = items.iter().map(|i| i.len()).sum::<usize>();
    let mut out = Vec::with_capacity(2 + len);
    out.push(CHUNK);
    out.push(EVENT_VERSION);
    for part in items {
        out.extend_from_slice(part);
    }
    out
}

/// A chunk record of `events` (consecutive ids).
pub(crate) fn encode_chunk(events: &[Event]) -> Result<Vec<u8>> {
    let mut items = Vec::with_capacity(48 * events.len());
    for event in events {
        encode_item(&EventDraft::from(event), &mut items)?;
    }
    Ok(chunk_value(&[&items]))
}

/// A chunk of the `events` tree stored under `first_id`.
pub(crate) fn decode_chunk(first_id: u64, bytes: &[u8]) -> Result<Vec<Event>> {
    let events = match bytes {
        [CHUNK, 1, items @ ..] => decode_items(first_id, items)?,
        [CHUNK, v, ..] => return Err(unknown_version("event chunk", *v, EVENT_VERSION)),
        [tag, ..] => {
            return Err(Error::Corrupt(format!(
                "event log entry {first_id} has tag {tag}"
            )));
        }
        [] => {
            return Err(Error::Corrupt(format!(
                "event log entry {first_id} is empty"
            )));
        }
    };
    if events.is_empty() {
        return Err(Error::Corrupt(format!(
            "event chunk {first_id} has no event"
        )));
    }
    Ok(events)
}

/// A slot of the write-ahead log: a batch's sequence number, its events
/// (none if they went into a chunk with it) and its write-ahead record.
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) events: Vec<Event>,
    pub(crate) record: Vec<u8>,
}

/// The slot of batch `seq`: its encoded events (`items`, the first with id
/// `first`; empty for none) and its write-ahead record.
pub(crate) fn encode_slot(seq: u64, first: u64, items: &[u8], record: &[u8]) -> Result<Vec<u8>> {
    let events_len = if items.is_empty() { 0 } else { 8 + items.len() };
    let len = u32::try_from(events_len)
        .map_err(|_| Error::Internal("events over 4 GiB in one batch".into()))?;
    let mut out = Vec::with_capacity(13 + events_len + record.len());
    out.push(SLOT);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    if !items.is_empty() {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(items);
    }
    out.extend_from_slice(record);
    Ok(out)
}

pub(crate) fn decode_slot(bytes: &[u8]) -> Result<Slot> {
    let short = || Error::Corrupt("short write-ahead slot".into());
    match bytes.split_first() {
        Some((&SLOT, rest)) => {
            let seq = rest
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(short)?;
            let len = rest
                .get(8..12)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(short)?;
            let end = 12usize.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            let events = rest.get(12..end).ok_or_else(short)?;
            let events = match events.split_at_checked(8) {
                _ if events.is_empty() => Vec::new(),
                Some((first, items)) => {
                    let first = <[u8; 8]>::try_from(first).map_err(|_| short())?;
                    decode_items(u64::from_be_bytes(first), items)?
                }
                None => return Err(short()),
            };
            Ok(Slot {
                seq,
                events,
                record: rest[end..].to_vec(),
            })
        }
        Some((tag, _)) => Err(Error::Corrupt(format!("write-ahead slot with tag {tag}"))),
        None => Err(Error::Corrupt("empty write-ahead slot".into())),
    }
}

// ---- write-ahead records ---------------------------------------------------------

/// One write of a write-ahead record: tree, key, new value (`None`: remove).
pub(crate) type WalWrite = (u8, Vec<u8>, Option<Vec<u8>>);
type WalWriteRef<'a> = (u8, &'a [u8], Option<&'a [u8]>);

/// A batch's writes as a write-ahead record of the current version.
pub(crate) fn encode_writes<'a>(
    writes: impl Iterator<Item = (u8, &'a [u8], Option<&'a [u8]>)>,
) -> Result<Vec<u8>> {
    let list: Vec<WalWriteRef<'a>> = writes.collect();
    let mut out = vec![WAL_VERSION];
    encode_into(&mut out, &list, "a write-ahead record")?;
    Ok(out)
}

/// A write-ahead record of any version; `trees` is how many trees the
/// version knows (a tree id past them is damage).
pub(crate) fn decode_writes(bytes: &[u8]) -> Result<Vec<WalWrite>> {
    let (trees, body) = match bytes.split_first() {
        Some((1, body)) => (4, body),
        Some((2, body)) => (6, body),
        Some((v, _)) => return Err(unknown_version("write-ahead record", *v, WAL_VERSION)),
        None => return Err(Error::Corrupt("empty write-ahead record".into())),
    };
    let list: Vec<WalWrite> = decode_all(body, "write-ahead record")?;
    if let Some((tree, _, _)) = list.iter().find(|(tree, _, _)| *tree >= trees) {
        return Err(Error::Corrupt(format!(
            "write-ahead record names tree {tree}"
        )));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{leased_job, ready_job};

    #[test]
    fn jobs_round_trip_with_their_revision() {
        let mut job = leased_job(3);
        job.result = Some(vec![1, 2, 3]);
        job.idempotency_key = Some("k".into());
        let bytes = encode_job(&job, Revision(41)).unwrap();
        assert_eq!(bytes[0], JOB_VERSION);
        assert_eq!(job_revision(&bytes).unwrap(), Revision(41));
        assert_eq!(decode_job(&bytes).unwrap(), (job, Revision(41)));
    }

    #[test]
    fn version_one_bodies_are_what_version_two_carries() {
        // A version 1 record is the version byte and the same body: strip
        // the revision and it must decode as version 1.
        let job = ready_job();
        let v2 = encode_job(&job, Revision(5)).unwrap();
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[9..]);
        assert_eq!(decode_job(&v1).unwrap(), (job, Revision(0)));
    }

    #[test]
    fn damaged_or_unknown_records_are_refused() {
        let bytes = encode_job(&leased_job(3), Revision(1)).unwrap();
        let mut trailing = bytes.clone();
        trailing.push(0);
        for bad in [
            trailing,
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..5].to_vec(),
            vec![],
            {
                let mut v = bytes.clone();
                v[0] = 9;
                v
            },
        ] {
            assert!(
                matches!(decode_job(&bad), Err(Error::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn settings_events_and_writes_round_trip() {
        let paused = QueueSettings { paused: true };
        assert_eq!(
            decode_settings(&encode_settings(&paused).unwrap()).unwrap(),
            paused
        );
        assert!(decode_settings(&[2, 0]).is_err());
        let event = |event_id, transition| Event {
            event_id,
            id: JobId::from_u64(5),
            queue: "q".into(),
            state: JobState::Dead,
            attempts: 3,
            at: 9,
            transition,
        };
        let chunk = vec![event(77, Transition::Expire), event(78, Transition::Fail)];
        assert_eq!(
            decode_chunk(77, &encode_chunk(&chunk).unwrap()).unwrap(),
            chunk
        );
        assert!(decode_chunk(1, b"x").is_err());
        assert!(decode_chunk(1, &[CHUNK, 1, 0]).is_err(), "an empty chunk");
        let mut items = Vec::new();
        for e in &chunk {
            encode_item(&EventDraft::from(e), &mut items).unwrap();
        }
        let slot = decode_slot(&encode_slot(9, 77, &items, b"record").unwrap()).unwrap();
        assert_eq!(
            (slot.seq, slot.events, slot.record),
            (9, chunk.clone(), b"record".to_vec())
        );
        let slot = decode_slot(&encode_slot(10, 0, &[], b"r").unwrap()).unwrap();
        assert!(slot.events.is_empty() && slot.record == b"r" && slot.seq == 10);
        assert!(decode_slot(&[b's', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 1]).is_err());
        assert!(decode_slot(b"").is_err());
        for t in TRANSITIONS {
            assert_eq!(TRANSITIONS[usize::from(transition_code(t))], t);
        }
        let writes = [(4u8, &b"k"[..], Some(&b"v"[..])), (0, &b"x"[..], None)];
        let record = encode_writes(writes.iter().copied()).unwrap();
        let back = decode_writes(&record).unwrap();
        assert_eq!(
            back,
            vec![
                (4, b"k".to_vec(), Some(b"v".to_vec())),
                (0, b"x".to_vec(), None)
            ]
        );
        // Version 1 knew four trees.
        let mut v1 = record.clone();
        v1[0] = 1;
        assert!(decode_writes(&v1).is_err());
        let six = encode_writes([(6u8, &b"k"[..], None)].into_iter()).unwrap();
        assert!(decode_writes(&six).is_err());
    }
}

/// The bytes the first release (queue-core 0.1.0, format 1) wrote, from
/// `tests/fixtures/v1/trees.hex`: every one of them still decodes, and the
/// derived entries this build computes from its records are the ones it
/// stored.
#[cfg(test)]
mod v1_fixtures {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backend::sled::keys::{self, Family};

    const TREES: &str = include_str!("../../../tests/fixtures/v1/trees.hex");

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// tree name → key → value.
    fn trees() -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut trees: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        for line in TREES.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.split(' ');
            let (tree, key, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            trees
                .entry(tree.to_owned())
                .or_default()
                .insert(unhex(key), unhex(value.unwrap_or("")));
        }
        trees
    }

    #[test]
    fn every_job_record_decodes_at_revision_zero() {
        let trees = trees();
        let jobs: Vec<Job> = trees["jobs"]
            .values()
            .map(|bytes| {
                assert_eq!(bytes[0], 1);
                let (job, revision) = decode_job(bytes).unwrap();
                assert_eq!(revision, Revision(0));
                job
            })
            .collect();
        assert_eq!(jobs.len(), 9);
        let by_id = |id: u64| jobs.iter().find(|j| j.id.as_u64() == id).unwrap();
        let ada = by_id(0);
        assert_eq!(ada.payload, br#"{"to":"ada@example.com"}"#);
        assert_eq!(ada.idempotency_key.as_deref(), Some("welcome-ada"));
        assert_eq!(
            (ada.state, ada.created_at),
            (JobState::Ready, 1_795_564_800_000)
        );
        assert_eq!(by_id(1).priority, 10);
        assert_eq!(by_id(2).state, JobState::Scheduled);
        let done = by_id(3);
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.result.as_deref(), Some(&br#"{"sent":true}"#[..]));
        assert_eq!(done.finished_at, Some(1_795_564_800_250));
        let dead = by_id(4);
        assert_eq!(dead.state, JobState::Dead);
        assert_eq!(dead.last_error.as_deref(), Some("mailbox full"));
        let leased = by_id(5);
        let lease = leased.lease.as_ref().unwrap();
        assert_eq!(lease.worker.as_deref(), Some("fixture-worker"));
        assert_eq!((lease.lease_ms, leased.attempts), (30_000, 1));
        let retry = by_id(6);
        assert_eq!(retry.state, JobState::Scheduled);
        assert_eq!(retry.backoff_ms, 60_000);
        assert_eq!(by_id(11).state, JobState::Cancelled);
        assert_eq!(by_id(12).payload, vec![0xff, 0x00, 0x01]);
        // Version 2 writes the same body behind the revision.
        for job in &jobs {
            let v1 = &trees["jobs"][&keys::job_key(job.id).to_vec()];
            let v2 = encode_job(job, Revision(3)).unwrap();
            assert_eq!(&v2[9..], &v1[1..], "job {}", job.id);
        }
    }

    #[test]
    fn stored_index_timers_and_counts_are_what_the_records_imply() {
        let trees = trees();
        let mut index = BTreeMap::new();
        let mut timers = BTreeMap::new();
        let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for bytes in trees["jobs"].values() {
            let (job, _) = decode_job(bytes).unwrap();
            for entry in keys::entries(&job) {
                match entry.family {
                    Family::Index => index.insert(entry.key, entry.value),
                    Family::Timers => timers.insert(entry.key, entry.value),
                };
            }
            *counts
                .entry(keys::count_key(&job.queue, job.state))
                .or_default() += 1;
        }
        assert_eq!(index, trees["index"]);
        assert_eq!(timers, trees["timers"]);
        let stored_counts: BTreeMap<Vec<u8>, u64> = trees["meta"]
            .iter()
            .filter(|(k, _)| k[0] == keys::COUNT)
            .map(|(k, v)| (k.clone(), keys::decode_u64(v).unwrap()))
            .collect();
        assert_eq!(stored_counts, counts);
        // The paused flag of format 1, and its format key.
        assert!(trees["meta"].contains_key(b"preports".as_slice()));
        assert_eq!(trees["__sled__default"][&b"format".to_vec()], vec![1]);
    }

    #[test]
    fn the_write_ahead_record_decodes() {
        let trees = trees();
        let (_, record) = trees["wal"].iter().next().unwrap();
        assert_eq!(record[0], 1);
        let writes = decode_writes(record).unwrap();
        let (_, _, job) = writes
            .iter()
            .find(|(tree, _, _)| *tree == keys::JOBS)
            .unwrap();
        let (job, _) = decode_job(job.as_deref().unwrap()).unwrap();
        assert_eq!(job.payload, br#"{"replayed":"from the wal"}"#);
        assert_eq!(job.idempotency_key.as_deref(), Some("wal-key"));
        assert!(writes.iter().all(|(tree, _, _)| *tree < 4));
    }
}
