//! Callback delivery: the dispatcher that POSTs a finished job to its
//! `callback_url`, signed as Standard Webhooks says.
//!
//! The delivery owed is stored with the job in the commit that finished
//! it; the dispatcher claims due attempts from the store (each claim is
//! durable, and given up as lost if it is never settled), makes them with a
//! bound on how many run at once, and settles each with the receiver's
//! answer. Nothing about a receiver can hold up the queue: attempts run on
//! their own tasks with a timeout, and what waits for a free slot waits in
//! the store, not in memory. A restart first makes the attempts the
//! previous process left under way due again: delivery is at least once.

mod attempt;
pub mod secrets;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::service::CallbackHosts;
use queue_core::{CallbackStatus, DeliveryResult, Queue};
use queue_proto::webhooks::Secret;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub(crate) use self::attempt::Sender;

/// How callbacks are delivered.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// The signing secrets: each delivery carries one signature per
    /// secret (the first is the current one). With none, deliveries carry
    /// no `webhook-signature` (the binary always has one: configured, or
    /// generated and stored, see [`secrets`]).
    pub secrets: Vec<Secret>,
    /// How long one attempt may take, connection to answer. Default 10 s.
    pub timeout: Duration,
    /// Attempts under way at once. Default 32.
    pub concurrency: usize,
    /// Where callbacks may go. Default: anywhere.
    pub hosts: CallbackHosts,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            secrets: Vec::new(),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            hosts: CallbackHosts::Any,
        }
    }
}

/// How long a claimed attempt may stay unsettled, beyond its timeout,
/// before another claim may take it (settling is a store write).
const SETTLE_MARGIN: Duration = Duration::from_secs(60);

/// How long the dispatcher waits after a store error before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// What became of one callback attempt, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackOutcome {
    /// Answered with a 2xx: the delivery is done.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retried,
    /// The delivery is given up: `410 Gone`, or the last attempt failed.
    Failed,
    /// Its result came after the attempt had been given up as lost (and
    /// made again).
    Stale,
}

impl CallbackOutcome {
    /// Every outcome, in the order `/metrics` lists them.
    pub const ALL: [CallbackOutcome; 4] = [
        CallbackOutcome::Delivered,
        CallbackOutcome::Retried,
        CallbackOutcome::Failed,
        CallbackOutcome::Stale,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Delivered => "delivered",
            CallbackOutcome::Retried => "retried",
            CallbackOutcome::Failed => "failed",
            CallbackOutcome::Stale => "stale",
        }
    }

    fn index(self) -> usize {
        match self {
            CallbackOutcome::Delivered => 0,
            CallbackOutcome::Retried => 1,
            CallbackOutcome::Failed => 2,
            CallbackOutcome::Stale => 3,
        }
    }
}

/// One queue's callback attempts, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallbackCounts([u64; 4]);

impl CallbackCounts {
    /// The attempts that ended with `outcome`.
    pub fn get(&self, outcome: CallbackOutcome) -> u64 {
        self.0[outcome.index()]
    }
}

/// Callback outcomes, for `/metrics`.
#[derive(Debug)]
pub struct CallbackMetrics {
    /// Attempts by queue and outcome (a queue appears with its first
    /// settled attempt).
    outcomes: Mutex<BTreeMap<String, CallbackCounts>>,
    /// Attempts under way.
    pub in_flight: AtomicU64,
    /// Attempts settled (recorded) so far, as a watch: wait on it to know
    /// an attempt's outcome is in the store.
    settled: watch::Sender<u64>,
}

impl Default for CallbackMetrics {
    fn default() -> Self {
        CallbackMetrics {
            outcomes: Mutex::new(BTreeMap::new()),
            in_flight: AtomicU64::new(0),
            settled: watch::Sender::new(0),
        }
    }
}

impl CallbackMetrics {
    /// How many attempts have been settled, as a watch.
    pub fn settled(&self) -> watch::Receiver<u64> {
        self.settled.subscribe()
    }

    /// Each queue's attempts by outcome, since the server started.
    pub fn by_queue(&self) -> BTreeMap<String, CallbackCounts> {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one attempt of a job of `queue`.
    fn count(&self, queue: &str, outcome: CallbackOutcome) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: no allocation once the queue is known.
        match outcomes.get_mut(queue) {
            Some(counts) => counts.0[outcome.index()] += 1,
            None => {
                let mut counts = CallbackCounts::default();
                counts.0[outcome.index()] = 1;
                outcomes.insert(queue.to_owned(), counts);
            }
        }
    }
}

/// Runs the dispatcher until `stop` turns true, then waits up to `grace`
/// for the attempts under way (those it cuts short are made again at the
/// next start).
pub(crate) async fn run(
    queue: Queue,
    sender: Sender,
    config: CallbackConfig,
    metrics: Arc<CallbackMetrics>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let concurrency = config.concurrency.max(1);
    let lost_after = config.timeout + SETTLE_MARGIN;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut attempts = JoinSet::new();
    let clock = queue.clock();
    match queue.recover_callbacks().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            attempts = n,
            "callback attempts left under way are due again"
        ),
        Err(e) => tracing::error!(error = %e, "could not recover callback attempts"),
    }
    if config.secrets.is_empty() {
        tracing::warn!("no webhook secret configured: callbacks are sent unsigned");
    }
    loop {
        if *stop.borrow() {
            break;
        }
        while attempts.try_join_next().is_some() {}
        // Wait for a free slot: what is due waits in the store meanwhile.
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = attempts.join_next() => continue,
            }
        }
        // Armed before the claim, so a change after it is not missed.
        let changed = queue.callbacks_changed();
        let claimed = match queue.claim_callbacks(free, lost_after).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "claiming callback attempts failed");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(ERROR_BACKOFF) => continue,
                }
            }
        };
        let full = claimed.len() >= free;
        for job in claimed {
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                break;
            };
            let queue = queue.clone();
            let sender = sender.clone();
            let metrics = Arc::clone(&metrics);
            let clock = Arc::clone(&clock);
            attempts.spawn(async move {
                metrics.in_flight.fetch_add(1, Ordering::Relaxed);
                deliver(&queue, &sender, &metrics, clock.now_ms(), job).await;
                metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
        }
        if full {
            // More may be due: claim again once a slot frees.
            continue;
        }
        let next_due = match queue.next_callback_due().await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "reading the next callback time failed");
                Some(clock.now_ms().saturating_add(1000))
            }
        };
        let wait = next_due.and_then(|at| clock.sleep_hint(at));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = changed => {}
            () = sleep_for(wait) => {}
        }
    }
    // Let the attempts under way finish, within the grace period.
    let drained = async { while attempts.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            "callback attempts still under way at shutdown; they are made again at the next start"
        );
        attempts.abort_all();
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Makes one claimed attempt and settles it.
async fn deliver(
    queue: &Queue,
    sender: &Sender,
    metrics: &CallbackMetrics,
    now_ms: u64,
    job: queue_core::Job,
) {
    let Some(callback) = job.callback.clone() else {
        return;
    };
    let sent = sender.send(&job, now_ms).await;
    let settled = queue
        .settle_callback(job.id, callback.delivery, callback.attempts, &sent.result)
        .await;
    let span = tracing::info_span!(
        "callback",
        job_id = %job.id,
        queue = %job.queue,
        correlation_id = job.correlation_id.as_deref().unwrap_or(""),
        webhook_id = %sent.webhook_id,
        attempt = callback.attempts,
    );
    let _entered = span.enter();
    match settled {
        Ok(settled) => {
            let status = settled.callback.as_ref().map(|c| c.status);
            match (&sent.result, status) {
                (DeliveryResult::Delivered { status }, _) => {
                    metrics.count(&job.queue, CallbackOutcome::Delivered);
                    tracing::info!(status, "callback delivered");
                }
                (result, Some(CallbackStatus::Failed)) => {
                    metrics.count(&job.queue, CallbackOutcome::Failed);
                    tracing::warn!(result = ?result, "callback failed for good");
                }
                (
                    DeliveryResult::Retry {
                        status,
                        error,
                        retry_after_ms,
                    },
                    _,
                ) => {
                    metrics.count(&job.queue, CallbackOutcome::Retried);
                    let next_attempt_at = settled.callback.as_ref().and_then(|c| c.next_attempt_at);
                    tracing::warn!(
                        status = status.unwrap_or(0),
                        error = %error,
                        retry_after_ms = retry_after_ms.unwrap_or(0),
                        next_attempt_at = next_attempt_at.unwrap_or(0),
                        "callback attempt failed; retrying"
                    );
                }
                (DeliveryResult::Gone, _) => {
                    metrics.count(&job.queue, CallbackOutcome::Failed);
                    tracing::warn!("callback receiver answered 410 Gone");
                }
            }
        }
        Err(queue_core::Error::LeaseLost { .. } | queue_core::Error::NotFound { .. }) => {
            metrics.count(&job.queue, CallbackOutcome::Stale);
            tracing::debug!("callback attempt settled after it was given up as lost");
        }
        Err(e) => {
            // The claim stays: the attempt is made again when it is lost.
            tracing::error!(error = %e, "recording a callback attempt failed");
        }
    }
    metrics.settled.send_modify(|n| *n += 1);
}
