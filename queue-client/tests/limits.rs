//! `set_limits` on both transports and both clients: the typed builder,
//! `null` (the `no_*` methods) removing, the limits in the typed stats,
//! leases obeying them, and bad values refused naming the field.

use std::time::Duration;

use queue_client::{EnqueueOptions, Error, LeaseOptions, Limits, QueueLimits, RateLimit};

use crate::common::{Backend, Harness, Kind};
use crate::{both, both_blocking};

both!(
    set_limits_sets_shows_and_removes_limits,
    a_bad_limit_is_refused_naming_the_field
);
both_blocking!(the_blocking_client_sets_limits);

async fn set_limits_sets_shows_and_removes_limits(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("limited");
    for n in 0..3 {
        jobs.enqueue_with(&n, EnqueueOptions::new().group("g"))
            .await
            .unwrap();
    }
    jobs.enqueue(&9).await.unwrap();
    let stats = jobs
        .set_limits(
            &Limits::new()
                .max_leased(10)
                .rate_limit(100, Duration::from_secs(1))
                .group_max_leased(1),
        )
        .await
        .unwrap();
    assert_eq!(
        stats.limits,
        QueueLimits {
            max_leased: Some(10),
            rate_limit: Some(RateLimit {
                jobs: 100,
                per_ms: 1000
            }),
            group_max_leased: Some(1),
        }
    );
    assert_eq!(client.stats("limited").await.unwrap().limits, stats.limits);
    // One job of the group, and the one without a group.
    let leased = jobs.lease(&LeaseOptions::new().max_jobs(10)).await.unwrap();
    let payloads: Vec<u32> = leased.iter().map(|l| *l.payload()).collect();
    assert_eq!(payloads, vec![0, 9]);
    // Removing one limit keeps the others.
    let stats = client
        .set_limits(
            "limited",
            &Limits::new().no_group_max_leased().max_leased(2),
        )
        .await
        .unwrap();
    assert_eq!(stats.limits.group_max_leased, None);
    assert_eq!(stats.limits.max_leased, Some(2));
    assert!(stats.limits.rate_limit.is_some());
    // max_leased 2 with two held: nothing more.
    assert!(
        jobs.lease(&LeaseOptions::new().max_jobs(10))
            .await
            .unwrap()
            .is_empty()
    );
    for l in leased {
        l.complete(&()).await.unwrap();
    }
    assert_eq!(
        jobs.lease(&LeaseOptions::new().max_jobs(10))
            .await
            .unwrap()
            .len(),
        2
    );
    let stats = jobs
        .set_limits(&Limits::new().no_max_leased().no_rate_limit())
        .await
        .unwrap();
    assert_eq!(stats.limits, QueueLimits::default());
}

async fn a_bad_limit_is_refused_naming_the_field(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let before = client
        .set_limits("q", &Limits::new().max_leased(3))
        .await
        .unwrap();
    let bad = [
        (Limits::new().max_leased(0), "max_leased"),
        (
            Limits::new().group_max_leased(2_000_000),
            "group_max_leased",
        ),
        (
            Limits::new().rate_limit(0, Duration::from_secs(1)),
            "rate_limit.jobs",
        ),
        // Below a millisecond: a period of 0 ms.
        (
            Limits::new().rate_limit(1, Duration::from_micros(10)),
            "rate_limit.per_ms",
        ),
        (
            Limits::new()
                .max_leased(5)
                .rate_limit(1, Duration::from_secs(90_000)),
            "rate_limit.per_ms",
        ),
    ];
    for (limits, field) in bad {
        match client.set_limits("q", &limits).await {
            Err(Error::InvalidRequest { message }) => {
                assert!(message.contains(field), "{message:?} names {field}");
            }
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(client.stats("q").await.unwrap().limits, before.limits);
    }
}

fn the_blocking_client_sets_limits(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.blocking();
    let stats = client
        .set_limits("b", &Limits::new().max_leased(1).paused(true))
        .unwrap();
    assert!(stats.paused);
    assert_eq!(stats.limits.max_leased, Some(1));
    let jobs = client.queue::<u32>("b");
    let stats = jobs.set_limits(&Limits::new().paused(false)).unwrap();
    assert!(!stats.paused);
    assert_eq!(stats.limits.max_leased, Some(1), "absent keeps");
    jobs.enqueue(&1).unwrap();
    jobs.enqueue(&2).unwrap();
    let leased = jobs.lease(&LeaseOptions::new().max_jobs(5)).unwrap();
    assert_eq!(leased.len(), 1);
}
