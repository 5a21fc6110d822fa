//! What the scenarios run on: a real server on 127.0.0.1 over a data
//! directory that outlives it (so it can be stopped and started again on
//! the same directory and port), proxies that record or cut connections,
//! and a `tracing` layer that captures the worker's `job` spans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use queue_client::{Client, EventStream, StreamItem};
use queue_core::{Config, Queue};
use queue_server::{App, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};

pub use test_support::{Backend, Store};

/// A long bound for waits that normally end in milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Which transport a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Embedded,
}

/// A store's settings for a scenario: prune quickly (at most `max_events`
/// events kept) and run no timers, so that the test prunes by calling
/// `Queue::run_due` when it wants a gap.
pub fn pruning(store: &Store, max_events: u64) -> Config {
    let mut config = store.config().max_events(max_events);
    config.background_timers = false;
    config
}

/// A `queue-server` on its own runtime, serving the queue at `config`.
pub struct Server {
    /// The engine the server runs on (dropped with the server).
    pub core: Queue,
    pub addr: SocketAddr,
    pub url: String,
    runtime: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    finished: Option<oneshot::Receiver<()>>,
}

impl Server {
    /// A server on a free port.
    pub fn start(config: Config) -> Server {
        Server::start_with(config, ServerConfig::default(), "127.0.0.1:0")
    }

    /// A server on `addr` (e.g. the port of one stopped a moment ago).
    pub fn start_with(config: Config, server: ServerConfig, addr: &str) -> Server {
        let queue = Queue::open_with(config).expect("open the queue");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        // Bound here (std) and adopted inside the runtime, so that a server
        // can be started from async tests and plain ones alike.
        let listener = std::net::TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let app = App::new(queue.clone(), server);
        let (stop, stopped) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("adopt listener");
            let result = queue_server::run(listener, app, async move {
                let _ = stopped.await;
            })
            .await;
            result.expect("the server ran and stopped cleanly");
            let _ = done.send(());
        });
        Server {
            core: queue,
            addr,
            url: format!("http://{addr}"),
            runtime: Some(runtime),
            stop: Some(stop),
            finished: Some(finished),
        }
    }

    fn begin_stop(&mut self) -> oneshot::Receiver<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finished.take().expect("stopped once")
    }

    /// Shuts the server down gracefully (it ends its event streams) and
    /// waits until it has flushed and let go of its queue.
    pub async fn stop(mut self) {
        let finished = self.begin_stop();
        tokio::time::timeout(PATIENCE, finished)
            .await
            .expect("the server stops in time")
            .expect("the server task ended");
    }

    /// [`Server::stop`] for tests without a runtime.
    pub fn stop_blocking(mut self) {
        self.begin_stop()
            .blocking_recv()
            .expect("the server task ended");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A queue reachable both ways: through a server, or embedded.
pub struct Harness {
    /// The engine underneath (the server's, or the embedded client's).
    pub core: Queue,
    pub server: Option<Server>,
    _dir: Store,
}

impl Harness {
    /// A harness on a fresh store of `backend`.
    pub fn new(kind: Kind, backend: Backend) -> Harness {
        let dir = Store::new(backend);
        let config = dir.config();
        Harness::with_config(kind, dir, config)
    }

    /// A harness on `dir` (kept until the harness is dropped), opened with
    /// `config`.
    pub fn with_config(kind: Kind, dir: Store, config: Config) -> Harness {
        match kind {
            Kind::Http => {
                let server = Server::start(config);
                Harness {
                    core: server.core.clone(),
                    server: Some(server),
                    _dir: dir,
                }
            }
            Kind::Embedded => Harness {
                core: Queue::open_with(config).expect("open the queue"),
                server: None,
                _dir: dir,
            },
        }
    }

    /// A harness whose store keeps at most `max_events` events and prunes
    /// only when the test calls `core.run_due()`.
    pub fn pruning(kind: Kind, backend: Backend, max_events: u64) -> Harness {
        let dir = Store::new(backend);
        let config = pruning(&dir, max_events);
        Harness::with_config(kind, dir, config)
    }

    pub fn client(&self) -> Client {
        match &self.server {
            Some(server) => Client::connect(&server.url).expect("client"),
            None => Client::embedded(self.core.clone()),
        }
    }

    pub fn blocking(&self) -> queue_client::blocking::Client {
        match &self.server {
            Some(server) => queue_client::blocking::Client::connect(&server.url).expect("client"),
            None => queue_client::blocking::Client::embedded(self.core.clone()),
        }
    }
}

/// Runs an async scenario `async fn(Kind, Backend)` on both transports and
/// both backends, as four tests named `sled_http`, `sled_embedded`,
/// `postgres_http` and `postgres_embedded` in a module named after the
/// scenario.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::common::{Backend, Kind};

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sled_http() {
                    super::$name(Kind::Http, Backend::Sled).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sled_embedded() {
                    super::$name(Kind::Embedded, Backend::Sled).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_http() {
                    super::$name(Kind::Http, Backend::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_embedded() {
                    super::$name(Kind::Embedded, Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Runs a blocking scenario `fn(Kind, Backend)` on both transports and both
/// backends, outside any runtime (tests named as in [`both!`]).
#[macro_export]
macro_rules! both_blocking {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::common::{Backend, Kind};

                #[test]
                fn sled_http() {
                    super::$name(Kind::Http, Backend::Sled);
                }

                #[test]
                fn sled_embedded() {
                    super::$name(Kind::Embedded, Backend::Sled);
                }

                #[test]
                fn postgres_http() {
                    super::$name(Kind::Http, Backend::Postgres);
                }

                #[test]
                fn postgres_embedded() {
                    super::$name(Kind::Embedded, Backend::Postgres);
                }
            }
        )*
    };
}

/// The next item of a stream, within [`PATIENCE`].
pub async fn next_item(stream: &mut EventStream) -> StreamItem {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an item in time")
        .expect("the stream is open")
        .expect("an item, not an error")
}

/// The next item of a stream, which must be an event.
pub async fn next_event(stream: &mut EventStream) -> queue_client::Event {
    match next_item(stream).await {
        StreamItem::Event(event) => event,
        StreamItem::Gap(gap) => panic!("an event, not {gap:?}"),
    }
}

/// Waits for the end of a stream, within [`PATIENCE`].
pub async fn assert_ends(stream: &mut EventStream) {
    let end = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream ends in time");
    assert!(end.is_none(), "the stream should have ended: {end:?}");
}

// ---- proxies ---------------------------------------------------------------

/// One HTTP request that went through a [`RecordingProxy`].
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
}

/// A TCP proxy in front of a server that records the head of every HTTP
/// request it passes on.
pub struct RecordingProxy {
    pub url: String,
    recorded: watch::Sender<Vec<Recorded>>,
}

impl RecordingProxy {
    pub async fn start(server: &str) -> RecordingProxy {
        let target = server.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let recorded = watch::Sender::new(Vec::new());
        let record = recorded.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(record_connection(client, upstream, record.clone()));
            }
        });
        RecordingProxy { url, recorded }
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.borrow().clone()
    }

    /// Waits (within [`PATIENCE`]) until a recorded request matches.
    pub async fn wait_for(&self, what: &str, matches: impl Fn(&Recorded) -> bool) -> Recorded {
        let mut watch = self.recorded.subscribe();
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(found) = watch.borrow_and_update().iter().find(|r| matches(r)) {
                    return found.clone();
                }
                watch.changed().await.expect("the proxy is running");
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no request {what} within {PATIENCE:?}"))
    }
}

async fn record_connection(
    mut client: TcpStream,
    mut upstream: TcpStream,
    record: watch::Sender<Vec<Recorded>>,
) {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let requests = async {
        let mut parser = RequestParser::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for request in parser.push(&buffer[..n]) {
                record.send_modify(|all| all.push(request));
            }
            if upstream_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let responses = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = responses => {}
    }
}

/// Splits a client's bytes into request heads (bodies are skipped by their
/// `Content-Length`; the SDK sends no chunked requests).
#[derive(Default)]
struct RequestParser {
    buffer: Vec<u8>,
    body_left: usize,
}

impl RequestParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<Recorded> {
        self.buffer.extend_from_slice(bytes);
        let mut found = Vec::new();
        loop {
            if self.body_left > 0 {
                let skip = self.body_left.min(self.buffer.len());
                self.buffer.drain(..skip);
                self.body_left -= skip;
                if self.body_left > 0 {
                    return found;
                }
            }
            let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                return found;
            };
            let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
            self.buffer.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or("").split(' ');
            let method = start.next().unwrap_or("").to_owned();
            let path = start.next().unwrap_or("").to_owned();
            let headers: BTreeMap<String, String> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            self.body_left = headers
                .get("content-length")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            found.push(Recorded {
                method,
                path,
                headers,
            });
        }
    }
}

/// A TCP proxy that cuts every connection after passing on a number of
/// bytes of the server's answer (a different number each time, so that the
/// cut falls anywhere in an event), as a flaky network would.
pub struct CuttingProxy {
    pub url: String,
    connections: Arc<Mutex<usize>>,
}

impl CuttingProxy {
    /// `budget(n)`: how many bytes of the answer connection `n` passes on.
    pub async fn start(server: &str, budget: fn(usize) -> usize) -> CuttingProxy {
        let target = server.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let connections = Arc::new(Mutex::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = {
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    *count - 1
                };
                let Ok(upstream) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(cut_after(client, upstream, budget(n)));
            }
        });
        CuttingProxy { url, connections }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn cut_after(mut client: TcpStream, mut upstream: TcpStream, mut budget: usize) {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let requests = tokio::io::copy(&mut client_read, &mut upstream_write);
    let answers = async {
        let mut buffer = vec![0u8; 4096];
        while budget > 0 {
            let n = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(budget),
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            budget -= n;
        }
    };
    tokio::select! {
        _ = requests => {}
        () = answers => {}
    }
    // Both sides are dropped here: the client sees its connection die
    // wherever the budget ran out.
}

// ---- tracing capture -------------------------------------------------------

/// An event logged inside a worker's `job` span: the span's fields and the
/// event's message.
#[derive(Debug, Clone)]
pub struct InJobSpan {
    pub span: BTreeMap<String, String>,
    pub message: String,
}

static CAPTURED: Mutex<Vec<InJobSpan>> = Mutex::new(Vec::new());

/// Installs (once per test binary) a global subscriber that keeps every
/// event logged inside a span named `job`.
pub fn capture_job_spans() {
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(JobSpans);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
}

/// What was logged inside the `job` span of job `id` of `queue` (job ids
/// repeat across the tests' data directories; queue names do not).
pub fn logged_in_job(queue: &str, id: &str) -> Vec<InJobSpan> {
    let field = |e: &InJobSpan, name: &str| e.span.get(name).cloned().unwrap_or_default();
    CAPTURED
        .lock()
        .unwrap()
        .iter()
        .filter(|e| field(e, "queue") == queue && field(e, "job_id") == id)
        .cloned()
        .collect()
}

struct JobSpans;

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for JobSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(fields) = span.extensions().get::<Fields>() {
                let mut message = Fields::default();
                event.record(&mut message);
                CAPTURED.lock().unwrap().push(InJobSpan {
                    span: fields.0.clone(),
                    message: message.0.get("message").cloned().unwrap_or_default(),
                });
                return;
            }
        }
    }
}
