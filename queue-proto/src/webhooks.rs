//! Callback signatures, as the [Standard Webhooks] specification defines
//! them: the server signs each callback with every configured secret, and
//! a receiver checks one of the signatures and the timestamp with
//! [`verify`].
//!
//! A secret is `whsec_` followed by the base64 of 24 to 64 random bytes.
//! The signed content is `<webhook-id>.<webhook-timestamp>.<body>`; the
//! `webhook-signature` header holds `v1,<base64 of HMAC-SHA256>` once per
//! secret, space-separated, so that a receiver keeps working while the
//! sender rotates its secrets.
//!
//! ```
//! use queue_proto::webhooks::{Secret, verify, sign};
//! use std::collections::HashMap;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let body = br#"{"type":"job.completed"}"#;
//! let headers = HashMap::from([
//!     ("webhook-id".to_owned(), "job_1_1".to_owned()),
//!     ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
//!     ("webhook-signature".to_owned(), sign(&[secret.clone()], "job_1_1", 1614265330, body)),
//! ]);
//! let now = UNIX_EPOCH + Duration::from_secs(1614265330 + 60);
//! verify(&[secret], &headers, body, now)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header naming the delivery (the same on every attempt of it).
pub const HEADER_ID: &str = "webhook-id";
/// The header with the attempt's time, in unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header with the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a serialized secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a timestamp may be from the receiver's clock, either way, by
/// default: five minutes, as the specification suggests.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The shortest key the specification allows, in bytes.
pub const MIN_SECRET_BYTES: usize = 24;
/// The longest key the specification allows, in bytes.
pub const MAX_SECRET_BYTES: usize = 64;

/// A signing secret. Its `Debug` form hides the key; [`Secret::expose`]
/// is the only way to read it back.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(String);

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

impl Secret {
    /// A secret from its key bytes (24 to 64 of them).
    ///
    /// # Errors
    /// A key of another length.
    pub fn from_bytes(key: &[u8]) -> Result<Secret, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError(format!(
                "a webhook secret's key must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, \
                 this one has {}",
                key.len()
            )));
        }
        Ok(Secret { key: key.to_vec() })
    }

    /// The secret's serialized form, `whsec_<base64>`. Treat it as a
    /// password: never log it.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `v1,<base64>` signature of a message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts every key length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl std::str::FromStr for Secret {
    type Err = SecretError;

    /// Parses `whsec_<base64>`.
    fn from_str(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            SecretError(format!(
                "a webhook secret starts with {SECRET_PREFIX:?} followed by base64"
            ))
        })?;
        let key = STANDARD.decode(encoded).map_err(|e| {
            SecretError(format!(
                "a webhook secret is {SECRET_PREFIX:?} followed by base64: {e}"
            ))
        })?;
        Secret::from_bytes(&key)
    }
}

/// The `webhook-signature` header of a message: one signature per secret,
/// space-separated.
pub fn sign(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| secret.signature(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a callback did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// No secret to check against.
    NoSecrets,
    /// A header is missing or is not visible ASCII.
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    InvalidTimestamp,
    /// The timestamp is older than the tolerance: a replay, or a very
    /// late delivery.
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    TooNew,
    /// No `v1` signature matches any secret.
    NoMatch,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::NoSecrets => f.write_str("no secret to verify with"),
            VerifyError::MissingHeader(name) => write!(f, "the {name} header is missing"),
            VerifyError::InvalidTimestamp => {
                f.write_str("webhook-timestamp is not a unix time in seconds")
            }
            VerifyError::TooOld => f.write_str("webhook-timestamp is too old"),
            VerifyError::TooNew => f.write_str("webhook-timestamp is in the future"),
            VerifyError::NoMatch => f.write_str("no signature matches"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Headers as a receiver sees them, whatever its HTTP library: names are
/// looked up in lower case.
pub trait Headers {
    /// The value of header `name` (given in lower case), if present.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl<S: std::hash::BuildHasher> Headers for HashMap<String, String, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for BTreeMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// Checks a callback: one `v1` signature in `webhook-signature` must be
/// the body's under one of `secrets`, and `webhook-timestamp` must be
/// within [`DEFAULT_TOLERANCE`] of `now`. Pass the body exactly as
/// received (not parsed and re-serialized). A pure function: call it from
/// blocking or async code alike.
///
/// # Errors
/// [`VerifyError`] saying what is wrong.
pub fn verify<H: Headers + ?Sized>(
    secrets: &[Secret],
    headers: &H,
    body: &[u8],
    now: SystemTime,
) -> Result<(), VerifyError> {
    verify_with_tolerance(secrets, headers, body, now, DEFAULT_TOLERANCE)
}

/// [`verify`] with another timestamp tolerance.
///
/// # Errors
/// [`VerifyError`] saying what is wrong.
pub fn verify_with_tolerance<H: Headers + ?Sized>(
    secrets: &[Secret],
    headers: &H,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let id = headers
        .header(HEADER_ID)
        .ok_or(VerifyError::MissingHeader(HEADER_ID))?;
    let timestamp = headers
        .header(HEADER_TIMESTAMP)
        .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let signatures = headers
        .header(HEADER_SIGNATURE)
        .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(timestamp) > tolerance {
        return Err(VerifyError::TooOld);
    }
    if timestamp.saturating_sub(now) > tolerance {
        return Err(VerifyError::TooNew);
    }
    let expected: Vec<[u8; 32]> = secrets
        .iter()
        .map(|secret| secret.mac(id, timestamp, body))
        .collect();
    let matched = signatures
        .split(' ')
        .filter_map(|signature| signature.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|given| expected.iter().any(|mac| constant_time_eq(&given, mac)));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published vectors: the Go library's
    /// `TestWebhookSign` and the Rust library's `test_sign`
    /// (github.com/standard-webhooks/standard-webhooks, `libraries/`).
    const VECTORS: &[(&str, &str, i64, &str, &str)] = &[
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
    }

    fn headers(id: &str, ts: i64, signature: &str) -> Vec<(String, String)> {
        vec![
            ("Webhook-Id".into(), id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), signature.into()),
        ]
    }

    #[test]
    fn the_published_vectors_sign_and_verify() {
        for (secret, id, ts, body, expected) in VECTORS {
            let secret: Secret = secret.parse().unwrap();
            assert_eq!(secret.signature(id, *ts, body.as_bytes()), *expected);
            let given = headers(id, *ts, expected);
            verify(
                std::slice::from_ref(&secret),
                &given,
                body.as_bytes(),
                at(*ts),
            )
            .unwrap();
            // One changed byte of the body, the id or the time fails.
            let tampered = body.replace('2', "3").replace("test_user", "Test_user");
            assert_eq!(
                verify(
                    std::slice::from_ref(&secret),
                    &given,
                    tampered.as_bytes(),
                    at(*ts)
                ),
                Err(VerifyError::NoMatch)
            );
            let other_id = headers("msg_other", *ts, expected);
            assert_eq!(
                verify(
                    std::slice::from_ref(&secret),
                    &other_id,
                    body.as_bytes(),
                    at(*ts)
                ),
                Err(VerifyError::NoMatch)
            );
            let other_ts = headers(id, ts + 1, expected);
            assert_eq!(
                verify(&[secret], &other_ts, body.as_bytes(), at(*ts)),
                Err(VerifyError::NoMatch)
            );
        }
    }

    #[test]
    fn several_secrets_sign_once_each_and_any_one_verifies() {
        let old: Secret = VECTORS[0].0.parse().unwrap();
        let new: Secret = VECTORS[1].0.parse().unwrap();
        let header = sign(&[new.clone(), old.clone()], "job_1_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        let given = headers("job_1_1", 1_700_000_000, &header);
        for secret in [&old, &new] {
            verify(
                std::slice::from_ref(secret),
                &given,
                b"{}",
                at(1_700_000_000),
            )
            .unwrap();
        }
        let stranger = Secret::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(
            verify(&[stranger], &given, b"{}", at(1_700_000_000)),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&[], &given, b"{}", at(1_700_000_000)),
            Err(VerifyError::NoSecrets)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance() {
        let (secret, id, ts, body, signature) = VECTORS[0];
        let secret: Secret = secret.parse().unwrap();
        let given = headers(id, ts, signature);
        let check = |now: i64| {
            verify(
                std::slice::from_ref(&secret),
                &given,
                body.as_bytes(),
                at(now),
            )
        };
        assert_eq!(check(ts + 300), Ok(()));
        assert_eq!(check(ts + 301), Err(VerifyError::TooOld));
        assert_eq!(check(ts - 300), Ok(()));
        assert_eq!(check(ts - 301), Err(VerifyError::TooNew));
        let wide = verify_with_tolerance(
            std::slice::from_ref(&secret),
            &given,
            body.as_bytes(),
            at(ts + 3600),
            Duration::from_secs(3600),
        );
        assert_eq!(wide, Ok(()));
    }

    #[test]
    fn malformed_headers_and_secrets_are_refused() {
        let (secret, id, ts, body, signature) = VECTORS[0];
        let secret: Secret = secret.parse().unwrap();
        let now = at(ts);
        let mut missing = headers(id, ts, signature);
        missing.remove(0);
        assert_eq!(
            verify(
                std::slice::from_ref(&secret),
                &missing,
                body.as_bytes(),
                now
            ),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        let bad_ts = vec![
            ("webhook-id", id),
            ("webhook-timestamp", "hello"),
            ("webhook-signature", signature),
        ];
        assert_eq!(
            verify(std::slice::from_ref(&secret), &bad_ts, body.as_bytes(), now),
            Err(VerifyError::InvalidTimestamp)
        );
        for partial in [
            "v1,",
            "v1",
            "",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            let given = headers(id, ts, partial);
            assert_eq!(
                verify(std::slice::from_ref(&secret), &given, body.as_bytes(), now),
                Err(VerifyError::NoMatch),
                "{partial:?}"
            );
        }
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!",
            "whsec_AAAA",
        ] {
            assert!(bad.parse::<Secret>().is_err(), "{bad:?}");
        }
        assert_eq!(format!("{secret:?}"), "Secret(whsec_…)");
        assert_eq!(secret.expose(), VECTORS[0].0);
    }

    #[test]
    fn an_http_header_map_works_too() {
        let (secret, id, ts, body, signature) = VECTORS[1];
        let secret: Secret = secret.parse().unwrap();
        let mut map = http::HeaderMap::new();
        map.insert(HEADER_ID, http::HeaderValue::from_static(id));
        map.insert(HEADER_TIMESTAMP, ts.to_string().parse().unwrap());
        map.insert(HEADER_SIGNATURE, http::HeaderValue::from_static(signature));
        verify(&[secret], &map, body.as_bytes(), at(ts)).unwrap();
    }
}
