//! One callback attempt: the signed POST and what the receiver made of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use queue_core::DeliveryResult;
use queue_core::service::CallbackHosts;
use queue_proto::webhooks::{self, Secret};
use queue_proto::{CallbackEvent, rfc3339_ms};

/// The most of a receiver's answer read (to keep the connection for the
/// next attempt); the rest is dropped with the connection.
const MAX_ANSWER: usize = 64 * 1024;

/// Sends callbacks: a pooled HTTP(S) client whose name resolution only
/// yields the addresses the operator allows.
#[derive(Clone)]
pub(crate) struct Sender {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
    secrets: std::sync::Arc<[Secret]>,
    hosts: CallbackHosts,
    timeout: Duration,
}

/// What one attempt sent, for the log line.
pub(crate) struct Sent {
    pub(crate) result: DeliveryResult,
    pub(crate) webhook_id: String,
}

impl Sender {
    /// A sender signing with `secrets`, sending only to `hosts`, giving
    /// up on an attempt after `timeout`, keeping up to `max_idle`
    /// connections per receiver.
    ///
    /// # Errors
    /// When TLS cannot be set up (the crypto provider refuses the default
    /// protocol versions).
    pub(crate) fn new(
        secrets: Vec<Secret>,
        hosts: CallbackHosts,
        timeout: Duration,
        max_idle: usize,
    ) -> Result<Sender, rustls::Error> {
        let mut http = HttpConnector::new_with_resolver(Resolver { hosts });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // ring builds with a C compiler alone (aws-lc-rs needs cmake); the
        // price is no post-quantum key exchange, which rustls now flags.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Ok(Sender {
            client,
            secrets: secrets.into(),
            hosts,
            timeout,
        })
    }

    /// Makes attempt `attempt` of `job`'s current delivery at `now_ms`.
    pub(crate) async fn send(&self, job: &queue_core::Job, now_ms: u64) -> Sent {
        let delivery = job.callback.as_ref().map_or(1, |c| c.delivery);
        let webhook_id = format!("job_{}_{delivery}", job.id);
        let result = self.post(job, &webhook_id, now_ms).await;
        Sent { result, webhook_id }
    }

    async fn post(&self, job: &queue_core::Job, webhook_id: &str, now_ms: u64) -> DeliveryResult {
        let retry = |error: String| DeliveryResult::Retry {
            status: None,
            error,
            retry_after_ms: None,
        };
        let Some(url) = job.callback_url.as_deref() else {
            return retry("the job has no callback_url".into());
        };
        // The URL was checked at enqueue; the policy may have changed since.
        if let Err(e) = self.hosts.check_url(url) {
            return retry(e.message);
        }
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => return retry(format!("callback_url is not a URL: {e}")),
        };
        let Some(kind) = CallbackEvent::kind_of(job.state) else {
            return retry(format!("the job is {}, not finished", job.state));
        };
        let event = CallbackEvent {
            kind: kind.to_owned(),
            timestamp: rfc3339_ms(job.finished_at.unwrap_or(job.updated_at)),
            data: job.to_wire(None),
        };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(e) => return retry(format!("the body could not be written: {e}")),
        };
        let timestamp = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let mut request = Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("queue-server/", env!("CARGO_PKG_VERSION")),
            )
            .header(webhooks::HEADER_ID, webhook_id)
            .header(webhooks::HEADER_TIMESTAMP, timestamp.to_string());
        if !self.secrets.is_empty() {
            request = request.header(
                webhooks::HEADER_SIGNATURE,
                webhooks::sign(&self.secrets, webhook_id, timestamp, &body),
            );
        }
        let mut request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(e) => return retry(format!("the request could not be built: {e}")),
        };
        let headers = request.headers_mut();
        let carried = [
            ("x-request-id", job.correlation_id.as_deref()),
            (
                "traceparent",
                job.headers.get("traceparent").map(String::as_str),
            ),
            (
                "tracestate",
                job.headers.get("tracestate").map(String::as_str),
            ),
        ];
        for (name, value) in carried {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let answer = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => {
                return retry(format!("no answer within {} ms", self.timeout.as_millis()));
            }
            Ok(Err(e)) => return retry(error_chain(&e)),
            Ok(Ok(answer)) => answer,
        };
        let status = answer.status();
        let retry_after_ms = retry_after(answer.headers().get(RETRY_AFTER), now_ms);
        // Read (and drop) a short answer so the connection can be reused.
        let _ = tokio::time::timeout_at(
            deadline,
            Limited::new(answer.into_body(), MAX_ANSWER).collect(),
        )
        .await;
        classify(status, retry_after_ms)
    }
}

/// What an answer means for the delivery.
fn classify(status: StatusCode, retry_after_ms: Option<u64>) -> DeliveryResult {
    if status.is_success() {
        return DeliveryResult::Delivered {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return DeliveryResult::Gone;
    }
    let honours_retry_after =
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    DeliveryResult::Retry {
        status: Some(status.as_u16()),
        error: format!("the receiver answered {status}"),
        retry_after_ms: retry_after_ms.filter(|_| honours_retry_after),
    }
}

/// A `Retry-After` value (delay seconds, or an HTTP date) as ms from
/// `now_ms`.
fn retry_after(value: Option<&HeaderValue>, now_ms: u64) -> Option<u64> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at_ms = parse_http_date(text)?;
    Some(at_ms.saturating_sub(now_ms))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to unix ms.
fn parse_http_date(text: &str) -> Option<u64> {
    let rest = text.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some((days * 86_400 + h * 3600 + m * 60 + s) * 1000)
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Name resolution that yields only the addresses callbacks may go to,
/// so that a name cannot lead the server to a refused address (and the
/// connection goes to the address that was checked).
#[derive(Clone, Copy)]
pub(crate) struct Resolver {
    hosts: CallbackHosts,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let hosts = self.hosts;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| hosts.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} resolves to no address callbacks may go to ({} refused)",
                        name.as_str(),
                        found.len()
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        for ok in [200, 201, 202, 204, 299] {
            let status = StatusCode::from_u16(ok).unwrap();
            assert_eq!(
                classify(status, None),
                DeliveryResult::Delivered { status: ok }
            );
        }
        assert_eq!(classify(StatusCode::GONE, Some(5)), DeliveryResult::Gone);
        for (status, honoured) in [(429, true), (503, true), (500, false), (404, false)] {
            let status = StatusCode::from_u16(status).unwrap();
            match classify(status, Some(7_000)) {
                DeliveryResult::Retry {
                    status: Some(s),
                    retry_after_ms,
                    ..
                } => {
                    assert_eq!(s, status.as_u16());
                    assert_eq!(retry_after_ms, honoured.then_some(7_000), "{status}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        // Redirects are not followed: a receiver must answer itself.
        assert!(matches!(
            classify(StatusCode::MOVED_PERMANENTLY, None),
            DeliveryResult::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let value = |text: &'static str| HeaderValue::from_static(text);
        assert_eq!(retry_after(Some(&value("120")), 0), Some(120_000));
        assert_eq!(retry_after(Some(&value(" 3 ")), 0), Some(3_000));
        // 784111777 s is Sun, 06 Nov 1994 08:49:37 GMT.
        let now = 784_111_777_000 - 30_000;
        assert_eq!(
            retry_after(Some(&value("Sun, 06 Nov 1994 08:49:37 GMT")), now),
            Some(30_000)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400_000)
        );
        // A date in the past means now.
        assert_eq!(
            retry_after(Some(&value("Sun, 06 Nov 1994 08:49:37 GMT")), u64::MAX),
            Some(0)
        );
        for bad in ["soon", "-1", "1.5", "Sun, 06 Nov 1994 08:49:37 PST", ""] {
            assert_eq!(retry_after(Some(&value(bad)), 0), None, "{bad}");
        }
        assert_eq!(retry_after(None, 0), None);
    }
}
