//! Typed queues, enqueue options, batches, handles, waits and cancel.

use std::time::Duration;

use queue_client::{EnqueueOptions, Error, JobState, LeaseOptions};
use serde::{Deserialize, Serialize};

use crate::both;
use crate::common::{Harness, PATIENCE};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Email {
    pub to: String,
    pub n: u32,
}

pub fn email(n: u32) -> Email {
    Email {
        to: format!("user{n}@example.com"),
        n,
    }
}

both!(
    enqueue_get_and_status_round_trip_the_payload,
    options_reach_the_job,
    an_idempotency_key_replays_the_first_job,
    batches_are_in_order_and_all_or_nothing,
    wait_returns_the_typed_result,
    wait_times_out_without_touching_the_job,
    cancel_once_then_conflict,
    bad_input_is_refused_before_anything_changes,
    manual_leases_complete_fail_and_release,
);

async fn enqueue_get_and_status_round_trip_the_payload(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let first = emails.enqueue(&email(1)).await.unwrap();
    let second = emails.enqueue(&email(2)).await.unwrap();
    assert_ne!(first.id(), second.id());
    assert!(!first.replayed());
    assert_eq!(first.status().await.unwrap(), JobState::Ready);

    let job = second.get().await.unwrap();
    assert_eq!(job.payload, email(2));
    assert_eq!((job.queue.as_str(), job.attempts), ("emails", 0));
    // Every enqueue carries a key; the SDK made this one.
    assert!(job.idempotency_key.unwrap().starts_with("qc-"));
    assert_eq!(emails.stats().await.unwrap().ready, 2);
}

async fn options_reach_the_job(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let low = emails.enqueue(&email(1)).await.unwrap();
    let high = emails
        .enqueue_with(&email(2), EnqueueOptions::new().priority(9).max_attempts(2))
        .await
        .unwrap();
    let later = emails
        .enqueue_with(
            &email(3),
            EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let at = std::time::SystemTime::now() + Duration::from_secs(7200);
    let scheduled = emails
        .enqueue_with(&email(4), EnqueueOptions::new().run_at(at))
        .await
        .unwrap();

    assert_eq!(later.status().await.unwrap(), JobState::Scheduled);
    let job = scheduled.get().await.unwrap();
    assert_eq!(job.state, JobState::Scheduled);
    assert!(job.run_at >= job.created_at + 7_100_000);
    assert_eq!(high.get().await.unwrap().max_attempts, 2);

    // Priority first, then age; delayed jobs are not leased.
    let leased = emails
        .lease(&LeaseOptions::new().max_jobs(10))
        .await
        .unwrap();
    let ids: Vec<_> = leased.iter().map(|l| l.job().id.clone()).collect();
    assert_eq!(ids, vec![high.id().clone(), low.id().clone()]);
}

async fn an_idempotency_key_replays_the_first_job(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let key = EnqueueOptions::new().idempotency_key("welcome-7");
    let first = emails.enqueue_with(&email(7), key.clone()).await.unwrap();
    let again = emails.enqueue_with(&email(7), key.clone()).await.unwrap();
    assert_eq!(first.id(), again.id());
    assert!(!first.replayed() && again.replayed());
    assert_eq!(again.get().await.unwrap().payload, email(7));
    // The key with another payload or other options: a conflict, nothing
    // enqueued.
    for (payload, options) in [
        (email(8), key.clone()),
        (email(7), key.clone().priority(5)),
        (email(7), key.clone().group("tenant-1")),
    ] {
        match emails.enqueue_with(&payload, options).await {
            Err(Error::Conflict { message }) => {
                assert!(message.contains("welcome-7"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    // Keys are per queue.
    let other = h.client().queue::<Email>("other");
    let elsewhere = other.enqueue_with(&email(7), key).await.unwrap();
    assert_ne!(elsewhere.id(), first.id());
    assert_eq!(emails.stats().await.unwrap().ready, 1);
}

async fn batches_are_in_order_and_all_or_nothing(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let payloads: Vec<Email> = (0..5).map(email).collect();
    let handles = emails.enqueue_batch(&payloads).await.unwrap();
    assert_eq!(handles.len(), 5);
    for (handle, payload) in handles.iter().zip(&payloads) {
        assert_eq!(&handle.get().await.unwrap().payload, payload);
    }

    let bad = vec![
        (&payloads[0], EnqueueOptions::new()),
        (&payloads[1], EnqueueOptions::new().max_attempts(0)),
    ];
    let refused = emails.enqueue_batch_with(bad).await.unwrap_err();
    assert!(
        matches!(refused, Error::InvalidRequest { .. }),
        "{refused:?}"
    );
    assert_eq!(emails.stats().await.unwrap().ready, 5);
}

async fn wait_returns_the_typed_result(h: Harness) {
    let client = h.client();
    let emails = client.queue::<Email>("emails");
    let handle = emails.enqueue(&email(1)).await.unwrap();
    let bystander = emails.enqueue(&email(2)).await.unwrap();
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.wait::<Vec<u32>>(PATIENCE).await })
    };
    let mut leased = emails
        .lease(&LeaseOptions::new().wait(PATIENCE))
        .await
        .unwrap();
    let job = leased.pop().unwrap();
    assert_eq!(job.job().id, *handle.id());
    job.complete(&vec![1u32, 2, 3]).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), vec![1, 2, 3]);
    let done = handle.get().await.unwrap();
    assert_eq!(done.result::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(bystander.status().await.unwrap(), JobState::Ready);
    // A result of the wrong type is a decoding error, not a panic.
    assert!(matches!(
        handle.wait::<String>(PATIENCE).await,
        Err(Error::Decode { .. })
    ));
}

async fn wait_times_out_without_touching_the_job(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let handle = emails.enqueue(&email(1)).await.unwrap();
    let error = handle
        .wait::<()>(Duration::from_millis(50))
        .await
        .unwrap_err();
    match &error {
        Error::JobTimedOut { id, state, .. } => {
            assert_eq!((id, *state), (handle.id(), JobState::Ready));
        }
        other => panic!("expected a time-out, got {other:?}"),
    }
    assert_eq!(error.job_id(), Some(handle.id()));
    assert_eq!(handle.status().await.unwrap(), JobState::Ready);
}

async fn cancel_once_then_conflict(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let handle = emails.enqueue(&email(1)).await.unwrap();
    let kept = emails.enqueue(&email(2)).await.unwrap();
    handle.cancel().await.unwrap();
    assert_eq!(handle.status().await.unwrap(), JobState::Cancelled);
    assert!(matches!(handle.cancel().await, Err(Error::Conflict { .. })));
    assert!(matches!(
        handle.wait::<()>(PATIENCE).await,
        Err(Error::JobCancelled { .. })
    ));
    assert_eq!(kept.status().await.unwrap(), JobState::Ready);
}

async fn bad_input_is_refused_before_anything_changes(h: Harness) {
    let client = h.client();
    for name in ["", "a/lease", "no spaces", &"x".repeat(129)] {
        let error = client.queue::<u32>(name).enqueue(&1).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidRequest { .. }),
            "{name:?}: {error:?}"
        );
    }
    let numbers = client.queue::<u32>("numbers");
    let error = numbers
        .enqueue_with(&1, EnqueueOptions::new().max_attempts(1001))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    let error = numbers
        .enqueue_with(&1, EnqueueOptions::new().idempotency_key(""))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");

    let big = client.queue::<String>("big");
    let error = big.enqueue(&"x".repeat(2 * 1024 * 1024)).await.unwrap_err();
    assert!(matches!(error, Error::PayloadTooLarge { .. }), "{error:?}");

    for id in ["0000000000000fff", "not-an-id", "../queues"] {
        let error = numbers.job(id).status().await.unwrap_err();
        assert!(matches!(error, Error::NotFound { .. }), "{id}: {error:?}");
    }
    assert!(client.queues().await.unwrap().is_empty());
}

async fn manual_leases_complete_fail_and_release(h: Harness) {
    let emails = h.client().queue::<Email>("emails");
    let payloads: Vec<Email> = (0..4).map(email).collect();
    let handles = emails
        .enqueue_batch_with(
            payloads
                .iter()
                .map(|p| (p, EnqueueOptions::new().max_attempts(2))),
        )
        .await
        .unwrap();
    let mut leased = emails
        .lease(&LeaseOptions::new().max_jobs(4).worker("by-hand"))
        .await
        .unwrap();
    assert_eq!(leased.len(), 4);
    let fourth = leased.pop().unwrap();
    let third = leased.pop().unwrap();
    let mut second = leased.pop().unwrap();
    let first = leased.pop().unwrap();

    let before = second.job().lease_expires_at.unwrap();
    second
        .heartbeat(Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(second.job().lease_expires_at.unwrap() > before);

    first.complete(&"done").await.unwrap();
    let state = second
        .fail(queue_client::Failure::new("try later").retry_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(state, JobState::Scheduled);
    let state = third
        .fail(queue_client::Failure::permanent("never"))
        .await
        .unwrap();
    assert_eq!(state, JobState::Dead);
    fourth.release().await.unwrap();

    let states: Vec<JobState> = states_of(&handles).await;
    assert_eq!(
        states,
        vec![
            JobState::Completed,
            JobState::Scheduled,
            JobState::Dead,
            JobState::Ready
        ]
    );
    let second = handles[1].get().await.unwrap();
    assert_eq!(second.last_error.as_deref(), Some("try later"));
    assert!(second.run_at >= second.updated_at + 3_590_000);
    let released = handles[3].get().await.unwrap();
    assert_eq!(released.attempts, 0);
}

async fn states_of(handles: &[queue_client::JobHandle<Email>]) -> Vec<JobState> {
    let mut states = Vec::new();
    for handle in handles {
        states.push(handle.status().await.unwrap());
    }
    states
}
