//! The callback receiver: a hyper 1 HTTP/1.1 server in the bench process,
//! on a runtime and thread of its own, that answers every `POST /hook`
//! with `204 No Content` as soon as it has read the body, and records when
//! each job's callback arrived.
//!
//! Per delivery it parses the job id out of the body
//! (`{"type":"job.completed","data":{"id":…}}`) and notes the arrival
//! [`Instant`], after the whole body is in. The first [`SAMPLE`]
//! deliveries are also kept whole (signature headers and body), so that
//! their signatures can be checked after the run, outside the clock.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Deliveries kept whole for the signature check.
pub const SAMPLE: usize = 100;
/// The name of the receiver's thread (for its CPU time).
pub const THREAD: &str = "push-recv";

/// One delivery as received: what a signature check needs.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The headers that carry the signature: `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// The body, exactly as received.
    pub body: Bytes,
}

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every delivery, in arrival order: job id, arrival.
    pub arrivals: Vec<(u64, Instant)>,
    /// The first [`SAMPLE`] deliveries, whole.
    pub samples: Vec<Delivery>,
    /// Requests that were not a well-formed `job.completed` callback.
    pub bad: Vec<String>,
}

#[derive(Default)]
struct State {
    seen: Seen,
    distinct: HashSet<u64>,
}

/// The body's part the receiver reads.
#[derive(Deserialize)]
struct Callback<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: CallbackJob<'a>,
}

#[derive(Deserialize)]
struct CallbackJob<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// The running receiver.
pub struct Receiver {
    /// Where it listens (`127.0.0.1`, a free port).
    pub addr: SocketAddr,
    runtime: Runtime,
    state: Arc<Mutex<State>>,
    /// Distinct job ids received so far.
    distinct: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Receiver {
    /// Starts the receiver on `127.0.0.1:0`, on a runtime of one worker
    /// thread named [`THREAD`].
    ///
    /// # Errors
    /// The runtime cannot be built or the port bound.
    pub fn start() -> anyhow::Result<Receiver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name(THREAD)
            .build()
            .context("building the receiver's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the receiver to 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (count, distinct) = watch::channel(0usize);
        let count = Arc::new(count);
        let (stop, mut stopped) = watch::channel(false);
        let accept_state = Arc::clone(&state);
        runtime.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (state, count) = (Arc::clone(&accept_state), Arc::clone(&count));
                let service = service_fn(move |request| {
                    let (state, count) = (Arc::clone(&state), Arc::clone(&count));
                    async move { Ok::<_, Infallible>(hook(request, &state, &count).await) }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            runtime,
            state,
            distinct,
            stop,
        })
    }

    /// The URL jobs name as their `callback_url`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Distinct job ids received so far, as a watch (it lives on the
    /// receiver's runtime; wait on it from any runtime).
    pub fn distinct(&self) -> watch::Receiver<usize> {
        self.distinct.clone()
    }

    /// What was received so far (taken: the receiver starts afresh).
    pub fn take(&self) -> Seen {
        std::mem::take(&mut *lock(&self.state)).seen
    }

    /// Stops accepting and drops the runtime (and its connections).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Serves one request: `POST /hook` with a `job.completed` body is 204;
/// anything else is recorded as bad and answered 400.
async fn hook(
    request: Request<Incoming>,
    state: &Mutex<State>,
    count: &watch::Sender<usize>,
) -> Response<Empty<Bytes>> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = status;
        response
    };
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            lock(state).seen.bad.push(format!("reading the body: {e}"));
            return answer(StatusCode::BAD_REQUEST);
        }
    };
    let at = Instant::now();
    let id = if parts.method == Method::POST && parts.uri.path() == "/hook" {
        parse(&body)
    } else {
        Err(anyhow!("{} {}", parts.method, parts.uri))
    };
    let mut guard = lock(state);
    let state = &mut *guard;
    match id {
        Ok(id) => {
            state.seen.arrivals.push((id, at));
            if state.distinct.insert(id) {
                let distinct = state.distinct.len();
                count.send_replace(distinct);
            }
            if state.seen.samples.len() < SAMPLE {
                let headers = parts
                    .headers
                    .iter()
                    .filter(|(name, _)| name.as_str().starts_with("webhook-"))
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                state.seen.samples.push(Delivery { headers, body });
            }
            answer(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            state.seen.bad.push(format!("{e:#}"));
            answer(StatusCode::BAD_REQUEST)
        }
    }
}

/// The job id of a `job.completed` callback body.
fn parse(body: &[u8]) -> anyhow::Result<u64> {
    let callback: Callback<'_> =
        serde_json::from_slice(body).context("the callback body is not a callback")?;
    anyhow::ensure!(
        callback.kind == "job.completed",
        "a callback of type {:?}, expected job.completed",
        callback.kind
    );
    super::job_number(&callback.data.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_bodies_give_their_job() {
        let body = br#"{"type":"job.completed","timestamp":"2026-12-01T10:00:00.000Z","data":{"id":"00000000000000ab","queue":"q","state":"completed"}}"#;
        assert_eq!(parse(body).unwrap(), 0xab);
        assert!(parse(br#"{"type":"job.dead","data":{"id":"00000000000000ab"}}"#).is_err());
        assert!(parse(br#"{"type":"job.completed","data":{"id":"xyz"}}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
