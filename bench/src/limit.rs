//! The physical limit of a durable enqueue over HTTP on this machine: a
//! minimal hyper server that appends each request's body to one file and
//! answers only once an `fdatasync` covering it has returned. No queue
//! logic, no JSON, no index: what is left is loopback HTTP/1.1, one append
//! and a shared sync. `bench peers` drives it with the same load generator
//! and the same requests as our server's enqueue, so its row is the ceiling
//! the durable server is measured against.
//!
//! **Group commit.** Handlers hand their body to one writer thread and wait
//! for its answer. The writer takes every body waiting when it wakes up,
//! writes them in one `write_all` (each as a little-endian `u32` length and
//! the bytes), calls `fdatasync` once, and answers all of them; bodies that
//! arrive during that sync make up the next batch. This is the classic
//! leader-based group commit, without pipelining (a batch is not written
//! while the previous one syncs), the same shape as our store's.
//!
//! **Answer.** `202` with `{"record":<n>}` (the body's ordinal in the file);
//! `413` for a body over 1 MiB; `500` if the write or the sync failed (every
//! body of that batch gets it).

use std::fs::File;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Largest body accepted.
const MAX_BODY: usize = 1 << 20;

/// What a sync does to the file: `fdatasync` in the benchmark; tests put a
/// gate in front of it.
type SyncFn = Box<dyn FnMut(&File) -> io::Result<()> + Send>;

/// A body waiting for its batch, and where its answer goes.
type Waiting = (Bytes, oneshot::Sender<Result<u64, String>>);

/// The bodies waiting for the writer, and whether it should stop.
#[derive(Default)]
struct Pending {
    bodies: Vec<Waiting>,
    closed: bool,
}

/// What the handlers and the writer share.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled whenever a body is added or the log is closed.
    changed: Condvar,
    /// Records written and synced (answered with success).
    records: AtomicU64,
    /// `fdatasync` calls made.
    syncs: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock leaves plain data behind.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `body` for the next batch and waits for its sync.
    async fn append(&self, body: Bytes) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.lock();
            if pending.closed {
                return Err("the log is closed".to_owned());
            }
            pending.bodies.push((body, tx));
        }
        self.changed.notify_all();
        rx.await
            .unwrap_or_else(|_| Err("the writer stopped".to_owned()))
    }

    /// The writer's loop: one write and one sync per batch, until closed
    /// and drained.
    fn write(&self, mut file: File, mut sync: SyncFn) {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut next_record = 0u64;
        loop {
            let batch = {
                let mut pending = self.lock();
                while pending.bodies.is_empty() && !pending.closed {
                    pending = self
                        .changed
                        .wait(pending)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if pending.bodies.is_empty() {
                    return;
                }
                std::mem::take(&mut pending.bodies)
            };
            buf.clear();
            for (body, _) in &batch {
                // Bodies are at most MAX_BODY, far below u32::MAX.
                buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                buf.extend_from_slice(body);
            }
            let outcome = file.write_all(&buf).and_then(|()| sync(&file));
            self.syncs.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    self.records
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for (_, answer) in batch {
                        let _ = answer.send(Ok(next_record));
                        next_record += 1;
                    }
                }
                Err(e) => {
                    let message = format!("appending to the log: {e}");
                    for (_, answer) in batch {
                        let _ = answer.send(Err(message.clone()));
                    }
                    // A failed write may have left part of the batch in
                    // the file: nothing after it can be trusted.
                    let mut pending = self.lock();
                    pending.closed = true;
                    for (_, answer) in pending.bodies.drain(..) {
                        let _ = answer.send(Err(message.clone()));
                    }
                    return;
                }
            }
        }
    }
}

/// What the log held when the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitStats {
    /// Records read back from the file.
    pub(crate) records: u64,
    /// `fdatasync` calls made.
    pub(crate) syncs: u64,
}

/// The physical-limit server, in-process on `127.0.0.1`.
pub(crate) struct LimitServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    runtime: Runtime,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    writer: std::thread::JoinHandle<()>,
    path: PathBuf,
    /// Removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl LimitServer {
    /// Starts the server with its log in a fresh directory under `parent`,
    /// on a multi-threaded runtime like our server's.
    ///
    /// # Errors
    /// The directory, the file, the runtime or the socket cannot be made.
    pub(crate) fn start(parent: &Path) -> anyhow::Result<LimitServer> {
        LimitServer::start_with(parent, Box::new(File::sync_data))
    }

    fn start_with(parent: &Path, sync: SyncFn) -> anyhow::Result<LimitServer> {
        let dir = tempfile::Builder::new()
            .prefix("peers-limit-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a directory in {}", parent.display()))?;
        let path = dir.path().join("log");
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        // The file's creation is made durable once, so that every later
        // sync only has data to flush (as a store's log set up at start).
        file.sync_all()?;
        File::open(dir.path())?.sync_all()?;
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("limit-writer".to_owned())
                .spawn(move || shared.write(file, sync))
                .context("starting the writer thread")?
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("limit-server")
            .build()
            .context("building the runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = runtime.spawn(accept(listener, Arc::clone(&shared), stopped));
        Ok(LimitServer {
            addr,
            runtime,
            stop,
            serving,
            shared,
            writer,
            path,
            _dir: dir,
        })
    }

    /// Stops accepting, drops the connections, lets the writer finish the
    /// bodies it has, and reads the file back.
    ///
    /// # Errors
    /// The writer failed, or the file does not hold exactly the records
    /// that were answered with success.
    pub(crate) fn stop(self) -> anyhow::Result<LimitStats> {
        let LimitServer {
            runtime,
            stop,
            serving,
            shared,
            writer,
            path,
            _dir,
            ..
        } = self;
        let _ = stop.send(());
        let _ = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await });
        runtime.shutdown_timeout(Duration::from_secs(10));
        shared.lock().closed = true;
        shared.changed.notify_all();
        writer
            .join()
            .map_err(|_| anyhow!("the writer thread panicked"))?;
        let records = count_records(&std::fs::read(&path)?)
            .with_context(|| format!("reading {} back", path.display()))?;
        let answered = shared.records.load(Ordering::Relaxed);
        ensure!(
            records == answered,
            "the log holds {records} records but {answered} were answered"
        );
        Ok(LimitStats {
            records,
            syncs: shared.syncs.load(Ordering::Relaxed),
        })
    }

    /// Bodies waiting for the writer now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.shared.lock().bodies.len()
    }

    /// Waits (at most `limit`) until `count` bodies wait for the writer.
    #[cfg(test)]
    fn wait_pending(&self, count: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut pending = self.shared.lock();
        while pending.bodies.len() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = self
                .shared
                .changed
                .wait_timeout(pending, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// The number of length-prefixed records in `log`.
fn count_records(log: &[u8]) -> anyhow::Result<u64> {
    let mut rest = log;
    let mut records = 0;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            bail!("a torn length prefix after {records} records");
        };
        let len = u32::from_le_bytes(*len) as usize;
        ensure!(tail.len() >= len, "a torn record after {records} records");
        rest = &tail[len..];
        records += 1;
    }
    Ok(records)
}

async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: this is a benchmark
                // server, the load generator will report the failure.
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(handle(request, &shared).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return answer(status, format!(r#"{{"error":"{status}"}}"#));
        }
    };
    match shared.append(body).await {
        Ok(record) => answer(StatusCode::ACCEPTED, format!(r#"{{"record":{record}}}"#)),
        Err(message) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": message }).to_string(),
        ),
    }
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::client::{Connection, request};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn post(addr: SocketAddr, body: Vec<u8>) -> (u16, String) {
        let mut conn = Connection::connect(addr).await.unwrap();
        let req = request("POST", "/v1/queues/peers/jobs", conn.host(), &body);
        let response = conn.send(&req).await.unwrap();
        (response.status, response.body_text(200))
    }

    #[test]
    fn every_answered_body_is_in_the_file() {
        let parent = tempfile::tempdir().unwrap();
        let server = LimitServer::start(parent.path()).unwrap();
        let addr = server.addr;
        runtime().block_on(async {
            let mut conn = Connection::connect(addr).await.unwrap();
            for i in 0..20 {
                let body = format!(r#"{{"payload":{i}}}"#);
                let req = request("POST", "/anything", conn.host(), body.as_bytes());
                let response = conn.send(&req).await.unwrap();
                assert_eq!(response.status, 202, "{}", response.body_text(200));
                assert_eq!(response.body_text(100), format!(r#"{{"record":{i}}}"#));
            }
        });
        let stats = server.stop().unwrap();
        assert_eq!(stats.records, 20);
        // One connection, one request at a time: nothing to share.
        assert_eq!(stats.syncs, 20);
    }

    #[test]
    fn bodies_arriving_during_a_sync_share_the_next_one_and_wait_for_it() {
        let parent = tempfile::tempdir().unwrap();
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let server = LimitServer::start_with(
            parent.path(),
            Box::new(move |file: &File| {
                entered_tx.send(()).unwrap();
                release_rx.recv_timeout(Duration::from_secs(30)).unwrap();
                file.sync_data()
            }),
        )
        .unwrap();
        let addr = server.addr;
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let first = client.spawn(post(addr, b"first".to_vec()));
        entered.recv_timeout(Duration::from_secs(30)).unwrap();
        let others: Vec<_> = (0..10)
            .map(|i| client.spawn(post(addr, format!("other {i}").into_bytes())))
            .collect();
        assert!(server.wait_pending(10, Duration::from_secs(30)));
        // The first body is written but its sync has not returned: no
        // answer yet.
        assert!(!first.is_finished());
        assert_eq!(server.pending(), 10);
        release.send(()).unwrap();
        release.send(()).unwrap();
        let answer = |task: tokio::task::JoinHandle<(u16, String)>| {
            client
                .block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
                .expect("an answer within 30 s")
                .unwrap()
        };
        assert_eq!(answer(first).0, 202);
        for other in others {
            assert_eq!(answer(other).0, 202);
        }
        drop(client);
        let stats = server.stop().unwrap();
        assert_eq!(stats.records, 11);
        assert_eq!(stats.syncs, 2, "the ten bodies shared one sync");
    }

    #[test]
    fn a_failed_sync_answers_500_and_stops_the_log() {
        let parent = tempfile::tempdir().unwrap();
        let server = LimitServer::start_with(
            parent.path(),
            Box::new(|_: &File| Err(io::Error::other("disk on fire"))),
        )
        .unwrap();
        let addr = server.addr;
        runtime().block_on(async {
            let (status, body) = post(addr, b"one".to_vec()).await;
            assert_eq!(status, 500);
            assert!(body.contains("disk on fire"), "{body}");
            let (status, body) = post(addr, b"two".to_vec()).await;
            assert_eq!(status, 500);
            assert!(body.contains("closed"), "{body}");
        });
        // The record is in the file (written, never synced), but was not
        // answered: the read-back check says so.
        let error = server.stop().unwrap_err();
        assert!(
            format!("{error:#}").contains("1 records but 0"),
            "{error:#}"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_refused_and_not_written() {
        let parent = tempfile::tempdir().unwrap();
        let server = LimitServer::start(parent.path()).unwrap();
        let addr = server.addr;
        // Raw, since the server may close the connection without reading
        // the rest of the body.
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = vec![b'x'; MAX_BODY + 1];
        let req = request("POST", "/jobs", &addr.to_string(), &body);
        // The server may stop reading once over the limit; what it answers
        // is what counts.
        let _ = std::io::Write::write_all(&mut stream, &req);
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut stream, &mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 413");
        assert_eq!(server.stop().unwrap().records, 0);
    }

    #[test]
    fn count_records_refuses_a_torn_tail() {
        let mut log = Vec::new();
        for body in [&b"ab"[..], b"", b"xyz"] {
            log.extend_from_slice(&(body.len() as u32).to_le_bytes());
            log.extend_from_slice(body);
        }
        assert_eq!(count_records(&log).unwrap(), 3);
        assert!(count_records(&log[..log.len() - 1]).is_err());
        assert!(count_records(&log[..2]).is_err());
    }
}
