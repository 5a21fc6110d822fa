//! A small keep-alive HTTP client that speaks the API's JSON directly (no
//! SDK), for the tests that kill the binary under their clients.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A reply, with the body parsed as JSON when it is JSON.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
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
    lenient: bool,
}

impl Client {
    /// A client of `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            lenient: false,
        }
    }

    /// A client for a server that may die: transport failures come back as
    /// status 0 instead of failing the test.
    pub fn lenient(addr: SocketAddr) -> Client {
        Client {
            lenient: true,
            ..Client::new(addr)
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
        let failed = || Reply {
            status: 0,
            json: Value::Null,
            text: String::new(),
        };
        let response =
            match tokio::time::timeout(Duration::from_secs(90), self.inner.request(request))
                .await
                .expect("reply within 90 s")
            {
                Ok(response) => response,
                Err(_) if self.lenient => return failed(),
                Err(e) => panic!("request failed: {e}"),
            };
        let status = response.status().as_u16();
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) if self.lenient => return failed(),
            Err(e) => panic!("reading the body failed: {e}"),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(&body.to_string()), &[]).await
    }

    /// GETs.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    /// The job `id`.
    pub async fn job(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(reply.status, 200, "get: {}", reply.text);
        reply.json
    }
}
