//! A real server on 127.0.0.1:0 and a small HTTP client for the tests.
//!
//! A server runs on a [`Store`] of either [`Backend`]: the tests that are
//! not about the embedded store's files take the backend as a parameter and
//! are listed in their file's `backend_tests!`, which runs each of them as
//! `sled::name` and `postgres::name`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use queue_core::{Config, Queue};
use queue_server::{App, ServerConfig, run};
use serde_json::Value;
pub use test_support::{Backend, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this process.
pub struct TestServer {
    /// Its address.
    pub addr: SocketAddr,
    /// The app (for shutdown checks).
    pub app: App,
    /// A client for it.
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), queue_core::Error>>>,
    _store: Option<Store>,
}

impl TestServer {
    /// A server with the defaults on a fresh store of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, ServerConfig::default()).await
    }

    /// A server with `config` on a fresh store of `backend`.
    pub async fn start_with(backend: Backend, config: ServerConfig) -> TestServer {
        let store = tokio::task::spawn_blocking(move || Store::new(backend))
            .await
            .expect("store task");
        let mut server = Self::start_at(&store, config, |c| c).await;
        server._store = Some(store);
        server
    }

    /// A server on `store` (kept by the caller, so that a later server
    /// opens it again), with the store's config adjusted by `core`.
    pub async fn start_at(
        store: &Store,
        config: ServerConfig,
        core: impl FnOnce(Config) -> Config + Send + 'static,
    ) -> TestServer {
        let base = store.config();
        let queue = tokio::task::spawn_blocking(move || Queue::open_with(core(base)))
            .await
            .expect("open task")
            .expect("open queue");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = App::new(queue, config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, app.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            app,
            client: Client::new(addr),
            stop: Some(stop),
            task: Some(task),
            _store: None,
        }
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("clean shutdown");
        }
    }
}

/// A reply, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an error envelope.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// A field of the body as text.
    pub fn str(&self, field: &str) -> String {
        self.json[field].as_str().unwrap_or_default().to_owned()
    }
}

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A client of `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request and reads the whole reply.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .expect("request");
        let response =
            match tokio::time::timeout(Duration::from_secs(90), self.inner.request(request))
                .await
                .expect("reply within 90 s")
            {
                Ok(response) => response,
                Err(e) => panic!("request failed: {e}"),
            };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("reading the body failed: {e}"),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(&body.to_string()), &[]).await
    }

    /// GETs.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    /// DELETEs.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None, &[]).await
    }

    /// Enqueues `payload` on `queue`, expecting 202, returning the job.
    pub async fn enqueue(&self, queue: &str, body: Value) -> Value {
        let reply = self.post(&format!("/v1/queues/{queue}/jobs"), body).await;
        assert_eq!(reply.status, 202, "enqueue: {}", reply.text);
        reply.json
    }

    /// Leases up to `n` jobs of `queue`.
    pub async fn lease(&self, queue: &str, n: u32, lease_ms: u64) -> Vec<Value> {
        let reply = self
            .post(
                &format!("/v1/queues/{queue}/lease"),
                serde_json::json!({"max_jobs": n, "lease_ms": lease_ms}),
            )
            .await;
        assert_eq!(reply.status, 200, "lease: {}", reply.text);
        reply.json["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// The job `id`.
    pub async fn job(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(reply.status, 200, "get: {}", reply.text);
        reply.json
    }
}
