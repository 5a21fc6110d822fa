//! What the examples share: where the server is, and the job types of the
//! `thumbnails` queue that `producer` fills and `async_worker` works.

// Each example uses a part of this module.
#![allow(dead_code)]

use queue_client::ClientOptions;
use serde::{Deserialize, Serialize};

/// The server URL: the first argument, else `QUEUE_URL`, else the
/// server's default address.
pub fn server_url() -> String {
    std::env::args()
        .nth(1)
        .filter(|arg| !arg.starts_with("--"))
        .or_else(|| std::env::var("QUEUE_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:7878".to_owned())
}

/// Client options with the bearer token from `QUEUE_TOKEN`, when set.
pub fn options() -> ClientOptions {
    let mut options = ClientOptions::new();
    if let Ok(token) = std::env::var("QUEUE_TOKEN") {
        options = options.token(token);
    }
    options
}

/// The payload of a `thumbnails` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thumbnail {
    pub image: String,
    pub width: u32,
}

/// What a worker returns for a `thumbnails` job.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rendered {
    pub path: String,
    pub bytes: u64,
}
