//! Property tests of every stored-record decoder: random bytes, and valid
//! records of every version with bytes flipped, cut off or appended, decode
//! to a record or to an error value, never a panic (nor an allocation the
//! bytes cannot justify). Bounded cases and a fixed seed: a run takes well
//! under a second and is the same each time.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestRunner};

use super::*;
use crate::rules::testing::{full_job, ready_job};

/// Valid records of every kind and version, to mutate.
fn samples() -> Vec<Vec<u8>> {
    let job = full_job();
    // A job without the fields of versions 3 and 4 in every version: 4;
    // 3 without version 4's six empty markers; 2 and 1 with the first body.
    let v4 = encode_job(&ready_job(), Revision(5)).unwrap_or_default();
    let body = v4.get(17..v4.len().saturating_sub(11)).unwrap_or_default();
    let mut v3 = v4[..v4.len().saturating_sub(6)].to_vec();
    v3[0] = 3;
    let mut v2 = vec![2];
    v2.extend_from_slice(&5u64.to_be_bytes());
    v2.extend_from_slice(body);
    let mut v1 = vec![1];
    v1.extend_from_slice(body);
    let mut out = vec![v4, v3, v2, v1];
    // A job with every field.
    out.push(encode_job(&job, Revision(6)).unwrap_or_default());
    out.push(encode_settings(&QueueSettings::default()).unwrap_or_default());
    out.push(vec![1, 1]);
    out.push(
        encode_schedule(
            &Schedule {
                name: "nightly".into(),
                queue: "reports".into(),
                cron: Some("0 2 * * *".into()),
                every_ms: None,
                timezone: "UTC".into(),
                job: r#"{"payload":1}"#.into(),
                catch_up: CatchUp::All,
                paused: false,
                next_run_at: Some(9),
                last_run_at: None,
                last_job_id: Some(JobId::from_u64(42)),
                created_at: 1,
                updated_at: 2,
            },
            Revision(7),
        )
        .unwrap_or_default(),
    );
    let event = Event {
        event_id: 77,
        id: JobId::from_u64(5),
        queue: "q".into(),
        state: JobState::Completed,
        attempts: 3,
        at: 9,
        transition: Transition::Complete,
        correlation_id: Some("req-1".into()),
        result: Some(b"{\"ok\":1}".to_vec()),
        last_error: Some("boom".into()),
        progress: Some(b"0.5".to_vec()),
    };
    out.push(encode_chunk(std::slice::from_ref(&event)).unwrap_or_default());
    let mut items = Vec::new();
    let _ = encode_item(&EventDraft::from(&event), &mut items);
    let writes = [(4u8, &b"k"[..], Some(&b"v"[..])), (0, &b"x"[..], None)];
    let record = encode_writes(writes.iter().copied()).unwrap_or_default();
    out.push(encode_slot(9, 77, &items, &record).unwrap_or_default());
    out.push(encode_slot(10, 0, &[], &record).unwrap_or_default());
    out.push(record);
    out
}

/// Every decoder on `bytes`; each must return, not panic.
fn decode_everything(bytes: &[u8]) {
    let _ = job_revision(bytes);
    let _ = decode_job(bytes);
    let _ = decode_settings(bytes);
    let _ = schedule_revision(bytes);
    let _ = decode_schedule(bytes);
    let _ = decode_chunk(77, bytes);
    let _ = decode_items(77, bytes);
    let _ = decode_slot(bytes);
    let _ = decode_writes(bytes);
}

fn runner(cases: u32, seed: u64) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

#[test]
fn every_sample_decodes() {
    let samples = samples();
    assert!(samples.iter().all(|s| !s.is_empty()));
    // The samples are valid: each decodes as what it is (a sanity check
    // that the mutations below start from records that reach deep).
    for (i, sample) in samples.iter().enumerate() {
        let decoded = match i {
            0..=4 => decode_job(sample).is_ok(),
            5 | 6 => decode_settings(sample).is_ok(),
            7 => decode_schedule(sample).is_ok(),
            8 => decode_chunk(77, sample).is_ok(),
            9 | 10 => decode_slot(sample).is_ok(),
            _ => decode_writes(sample).is_ok(),
        };
        assert!(decoded, "sample {i}");
    }
    assert_eq!(samples.len(), 12);
}

#[test]
fn random_bytes_never_panic_a_decoder() {
    // A version byte the decoders know, then anything.
    let strategy = (
        prop::sample::select(vec![1u8, 2, 3, 4, 5, b'c', b's', b't', 0, 255]),
        prop::sample::select(vec![1u8, 2, 3, 0]),
        prop::collection::vec(any::<u8>(), 0..200),
    );
    runner(400, 15)
        .run(&strategy, |(first, second, rest)| {
            let mut bytes = vec![first, second];
            bytes.extend_from_slice(&rest);
            decode_everything(&bytes);
            decode_everything(&rest);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_records_never_panic_a_decoder() {
    let samples = samples();
    let strategy = (
        0..samples.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    );
    runner(1500, 16)
        .run(&strategy, |(which, flips, cut, tail)| {
            let mut bytes = samples[which].clone();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            decode_everything(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_huge_length_prefix_is_an_error_not_an_allocation() {
    // A schedule record whose name claims 2^60 bytes: bincode would
    // allocate that much before reading it (and abort the process).
    let mut bytes = vec![SCHEDULE_VERSION];
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.push(253);
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    bytes.extend_from_slice(b"short");
    assert!(decode_schedule(&bytes).is_err());
    // Whole records far larger than the smallest limit still decode.
    let mut job = ready_job();
    job.payload = vec![b'7'; 3 << 20];
    job.result = Some(vec![b'1'; 1 << 20]);
    let bytes = encode_job(&job, Revision(1)).unwrap_or_default();
    assert_eq!(decode_job(&bytes).map(|(j, _)| j).ok(), Some(job));
}
