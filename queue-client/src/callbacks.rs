//! Callback deliveries as an operator sees them: the jobs whose delivery
//! is pending, delivered or failed, and a new delivery of a finished job's
//! callback.

use queue_proto::CallbackState;

use crate::job::JobPage;
use crate::{Client, Job, JobId, Result};

impl Client {
    /// One page of the jobs whose callback delivery is in `state`, in any
    /// queue, oldest first: at most `limit` (1..=1000) jobs after the job
    /// `after`. Each job's [`Job::callback`] tells how its delivery is
    /// going (attempts, last status and error, next attempt). Payloads are
    /// shown as JSON values.
    ///
    /// ```no_run
    /// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
    /// use queue_client::CallbackState;
    ///
    /// let mut after = None;
    /// loop {
    ///     let page = client.callbacks(CallbackState::Failed, after.as_ref(), 100).await?;
    ///     for job in &page.jobs {
    ///         client.retry_callback(&job.id).await?;
    ///     }
    ///     match page.next {
    ///         Some(next) => after = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) for a
    /// limit out of range or a malformed `after`; transport errors.
    pub async fn callbacks(
        &self,
        state: CallbackState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        let after = after.map(JobId::as_str);
        let page = self
            .retrying(|_| self.transport().callbacks(state, after, limit))
            .await?;
        Ok(JobPage {
            jobs: page
                .jobs
                .into_iter()
                .map(Job::from_wire)
                .collect::<Result<_>>()?,
            next: page.next.map(JobId::from),
        })
    }

    /// Starts a new delivery of finished job `id`'s callback, now (for a
    /// delivery that `failed`, or one to send again): the job's callback
    /// is `pending` again, due at once, and retried on failure as the
    /// first delivery was. Durable on return: the new
    /// delivery is owed even if the server crashes. Returns the job. Not
    /// retried after a transient failure: a lost answer would not say
    /// whether the delivery was started.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown job;
    /// [`Error::Conflict`](crate::Error::Conflict) when the job has no
    /// callback URL, is not finished, or an attempt of its delivery is
    /// under way.
    pub async fn retry_callback(&self, id: &JobId) -> Result<Job<serde_json::Value>> {
        let job: queue_proto::Job = self.transport().retry_callback(id.as_str()).await?;
        Job::from_wire(job)
    }
}
