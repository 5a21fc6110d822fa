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
//! | job | 3 | `3`, revision, last event id (u64 big-endian, 0: none), bincode of [`JobV1`] then [`JobExtV3`] |
//! | job | 4 | `4`, revision, last event id, bincode of [`JobV1`], [`JobExtV3`] then [`JobExtV4`] |
//! | settings | 1 | `1`, bincode of [`SettingsV1`] |
//! | settings | 2 | `2`, bincode of [`SettingsV2`] (limits and the token bucket) |
//! | schedule | 1 | `1`, revision (u64 big-endian), bincode of [`ScheduleV1`] |
//! | history minute | 1 | `1`, bincode of [`RollupV1`] (counts, depths, two sparse histograms) |
//! | event chunk | 1 | `c`, `1`, [`EventV1`] after [`EventV1`]: consecutive events, the first one's id is the key |
//! | event chunk | 2 | `c`, `2`, ([`EventV1`], [`EventExtV2`]) after another |
//! | write-ahead | 1 | `1`, bincode of `[(tree, key, value?)]`, trees 0..=3 |
//! | write-ahead | 2 | `2`, the same, trees 0..=5 (5: the `wal` tree, for the checkpoint) |
//! | slot | 1 | `s`, batch sequence (u64), events length (u32), the batch's events (first id and version 1 items, or nothing), its write-ahead record |
//! | slot | 2 | `t`, the same with version 2 items |
//! | journal frame | – | body length (u32 big-endian), CRC-32 of the body (u32 big-endian), a slot (version 2) as body; see [`journal`](super::journal) |
//!
//! Every batch's record, with its events, is a slot: a frame of the
//! journal today (both durabilities). Before, `Durability::Periodic`
//! batches wrote slots as keys of the `wal` tree used in turn (1,024 of
//! them; and records too large for a slot in pieces of fresh keys); a
//! reopen still replays those. A batch's events stay in its slot until a
//! later batch writes the events gathered so far as one chunk of the
//! `events` tree, at the latest with a checkpoint: the sequence number up
//! to which no slot needs replaying. A reopen replays, in order, every
//! slot after the checkpoint (records already applied rewrite the values
//! they wrote, which later records then rewrite in turn: the result is
//! the state after the last), and gathers their events into a chunk.
//!
//! Job record version 2 adds the revision in front of the body, where a
//! commit's compare-and-swap reads it without decoding the body; the body
//! is still version 1's. A version 1 record reads as revision 0 and is
//! written as the current version by its next change. Version 3 adds, in
//! the header, the id of the job's latest event (the batch leader writes it
//! when it numbers the events, without encoding the record again), and
//! after the body the fields of [`JobExtV3`]. Version 4 appends the fields
//! of [`JobExtV4`] (group, timeout, expiry, start, schedule, request digest).
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
use crate::rules::history::{Depths, Histogram, Rollup, Tally};
use crate::settings::{Bucket, Limits, QueueSettings, RateLimit};
use crate::{
    Callback, CallbackStatus, Error, Event, Job, JobId, Lease, LeaseId, Result, Schedule,
    Transition,
};
use queue_proto::CatchUp;

/// The job record version this build writes.
pub(crate) const JOB_VERSION: u8 = 4;
/// Where a version 3 record keeps the id of its job's latest event.
pub(crate) const LAST_EVENT_AT: std::ops::Range<usize> = 9..17;
/// The write-ahead record version this build writes.
pub(crate) const WAL_VERSION: u8 = 2;
const SETTINGS_VERSION: u8 = 2;
const SCHEDULE_VERSION: u8 = 1;
const EVENT_VERSION: u8 = 2;
const ROLLUP_VERSION: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("undecodable {what}: {e}"))
}

/// Decodes a `T` from the start of `bytes`, with the bytes it used.
///
/// bincode allocates a string or a byte vector as long as its length prefix
/// says before it reads it, so a damaged prefix could ask for exabytes and
/// abort the process. Its limit bounds what one decoding may claim (the
/// in-memory size of each value read: at most 16 times the bytes that
/// encode it), so the limit here is the first power of 16 above 16 times
/// the input: never reached by a record that is whole, and a damaged one
/// fails cleanly with an allocation at most a few hundred times its size.
fn decode_prefix<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    fn limited<T: serde::de::DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
    }
    match bytes.len().saturating_mul(16) {
        0..=0x1000 => limited::<T, 0x1000>(bytes),
        0x1001..=0x1_0000 => limited::<T, 0x1_0000>(bytes),
        0x1_0001..=0x10_0000 => limited::<T, 0x10_0000>(bytes),
        0x10_0001..=0x100_0000 => limited::<T, 0x100_0000>(bytes),
        0x100_0001..=0x1000_0000 => limited::<T, 0x1000_0000>(bytes),
        _ => limited::<T, { usize::MAX }>(bytes),
    }
}

/// Decodes all of `body` as a `T`; trailing bytes are damage.
fn decode_all<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let (value, used): (T, usize) = decode_prefix(body).map_err(|e| corrupt(what, e))?;
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
            correlation_id: None,
            headers: std::collections::BTreeMap::new(),
            progress: None,
            callback_url: None,
            callback: None,
            group: None,
            timeout_ms: None,
            expires_at: None,
            started_at: None,
            schedule: None,
            request_digest: None,
            last_event_id: None,
        }
    }
}

/// What version 3 adds after the version 1 body (frozen).
#[derive(Deserialize)]
struct JobExtV3 {
    correlation_id: Option<String>,
    headers: std::collections::BTreeMap<String, String>,
    progress: Option<ByteBuf>,
    callback_url: Option<String>,
    callback: Option<CallbackV1>,
}

/// A callback delivery, version 1 (frozen); `status` is 0 pending, 1
/// delivered, 2 failed, 3 pending with an attempt under way.
#[derive(Serialize, Deserialize)]
struct CallbackV1 {
    status: u8,
    delivery: u32,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<String>,
    next_attempt_at: Option<u64>,
    delivered_at: Option<u64>,
}

/// What version 4 adds after [`JobExtV3`] (frozen).
#[derive(Deserialize)]
struct JobExtV4 {
    group: Option<String>,
    timeout_ms: Option<u64>,
    expires_at: Option<u64>,
    started_at: Option<u64>,
    schedule: Option<String>,
    request_digest: Option<[u8; 16]>,
}

#[derive(Serialize)]
struct JobExtV4Ref<'a> {
    group: Option<&'a str>,
    timeout_ms: Option<u64>,
    expires_at: Option<u64>,
    started_at: Option<u64>,
    schedule: Option<&'a str>,
    request_digest: Option<[u8; 16]>,
}

#[derive(Serialize)]
struct JobExtV3Ref<'a> {
    correlation_id: Option<&'a str>,
    headers: &'a std::collections::BTreeMap<String, String>,
    progress: Option<Bytes<'a>>,
    callback_url: Option<&'a str>,
    callback: Option<CallbackV1>,
}

fn callback_code(callback: &Callback) -> u8 {
    match callback.status {
        CallbackStatus::Pending if callback.in_flight => 3,
        CallbackStatus::Pending => 0,
        CallbackStatus::Delivered => 1,
        CallbackStatus::Failed => 2,
    }
}

impl From<&Callback> for CallbackV1 {
    fn from(c: &Callback) -> Self {
        CallbackV1 {
            status: callback_code(c),
            delivery: c.delivery,
            attempts: c.attempts,
            last_status: c.last_status,
            last_error: c.last_error.clone(),
            next_attempt_at: c.next_attempt_at,
            delivered_at: c.delivered_at,
        }
    }
}

impl TryFrom<CallbackV1> for Callback {
    type Error = Error;

    fn try_from(v: CallbackV1) -> Result<Self> {
        let (status, in_flight) = match v.status {
            0 => (CallbackStatus::Pending, false),
            1 => (CallbackStatus::Delivered, false),
            2 => (CallbackStatus::Failed, false),
            3 => (CallbackStatus::Pending, true),
            other => return Err(Error::Corrupt(format!("callback status {other}"))),
        };
        Ok(Callback {
            status,
            delivery: v.delivery,
            attempts: v.attempts,
            last_status: v.last_status,
            last_error: v.last_error,
            next_attempt_at: v.next_attempt_at,
            delivered_at: v.delivered_at,
            in_flight,
        })
    }
}

/// A job record of the current version at `revision`.
pub(crate) fn encode_job(job: &Job, revision: Revision) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(job_size_hint(job));
    out.push(JOB_VERSION);
    out.extend_from_slice(&revision.0.to_be_bytes());
    out.extend_from_slice(&job.last_event_id.unwrap_or(0).to_be_bytes());
    let ext = JobExtV3Ref {
        correlation_id: job.correlation_id.as_deref(),
        headers: &job.headers,
        progress: job.progress.as_deref().map(Bytes),
        callback_url: job.callback_url.as_deref(),
        callback: job.callback.as_ref().map(CallbackV1::from),
    };
    let ext4 = JobExtV4Ref {
        group: job.group.as_deref(),
        timeout_ms: job.timeout_ms,
        expires_at: job.expires_at,
        started_at: job.started_at,
        schedule: job.schedule.as_deref(),
        request_digest: job.request_digest,
    };
    encode_into(&mut out, &(JobV1Ref::from(job), ext, ext4), "a job record")?;
    Ok(out)
}

/// At least the bytes of `job`'s record (fixed fields at their widest,
/// plus the variable ones), so that encoding it never grows its buffer.
fn job_size_hint(job: &Job) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let bytes = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    let headers: usize = job
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 18)
        .sum();
    let callback = job
        .callback
        .as_ref()
        .map_or(0, |c| 64 + c.last_error.as_ref().map_or(0, String::len));
    let lease = job
        .lease
        .as_ref()
        .map_or(0, |l| 64 + l.worker.as_ref().map_or(0, String::len));
    384 + job.payload.len()
        + lease
        + job.queue.len()
        + text(&job.idempotency_key)
        + bytes(&job.result)
        + text(&job.last_error)
        + text(&job.correlation_id)
        + headers
        + bytes(&job.progress)
        + text(&job.callback_url)
        + callback
        + text(&job.group)
        + text(&job.schedule)
}

/// The revision of a stored job record, read without decoding its body.
pub(crate) fn job_revision(bytes: &[u8]) -> Result<Revision> {
    match bytes.first() {
        Some(1) => Ok(Revision(0)),
        Some(2..=4) => bytes
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
    match bytes[0] {
        1 => Ok((
            Job::from(decode_all::<JobV1>(&bytes[1..], "job record")?),
            revision,
        )),
        2 => Ok((
            Job::from(decode_all::<JobV1>(&bytes[9..], "job record")?),
            revision,
        )),
        version => {
            let last_event = bytes
                .get(LAST_EVENT_AT)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("job record shorter than its header".into()))?;
            let (base, ext, ext4) = if version == 3 {
                let (base, ext): (JobV1, JobExtV3) = decode_all(&bytes[17..], "job record")?;
                (base, ext, None)
            } else {
                let (base, ext, ext4): (JobV1, JobExtV3, JobExtV4) =
                    decode_all(&bytes[17..], "job record")?;
                (base, ext, Some(ext4))
            };
            let mut job = Job::from(base);
            if let Some(ext4) = ext4 {
                job.group = ext4.group;
                job.timeout_ms = ext4.timeout_ms;
                job.expires_at = ext4.expires_at;
                job.started_at = ext4.started_at;
                job.schedule = ext4.schedule;
                job.request_digest = ext4.request_digest;
            }
            job.correlation_id = ext.correlation_id;
            job.headers = ext.headers;
            job.progress = ext.progress.map(|b| b.0);
            job.callback_url = ext.callback_url;
            job.callback = ext.callback.map(Callback::try_from).transpose()?;
            job.last_event_id = (last_event != 0).then_some(last_event);
            Ok((job, revision))
        }
    }
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

/// Queue settings, version 2 (frozen): version 1's flag, the limits and
/// the state of the rate limit's token bucket.
#[derive(Serialize, Deserialize)]
struct SettingsV2 {
    paused: bool,
    max_leased: Option<u32>,
    /// (jobs, per_ms).
    rate_limit: Option<(u32, u64)>,
    group_max_leased: Option<u32>,
    /// (units, refilled_at); see [`Bucket`].
    bucket: Option<(u64, u64)>,
}

pub(crate) fn encode_settings(settings: &QueueSettings) -> Result<Vec<u8>> {
    let mut out = vec![SETTINGS_VERSION];
    let limits = &settings.limits;
    encode_into(
        &mut out,
        &SettingsV2 {
            paused: settings.paused,
            max_leased: limits.max_leased,
            rate_limit: limits.rate_limit.map(|r| (r.jobs, r.per_ms)),
            group_max_leased: limits.group_max_leased,
            bucket: settings.bucket.map(|b| (b.units, b.refilled_at)),
        },
        "queue settings",
    )?;
    Ok(out)
}

pub(crate) fn decode_settings(bytes: &[u8]) -> Result<QueueSettings> {
    match bytes.split_first() {
        Some((1, body)) => {
            let v: SettingsV1 = decode_all(body, "queue settings")?;
            Ok(QueueSettings {
                paused: v.paused,
                ..QueueSettings::default()
            })
        }
        Some((2, body)) => {
            let v: SettingsV2 = decode_all(body, "queue settings")?;
            let rate_limit = v
                .rate_limit
                .map(|(jobs, per_ms)| RateLimit { jobs, per_ms });
            let bucket = v
                .bucket
                .map(|(units, refilled_at)| Bucket { units, refilled_at });
            if rate_limit.is_some() != bucket.is_some() {
                return Err(Error::Corrupt(
                    "queue settings with a rate limit and no bucket, or the reverse".into(),
                ));
            }
            Ok(QueueSettings {
                paused: v.paused,
                limits: Limits {
                    max_leased: v.max_leased,
                    rate_limit,
                    group_max_leased: v.group_max_leased,
                },
                bucket,
            })
        }
        Some((v, _)) => Err(unknown_version("settings record", *v, SETTINGS_VERSION)),
        None => Err(Error::Corrupt("empty settings record".into())),
    }
}

// ---- schedules ---------------------------------------------------------------

/// A schedule, version 1 (frozen). `catch_up`: 0 none, 1 latest, 2 all.
#[derive(Serialize, Deserialize)]
struct ScheduleV1 {
    name: String,
    queue: String,
    cron: Option<String>,
    every_ms: Option<u64>,
    timezone: String,
    job: String,
    catch_up: u8,
    paused: bool,
    next_run_at: Option<u64>,
    last_run_at: Option<u64>,
    last_job_id: Option<u64>,
    created_at: u64,
    updated_at: u64,
}

fn catch_up_byte(catch_up: CatchUp) -> u8 {
    match catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All => 2,
    }
}

pub(crate) fn encode_schedule(schedule: &Schedule, revision: Revision) -> Result<Vec<u8>> {
    let mut out = vec![SCHEDULE_VERSION];
    out.extend_from_slice(&revision.0.to_be_bytes());
    encode_into(
        &mut out,
        &ScheduleV1 {
            name: schedule.name.clone(),
            queue: schedule.queue.clone(),
            cron: schedule.cron.clone(),
            every_ms: schedule.every_ms,
            timezone: schedule.timezone.clone(),
            job: schedule.job.clone(),
            catch_up: catch_up_byte(schedule.catch_up),
            paused: schedule.paused,
            next_run_at: schedule.next_run_at,
            last_run_at: schedule.last_run_at,
            last_job_id: schedule.last_job_id.map(JobId::as_u64),
            created_at: schedule.created_at,
            updated_at: schedule.updated_at,
        },
        "schedule",
    )?;
    Ok(out)
}

/// The revision of a stored schedule record, read from its header.
pub(crate) fn schedule_revision(bytes: &[u8]) -> Result<Revision> {
    match bytes.first() {
        Some(1) => bytes
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| Revision(u64::from_be_bytes(b)))
            .ok_or_else(|| Error::Corrupt("schedule record shorter than its header".into())),
        Some(v) => Err(unknown_version("schedule record", *v, SCHEDULE_VERSION)),
        None => Err(Error::Corrupt("empty schedule record".into())),
    }
}

pub(crate) fn decode_schedule(bytes: &[u8]) -> Result<(Schedule, Revision)> {
    let revision = schedule_revision(bytes)?;
    let v: ScheduleV1 = decode_all(&bytes[9..], "schedule")?;
    let catch_up = match v.catch_up {
        0 => CatchUp::None,
        1 => CatchUp::Latest,
        2 => CatchUp::All,
        other => {
            return Err(Error::Corrupt(format!(
                "schedule {:?} has catch-up policy {other}",
                v.name
            )));
        }
    };
    Ok((
        Schedule {
            name: v.name,
            queue: v.queue,
            cron: v.cron,
            every_ms: v.every_ms,
            timezone: v.timezone,
            job: v.job,
            catch_up,
            paused: v.paused,
            next_run_at: v.next_run_at,
            last_run_at: v.last_run_at,
            last_job_id: v.last_job_id.map(JobId::from_u64),
            created_at: v.created_at,
            updated_at: v.updated_at,
        },
        revision,
    ))
}

// ---- history ---------------------------------------------------------------

/// One queue's history for one minute, version 1 (frozen). The key names
/// the queue and the minute.
#[derive(Serialize, Deserialize)]
struct RollupV1 {
    enqueued: u64,
    completed: u64,
    failed: u64,
    dead: u64,
    expired: u64,
    ready: u64,
    scheduled: u64,
    leased: u64,
    wait: HistogramV1,
    run: HistogramV1,
}

/// A histogram of [`RollupV1`] (frozen): the non-empty buckets, by
/// increasing index, with their counts; the exact minimum and maximum
/// (zeros when empty). Bucket indices are those of
/// [`rules::history`](crate::rules::history), which must never change.
#[derive(Serialize, Deserialize)]
struct HistogramV1 {
    buckets: Vec<(u16, u64)>,
    min: u64,
    max: u64,
}

impl HistogramV1 {
    #[cfg(test)]
    fn of(h: &Histogram) -> HistogramV1 {
        HistogramV1 {
            buckets: h.buckets.iter().map(|(i, c)| (*i, *c)).collect(),
            min: h.min,
            max: h.max,
        }
    }

    fn decode(self) -> Result<Histogram> {
        let increasing = self.buckets.windows(2).all(|w| w[0].0 < w[1].0);
        let h = Histogram {
            buckets: self.buckets.into_iter().collect(),
            min: self.min,
            max: self.max,
        };
        if !increasing || !h.is_valid() {
            return Err(Error::Corrupt("history histogram is damaged".into()));
        }
        Ok(h)
    }
}

/// A history minute, version 1: written by hand, byte for byte what bincode
/// writes for [`RollupV1`] (every integer a varint, each histogram its
/// bucket count, its (index, count) pairs, its minimum and maximum). A
/// batch writes one per queue it changed, and serde's generic path made
/// that a tenth of a batch's instructions.
pub(crate) fn encode_rollup(rollup: &Rollup) -> Result<Vec<u8>> {
    let buckets = rollup.wait.buckets.len() + rollup.run.buckets.len();
    let mut out = Vec::with_capacity(1 + 8 * 9 + 2 * 18 + 12 * buckets);
    out.push(ROLLUP_VERSION);
    let t = &rollup.tally;
    let d = &rollup.depths;
    for n in [
        t.enqueued,
        t.completed,
        t.failed,
        t.dead,
        t.expired,
        d.ready,
        d.scheduled,
        d.leased,
    ] {
        put_varint(&mut out, n);
    }
    for h in [&rollup.wait, &rollup.run] {
        put_varint(&mut out, h.buckets.len() as u64);
        for (index, count) in &h.buckets {
            put_varint(&mut out, u64::from(*index));
            put_varint(&mut out, *count);
        }
        put_varint(&mut out, h.min);
        put_varint(&mut out, h.max);
    }
    Ok(out)
}

/// [`encode_rollup`] through serde, as it was written before (the tests
/// check that both write the same bytes).
#[cfg(test)]
fn encode_rollup_serde(rollup: &Rollup) -> Result<Vec<u8>> {
    let mut out = vec![ROLLUP_VERSION];
    encode_into(
        &mut out,
        &RollupV1 {
            enqueued: rollup.tally.enqueued,
            completed: rollup.tally.completed,
            failed: rollup.tally.failed,
            dead: rollup.tally.dead,
            expired: rollup.tally.expired,
            ready: rollup.depths.ready,
            scheduled: rollup.depths.scheduled,
            leased: rollup.depths.leased,
            wait: HistogramV1::of(&rollup.wait),
            run: HistogramV1::of(&rollup.run),
        },
        "history minute",
    )?;
    Ok(out)
}

pub(crate) fn decode_rollup(bytes: &[u8]) -> Result<Rollup> {
    match bytes.split_first() {
        Some((1, body)) => {
            let v: RollupV1 = decode_all(body, "history minute")?;
            Ok(Rollup {
                tally: Tally {
                    enqueued: v.enqueued,
                    completed: v.completed,
                    failed: v.failed,
                    dead: v.dead,
                    expired: v.expired,
                },
                depths: Depths {
                    ready: v.ready,
                    scheduled: v.scheduled,
                    leased: v.leased,
                },
                wait: v.wait.decode()?,
                run: v.run.decode()?,
            })
        }
        Some((v, _)) => Err(unknown_version("history minute", *v, ROLLUP_VERSION)),
        None => Err(Error::Corrupt("empty history minute".into())),
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

/// What version 2 adds to an event (frozen).
#[derive(Deserialize)]
struct EventExtV2 {
    correlation_id: Option<String>,
    result: Option<ByteBuf>,
    last_error: Option<String>,
    progress: Option<ByteBuf>,
}

#[derive(Serialize)]
struct EventExtV2Ref<'a> {
    correlation_id: Option<&'a str>,
    result: Option<Bytes<'a>>,
    last_error: Option<&'a str>,
    progress: Option<Bytes<'a>>,
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
const TRANSITIONS: [Transition; 14] = [
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
    Transition::Progress,
    Transition::Callback,
    Transition::Ttl,
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
        Transition::Progress => 11,
        Transition::Callback => 12,
        Transition::Ttl => 13,
    }
}

/// The tag of an event chunk in the `events` tree.
pub(crate) const CHUNK: u8 = b'c';
/// The tag of a slot record.
const SLOT_V1: u8 = b's';
/// The tag of a slot record whose events are version 2 items.
const SLOT: u8 = b't';

/// At least the bytes [`encode_item`] appends for `event` (fixed fields at
/// their widest, plus the variable ones), to size its buffer beforehand.
pub(crate) fn item_size_hint(event: &EventDraft) -> usize {
    64 + event.queue.len()
        + event.correlation_id.as_ref().map_or(0, String::len)
        + event.result.as_ref().map_or(0, Vec::len)
        + event.last_error.as_ref().map_or(0, String::len)
        + event.progress.as_ref().map_or(0, Vec::len)
}

/// Appends the encoding of one event (its id is implied by its place) to
/// `out`. Events are encoded once, when their change is prepared, and the
/// bytes travel from there to the slot, the chunk and the in-memory tail.
pub(crate) fn encode_item(event: &EventDraft, out: &mut Vec<u8>) -> Result<()> {
    let base = EventV1Ref {
        job: event.job.as_u64(),
        queue: &event.queue,
        state: event.state,
        attempts: event.attempts,
        at: event.at,
        transition: transition_code(event.transition),
    };
    let ext = EventExtV2Ref {
        correlation_id: event.correlation_id.as_deref(),
        result: event.result.as_deref().map(Bytes),
        last_error: event.last_error.as_deref(),
        progress: event.progress.as_deref().map(Bytes),
    };
    encode_into(out, &(base, ext), "an event")
}

/// Decodes consecutive encoded events of the current item version, the
/// first with id `first`.
pub(crate) fn decode_items(first: u64, bytes: &[u8]) -> Result<Vec<Event>> {
    decode_items_of(EVENT_VERSION, first, bytes)
}

/// Decodes consecutive encoded events of item version `version`.
fn decode_items_of(version: u8, first: u64, mut bytes: &[u8]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut event_id = first;
    while !bytes.is_empty() {
        let (v, ext, used) = if version == 1 {
            let (v, used): (EventV1, usize) =
                decode_prefix(bytes).map_err(|e| corrupt("event", e))?;
            (v, None, used)
        } else {
            let ((v, ext), used): ((EventV1, EventExtV2), usize) =
                decode_prefix(bytes).map_err(|e| corrupt("event", e))?;
            (v, Some(ext), used)
        };
        bytes = &bytes[used..];
        let transition = TRANSITIONS
            .get(usize::from(v.transition))
            .copied()
            .ok_or_else(|| {
                Error::Corrupt(format!("event {event_id}: transition {}", v.transition))
            })?;
        let ext = ext.unwrap_or(EventExtV2 {
            correlation_id: None,
            result: None,
            last_error: None,
            progress: None,
        });
        events.push(Event {
            event_id,
            id: JobId::from_u64(v.job),
            queue: v.queue,
            state: v.state,
            attempts: v.attempts,
            at: v.at,
            transition,
            correlation_id: ext.correlation_id,
            result: ext.result.map(|b| b.0),
            last_error: ext.last_error,
            progress: ext.progress.map(|b| b.0),
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
        [CHUNK, version @ (1 | 2), items @ ..] => decode_items_of(*version, first_id, items)?,
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
        Some((&(SLOT | SLOT_V1), rest)) => {
            let tag = bytes[0];
            let version = if tag == SLOT { EVENT_VERSION } else { 1 };
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
                    decode_items_of(version, u64::from_be_bytes(first), items)?
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
/// A write as the serde encoding of version 2 saw it (the tests check the
/// hand-written encoder against it).
#[cfg(test)]
type WalWriteRef<'a> = (u8, &'a [u8], Option<&'a [u8]>);

/// A batch's writes as a write-ahead record of the current version.
///
/// Written by hand, byte for byte what bincode writes for the list of
/// `(tree, key, value)` tuples it wrote before (serde serializes a byte slice one element at a time,
/// which made this encoding a sixth of a batch's cost): a varint count,
/// then each write's tree byte, key (varint length, bytes) and value
/// (`0`, or `1` then varint length and bytes).
pub(crate) fn encode_writes<'a>(
    writes: impl ExactSizeIterator<Item = (u8, &'a [u8], Option<&'a [u8]>)> + Clone,
) -> Result<Vec<u8>> {
    let size: usize = writes
        .clone()
        .map(|(_, key, value)| 20 + key.len() + value.map_or(0, <[u8]>::len))
        .sum();
    let mut out = Vec::with_capacity(10 + size);
    out.push(WAL_VERSION);
    put_varint(&mut out, writes.len() as u64);
    for (tree, key, value) in writes {
        encode_write(&mut out, tree, key, value);
    }
    Ok(out)
}

/// Appends one write as [`encode_writes`] encodes it; `count` of them
/// then make a record with [`writes_record`].
pub(crate) fn encode_write(out: &mut Vec<u8>, tree: u8, key: &[u8], value: Option<&[u8]>) {
    out.push(tree);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }
}

/// The write-ahead record of `count` writes appended to `body` by
/// [`encode_write`].
pub(crate) fn writes_record(count: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + body.len());
    out.push(WAL_VERSION);
    put_varint(&mut out, count);
    out.extend_from_slice(body);
    out
}

/// bincode's varint (standard configuration): below 251 one byte, else a
/// marker (251, 252, 253) and the value as u16, u32 or u64 little-endian.
fn put_varint(out: &mut Vec<u8>, n: u64) {
    if n < 251 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(251);
        out.extend_from_slice(&n.to_le_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(252);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&n.to_le_bytes());
    }
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
#[path = "codec_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{full_job, leased_job, ready_job};

    #[test]
    fn history_minutes_are_the_bytes_serde_wrote() {
        let mut rollup = Rollup::default();
        assert_eq!(
            encode_rollup(&rollup).unwrap(),
            encode_rollup_serde(&rollup).unwrap()
        );
        rollup.tally.enqueued = 250;
        rollup.tally.completed = 251;
        rollup.tally.failed = 65_536;
        rollup.tally.dead = u64::from(u32::MAX) + 1;
        rollup.tally.expired = u64::MAX;
        rollup.depths.ready = 7;
        rollup.depths.scheduled = 70_000;
        rollup.depths.leased = 1;
        for (index, count) in [(0u16, 1u64), (250, 251), (251, 3), (4000, 1 << 40)] {
            rollup.wait.buckets.insert(index, count);
        }
        rollup.wait.min = 3;
        rollup.wait.max = 1 << 35;
        rollup.run.buckets.insert(u16::MAX, 9);
        rollup.run.min = 255;
        rollup.run.max = 300;
        let bytes = encode_rollup(&rollup).unwrap();
        assert_eq!(bytes, encode_rollup_serde(&rollup).unwrap());
    }

    #[test]
    fn write_ahead_records_are_the_bytes_bincode_writes_and_decode() {
        let sizes = [0usize, 1, 250, 251, 252, 65_535, 65_536, 70_000];
        let blobs: Vec<Vec<u8>> = sizes
            .iter()
            .map(|n| (0..*n).map(|i| (i % 251) as u8).collect())
            .collect();
        let mut list: Vec<WalWriteRef<'_>> = Vec::new();
        for (i, key) in blobs.iter().enumerate() {
            let value = blobs.get((i + 3) % blobs.len()).map(Vec::as_slice);
            list.push((u8::try_from(i % 6).unwrap(), key.as_slice(), value));
            list.push((5, key.as_slice(), None));
        }
        for count in [0, 1, 2, list.len()] {
            let part = &list[..count];
            let mut expected = vec![WAL_VERSION];
            encode_into(&mut expected, &part.to_vec(), "a write-ahead record").unwrap();
            let encoded = encode_writes(part.iter().copied()).unwrap();
            assert!(encoded == expected, "{count} writes");
            let decoded = decode_writes(&encoded).unwrap();
            let back: Vec<WalWriteRef<'_>> = decoded
                .iter()
                .map(|(t, k, v)| (*t, k.as_slice(), v.as_deref()))
                .collect();
            assert_eq!(back, part);
        }
        // More than 250 writes: the count takes the u16 form.
        let many: Vec<WalWriteRef<'_>> = (0..300).map(|_| (0u8, &b"k"[..], None)).collect();
        let mut expected = vec![WAL_VERSION];
        encode_into(&mut expected, &many, "a write-ahead record").unwrap();
        assert_eq!(encode_writes(many.iter().copied()).unwrap(), expected);
    }

    #[test]
    fn history_minutes_round_trip_and_version_1_bytes_stay_readable() {
        let mut rollup = Rollup {
            tally: Tally {
                enqueued: 5,
                completed: 3,
                failed: 2,
                dead: 1,
                expired: 1,
            },
            depths: Depths {
                ready: 4,
                scheduled: 2,
                leased: 300,
            },
            ..Rollup::default()
        };
        for ms in [3, 40, 40, 70_000] {
            rollup.wait.record(ms);
        }
        rollup.run.record(1500);
        let bytes = encode_rollup(&rollup).unwrap();
        assert_eq!(decode_rollup(&bytes).unwrap(), rollup);
        // Version 1 as written by this release (frozen: a change of the
        // layout must be a new version).
        assert_eq!(
            bytes,
            [
                // version, counts, depths (300: varint 251 + u16)
                1, 5, 3, 2, 1, 1, 4, 2, 251, 44, 1,
                // wait: 3 buckets (3: 1, 36: 2, 209: 1), min 3, max 70000
                3, 3, 1, 36, 2, 209, 1, 3, 252, 112, 17, 1, 0,
                // run: 1 bucket (119: 1), min and max 1500
                1, 119, 1, 251, 220, 5, 251, 220, 5
            ]
        );
        assert_eq!(
            decode_rollup(&encode_rollup(&Rollup::default()).unwrap()).unwrap(),
            Rollup::default()
        );
        // Damage is refused, not believed.
        let mut damaged = rollup.clone();
        damaged.wait.min = 9;
        assert!(matches!(
            decode_rollup(&encode_rollup(&damaged).unwrap()),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(decode_rollup(&[2, 0]), Err(Error::Corrupt(_))));
    }

    #[test]
    fn size_hints_cover_every_byte_at_the_widest() {
        // Every number at its widest varint, every text longer than the
        // hint's slack for the fixed fields (so that leaving one out of the
        // hint fails): the buffer sized by the hint never grows.
        let long = |n: usize| "x".repeat(n);
        let mut job = full_job();
        job.priority = i32::MIN;
        job.attempts = u32::MAX;
        job.max_attempts = u32::MAX;
        (job.backoff_ms, job.created_at, job.updated_at, job.run_at) =
            (u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        job.finished_at = Some(u64::MAX);
        job.payload = long(1000).into_bytes();
        job.queue = long(700);
        job.result = Some(long(800).into_bytes());
        job.last_error = Some(long(900));
        job.idempotency_key = Some(long(550));
        job.correlation_id = Some(long(560));
        for i in 0..20 {
            job.headers.insert(format!("h{i}-{}", long(530)), long(570));
        }
        job.progress = Some(long(580).into_bytes());
        job.callback_url = Some(long(590));
        if let Some(callback) = &mut job.callback {
            (callback.delivery, callback.attempts) = (u32::MAX, u32::MAX);
            callback.last_status = Some(u16::MAX);
            callback.last_error = Some(long(600));
            callback.next_attempt_at = Some(u64::MAX);
            callback.delivered_at = Some(u64::MAX);
        }
        if let Some(lease) = &mut job.lease {
            (lease.expires_at, lease.lease_ms, lease.leased_at) = (u64::MAX, u64::MAX, u64::MAX);
            lease.worker = Some(long(620));
        }
        job.group = Some(long(540));
        (job.timeout_ms, job.expires_at, job.started_at) =
            (Some(u64::MAX), Some(u64::MAX), Some(u64::MAX));
        job.schedule = Some(long(530));
        job.last_event_id = Some(u64::MAX);
        let bytes = encode_job(&job, Revision(u64::MAX)).unwrap();
        assert!(
            bytes.len() <= job_size_hint(&job),
            "{} bytes, hint {}",
            bytes.len(),
            job_size_hint(&job)
        );
        let event = EventDraft {
            job: JobId::from_u64(u64::MAX),
            queue: long(700),
            state: JobState::Dead,
            attempts: u32::MAX,
            at: u64::MAX,
            transition: Transition::Fail,
            correlation_id: Some(long(560)),
            result: Some(long(800).into_bytes()),
            last_error: Some(long(900)),
            progress: Some(long(580).into_bytes()),
        };
        let mut items = Vec::new();
        encode_item(&event, &mut items).unwrap();
        assert!(items.len() <= item_size_hint(&event), "{}", items.len());
    }

    #[test]
    fn jobs_round_trip_with_their_revision() {
        let job = full_job();
        let bytes = encode_job(&job, Revision(41)).unwrap();
        assert_eq!(bytes[0], JOB_VERSION);
        assert_eq!(job_revision(&bytes).unwrap(), Revision(41));
        let (decoded, revision) = decode_job(&bytes).unwrap();
        assert_eq!((&decoded, revision), (&job, Revision(41)));
        // Equality leaves the event id out: check it apart.
        assert_eq!(decoded.last_event_id, Some(1234));
        for status in [CallbackStatus::Delivered, CallbackStatus::Failed] {
            let mut other = job.clone();
            if let Some(c) = other.callback.as_mut() {
                (c.status, c.in_flight) = (status, false);
            }
            let bytes = encode_job(&other, Revision(1)).unwrap();
            assert_eq!(decode_job(&bytes).unwrap().0, other);
        }
    }

    #[test]
    fn older_versions_carry_the_same_first_body() {
        // Versions 1 and 2 are the version byte (and the revision) and the
        // body versions 3 and 4 begin with; a job without the fields of
        // version 3 and 4 ends with their five and six empty markers.
        let job = ready_job();
        let v4 = encode_job(&job, Revision(5)).unwrap();
        assert_eq!(&v4[v4.len() - 11..], &[0; 11]);
        let body = &v4[17..v4.len() - 11];
        // Version 3: the same header, the body and version 3's fields.
        let mut v3 = v4[..v4.len() - 6].to_vec();
        v3[0] = 3;
        let (decoded, revision) = decode_job(&v3).unwrap();
        assert_eq!((&decoded, revision), (&job, Revision(5)));
        let mut v1 = vec![1];
        v1.extend_from_slice(body);
        assert_eq!(decode_job(&v1).unwrap(), (job.clone(), Revision(0)));
        let mut v2 = vec![2];
        v2.extend_from_slice(&5u64.to_be_bytes());
        v2.extend_from_slice(body);
        let (decoded, revision) = decode_job(&v2).unwrap();
        assert_eq!((&decoded, revision), (&job, Revision(5)));
        assert_eq!(decoded.last_event_id, None);
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

    fn a_schedule() -> Schedule {
        Schedule {
            name: "nightly".into(),
            queue: "reports".into(),
            cron: Some("0 2 * * *".into()),
            every_ms: None,
            timezone: "Europe/Paris".into(),
            job: r#"{"payload":{"r":1}}"#.into(),
            catch_up: CatchUp::All,
            paused: false,
            next_run_at: Some(1_796_518_800_000),
            last_run_at: Some(1_796_432_400_000),
            last_job_id: Some(JobId::from_u64(42)),
            created_at: 1_796_000_000_000,
            updated_at: 1_796_432_400_001,
        }
    }

    /// Schedule record version 1, as this release writes it: a later
    /// release must still read these bytes.
    const SCHEDULE_V1: &str = "010000000000000007076e696768746c79077265706f7274730109302032202a202a202a000c4575726f70652f5061726973137b227061796c6f6164223a7b2272223a317d7d020001fd806add48a201000001fd800eb743a2010000012afd0028f129a2010000fd810eb743a2010000";

    #[test]
    fn schedules_round_trip_and_version_one_stays_readable() {
        let schedule = a_schedule();
        let bytes = encode_schedule(&schedule, Revision(7)).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, SCHEDULE_V1);
        assert_eq!(schedule_revision(&bytes).unwrap(), Revision(7));
        assert_eq!(
            decode_schedule(&bytes).unwrap(),
            (schedule.clone(), Revision(7))
        );
        let mut paused = schedule;
        paused.paused = true;
        paused.next_run_at = None;
        paused.cron = None;
        paused.every_ms = Some(1_000);
        paused.catch_up = CatchUp::None;
        let bytes = encode_schedule(&paused, Revision(1)).unwrap();
        assert_eq!(decode_schedule(&bytes).unwrap().0, paused);
        // Damage and unknown versions are refused.
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        assert!(decode_schedule(&unknown).is_err());
        assert!(decode_schedule(&bytes[..5]).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode_schedule(&trailing).is_err());
    }

    #[test]
    fn settings_events_and_writes_round_trip() {
        let paused = QueueSettings {
            paused: true,
            ..QueueSettings::default()
        };
        assert_eq!(
            decode_settings(&encode_settings(&paused).unwrap()).unwrap(),
            paused
        );
        let rate = RateLimit {
            jobs: 7,
            per_ms: 1000,
        };
        let limited = QueueSettings {
            paused: false,
            limits: Limits {
                max_leased: Some(32),
                rate_limit: Some(rate),
                group_max_leased: Some(1),
            },
            bucket: Some(Bucket {
                units: 123,
                refilled_at: 456,
            }),
        };
        let bytes = encode_settings(&limited).unwrap();
        assert_eq!(bytes[0], 2);
        assert_eq!(decode_settings(&bytes).unwrap(), limited);
        // Version 1 (the first release's) still decodes, as "paused".
        assert_eq!(decode_settings(&[1, 1]).unwrap(), paused);
        assert!(decode_settings(&[3, 0]).is_err());
        let event = |event_id, transition| Event {
            event_id,
            id: JobId::from_u64(5),
            queue: "q".into(),
            state: JobState::Dead,
            attempts: 3,
            at: 9,
            transition,
            correlation_id: None,
            result: None,
            last_error: None,
            progress: None,
        };
        let mut full = event(78, Transition::Fail);
        full.correlation_id = Some("req-1".into());
        full.result = Some(b"{\"ok\":1}".to_vec());
        full.last_error = Some("boom".into());
        full.progress = Some(b"0.5".to_vec());
        let chunk = vec![event(77, Transition::Expire), full];
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

/// A fixture's `trees.hex` (lines `tree key value`, hex; `#` comments):
/// tree name → key → value.
#[cfg(test)]
fn fixture_trees(
    text: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
    let mut trees = std::collections::BTreeMap::<_, std::collections::BTreeMap<_, _>>::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split(' ');
        let (tree, key, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
        trees
            .entry(tree.to_owned())
            .or_default()
            .insert(unhex(key), unhex(value.unwrap_or("")));
    }
    trees
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

    fn trees() -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
        super::fixture_trees(include_str!("../../../tests/fixtures/v1/trees.hex"))
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
        // The current version writes the same body behind its header, then
        // the eleven empty markers of the fields version 1 did not have.
        for job in &jobs {
            let v1 = &trees["jobs"][&keys::job_key(job.id).to_vec()];
            let current = encode_job(job, Revision(3)).unwrap();
            let end = current.len() - 11;
            assert_eq!(&current[17..end], &v1[1..], "job {}", job.id);
            assert_eq!(&current[end..], &[0; 11], "job {}", job.id);
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
        // Format 1 kept the dead-letter list in `d`, which the `j` entries
        // of format 3 replace (the upgrade builds them from the records):
        // each stored `d` entry is the `j` entry of a dead job, and every
        // other entry is the one this build computes.
        let (listing, others): (BTreeMap<_, _>, BTreeMap<_, _>) = index
            .into_iter()
            .partition(|(k, _)| matches!(k[0], keys::STATE | keys::CORRELATION));
        let (dead, stored_others): (BTreeMap<_, _>, BTreeMap<_, _>) = trees["index"]
            .clone()
            .into_iter()
            .partition(|(k, _)| k[0] == keys::DEAD_V2);
        assert_eq!(others, stored_others);
        let dead_as_listed: Vec<Vec<u8>> = dead
            .keys()
            .map(|k| {
                let (queue_part, id) = k.split_at(k.len() - 8);
                let mut key = vec![keys::STATE];
                key.extend_from_slice(&queue_part[1..]);
                key.push(keys::state_byte(JobState::Dead));
                key.extend_from_slice(id);
                key
            })
            .collect();
        let dead_listed: Vec<Vec<u8>> = listing
            .keys()
            .filter(|k| k[0] == keys::STATE && k[k.len() - 9] == keys::state_byte(JobState::Dead))
            .cloned()
            .collect();
        assert_eq!(dead_listed, dead_as_listed);
        assert_eq!(listing.len(), trees["jobs"].len(), "one `j` entry per job");
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

/// The records of the engine-seams release (commit 3ce2ca7), as its
/// `queue-core` wrote them: job records of version 2, event chunks and
/// write-ahead slots with events of version 1, the checkpoint.
#[cfg(test)]
mod v2_fixtures {
    use std::collections::BTreeMap;

    use super::*;

    fn trees() -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
        super::fixture_trees(include_str!("../../../tests/fixtures/v2/trees.hex"))
    }

    #[test]
    fn every_job_record_is_version_two_and_decodes_with_its_revision() {
        let trees = trees();
        assert_eq!(trees["jobs"].len(), 78);
        for bytes in trees["jobs"].values() {
            assert_eq!(bytes[0], 2);
            let (job, revision) = decode_job(bytes).unwrap();
            assert!(revision.0 >= 1, "{revision:?}");
            assert_eq!(revision, job_revision(bytes).unwrap());
            assert_eq!(
                (job.correlation_id.as_deref(), job.last_event_id),
                (None, None)
            );
            assert!(job.callback.is_none() && job.headers.is_empty());
            // Written again, it is this release's record of the same job.
            let again = encode_job(&job, revision).unwrap();
            assert_eq!(decode_job(&again).unwrap(), (job, revision));
        }
    }

    #[test]
    fn chunks_and_slots_of_version_one_events_decode_in_order() {
        let trees = trees();
        let mut ids = Vec::new();
        for (key, value) in &trees["events"] {
            let first = u64::from_be_bytes(<[u8; 8]>::try_from(&key[..8]).unwrap());
            assert_eq!(&value[..2], &[CHUNK, 1]);
            let events = decode_chunk(first, value).unwrap();
            assert_eq!(events[0].event_id, first);
            ids.extend(events.iter().map(|e| e.event_id));
        }
        let checkpoint = &trees["wal"][&b"checkpoint".to_vec()];
        let checkpoint = u64::from_be_bytes(<[u8; 8]>::try_from(&checkpoint[..]).unwrap());
        assert_eq!(checkpoint, 12);
        let mut slot_events = Vec::new();
        for (key, value) in trees["wal"].iter().filter(|(k, _)| k.len() == 8) {
            assert_eq!(value[0], SLOT_V1, "slot {key:?}");
            let slot = decode_slot(value).unwrap();
            assert_eq!(
                slot.seq,
                u64::from_be_bytes(<[u8; 8]>::try_from(&key[..]).unwrap())
            );
            assert!(!slot.record.is_empty());
            if slot.seq > checkpoint {
                slot_events.extend(slot.events.iter().map(|e| e.event_id));
            }
        }
        // The chunked events, then those of the slots after the
        // checkpoint: one unbroken run of ids from 1.
        ids.extend(slot_events);
        assert_eq!(ids, (1..=84).collect::<Vec<u64>>());
    }
}
