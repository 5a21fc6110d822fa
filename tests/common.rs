//! A queue reachable both ways: a real server on 127.0.0.1:0, or embedded;
//! on either storage backend (sled in a temporary directory, PostgreSQL in a
//! fresh database: the `test-support` crate).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use queue_client::{Client, ClientOptions, RetryPolicy};
use queue_core::Queue;
use queue_server::{App, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

pub use test_support::{Backend, Store};

/// Which transport a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Embedded,
}

/// A queue on a fresh directory, with a server when `Kind::Http`. The server
/// runs on a runtime of its own, so the same harness serves async tests and
/// plain (blocking) ones.
pub struct Harness {
    /// The engine underneath, for checks that do not go through the SDK.
    pub core: Queue,
    /// `http://127.0.0.1:port` when there is a server.
    pub url: Option<String>,
    server: Option<(Runtime, oneshot::Sender<()>)>,
    stopped: Option<Runtime>,
    _store: Store,
}

impl Harness {
    /// A harness on a fresh store of `backend`.
    pub fn new(kind: Kind, backend: Backend) -> Harness {
        Harness::with_config(kind, backend, ServerConfig::default())
    }

    pub fn with_config(kind: Kind, backend: Backend, config: ServerConfig) -> Harness {
        Harness::build(kind, backend, config, "127.0.0.1:0")
    }

    /// A server on a given address (e.g. one a client already points at).
    pub fn http_at(backend: Backend, addr: &str) -> Harness {
        Harness::build(Kind::Http, backend, ServerConfig::default(), addr)
    }

    fn build(kind: Kind, backend: Backend, config: ServerConfig, addr: &str) -> Harness {
        let store = Store::new(backend);
        let core = Queue::open_with(store.config()).expect("open queue");
        let (url, server) = match kind {
            Kind::Embedded => (None, None),
            Kind::Http => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                // Bound here (std) and adopted inside the runtime, so that a
                // harness can be built from async tests too.
                let listener = std::net::TcpListener::bind(addr).expect("bind");
                listener.set_nonblocking(true).expect("nonblocking");
                let addr = listener.local_addr().expect("addr");
                let app = App::new(core.clone(), config);
                let (stop, stopped) = oneshot::channel::<()>();
                runtime.spawn(async move {
                    let listener = TcpListener::from_std(listener).expect("adopt listener");
                    queue_server::run(listener, app, async move {
                        let _ = stopped.await;
                    })
                    .await
                });
                (Some(format!("http://{addr}")), Some((runtime, stop)))
            }
        };
        Harness {
            core,
            url,
            server,
            stopped: None,
            _store: store,
        }
    }

    /// An async client on this queue.
    pub fn client(&self) -> Client {
        self.client_with(ClientOptions::new())
    }

    pub fn client_with(&self, options: ClientOptions) -> Client {
        match &self.url {
            Some(url) => Client::connect_with(url, options).expect("client"),
            None => Client::embedded(self.core.clone()),
        }
    }

    /// A blocking client on this queue.
    pub fn blocking(&self) -> queue_client::blocking::Client {
        match &self.url {
            Some(url) => queue_client::blocking::Client::connect(url).expect("client"),
            None => queue_client::blocking::Client::embedded(self.core.clone()),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((runtime, stop)) = self.server.take() {
            let _ = stop.send(());
            runtime.shutdown_background();
        }
        if let Some(runtime) = self.stopped.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs an async scenario `async fn(Harness)` on both transports and both
/// backends, as four tests named `sled_http`, `sled_embedded`,
/// `postgres_http` and `postgres_embedded` in a module named after the
/// scenario.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::common::{Backend, Harness, Kind};

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sled_http() {
                    super::$name(Harness::new(Kind::Http, Backend::Sled)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sled_embedded() {
                    super::$name(Harness::new(Kind::Embedded, Backend::Sled)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_http() {
                    super::$name(Harness::new(Kind::Http, Backend::Postgres)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_embedded() {
                    super::$name(Harness::new(Kind::Embedded, Backend::Postgres)).await;
                }
            }
        )*
    };
}

/// Runs a blocking scenario `fn(Harness)` on both transports and both
/// backends, outside any runtime (tests named as in [`both!`]).
#[macro_export]
macro_rules! both_blocking {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::common::{Backend, Harness, Kind};

                #[test]
                fn sled_http() {
                    super::$name(Harness::new(Kind::Http, Backend::Sled));
                }

                #[test]
                fn sled_embedded() {
                    super::$name(Harness::new(Kind::Embedded, Backend::Sled));
                }

                #[test]
                fn postgres_http() {
                    super::$name(Harness::new(Kind::Http, Backend::Postgres));
                }

                #[test]
                fn postgres_embedded() {
                    super::$name(Harness::new(Kind::Embedded, Backend::Postgres));
                }
            }
        )*
    };
}

/// Options for tests that must fail fast rather than retry for seconds.
pub fn no_retries() -> ClientOptions {
    ClientOptions::new().retry(RetryPolicy::none())
}

/// A TCP proxy in front of a server that, for the first `drop_first`
/// connections, forwards the request, waits until the server has started
/// answering, and then closes the client's connection without passing the
/// answer on: the request took effect, the response was lost.
pub struct LossyProxy {
    pub url: String,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Responses swallowed so far.
    pub swallowed: Arc<AtomicUsize>,
}

impl LossyProxy {
    pub async fn start(server: &str, drop_first: usize) -> LossyProxy {
        let dropped: Vec<usize> = (0..drop_first).collect();
        LossyProxy::start_dropping(server, &dropped).await
    }

    /// A proxy that loses the answers on the connections numbered in
    /// `dropped` (0-based, in accept order).
    pub async fn start_dropping(server: &str, dropped: &[usize]) -> LossyProxy {
        let dropped = dropped.to_vec();
        let target = server.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let (count, lost) = (Arc::clone(&connections), Arc::clone(&swallowed));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(&target).await else {
                    continue;
                };
                let lost = Arc::clone(&lost);
                let dropped = dropped.clone();
                tokio::spawn(async move {
                    if dropped.contains(&n) {
                        swallow(client, upstream, &lost).await;
                    } else {
                        forward(client, upstream).await;
                    }
                });
            }
        });
        LossyProxy {
            url,
            connections,
            swallowed,
        }
    }
}

async fn swallow(mut client: TcpStream, mut upstream: TcpStream, lost: &AtomicUsize) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut answer = vec![0u8; 1024];
    // Pass the request on (one read is the whole small request here, and
    // whatever else arrives before the answer is passed on too).
    loop {
        tokio::select! {
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if upstream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = upstream.read(&mut answer) => {
                if matches!(read, Ok(n) if n > 0) {
                    lost.fetch_add(1, Ordering::SeqCst);
                }
                // The answer has started: drop both sides without passing it.
                return;
            }
        }
    }
}

async fn forward(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A listener that accepts connections and never answers.
pub async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// A long bound for waits that normally end in milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);
