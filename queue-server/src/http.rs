//! Request and response plumbing: bodies with a size limit, query strings,
//! JSON responses, the error envelope.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use queue_proto::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The response body type of the server.
pub type Body = BoxBody<Bytes, Infallible>;

/// A full body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    BoxBody::new(Full::new(bytes.into()))
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Room for a job object (about 700 bytes with a 200-byte payload) from
    // the start: `to_vec` starts at 128 bytes and grows three times.
    let mut bytes = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => {
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => error_response(&ApiError::internal(e)),
    }
}

/// The error envelope with its status (and `Allow` / `WWW-Authenticate`).
pub fn error_response(error: &ApiError) -> Response<Body> {
    let status =
        StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(status, &ErrorBody::new(error.code, error.message.clone()));
    if let Some(allow) = error
        .allow
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        response.headers_mut().insert(http::header::ALLOW, allow);
    }
    if error.code == ErrorCode::Unauthorized {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Reads a request body of at most `max` bytes.
///
/// # Errors
/// 413 when over the limit, 400 when the body cannot be read.
pub async fn read_body<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parses a JSON body; an empty body reads as `{}` when `empty_is_object`.
///
/// # Errors
/// 400 with serde's explanation, naming the field at fault (`jobs[1].priority:
/// invalid type: …`) when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], empty_is_object: bool) -> Result<T, ApiError> {
    let bytes: &[u8] = if empty_is_object && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // The plain parse first; a body that fails is parsed again, tracking
    // the path, to say which field is at fault.
    let error = match serde_json::from_slice(bytes) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    drop(parsed);
    deserializer
        .end()
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    // Both parses cannot disagree; should they, the first error stands.
    Err(ApiError::invalid(format!("invalid JSON body: {error}")))
}

/// A query string's parameters, percent-decoded, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The names given, in order (repeated names repeat).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Every value of `name` (a repeatable parameter), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The query string's parameters.
pub fn query(raw: Option<&str>) -> Params {
    Params(
        raw.unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k, true).into_owned(), decode(v, true).into_owned())
            })
            .collect(),
    )
}

/// Percent-decodes `text` (a query component when `plus_is_space`, a path
/// segment otherwise). A `%` not followed by two hex digits stays as it
/// is; bytes that do not form UTF-8 become U+FFFD. Text with nothing to
/// decode (most paths) is borrowed, not copied.
pub(crate) fn decode(text: &str, plus_is_space: bool) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .any(|b| *b == b'%' || (plus_is_space && *b == b'+'))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A non-negative integer query parameter, if given.
///
/// # Errors
/// 400 when it is not one.
pub fn number(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| {
            ApiError::invalid(format!(
                "{name} must be a non-negative integer, got {raw:?}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = query(Some("queue=a.b&job=00ff&x=%41%2x&empty=&queue=c"));
        assert_eq!(q.get("queue"), Some("c"));
        assert_eq!(q.all("queue"), ["a.b", "c"]);
        assert_eq!(q.get("x"), Some("A%2x"));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(query(None), Params::default());
        assert_eq!(decode("%", true), "%");
        assert_eq!(decode("a%4", true), "a%4");
        assert_eq!(decode("a+b%2B", true), "a b+");
        assert_eq!(decode("a+b%20%2F%C3%A9", false), "a+b /\u{e9}");
        assert_eq!(decode("%FF", false), "\u{fffd}");
        // Nothing to decode: borrowed, not copied.
        assert!(matches!(
            decode("a+b", false),
            std::borrow::Cow::Borrowed("a+b")
        ));
        assert!(matches!(
            decode("ab", true),
            std::borrow::Cow::Borrowed("ab")
        ));
        assert!(matches!(decode("a+b", true), std::borrow::Cow::Owned(_)));
    }

    #[test]
    fn numeric_parameters() {
        let q = query(Some("wait_ms=500&bad=x&neg=-1"));
        assert_eq!(number(&q, "wait_ms").unwrap(), Some(500));
        assert_eq!(number(&q, "missing").unwrap(), None);
        assert!(number(&q, "bad").is_err());
        assert!(number(&q, "neg").is_err());
    }
}
