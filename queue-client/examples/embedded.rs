//! The same API with no server: `Client::embedded` runs on a
//! `queue_core::Queue` opened in this process (cargo feature `embedded`).
//! Jobs, results and errors are those a server would give, so moving to a
//! server later changes only the line that makes the client.
//!
//! It starts a worker task, makes synchronous calls (one of them failing),
//! enqueues a batch and waits for it, and prints the queue's events as they
//! happen. It ends by itself.
//!
//! ```sh
//! cargo run -p queue-client --example embedded                 # data in a temporary directory
//! cargo run -p queue-client --example embedded -- ./example-data   # data kept there
//! ```

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use queue_client::{Client, Error, EventFilter, Failure, Job, StreamItem, Worker};
use serde::{Deserialize, Serialize};

/// The payload of a `greetings` job.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    name: String,
}

fn greeting(name: &str) -> Greeting {
    Greeting {
        name: name.to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    // Declared first, so dropped last: the directory outlives the queue.
    let temp;
    let dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    // The one line that differs from a server: Client::connect(url)?.
    let client = Client::embedded(queue_core::Queue::open(&dir)?);
    println!("queue opened in {}", dir.display());

    // Every state change of the queue, printed as it happens.
    let mut events = client.events(EventFilter::new().queue("greetings")).await?;
    let printer = tokio::spawn(async move {
        while let Some(item) = events.next().await {
            match item {
                Ok(StreamItem::Event(event)) => println!(
                    "  event {}: job {} is {} (attempts {})",
                    event.event_id, event.id, event.state, event.attempts
                ),
                Ok(StreamItem::Gap(gap)) => {
                    println!("  events up to {} are no longer kept", gap.oldest)
                }
                Err(e) => println!("  event stream: {e}"),
            }
        }
    });

    let worker = Worker::new(client.clone(), "greetings")
        .concurrency(2)
        .poll_wait(Duration::from_millis(500));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<Greeting>| async move {
        if job.payload.name.is_empty() {
            return Err(Failure::permanent("a greeting needs a name"));
        }
        Ok(format!("Hello, {}!", job.payload.name))
    }));

    let greetings = client.queue::<Greeting>("greetings");
    let timeout = Duration::from_secs(5);

    let answer: String = greetings.call(&greeting("Ada"), timeout).await?;
    println!("call: {answer}");

    match greetings.call::<String>(&greeting(""), timeout).await {
        Ok(answer) => println!("call: unexpectedly {answer}"),
        Err(Error::JobFailed { id, last_error, .. }) => {
            println!("call: job {id} failed: {last_error}");
        }
        Err(other) => return Err(other.into()),
    }

    let batch = greetings
        .enqueue_batch(&[greeting("Grace"), greeting("Barbara")])
        .await?;
    for job in &batch {
        let answer: String = job.wait(timeout).await?;
        println!("batch job {}: {answer}", job.id());
    }

    stop.shutdown();
    let report = running.await??;
    let stats = greetings.stats().await?;
    println!(
        "worker stopped: {} completed, {} failed; the queue holds {} completed, {} dead",
        report.completed, report.failed, stats.completed, stats.dead
    );
    printer.abort();
    Ok(())
}
