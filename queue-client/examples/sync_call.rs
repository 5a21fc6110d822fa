//! The synchronous style, `TypedQueue::call`: enqueue a job and wait for its
//! result in one call (a single round trip when the job finishes within a
//! minute). It shows the three outcomes:
//!
//! 1. the typed result;
//! 2. `Error::JobTimedOut`: the time limit passed first. The job is not
//!    affected and runs on; the id in the error gives a handle to wait on
//!    later;
//! 3. `Error::JobFailed`: the job went dead, here because the worker refused
//!    it permanently.
//!
//! To be self-contained it runs its own worker on the `squares` queue in this
//! process; in real use the worker runs elsewhere. It ends by itself.
//!
//! ```sh
//! cargo run --release -p queue-server                         # terminal 1
//! cargo run -p queue-client --example sync_call [URL]         # terminal 2
//! ```
//!
//! The server URL is the first argument, else `$QUEUE_URL`, else
//! `http://127.0.0.1:7878`. `$QUEUE_TOKEN`, when set, is sent as the bearer
//! token.

use std::error::Error as StdError;
use std::time::Duration;

use queue_client::{Client, EnqueueOptions, Error, Failure, Job, Worker};
use serde::{Deserialize, Serialize};

mod support;

/// The payload of a `squares` job. (`{"n": 7}`, as the README's curl
/// example enqueues, decodes too.)
#[derive(Debug, Serialize, Deserialize)]
struct Square {
    n: i64,
    /// How long the worker pretends to work.
    #[serde(default)]
    work_ms: u64,
}

/// The worker's handler: `n²`, refusing negative numbers for good.
async fn square(job: Job<Square>) -> Result<i64, Failure> {
    let Square { n, work_ms } = job.payload;
    if n < 0 {
        return Err(Failure::permanent(format!("{n} is negative")));
    }
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    n.checked_mul(n)
        .ok_or_else(|| Failure::permanent(format!("{n}² overflows")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let url = support::server_url();
    let client = Client::connect_with(&url, support::options())?;
    client.health().await?;
    println!("connected to {url}");

    // The worker, as a task of this process.
    let worker = Worker::new(client.clone(), "squares")
        .concurrency(2)
        .poll_wait(Duration::from_secs(1));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(square));

    let squares = client.queue::<Square>("squares");

    // 1. The result.
    match squares
        .call::<i64>(&Square { n: 7, work_ms: 0 }, Duration::from_secs(10))
        .await
    {
        Ok(result) => println!("1. 7² = {result}"),
        Err(other) => return Err(other.into()),
    }

    // 2. Timed out: the job takes 2 s, the caller waits 500 ms.
    let slow = Square {
        n: 12,
        work_ms: 2000,
    };
    match squares.call::<i64>(&slow, Duration::from_millis(500)).await {
        Ok(result) => println!("2. 12² = {result} (faster than expected)"),
        Err(Error::JobTimedOut { id, state, waited }) => {
            println!("2. job {id} is still {state} after {waited:?}; it runs on");
            // The id is all it takes to look again later, from anywhere.
            let handle = squares.job(id);
            let result: i64 = handle.wait(Duration::from_secs(10)).await?;
            println!("   waited again on {}: 12² = {result}", handle.id());
        }
        Err(other) => return Err(other.into()),
    }

    // 3. Failed: the worker refuses negative numbers permanently, so the
    //    job is dead after one attempt. (`call_with` takes the same options
    //    as an enqueue.)
    match squares
        .call_with::<i64>(
            &Square { n: -3, work_ms: 0 },
            EnqueueOptions::new().max_attempts(3),
            Duration::from_secs(10),
        )
        .await
    {
        Ok(result) => println!("3. unexpectedly got {result}"),
        Err(Error::JobFailed {
            id,
            attempts,
            last_error,
        }) => println!("3. job {id} failed after {attempts} attempt(s): {last_error}"),
        Err(other) => return Err(other.into()),
    }

    stop.shutdown();
    let report = running.await??;
    println!(
        "worker stopped: {} completed, {} failed",
        report.completed, report.failed
    );
    Ok(())
}
