//! The synchronous style: enqueue and wait for the result in one call.

use std::time::Duration;

use queue_client::{
    CallOutcome, Client, EnqueueOptions, Error, Failure, Job, JobState, LeaseOptions, Worker,
    WorkerReport,
};
use tokio::task::JoinHandle;

use crate::both;
use crate::common::{Harness, PATIENCE};

/// A worker on "add" that sums pairs and refuses negative numbers for good.
fn adder(
    client: Client,
) -> (
    queue_client::ShutdownHandle,
    JoinHandle<queue_client::Result<WorkerReport>>,
) {
    let worker = Worker::new(client, "add")
        .concurrency(2)
        .poll_wait(Duration::from_millis(200));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<(i64, i64)>| async move {
        let (a, b) = job.payload;
        if a < 0 || b < 0 {
            return Err(Failure::permanent("negative numbers"));
        }
        Ok(a + b)
    }));
    (stop, running)
}

both!(
    call_returns_the_typed_result,
    call_reports_a_dead_job_with_its_last_error,
    call_times_out_and_the_job_runs_on,
    call_reports_a_cancelled_job,
);

async fn call_returns_the_typed_result(h: Harness) {
    let client = h.client();
    let (stop, running) = adder(client.clone());
    let add = client.queue::<(i64, i64)>("add");
    assert_eq!(add.call::<i64>(&(2, 3), PATIENCE).await.unwrap(), 5);
    assert_eq!(add.call::<i64>(&(40, 2), PATIENCE).await.unwrap(), 42);
    stop.shutdown();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.completed, 2);
    assert_eq!(add.stats().await.unwrap().completed, 2);
}

async fn call_reports_a_dead_job_with_its_last_error(h: Harness) {
    let client = h.client();
    let (stop, running) = adder(client.clone());
    let add = client.queue::<(i64, i64)>("add");
    match add.call::<i64>(&(-1, 3), PATIENCE).await {
        Err(Error::JobFailed {
            id,
            attempts,
            last_error,
        }) => {
            assert_eq!((attempts, last_error.as_str()), (1, "negative numbers"));
            assert_eq!(add.job(id).status().await.unwrap(), JobState::Dead);
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    stop.shutdown();
    assert_eq!(running.await.unwrap().unwrap().failed, 1);
}

async fn call_times_out_and_the_job_runs_on(h: Harness) {
    let client = h.client();
    let add = client.queue::<(i64, i64)>("add");
    let id = match add.call::<i64>(&(1, 1), Duration::from_millis(100)).await {
        Err(Error::JobTimedOut { id, state, waited }) => {
            assert_eq!(state, JobState::Ready);
            assert!(waited >= Duration::from_millis(100));
            id
        }
        other => panic!("expected JobTimedOut, got {other:?}"),
    };
    // The job was not affected: a worker started later still runs it.
    let handle = add.job(id);
    // try_call hands the handle back instead of an error.
    let pending = match add
        .try_call::<i64>(&(2, 2), EnqueueOptions::new(), Duration::from_millis(50))
        .await
        .unwrap()
    {
        CallOutcome::Pending(job) => job,
        CallOutcome::Done(sum) => panic!("no worker runs yet, got {sum}"),
    };
    assert_eq!(handle.status().await.unwrap(), JobState::Ready);
    let (stop, running) = adder(client.clone());
    assert_eq!(handle.wait::<i64>(PATIENCE).await.unwrap(), 2);
    assert_eq!(pending.wait::<i64>(PATIENCE).await.unwrap(), 4);
    match add
        .try_call::<i64>(&(3, 3), EnqueueOptions::new(), PATIENCE)
        .await
        .unwrap()
    {
        CallOutcome::Done(sum) => assert_eq!(sum, 6),
        CallOutcome::Pending(job) => panic!("{} did not finish", job.id()),
    }
    stop.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(add.stats().await.unwrap().completed, 3);
}

async fn call_reports_a_cancelled_job(h: Harness) {
    let client = h.client();
    let add = client.queue::<(i64, i64)>("add");
    let caller = {
        let add = add.clone();
        tokio::spawn(async move { add.call::<i64>(&(5, 5), PATIENCE).await })
    };
    // Take the job as a worker would, then cancel it under the caller.
    let mut leased = add
        .lease(&LeaseOptions::new().wait(PATIENCE))
        .await
        .unwrap();
    let job = leased.pop().unwrap();
    add.job(job.job().id.clone()).cancel().await.unwrap();
    match caller.await.unwrap() {
        Err(Error::JobCancelled { id }) => assert_eq!(id, job.job().id),
        other => panic!("expected JobCancelled, got {other:?}"),
    }
    // The worker's late completion is refused.
    assert!(matches!(
        job.complete(&10).await,
        Err(Error::LeaseLost { .. })
    ));
}
