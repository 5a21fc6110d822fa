//! The receiving end of callbacks: a job enqueued with
//! [`EnqueueOptions::callback_url`](crate::EnqueueOptions::callback_url) is
//! POSTed there when it finishes, as a [`CallbackEvent`] signed the way
//! [Standard Webhooks] says. [`verify`] checks a delivery's signature and
//! timestamp before a receiver trusts it.
//!
//! - The body is `{"type": "job.completed" | "job.dead" | "job.cancelled",
//!   "timestamp": "…", "data": <job>}`: a [`CallbackEvent`].
//! - The headers `webhook-id` (the same on every attempt of one delivery:
//!   use it to drop a repeat), `webhook-timestamp` (unix seconds) and
//!   `webhook-signature` (one `v1,<base64>` per secret the server signs
//!   with, space-separated, so that secrets can be rotated), plus
//!   `X-Request-Id: <correlation id>`.
//! - Delivery is at least once: a receiver answers `2xx` once it has the
//!   outcome (a repeat included), `410 Gone` to stop deliveries to it, and
//!   anything else to have the delivery retried later.
//!
//! [`verify`] is a plain function of the secrets, the headers, the body
//! exactly as received and the time: call it from blocking or async code
//! alike. [`Headers`] is implemented for `http::HeaderMap` (what hyper,
//! axum and reqwest use), for maps of strings and for lists of pairs.
//!
//! # A minimal receiver
//!
//! The handler of `POST /hooks/jobs`, whatever the HTTP library: the
//! secret is the server's (`queue-server --webhook-secret whsec_…`).
//!
//! ```
//! use std::time::SystemTime;
//! use queue_client::webhooks::{self, CallbackEvent, Secret};
//! use queue_client::JobState;
//!
//! /// Answers one delivery with an HTTP status.
//! fn receive(secrets: &[Secret], headers: &http::HeaderMap, body: &[u8]) -> u16 {
//!     if let Err(e) = webhooks::verify(secrets, headers, body, SystemTime::now()) {
//!         eprintln!("refused a callback: {e}");
//!         return 401;
//!     }
//!     let Ok(callback) = serde_json::from_slice::<CallbackEvent>(body) else {
//!         return 400;
//!     };
//!     let job = callback.data;
//!     match job.state {
//!         JobState::Completed => println!("job {} done: {:?}", job.id, job.result),
//!         JobState::Dead => println!("job {} failed: {:?}", job.id, job.last_error),
//!         _ => println!("job {} is {}", job.id, job.state),
//!     }
//!     200
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What the server sends, made here with the same secret.
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let body = br#"{"type":"job.completed","timestamp":"2026-12-01T10:00:00.000Z","data":{
//!     "id":"1","queue":"q","state":"completed","payload":1,"priority":0,"attempts":1,
//!     "max_attempts":5,"backoff_ms":1000,"created_at":0,"updated_at":0,"run_at":0,
//!     "lease_expires_at":null,"idempotency_key":null,"result":2,"last_error":null}}"#;
//! let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as i64;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("webhook-id", "job_1_1".parse()?);
//! headers.insert("webhook-timestamp", now.to_string().parse()?);
//! let signature = webhooks::sign(&[secret.clone()], "job_1_1", now, body);
//! headers.insert("webhook-signature", signature.parse()?);
//!
//! assert_eq!(receive(&[secret.clone()], &headers, body), 200);
//! assert_eq!(receive(&[secret], &headers, b"{\"type\":\"job.dead\"}"), 401);
//! # Ok(()) }
//! ```
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

pub use queue_proto::CallbackEvent;
pub use queue_proto::webhooks::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Headers, Secret, SecretError,
    VerifyError, sign, verify, verify_with_tolerance,
};
