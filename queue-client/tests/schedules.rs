//! Schedules through the SDK, on both transports: the builder stores a
//! typed schedule, ticks on the manual clock reach a worker with their
//! payload, trigger returns a job handle, and errors come back typed.

use std::time::Duration;

use queue_client::{CatchUp, EnqueueOptions, Error, JobState, LeaseOptions};
use queue_core::ManualClock;
use serde::{Deserialize, Serialize};

use crate::common::{Backend, Harness, Kind, PATIENCE, Store};
use crate::{both, both_blocking};

/// 2026-11-25T00:00:00Z.
const T0: u64 = 1_795_564_800_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    name: String,
}

both!(
    the_builder_stores_a_typed_schedule,
    ticks_reach_a_worker_with_their_payload,
    a_trigger_returns_a_handle_and_leaves_the_next_tick,
    mistakes_come_back_as_typed_errors,
);
both_blocking!(the_blocking_client_manages_schedules);

fn manual(kind: Kind, backend: Backend) -> (Harness, ManualClock) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let config = dir.config().clock(clock.clone());
    (Harness::with_config(kind, dir, config), clock)
}

async fn the_builder_stores_a_typed_schedule(kind: Kind, backend: Backend) {
    let (h, _clock) = manual(kind, backend);
    let client = h.client();
    let nightly = client
        .schedule("nightly")
        .cron("0 3 * * *")
        .timezone("Europe/Paris")
        .catch_up(CatchUp::All)
        .queue("reports")
        .options(EnqueueOptions::new().max_attempts(3).priority(2))
        .job(&Report {
            name: "sales".into(),
        })
        .put()
        .await
        .unwrap();
    assert_eq!(nightly.name, "nightly");
    assert_eq!(nightly.queue, "reports");
    assert_eq!(nightly.cron.as_deref(), Some("0 3 * * *"));
    assert_eq!(nightly.every, None);
    assert_eq!(nightly.timezone, "Europe/Paris");
    assert_eq!(nightly.catch_up, CatchUp::All);
    assert!(!nightly.paused);
    // 03:00 in Paris (UTC+1 in November).
    assert_eq!(nightly.next_run_at, Some(T0 + 2 * 3_600_000));
    assert_eq!(
        nightly.payload::<Report>().unwrap(),
        Report {
            name: "sales".into()
        }
    );
    assert_eq!(nightly.job().max_attempts, Some(3));
    assert_eq!(nightly.job().idempotency_key, None);

    // The queue defaults to the schedule's name; a period instead of cron.
    let ping = client
        .schedule("ping")
        .every(Duration::from_secs(90))
        .paused(true)
        .job(&1)
        .put()
        .await
        .unwrap();
    assert_eq!(ping.queue, "ping");
    assert_eq!(ping.every, Some(Duration::from_secs(90)));
    assert_eq!(ping.catch_up, CatchUp::Latest);
    assert_eq!((ping.paused, ping.next_run_at), (true, None));

    let names: Vec<String> = client
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["nightly", "ping"]);
    let resumed = client.resume_schedule("ping").await.unwrap();
    assert_eq!(resumed.next_run_at, Some(T0 + 90_000));
    let paused = client.pause_schedule("ping").await.unwrap();
    assert!(paused.paused);
    let deleted = client.delete_schedule("ping").await.unwrap();
    assert_eq!(deleted.name, "ping");
    assert!(matches!(
        client.get_schedule("ping").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        client.get_schedule("nightly").await.unwrap().name,
        "nightly"
    );
}

async fn ticks_reach_a_worker_with_their_payload(kind: Kind, backend: Backend) {
    let (h, clock) = manual(kind, backend);
    let client = h.client();
    client
        .schedule("every-second")
        .every(Duration::from_secs(1))
        .queue("reports")
        .job(&Report {
            name: "tick".into(),
        })
        .put()
        .await
        .unwrap();
    let reports = client.queue::<Report>("reports");
    for tick in 1..=3u64 {
        clock.advance(Duration::from_secs(1));
        let leased = reports
            .lease(&LeaseOptions::new().wait(PATIENCE))
            .await
            .unwrap();
        assert_eq!(leased.len(), 1);
        let job = leased[0].job();
        let at = T0 + tick * 1_000;
        assert_eq!(job.run_at, at);
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some(format!("schedule:every-second:{at}").as_str())
        );
        assert_eq!(job.schedule.as_deref(), Some("every-second"));
        assert_eq!(leased[0].payload().name, "tick");
        let id = job.id.clone();
        leased
            .into_iter()
            .next()
            .unwrap()
            .complete(&())
            .await
            .unwrap();
        let schedule = client.get_schedule("every-second").await.unwrap();
        assert_eq!(schedule.last_job_id, Some(id));
        assert_eq!(schedule.last_run_at, Some(at));
    }
}

async fn a_trigger_returns_a_handle_and_leaves_the_next_tick(kind: Kind, backend: Backend) {
    let (h, _clock) = manual(kind, backend);
    let client = h.client();
    let stored = client
        .schedule("hourly")
        .cron("@hourly")
        .queue("reports")
        .job(&Report { name: "now".into() })
        .put()
        .await
        .unwrap();
    let handle = client.trigger_schedule::<Report>("hourly").await.unwrap();
    assert_eq!(handle.status().await.unwrap(), JobState::Ready);
    let job = handle.get().await.unwrap();
    assert_eq!(job.payload.name, "now");
    assert_eq!(job.schedule.as_deref(), Some("hourly"));
    let after = client.get_schedule("hourly").await.unwrap();
    assert_eq!(after.next_run_at, stored.next_run_at);
    assert_eq!(after.last_job_id.as_ref(), Some(handle.id()));
}

async fn mistakes_come_back_as_typed_errors(kind: Kind, backend: Backend) {
    let (h, _clock) = manual(kind, backend);
    let client = h.client();
    let invalid = |result: queue_client::Result<queue_client::Schedule>, field: &str| match result {
        Err(Error::InvalidRequest { message }) => {
            assert!(message.contains(field), "{message:?} should name {field}");
        }
        other => panic!("expected invalid_request naming {field}, got {other:?}"),
    };
    invalid(
        client.schedule("s").cron("61 * * * *").job(&1).put().await,
        "cron",
    );
    invalid(
        client
            .schedule("s")
            .cron("* * * * *")
            .every(Duration::from_secs(1))
            .job(&1)
            .put()
            .await,
        "cron",
    );
    invalid(
        client
            .schedule("s")
            .cron("@daily")
            .timezone("Moon/Tranquility")
            .job(&1)
            .put()
            .await,
        "timezone",
    );
    invalid(
        client
            .schedule("s")
            .every(Duration::from_secs(1))
            .options(EnqueueOptions::new().idempotency_key("mine"))
            .job(&1)
            .put()
            .await,
        "job.idempotency_key",
    );
    invalid(
        client
            .schedule("s")
            .every(Duration::from_secs(1))
            .put()
            .await,
        "job",
    );
    invalid(
        client
            .schedule("no/slash")
            .every(Duration::from_secs(1))
            .job(&1)
            .put()
            .await,
        "schedule name",
    );
    assert!(client.schedules().await.unwrap().is_empty());
    for result in [
        client.pause_schedule("nope").await,
        client.resume_schedule("nope").await,
        client.delete_schedule("nope").await,
    ] {
        assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}");
    }
    assert!(matches!(
        client.trigger_schedule::<u32>("nope").await,
        Err(Error::NotFound { .. })
    ));
}

fn the_blocking_client_manages_schedules(kind: Kind, backend: Backend) {
    let (h, clock) = manual(kind, backend);
    let client = h.blocking();
    let stored = client
        .schedule("minutely")
        .cron("* * * * *")
        .queue("reports")
        .catch_up(CatchUp::None)
        .job(&Report {
            name: "blocking".into(),
        })
        .put()
        .unwrap();
    assert_eq!(stored.next_run_at, Some(T0 + 60_000));
    clock.advance(Duration::from_secs(60));
    let reports = client.queue::<Report>("reports");
    let leased = reports.lease(&LeaseOptions::new().wait(PATIENCE)).unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].payload().name, "blocking");
    let handle = client.trigger_schedule::<Report>("minutely").unwrap();
    assert_eq!(handle.status().unwrap(), JobState::Ready);
    assert_eq!(
        client
            .get_schedule("minutely")
            .unwrap()
            .last_job_id
            .as_ref(),
        Some(handle.id())
    );
    assert_eq!(client.schedules().unwrap().len(), 1);
    assert!(client.pause_schedule("minutely").unwrap().paused);
    assert!(!client.resume_schedule("minutely").unwrap().paused);
    assert_eq!(client.delete_schedule("minutely").unwrap().name, "minutely");
}
