//! `enqueue`: a new job, `scheduled` or `ready` depending on its `run_at`.

use queue_proto::limits::{
    MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_CALLBACK_URL_LEN, MAX_CORRELATION_ID_LEN, MAX_DELAY_MS,
    MAX_GROUP_LEN, MAX_HEADER_KEY_LEN, MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_IDEMPOTENCY_KEY_LEN,
    MAX_TIMEOUT_MS, MIN_ATTEMPTS,
};

use super::{Outcome, waiting_state};
use crate::{Error, Job, JobId, NewJob, Result, Transition};

/// Checks everything about `spec` that does not depend on stored state.
pub(crate) fn validate(spec: &NewJob, now: u64, max_payload: usize) -> Result<()> {
    if spec.payload.len() > max_payload {
        return Err(Error::TooLarge {
            what: "payload",
            size: spec.payload.len(),
            limit: max_payload,
        });
    }
    queue_proto::limits::check_json_depth(&spec.payload)
        .map_err(|message| Error::invalid("payload", message))?;
    if !(MIN_ATTEMPTS..=MAX_ATTEMPTS).contains(&spec.max_attempts) {
        return Err(Error::invalid(
            "max_attempts",
            format!(
                "{} is outside {MIN_ATTEMPTS}..={MAX_ATTEMPTS}",
                spec.max_attempts
            ),
        ));
    }
    if spec.backoff_ms > MAX_BACKOFF_MS {
        return Err(Error::invalid(
            "backoff_ms",
            format!("{} exceeds one hour ({MAX_BACKOFF_MS})", spec.backoff_ms),
        ));
    }
    match (spec.delay_ms, spec.run_at) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "delay_ms",
                "give either delay_ms or run_at, not both",
            ));
        }
        (Some(delay), None) if delay > MAX_DELAY_MS => {
            return Err(Error::invalid(
                "delay_ms",
                format!("{delay} exceeds the limit of {MAX_DELAY_MS}"),
            ));
        }
        (None, Some(run_at)) if run_at > now.saturating_add(MAX_DELAY_MS) => {
            return Err(Error::invalid(
                "run_at",
                format!("{run_at} is more than {MAX_DELAY_MS} ms in the future"),
            ));
        }
        _ => {}
    }
    if let Some(key) = &spec.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Error::invalid(
                "idempotency_key",
                format!(
                    "must be 1..={MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
                    key.len()
                ),
            ));
        }
    }
    if let Some(id) = &spec.correlation_id {
        check_correlation_id(id)?;
    }
    check_headers(&spec.headers)?;
    if let Some(url) = &spec.callback_url {
        check_callback_url(url)?;
    }
    if let Some(group) = &spec.group {
        if group.is_empty() || group.len() > MAX_GROUP_LEN {
            return Err(Error::invalid(
                "group",
                format!("must be 1..={MAX_GROUP_LEN} bytes, got {}", group.len()),
            ));
        }
    }
    if let Some(timeout) = spec.timeout_ms {
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout) {
            return Err(Error::invalid(
                "timeout_ms",
                format!("{timeout} is outside 1..={MAX_TIMEOUT_MS}"),
            ));
        }
    }
    match (spec.ttl_ms, spec.expires_at) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "ttl_ms",
                "give either ttl_ms or expires_at, not both",
            ));
        }
        (Some(ttl), None) if ttl > MAX_DELAY_MS => {
            return Err(Error::invalid(
                "ttl_ms",
                format!("{ttl} exceeds the limit of {MAX_DELAY_MS}"),
            ));
        }
        (None, Some(at)) if at > now.saturating_add(MAX_DELAY_MS) => {
            return Err(Error::invalid(
                "expires_at",
                format!("{at} is more than {MAX_DELAY_MS} ms in the future"),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// A correlation id: 1..=128 visible ASCII characters.
pub(crate) fn check_correlation_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_CORRELATION_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::invalid(
            "correlation_id",
            format!("must be 1..={MAX_CORRELATION_ID_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

fn check_headers(headers: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(
            "headers",
            format!("at most {MAX_HEADERS} entries, got {}", headers.len()),
        ));
    }
    for (key, value) in headers {
        let key_ok = (1..=MAX_HEADER_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            return Err(Error::invalid(
                "headers",
                format!(
                    "key {key:?} is not 1..={MAX_HEADER_KEY_LEN} of A-Z, a-z, 0-9, '_', '.', '-'"
                ),
            ));
        }
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(Error::invalid(
                "headers",
                format!("the value of {key:?} is longer than {MAX_HEADER_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// An absolute http(s) URL with a host, at most 2,048 visible ASCII bytes.
pub(crate) fn check_callback_url(url: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("callback_url", format!("{url:?}: {why}"));
    if url.len() > MAX_CALLBACK_URL_LEN {
        return Err(bad(&format!("longer than {MAX_CALLBACK_URL_LEN} bytes")));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("not visible ASCII (percent-encode it)"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("not an absolute http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 literal: [::1]:8080
        Some(literal) => {
            let (inside, after) = literal
                .split_once(']')
                .ok_or_else(|| bad("an unclosed IPv6 literal"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
            };
            (inside, port)
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(bad("bad port"));
    }
    Ok(())
}

/// A new job (`spec` already validated), announced by an event.
pub(crate) fn enqueue(id: JobId, queue: &str, spec: &NewJob, now: u64) -> Outcome {
    Outcome::moved(new_job(id, queue, spec, now), Transition::Enqueue)
}

/// The record of a new job (`spec` already validated).
pub(crate) fn new_job(id: JobId, queue: &str, spec: &NewJob, now: u64) -> Job {
    let run_at = match (spec.delay_ms, spec.run_at) {
        (Some(delay), _) => now.saturating_add(delay),
        (None, Some(run_at)) => run_at,
        (None, None) => now,
    };
    Job {
        id,
        queue: queue.to_owned(),
        state: waiting_state(run_at, now),
        payload: spec.payload.clone(),
        priority: spec.priority,
        attempts: 0,
        max_attempts: spec.max_attempts,
        backoff_ms: spec.backoff_ms,
        created_at: now,
        updated_at: now,
        run_at,
        lease: None,
        idempotency_key: spec.idempotency_key.clone(),
        result: None,
        last_error: None,
        finished_at: None,
        correlation_id: spec.correlation_id.clone(),
        headers: spec.headers.clone(),
        progress: None,
        callback_url: spec.callback_url.clone(),
        callback: None,
        group: spec.group.clone(),
        timeout_ms: spec.timeout_ms,
        expires_at: match (spec.ttl_ms, spec.expires_at) {
            (Some(ttl), _) => Some(now.saturating_add(ttl)),
            (None, at) => at,
        },
        started_at: None,
        schedule: spec.schedule.clone(),
        // Kept only with a key: it is what a replay is compared with.
        request_digest: spec
            .idempotency_key
            .as_ref()
            .map(|_| spec.request_digest.unwrap_or_else(|| spec.digest())),
        last_event_id: None,
    }
}

#[cfg(test)]
mod tests {
    use queue_proto::JobState;

    use super::*;
    use crate::rules::testing::T0;

    #[test]
    fn ready_now_or_scheduled_later() {
        let id = JobId::from_u64(1);
        let now = new_job(id, "q", &NewJob::new(vec![]), T0);
        assert_eq!((now.state, now.run_at), (JobState::Ready, T0));
        let later = new_job(id, "q", &NewJob::new(vec![]).delay_ms_for_test(5), T0);
        assert_eq!((later.state, later.run_at), (JobState::Scheduled, T0 + 5));
        let past = new_job(id, "q", &NewJob::new(vec![]).run_at(T0 - 10), T0);
        assert_eq!((past.state, past.run_at), (JobState::Ready, T0 - 10));
    }

    #[test]
    fn a_new_job_is_announced() {
        let outcome = enqueue(JobId::from_u64(3), "q", &NewJob::new(vec![]), T0);
        let event = outcome.events().next().expect("an event");
        assert_eq!(
            (event.job, event.state),
            (JobId::from_u64(3), JobState::Ready)
        );
        assert_eq!(outcome.transition, Transition::Enqueue);
    }

    #[test]
    fn validation_refuses_out_of_range_input() {
        let ok = NewJob::new(vec![1; 10]);
        assert!(validate(&ok, T0, 10).is_ok());
        assert!(matches!(
            validate(&NewJob::new(vec![1; 11]), T0, 10),
            Err(Error::TooLarge { size: 11, .. })
        ));
        for bad in [
            ok.clone().max_attempts(0),
            ok.clone().max_attempts(1001),
            NewJob {
                backoff_ms: MAX_BACKOFF_MS + 1,
                ..ok.clone()
            },
            NewJob {
                delay_ms: Some(1),
                run_at: Some(T0),
                ..ok.clone()
            },
            ok.clone().delay_ms_for_test(MAX_DELAY_MS + 1),
            ok.clone().run_at(T0 + MAX_DELAY_MS + 1),
            ok.clone().idempotency_key(""),
            ok.clone().idempotency_key("k".repeat(257)),
        ] {
            assert!(
                matches!(validate(&bad, T0, 10), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
        assert!(validate(&ok.clone().idempotency_key("k".repeat(256)), T0, 10).is_ok());
    }

    #[test]
    fn correlation_headers_and_callbacks_are_checked() {
        let ok = NewJob::new(vec![])
            .correlation_id("req-8f2c")
            .header("traceparent", "00-abc-01")
            .callback_url("https://example.com:8443/hooks?x=1");
        assert!(validate(&ok, T0, 10).is_ok());
        for url in ["http://127.0.0.1:9/x", "https://[::1]:80/", "http://h"] {
            assert!(check_callback_url(url).is_ok(), "{url}");
        }
        for url in [
            "ftp://example.com/",
            "/relative",
            "http://",
            "http:///path",
            "http://host:99999/",
            "http://host name/",
            "http://hôte/",
        ] {
            assert!(check_callback_url(url).is_err(), "{url}");
        }
        assert!(check_callback_url(&format!("http://h/{}", "a".repeat(2048))).is_err());
        for bad in [
            NewJob::new(vec![]).correlation_id(""),
            NewJob::new(vec![]).correlation_id("has space"),
            NewJob::new(vec![]).correlation_id("x".repeat(129)),
            NewJob::new(vec![]).header("bad key", "v"),
            NewJob::new(vec![]).header("k", "v".repeat(1025)),
        ] {
            assert!(validate(&bad, T0, 10).is_err(), "{bad:?}");
        }
        let many = (0..33).fold(NewJob::new(vec![]), |job, n| {
            job.header(format!("h{n}"), "v")
        });
        assert!(validate(&many, T0, 10).is_err());
        let job = new_job(JobId::from_u64(1), "q", &ok, T0);
        assert_eq!(job.correlation_id.as_deref(), Some("req-8f2c"));
        assert_eq!(job.headers["traceparent"], "00-abc-01");
    }

    impl NewJob {
        fn delay_ms_for_test(self, ms: u64) -> Self {
            self.delay(std::time::Duration::from_millis(ms))
        }
    }
}
