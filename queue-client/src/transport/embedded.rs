//! The in-process transport: the calls of `queue_core::service::Service`,
//! the very code the server runs behind each route, so that a program gets
//! the same jobs and errors as over HTTP. Only what HTTP itself does
//! (bodies, headers, status lines) is not here.

use std::time::Duration;

use queue_core::Queue;
use queue_core::service::{EventFeed, EventQuery, FeedItem, RequestContext, Service, ServiceError};
use queue_proto::{
    BatchRequest, CompleteRequest, DeadPage, EnqueueRequest, FailRequest, HeartbeatRequest, Job,
    LeaseRequest, QueueStats, ReleaseRequest, RequeueRequest, Schedule, ScheduleRequest,
    SettleRequest,
};

use super::{Brief, Delivery, EventConnection, EventSource, ItemReply, JobView, SettleReply};
use crate::options::millis;
use crate::{Error, Result, StreamItem};

#[derive(Clone)]
pub(crate) struct Embedded {
    service: Service,
}

/// The service's answer as the error a client gets for the same answer over
/// HTTP.
fn map(error: ServiceError) -> Error {
    Error::from_service(error)
}

impl Embedded {
    pub(crate) fn new(queue: Queue) -> Embedded {
        Embedded {
            service: Service::new(queue),
        }
    }

    pub(crate) async fn enqueue<V: JobView>(
        &self,
        queue: &str,
        request: &EnqueueRequest,
        wait: Option<Duration>,
    ) -> Result<(V, bool)> {
        let wait_ms = wait.map_or(0, millis);
        let reply = self
            .service
            .enqueue(queue, request.clone(), &RequestContext::default(), wait_ms)
            .await
            .map_err(map)?;
        Ok((V::of(reply.job), reply.replayed))
    }

    pub(crate) async fn enqueue_batch<V: JobView>(
        &self,
        queue: &str,
        request: &BatchRequest,
    ) -> Result<Vec<V>> {
        let reply = self
            .service
            .enqueue_batch(queue, request.clone(), &RequestContext::default())
            .await
            .map_err(map)?;
        Ok(reply.jobs.into_iter().map(V::of).collect())
    }

    pub(crate) async fn lease(&self, queue: &str, request: &LeaseRequest) -> Result<Vec<Job>> {
        let reply = self
            .service
            .lease(queue, request.clone())
            .await
            .map_err(map)?;
        Ok(reply.jobs)
    }

    pub(crate) async fn lease_until(
        &self,
        queue: &str,
        request: &LeaseRequest,
        cancel: impl Future<Output = ()>,
    ) -> Result<Vec<Job>> {
        let reply = self
            .service
            .lease_until(queue, request.clone(), cancel)
            .await
            .map_err(map)?;
        Ok(reply.jobs)
    }

    pub(crate) async fn settle(
        &self,
        queue: &str,
        request: &SettleRequest,
        _request_id: Option<&str>,
    ) -> Result<SettleReply> {
        // Each settled item's state is all the SDK reads of it.
        let reply = self
            .service
            .settle_until(
                queue,
                request.clone(),
                queue_core::service::Return::Minimal,
                std::future::pending(),
            )
            .await
            .map_err(map)?;
        Ok(SettleReply {
            results: reply
                .results
                .into_iter()
                .map(|item| ItemReply {
                    id: item.id,
                    status: item.status,
                    state: item.state,
                    job: item.job.map(Brief::of),
                    error: item.error,
                })
                .collect(),
            jobs: reply.jobs,
        })
    }

    pub(crate) async fn heartbeat(
        &self,
        id: &str,
        request: &HeartbeatRequest,
        _request_id: Option<&str>,
    ) -> Result<Job> {
        self.service
            .heartbeat(id, request.clone())
            .await
            .map_err(map)
    }

    pub(crate) async fn complete<V: JobView>(
        &self,
        id: &str,
        request: &CompleteRequest,
        _request_id: Option<&str>,
    ) -> Result<V> {
        self.service
            .complete(id, request.clone())
            .await
            .map(V::of)
            .map_err(map)
    }

    pub(crate) async fn fail<V: JobView>(
        &self,
        id: &str,
        request: &FailRequest,
        _request_id: Option<&str>,
    ) -> Result<V> {
        self.service
            .fail(id, request.clone())
            .await
            .map(V::of)
            .map_err(map)
    }

    pub(crate) async fn release<V: JobView>(
        &self,
        id: &str,
        request: &ReleaseRequest,
        _request_id: Option<&str>,
    ) -> Result<V> {
        self.service
            .release(id, request.clone())
            .await
            .map(V::of)
            .map_err(map)
    }

    pub(crate) async fn get<V: JobView>(&self, id: &str, wait: Option<Duration>) -> Result<V> {
        let wait_ms = wait.map_or(0, millis);
        self.service.get(id, wait_ms).await.map(V::of).map_err(map)
    }

    pub(crate) async fn cancel<V: JobView>(&self, id: &str) -> Result<V> {
        self.service.cancel(id).await.map(V::of).map_err(map)
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.service.stats(queue).await.map_err(map)
    }

    pub(crate) async fn history(
        &self,
        queue: &str,
        query: &queue_proto::HistoryQuery,
    ) -> Result<queue_proto::History> {
        self.service
            .history(queue, query.from, query.to, query.step_ms())
            .await
            .map_err(map)
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        Ok(self.service.queues().await.map_err(map)?.queues)
    }

    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        self.service.set_paused(queue, paused).await.map_err(map)
    }

    pub(crate) async fn patch_queue(
        &self,
        queue: &str,
        request: &queue_proto::PatchQueueRequest,
    ) -> Result<QueueStats> {
        self.service.patch_queue(queue, request).await.map_err(map)
    }

    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        self.service
            .dead_letters(queue, after, Some(u64::from(limit)))
            .await
            .map_err(map)
    }

    pub(crate) async fn jobs(
        &self,
        queue: &str,
        state: queue_proto::JobState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        self.service
            .jobs(queue, Some(state.as_str()), after, Some(u64::from(limit)))
            .await
            .map_err(map)
    }

    pub(crate) async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        self.service
            .jobs_by_correlation(Some(correlation_id), after, Some(u64::from(limit)))
            .await
            .map_err(map)
    }

    pub(crate) async fn requeue_dead(&self, queue: &str, request: &RequeueRequest) -> Result<u64> {
        let reply = self
            .service
            .requeue_dead(queue, request.clone())
            .await
            .map_err(map)?;
        Ok(reply.requeued)
    }

    pub(crate) async fn purge_dead(&self, queue: &str) -> Result<u64> {
        Ok(self.service.purge_dead(queue).await.map_err(map)?.deleted)
    }

    pub(crate) async fn put_schedule(
        &self,
        name: &str,
        request: &ScheduleRequest,
    ) -> Result<(Schedule, bool)> {
        self.service
            .put_schedule(name, request.clone())
            .await
            .map_err(map)
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self.service.schedules().await.map_err(map)?.schedules)
    }

    pub(crate) async fn schedule(&self, name: &str) -> Result<Schedule> {
        self.service.schedule(name).await.map_err(map)
    }

    pub(crate) async fn delete_schedule(&self, name: &str) -> Result<Schedule> {
        self.service.delete_schedule(name).await.map_err(map)
    }

    pub(crate) async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Schedule> {
        self.service
            .set_schedule_paused(name, paused)
            .await
            .map_err(map)
    }

    pub(crate) async fn trigger_schedule<V: JobView>(&self, name: &str) -> Result<V> {
        self.service
            .trigger_schedule(name, &RequestContext::default())
            .await
            .map(V::of)
            .map_err(map)
    }

    pub(crate) async fn callbacks(
        &self,
        state: queue_proto::CallbackState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        self.service
            .callbacks(Some(state.as_str()), after, Some(u64::from(limit)))
            .await
            .map_err(map)
    }

    pub(crate) async fn retry_callback<V: JobView>(&self, id: &str) -> Result<V> {
        self.service
            .retry_callback(id)
            .await
            .map(V::of)
            .map_err(map)
    }

    /// The service's event feed: what the server streams, from the same
    /// durable log and with the same filters.
    pub(crate) async fn open_events(
        &self,
        source: &EventSource,
        after: Option<u64>,
    ) -> Result<EventConnection> {
        let feed = match source {
            EventSource::Filter(filter) => self.service.events(EventQuery {
                queues: filter.queues.clone(),
                job: filter.job.as_ref().map(|id| id.as_str().to_owned()),
                types: filter.types.iter().map(|t| t.as_str().to_owned()).collect(),
                after,
            }),
            EventSource::Job(id) => self.service.job_events(id.as_str(), after).await,
        }
        .map_err(map)?;
        Ok(EventConnection::Embedded(Box::new(feed)))
    }

    pub(crate) async fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// The next item of an in-process feed.
pub(crate) async fn next_delivery(feed: &mut EventFeed) -> Option<Delivery> {
    let item = match feed.next().await? {
        FeedItem::Event(event) => StreamItem::Event(event),
        FeedItem::Gap(gap) => StreamItem::Gap(gap),
    };
    Some(Delivery {
        id: None,
        item: Some(Ok(item)),
    })
}
