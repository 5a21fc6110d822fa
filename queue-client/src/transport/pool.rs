//! A keep-alive connection pool for one server, on hyper's HTTP/1
//! connections.
//!
//! The client talks to exactly one origin, so the pool is a stack of idle
//! connections: no per-request key hashing, URI rewriting or connector
//! machinery (hyper-util's general pool cost the SDK about a quarter of its
//! CPU per call). A connection goes back on the stack only after its
//! response body was read to the end; one whose request failed or was
//! dropped midway is closed.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{BoxError, Error, Result};

type Sender = SendRequest<Full<Bytes>>;

pub(crate) struct Pool {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

/// A connection checked out of the pool, busy with one request.
pub(crate) struct Connection {
    sender: Sender,
}

impl Pool {
    pub(crate) fn new(
        address: String,
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            address,
            connect_timeout,
            max_idle,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An empty pool with the same settings.
    pub(crate) fn fresh(&self) -> Pool {
        Pool::new(
            self.address.clone(),
            self.connect_timeout,
            self.max_idle,
            self.idle_timeout,
        )
    }

    /// Sends `request` on an idle connection, or a new one. A request that a
    /// stale idle connection (closed by the server meanwhile) could not take
    /// is sent again on another: it was never written, so that is safe.
    pub(crate) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Connection, http::Response<Incoming>)> {
        loop {
            let (mut connection, reused) = match self.checkout() {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            if connection.sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Error::Transport("the new connection closed at once".into()));
            }
            match connection.sender.try_send_request(request).await {
                Ok(response) => return Ok((connection, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Error::Transport(Box::new(failed.into_error()))),
                },
            }
        }
    }

    /// Puts a connection whose response body was read to the end back for
    /// reuse (the next user waits for it to be ready, which it is as soon as
    /// its task has seen the end of that body).
    pub(crate) fn put(&self, connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push((connection.sender, Instant::now()));
        }
    }

    fn checkout(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The most recently used is on top; the longest idle at the bottom
        // expire first, so only the bottom needs trimming.
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        while let Some((sender, _)) = idle.pop() {
            if !sender.is_closed() {
                return Some(Connection { sender });
            }
        }
        None
    }

    async fn connect(&self) -> Result<Connection> {
        let timeout = self.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Error::Timeout { after: timeout })?
            .map_err(|e| transport(format!("cannot connect to {}", self.address), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| transport("cannot set TCP_NODELAY".to_owned(), e))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Transport(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
        Ok(Connection { sender })
    }
}

fn transport(context: String, error: std::io::Error) -> Error {
    let error: BoxError = format!("{context}: {error}").into();
    Error::Transport(error)
}
