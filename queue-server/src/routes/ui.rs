//! The web dashboard: `GET /` and `GET /ui` redirect to `/ui/`, and
//! `GET /ui/{*rest}` serves the dashboard's files, compiled into the binary
//! from `queue-server/ui/` (no CDN, no build step, no separate process).
//!
//! These routes need no token: the page holds no data of its own; it asks
//! the operator for the token and sends it with its API calls. Every file
//! has a strong `ETag` (a digest of its bytes) and `Cache-Control:
//! no-cache`, so a browser revalidates on each load and gets a `304` until
//! the binary is upgraded, never a stale page after one. An unknown file
//! is a `404 not_found`.

use std::sync::OnceLock;

use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_NONE_MATCH, LOCATION,
};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::error::ApiError;
use crate::http::full;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /` and `GET /ui`: a redirect to `/ui/`.
    Redirect,
    /// `GET /ui/{*rest}`: one of the dashboard's files (`/ui/` is
    /// `index.html`).
    File,
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/",
        methods: &[("GET", Endpoint::Redirect)],
    },
    RouteSpec {
        pattern: "/ui",
        methods: &[("GET", Endpoint::Redirect)],
    },
    RouteSpec {
        pattern: "/ui/{*rest}",
        methods: &[("GET", Endpoint::File)],
    },
];

/// One file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `/ui/`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the dashboard serves.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: HTML,
        bytes: include_bytes!("../../ui/index.html"),
    },
    Asset {
        path: "app.css",
        content_type: CSS,
        bytes: include_bytes!("../../ui/app.css"),
    },
    Asset {
        path: "app.js",
        content_type: JS,
        bytes: include_bytes!("../../ui/app.js"),
    },
    Asset {
        path: "favicon.svg",
        content_type: SVG,
        bytes: include_bytes!("../../ui/favicon.svg"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: JS,
        bytes: include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: CSS,
        bytes: include_bytes!("../../ui/vendor/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uPlot.LICENSE",
        content_type: TEXT,
        bytes: include_bytes!("../../ui/vendor/uPlot.LICENSE"),
    },
];

/// The page's content security policy: scripts and styles only from the
/// server itself (no inline script, so a value that slipped into the
/// markup could not run), API calls to the same origin, no framing.
/// Inline styles are allowed because the chart library sizes its elements
/// with them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file at `path` under `/ui/` (`""` is `index.html`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    position(path).map(|index| &ASSETS[index])
}

/// The index in [`ASSETS`] of the file at `path` under `/ui/`.
fn position(path: &str) -> Option<usize> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().position(|asset| asset.path == path)
}

/// The strong `ETag` of each asset, in [`ASSETS`] order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.bytes);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Whether an `If-None-Match` value names `etag` (a list, weak
/// comparison as RFC 9110 13.1.2 asks for, or `*`).
fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    match endpoint {
        Endpoint::Redirect => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::FOUND;
            response
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            Ok(response)
        }
        Endpoint::File => {
            let rest = call.captures.rest.as_deref().unwrap_or("");
            let Some(index) = position(rest) else {
                return Err(ApiError::not_found(format!(
                    "no dashboard file {:?}",
                    format!("/ui/{rest}")
                )));
            };
            let asset = &ASSETS[index];
            let etag = &etags()[index];
            let not_modified = call
                .header(IF_NONE_MATCH.as_str())
                .is_some_and(|given| none_match(given, etag));
            let mut response = if not_modified {
                let mut response = Response::new(full(""));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response
            } else {
                let mut response = Response::new(full(asset.bytes));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
                response
            };
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(etag) {
                headers.insert(ETAG, value);
            }
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            );
            if asset.content_type == HTML {
                headers.insert(
                    HeaderName::from_static("content-security-policy"),
                    HeaderValue::from_static(CSP),
                );
            }
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_served_for_the_folder() {
        assert_eq!(asset("").map(|a| a.path), Some("index.html"));
        assert_eq!(asset("app.js").map(|a| a.content_type), Some(JS));
        assert!(asset("nope.js").is_none());
        assert!(asset("../Cargo.toml").is_none());
    }

    #[test]
    fn etags_differ_per_file_and_match_if_none_match() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        let mut unique = tags.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
        let tag = &tags[0];
        assert!(none_match(tag, tag));
        assert!(none_match(&format!("W/{tag}"), tag));
        assert!(none_match(&format!("\"other\", {tag}"), tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"other\"", tag));
    }
}
