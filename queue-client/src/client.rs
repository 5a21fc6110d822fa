//! The async client: connection and admin calls.

use std::future::Future;
use std::sync::Arc;

use queue_proto::{History, HistoryQuery, JobState, QueueStats, RequeueRequest};
use serde::de::DeserializeOwned;

use crate::job::{DeadPage, JobPage};
use crate::transport::{Http, Transport};
use crate::{ClientOptions, Job, JobId, Limits, Result, RetryPolicy};

/// A handle on a queue server, or on an embedded queue: cheap to clone,
/// `Send + Sync`, and shareable by any number of tasks.
///
/// All calls are async and need a tokio runtime; see
/// [`blocking::Client`](crate::blocking::Client) for the same API without
/// one.
///
/// ```no_run
/// use queue_client::Client;
/// # async fn run() -> queue_client::Result<()> {
/// let client = Client::connect("http://127.0.0.1:7878")?;
/// let emails = client.queue::<String>("emails");
/// let job = emails.enqueue(&"hello".to_owned()).await?;
/// println!("enqueued {}", job.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) transport: Transport,
    pub(crate) retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.inner.transport {
            Transport::Http(_) => "http",
            #[cfg(feature = "embedded")]
            Transport::Embedded(_) => "embedded",
        };
        f.debug_struct("Client")
            .field("transport", &transport)
            .finish()
    }
}

impl Client {
    /// A client for the server at `url` (`http://host:port`, optionally with
    /// a path prefix), with the default [`ClientOptions`]. Connections are
    /// opened on first use and pooled.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`](crate::Error::InvalidUrl) when the URL is not a plain `http://` URL.
    pub fn connect(url: &str) -> Result<Client> {
        Client::connect_with(url, ClientOptions::default())
    }

    /// A client for the server at `url` with `options` (token, time-outs,
    /// pool, retries).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`](crate::Error::InvalidUrl) for a bad URL; [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a
    /// token that is not visible ASCII.
    pub fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        let transport = Transport::Http(Box::new(Http::new(url, &options)?));
        Ok(Client::with_transport(transport, options.retry))
    }

    /// A client on a queue opened in this process: the same API with no
    /// server and no sockets, answering with the same jobs and errors as the
    /// server would. Moving to a server later changes only this line.
    ///
    /// Needs the `embedded` cargo feature.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let client = queue_client::Client::embedded(queue_core::Queue::open(dir.path())?);
    /// let job = client.queue::<u32>("numbers").enqueue(&7).await?;
    /// assert_eq!(job.status().await?, queue_client::JobState::Ready);
    /// # Ok(()) }
    /// ```
    ///
    /// Opening the queue fails with a `queue_core::Error`, which `?` turns
    /// into this crate's [`Error`](crate::Error) (see its `From` impl).
    #[cfg(feature = "embedded")]
    #[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
    pub fn embedded(queue: queue_core::Queue) -> Client {
        let transport = Transport::Embedded(crate::transport::Embedded::new(queue));
        // In-process calls do not fail transiently; nothing to retry.
        Client::with_transport(transport, RetryPolicy::none())
    }

    /// The same client with connections of its own: connections belong to
    /// the runtime that opened them, so each runtime needs its own.
    pub(crate) fn fresh(&self) -> Client {
        let transport = match &self.inner.transport {
            Transport::Http(http) => Transport::Http(Box::new(http.fresh())),
            #[cfg(feature = "embedded")]
            Transport::Embedded(embedded) => Transport::Embedded(embedded.clone()),
        };
        Client::with_transport(transport, self.inner.retry)
    }

    fn with_transport(transport: Transport, retry: RetryPolicy) -> Client {
        Client {
            inner: Arc::new(Inner { transport, retry }),
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Runs `call` and, while it fails transiently, again after the policy's
    /// back-off. Only for calls that are safe to repeat.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = self.inner.retry;
        let mut attempt = 0;
        loop {
            match call(attempt).await {
                Err(e) if e.is_transient() && attempt < policy.retries => {
                    tracing::debug!(error = %e, attempt, "retrying after a transient failure");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Checks that the server answers (`GET /healthz`). Always `Ok` for an
    /// embedded queue. It needs no token, so it does not check one: any
    /// other call (e.g. [`Client::queues`]) answers
    /// [`Error::Unauthorized`](crate::Error::Unauthorized) for a wrong one.
    ///
    /// # Errors
    /// [`Error::Transport`](crate::Error::Transport) or [`Error::Timeout`](crate::Error::Timeout) when the server does not
    /// answer.
    pub async fn health(&self) -> Result<()> {
        self.transport().health().await
    }

    /// The counts of one queue (zeros for a queue that has never had a job).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name; transport errors.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.retrying(|_| self.transport().stats(queue)).await
    }

    /// The per-minute history of `queue` merged to the steps `query` asks
    /// for (`HistoryQuery::default()`: the last hour in one-minute steps):
    /// one point per step, from the step holding `from` to the one holding
    /// `to`, steps without activity included (zero counts, `None`
    /// percentiles, depths carried forward). An unknown queue reads as
    /// zeros. See `GET /v1/queues/{queue}/history` in docs/HTTP.md.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad
    /// name, a step that is not a positive whole number of minutes, `from`
    /// after `to`, or a range of more than 10080 steps; transport errors.
    pub async fn history(&self, queue: &str, query: &HistoryQuery) -> Result<History> {
        self.retrying(|_| self.transport().history(queue, query))
            .await
    }

    /// The counts of every known queue, by name.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn queues(&self) -> Result<Vec<QueueStats>> {
        self.retrying(|_| self.transport().queues()).await
    }

    /// Stops leasing from `queue` (enqueues still work; leased jobs run on).
    /// Durable on return. Returns the queue's counts.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name; transport errors.
    pub async fn pause(&self, queue: &str) -> Result<QueueStats> {
        self.retrying(|_| self.transport().set_paused(queue, true))
            .await
    }

    /// Resumes leasing from `queue`. Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name; transport errors.
    pub async fn resume(&self, queue: &str) -> Result<QueueStats> {
        self.retrying(|_| self.transport().set_paused(queue, false))
            .await
    }

    /// Changes the limits (and, if the change says so, the paused flag)
    /// of `queue`; limits the change does not mention keep their values.
    /// Limits hold across every worker; a waiting lease wakes when capacity
    /// frees up. Durable on return. Returns the queue's counts and limits
    /// ([`QueueStats::limits`]).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) naming the
    /// field for a bad name or a limit out of bounds (nothing changes);
    /// transport errors.
    pub async fn set_limits(&self, queue: &str, limits: &Limits) -> Result<QueueStats> {
        self.retrying(|_| self.transport().patch_queue(queue, limits.as_request()))
            .await
    }

    /// One page of `queue`'s dead letters, oldest first: at most `limit`
    /// (1..=1000) jobs after the job `after`. Payloads are shown as JSON
    /// values; [`TypedQueue::dead_letters`](crate::TypedQueue::dead_letters)
    /// decodes them.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name, limit or `after`.
    pub async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<DeadPage<serde_json::Value>> {
        self.dead_page(queue, after, limit).await
    }

    pub(crate) async fn dead_page<T: DeserializeOwned>(
        &self,
        queue: &str,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<DeadPage<T>> {
        let after = after.map(JobId::as_str);
        let page = self
            .retrying(|_| self.transport().dead_letters(queue, after, limit))
            .await?;
        typed_page(page)
    }

    /// One page of `queue`'s jobs in `state`, oldest first (ids increase
    /// with creation): at most `limit` (1..=1000) jobs after the job
    /// `after`; pass the page's `next` as `after` for the next one. An
    /// unknown queue gives an empty page. Payloads are shown as JSON
    /// values; [`TypedQueue::jobs`](crate::TypedQueue::jobs) decodes them.
    ///
    /// Paging is complete and stable: a job that stays in `state` while
    /// you page is listed exactly once, whatever else happens meanwhile; a
    /// job that leaves `state` before its page is read is not listed, and
    /// every job listed was in `state` when its page was read. A page may
    /// hold fewer than `limit` jobs (even none) and still have a `next`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad
    /// name, limit or `after`; transport errors.
    pub async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        self.jobs_page(queue, state, after, limit).await
    }

    pub(crate) async fn jobs_page<T: DeserializeOwned>(
        &self,
        queue: &str,
        state: JobState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<T>> {
        let after = after.map(JobId::as_str);
        let page = self
            .retrying(|_| self.transport().jobs(queue, state, after, limit))
            .await?;
        typed_page(page)
    }

    /// One page of every stored job whose correlation id is
    /// `correlation_id` (the enqueue's `correlation_id`, else the request
    /// id of its enqueue), in any queue and state, oldest first: at most
    /// `limit` (1..=1000) jobs after the job `after`. Paging behaves as in
    /// [`Client::jobs`].
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a
    /// correlation id that is not 1..=128 visible ASCII characters, a bad
    /// limit or `after`; transport errors.
    pub async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        let after = after.map(JobId::as_str);
        let page = self
            .retrying(|_| {
                self.transport()
                    .jobs_by_correlation(correlation_id, after, limit)
            })
            .await?;
        typed_page(page)
    }

    /// Requeues dead jobs of `queue`: those in `ids` (ids that are not dead
    /// jobs of this queue are skipped), or every one with `None`. They are
    /// `ready` at once with `attempts` 0. Returns how many. Durable on
    /// return. Not retried: a lost answer would not say how many.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name or more than 1000 ids.
    pub async fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        let request = RequeueRequest {
            ids: ids.map(|ids| ids.iter().map(|id| id.as_str().to_owned()).collect()),
        };
        self.transport().requeue_dead(queue, &request).await
    }

    /// Settles many leased jobs of `queue` and, once that is durable,
    /// leases the next ones, in one request: see
    /// [`TypedQueue::settle`](crate::TypedQueue::settle), whose leased
    /// payloads are typed; here they are JSON values.
    ///
    /// # Errors
    /// As [`TypedQueue::settle`](crate::TypedQueue::settle), and
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name.
    pub async fn settle(
        &self,
        queue: &str,
        request: crate::SettleRequest,
    ) -> Result<crate::Settled<crate::Leased<serde_json::Value>>> {
        self.queue::<serde_json::Value>(queue).settle(request).await
    }

    /// Deletes every dead job of `queue`; returns how many. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a bad name; transport errors.
    pub async fn purge_dead(&self, queue: &str) -> Result<u64> {
        self.transport().purge_dead(queue).await
    }
}

/// A page from the wire, its payloads decoded as `T`.
fn typed_page<T: DeserializeOwned>(page: queue_proto::JobPage) -> Result<JobPage<T>> {
    Ok(JobPage {
        jobs: page
            .jobs
            .into_iter()
            .map(Job::from_wire)
            .collect::<Result<_>>()?,
        next: page.next.map(JobId::from),
    })
}
