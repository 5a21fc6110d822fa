//! A worker with the async client: runs a handler on the `thumbnails` queue
//! (the jobs the `producer` example enqueues), four at a time, returning a
//! typed result. A job of width 0 is refused for good (`Failure::permanent`:
//! it goes to the dead letters); an image whose name starts with `flaky`
//! fails its first attempt and asks to be tried again in a second
//! (`Failure::new(..).retry_in(..)`).
//!
//! It stops gracefully, letting running jobs finish, on the first of:
//! - Ctrl-C;
//! - `--max-jobs N` (or `$QUEUE_MAX_JOBS`) jobs handled, every attempt
//!   counting;
//! - `--idle-secs S` (or `$QUEUE_IDLE_SECS`) seconds without a job: 10 by
//!   default, so it ends by itself on an idle server; `0` turns this off and
//!   the worker then runs until Ctrl-C (or the `--max-jobs` limit).
//!
//! `--seed` first enqueues one job of each kind, so that there is work even
//! on an empty server.
//!
//! ```sh
//! cargo run --release -p queue-server                         # terminal 1
//! cargo run -p queue-client --example async_worker -- --seed --max-jobs 5
//! cargo run -p queue-client --example async_worker -- http://127.0.0.1:7878 --idle-secs 0
//! ```
//!
//! The server URL is the first plain argument, else `$QUEUE_URL`, else
//! `http://127.0.0.1:7878`. `$QUEUE_TOKEN`, when set, is sent as the bearer
//! token.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_client::{Client, Failure, Job, Worker};
use support::{Rendered, Thumbnail};
use tokio::time::Instant;

mod support;

/// The command line: `[URL] [--max-jobs N] [--idle-secs S] [--seed]`.
struct Args {
    url: String,
    max_jobs: Option<u64>,
    idle_secs: u64,
    seed: bool,
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{what} wants a whole number, not {text:?}"))
}

fn parse_args() -> Result<Args, String> {
    let env = |name: &str| std::env::var(name).ok();
    let mut args = Args {
        url: env("QUEUE_URL").unwrap_or_else(|| "http://127.0.0.1:7878".to_owned()),
        max_jobs: env("QUEUE_MAX_JOBS")
            .map(|n| number(&n, "QUEUE_MAX_JOBS"))
            .transpose()?,
        idle_secs: env("QUEUE_IDLE_SECS")
            .map(|n| number(&n, "QUEUE_IDLE_SECS"))
            .transpose()?
            .unwrap_or(10),
        seed: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--max-jobs" => args.max_jobs = Some(number(&value()?, "--max-jobs")?),
            "--idle-secs" => args.idle_secs = number(&value()?, "--idle-secs")?,
            "--seed" => args.seed = true,
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown option {flag}; usage: async_worker [URL] [--max-jobs N] [--idle-secs S] [--seed]"
                ));
            }
            _ => args.url = arg,
        }
    }
    Ok(args)
}

/// The work itself: a typed result, or a [`Failure`] saying whether to retry.
async fn render(job: &Job<Thumbnail>) -> Result<Rendered, Failure> {
    let Thumbnail { image, width } = &job.payload;
    if *width == 0 {
        // No retry can fix this: straight to the dead letters.
        return Err(Failure::permanent(format!(
            "{image}: width must be positive"
        )));
    }
    if image.starts_with("flaky") && job.attempts < 2 {
        // Worth another try, soon (instead of the job's exponential back-off).
        return Err(Failure::new("image store busy").retry_in(Duration::from_secs(1)));
    }
    // Pretend to work; give up early if the job is cancelled meanwhile (the
    // worker learns that from a heartbeat).
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
        () = job.lease_lost() => return Err(Failure::new("lease lost")),
    }
    let stem = image
        .rsplit_once('.')
        .map_or(image.as_str(), |(stem, _)| stem);
    Ok(Rendered {
        path: format!("thumbs/{stem}-{width}w.png"),
        bytes: u64::from(*width) * u64::from(*width) / 8,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let args = parse_args()?;
    let client = Client::connect_with(&args.url, support::options())?;
    client.health().await?;
    let thumbnails = client.queue::<Thumbnail>("thumbnails");

    if args.seed {
        let seeded = thumbnails
            .enqueue_batch(&[
                Thumbnail {
                    image: "cat.png".into(),
                    width: 64,
                },
                Thumbnail {
                    image: "flaky-fox.png".into(),
                    width: 32,
                },
                Thumbnail {
                    image: "broken.png".into(),
                    width: 0,
                },
                Thumbnail {
                    image: "dog.png".into(),
                    width: 128,
                },
            ])
            .await?;
        println!("seeded {} jobs", seeded.len());
    }

    let worker = Worker::new(client.clone(), "thumbnails")
        .concurrency(4)
        .name("async-worker-example")
        // Short long-polls, so that a shutdown does not wait long for the
        // lease request in flight.
        .poll_wait(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_secs(10));
    let stop = worker.shutdown_handle();

    // Jobs handled so far, and when the last one started or ended (ms since
    // `started`), for the two self-imposed stops.
    let started = Instant::now();
    let handled = Arc::new(AtomicU64::new(0));
    let last_activity = Arc::new(AtomicU64::new(0));
    let elapsed_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let handler = {
        let (handled, last_activity, stop) = (handled.clone(), last_activity.clone(), stop.clone());
        let max_jobs = args.max_jobs;
        move |job: Job<Thumbnail>| {
            let (handled, last_activity, stop) =
                (handled.clone(), last_activity.clone(), stop.clone());
            async move {
                last_activity.store(elapsed_ms(), Ordering::Relaxed);
                let outcome = render(&job).await;
                match &outcome {
                    Ok(rendered) => println!(
                        "job {} (attempt {}): {} -> {}",
                        job.id, job.attempts, job.payload.image, rendered.path
                    ),
                    Err(failure) => println!(
                        "job {} (attempt {}): {} failed: {failure} ({})",
                        job.id,
                        job.attempts,
                        job.payload.image,
                        if failure.is_retryable() {
                            "will be retried"
                        } else {
                            "permanent"
                        }
                    ),
                }
                last_activity.store(elapsed_ms(), Ordering::Relaxed);
                let count = handled.fetch_add(1, Ordering::Relaxed) + 1;
                if max_jobs.is_some_and(|max| count >= max) && !stop.is_shutdown() {
                    println!("handled {count} jobs; stopping");
                    stop.shutdown();
                }
                outcome
            }
        }
    };

    if args.idle_secs > 0 {
        let (stop, idle_ms) = (stop.clone(), args.idle_secs.saturating_mul(1000));
        let last_activity = last_activity.clone();
        tokio::spawn(async move {
            while !stop.is_shutdown() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if elapsed_ms().saturating_sub(last_activity.load(Ordering::Relaxed)) >= idle_ms {
                    println!("no job for {} s; stopping", idle_ms / 1000);
                    stop.shutdown();
                }
            }
        });
    }

    println!(
        "working queue thumbnails at {} (Ctrl-C to stop{}{})",
        args.url,
        args.max_jobs
            .map_or(String::new(), |n| format!(", or after {n} jobs")),
        match args.idle_secs {
            0 => String::new(),
            s => format!(", or after {s} s idle"),
        }
    );
    let ctrl_c = async {
        // Should no handler be installable, never fire: the other stops work.
        match tokio::signal::ctrl_c().await {
            Ok(()) => println!("Ctrl-C; stopping"),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let report = worker.run_until(handler, ctrl_c).await?;
    println!(
        "worker stopped: {} completed, {} failed, {} released, {} lease lost, {} unreported",
        report.completed, report.failed, report.released, report.lease_lost, report.unreported
    );

    // Admin calls: the queue's counts and its oldest dead letters.
    let stats = thumbnails.stats().await?;
    println!(
        "queue thumbnails: {} ready, {} scheduled, {} completed, {} dead",
        stats.ready, stats.scheduled, stats.completed, stats.dead
    );
    let dead = thumbnails.dead_letters(None, 5).await?;
    for job in &dead.jobs {
        println!(
            "dead letter {}: {} ({})",
            job.id,
            job.payload.image,
            job.last_error.as_deref().unwrap_or("no error text")
        );
    }
    Ok(())
}
