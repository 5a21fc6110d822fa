//! Enqueues jobs with the async client: single jobs with [`EnqueueOptions`]
//! (priority, delay, idempotency key), then a batch; reads their status,
//! waits for results with a time limit and handles `Error::JobTimedOut` and
//! `Error::JobFailed`.
//!
//! The jobs go to the `thumbnails` queue, which the `async_worker` example
//! works. With no worker running, every wait ends with `JobTimedOut` (the jobs
//! stay queued and keep their place); with one, waits end with a result, or
//! with `JobFailed` for the job the worker refuses (width 0). Either way the
//! example ends by itself after a few seconds.
//!
//! ```sh
//! cargo run --release -p queue-server                         # terminal 1
//! cargo run -p queue-client --example async_worker            # terminal 2 (optional)
//! cargo run -p queue-client --example producer [URL]          # terminal 3
//! ```
//!
//! The server URL is the first argument, else `$QUEUE_URL`, else
//! `http://127.0.0.1:7878`. `$QUEUE_TOKEN`, when set, is sent as the bearer
//! token.

use std::error::Error as StdError;
use std::time::Duration;

use queue_client::{Client, EnqueueOptions, Error, JobHandle, TypedQueue};
use support::{Rendered, Thumbnail};

mod support;

/// How long each wait for a result may take.
const WAIT: Duration = Duration::from_secs(3);

fn thumbnail(image: &str, width: u32) -> Thumbnail {
    Thumbnail {
        image: image.to_owned(),
        width,
    }
}

/// The server URL and client options from the command line and environment.
fn connect() -> Result<(Client, String), Box<dyn StdError>> {
    let url = support::server_url();
    Ok((Client::connect_with(&url, support::options())?, url))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let (client, url) = connect()?;
    client.health().await?;
    println!("connected to {url}");

    let thumbnails: TypedQueue<Thumbnail> = client.queue("thumbnails");

    // One job with the server's defaults (priority 0, ready now, 5 attempts).
    let cat = thumbnails.enqueue(&thumbnail("cat.png", 64)).await?;
    println!("enqueued {} (defaults)", cat.id());

    // An urgent one: leased before anything of lower priority.
    let urgent = thumbnails
        .enqueue_with(
            &thumbnail("banner.png", 256),
            EnqueueOptions::new().priority(10).max_attempts(3),
        )
        .await?;
    println!("enqueued {} (priority 10)", urgent.id());

    // One that may only run in a minute: `scheduled` until then.
    let later = thumbnails
        .enqueue_with(
            &thumbnail("report.png", 512),
            EnqueueOptions::new().delay(Duration::from_secs(60)),
        )
        .await?;
    println!(
        "enqueued {} (delayed 60 s): {}",
        later.id(),
        later.status().await?
    );

    // The same idempotency key twice: one job. (The key is fixed, so on a
    // second run of this example even the first enqueue finds the job the
    // first run created, as long as the server keeps it.)
    let options = EnqueueOptions::new().idempotency_key("avatar-ada-128");
    let first = thumbnails
        .enqueue_with(&thumbnail("ada.png", 128), options.clone())
        .await?;
    let again = thumbnails
        .enqueue_with(&thumbnail("ada.png", 128), options)
        .await?;
    println!(
        "idempotency key avatar-ada-128: {} (replayed: {}), then {} (replayed: {})",
        first.id(),
        first.replayed(),
        again.id(),
        again.replayed()
    );

    // A batch: all or nothing, handles in input order. The last one is a
    // job the worker refuses for good.
    let batch = thumbnails
        .enqueue_batch(&[
            thumbnail("dog.png", 128),
            thumbnail("flaky-fox.png", 32),
            thumbnail("broken.png", 0),
        ])
        .await?;
    for handle in &batch {
        println!("batch job {}: {}", handle.id(), handle.status().await?);
    }

    // Wait for results. Without a worker these time out: the job is not
    // affected, and its id is all that is needed to look again later.
    report("banner.png", &urgent).await?;
    if let Some(broken) = batch.last() {
        report("broken.png", broken).await?;
    }

    // Changed our mind about the delayed job.
    later.cancel().await?;
    println!("cancelled {}: {}", later.id(), later.status().await?);

    let stats = thumbnails.stats().await?;
    println!(
        "queue {}: {} scheduled, {} ready, {} leased, {} completed, {} dead, {} cancelled",
        stats.queue,
        stats.scheduled,
        stats.ready,
        stats.leased,
        stats.completed,
        stats.dead,
        stats.cancelled
    );
    Ok(())
}

/// Waits up to [`WAIT`] for a job's result and says what came of it.
async fn report(what: &str, job: &JobHandle<Thumbnail>) -> queue_client::Result<()> {
    match job.wait::<Rendered>(WAIT).await {
        Ok(rendered) => println!("{what}: done, {} ({} bytes)", rendered.path, rendered.bytes),
        Err(Error::JobTimedOut { id, state, waited }) => println!(
            "{what}: job {id} is still {state} after {waited:?}; \
             it keeps its place (look again with thumbnails.job(\"{id}\"))"
        ),
        Err(Error::JobFailed {
            id,
            attempts,
            last_error,
        }) => println!("{what}: job {id} failed after {attempts} attempt(s): {last_error}"),
        Err(Error::JobCancelled { id }) => println!("{what}: job {id} was cancelled"),
        Err(other) => return Err(other),
    }
    Ok(())
}
