//! Property tests of the request decoders, through the app itself (no
//! socket): random JSON values and mutated valid bodies on every route that
//! reads a body, random query strings and path segments (ids, lease ids,
//! queue and schedule names). Whatever arrives, the answer is a status
//! below 500 with the JSON error envelope when it is an error, never a
//! panic. Bounded cases and fixed seeds keep a run to a few seconds.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};
use queue_core::Queue;
use queue_server::{App, ServerConfig};
use serde_json::{Map, Value, json};

use crate::common::{Backend, Store};

fn runner(cases: u32, seed: u64) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// The app on a fresh store of `backend`, a runtime to drive it, and the
/// store.
fn app(backend: Backend) -> (App, tokio::runtime::Runtime, Store) {
    let store = Store::new(backend);
    let queue = Queue::open_with(store.config()).expect("open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(async { App::new(queue, ServerConfig::default()) });
    (app, runtime, store)
}

/// Sends one request; checks the answer is no server error and that an
/// error carries the envelope. Returns the status and the JSON body.
fn send(
    app: &App,
    runtime: &tokio::runtime::Runtime,
    method: &Method,
    uri: &str,
    body: &[u8],
) -> Result<(u16, Value), TestCaseError> {
    let Ok(request) = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
    else {
        // Not a request hyper would hand us (the URI does not parse).
        return Ok((400, Value::Null));
    };
    let (status, bytes) = runtime.block_on(async {
        let response = app.handle(request).await;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(
        status < 500,
        "{method} {uri} {}: {status} {text}",
        String::from_utf8_lossy(body)
    );
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status >= 400 {
        prop_assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{method} {uri}: {status} {text}"
        );
    }
    Ok((status, json))
}

/// Any JSON value, nested a few levels, with the contract's field names
/// among the keys so that the decoders get past the first field.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "payload", "priority", "delay_ms", "run_at", "max_attempts", "backoff_ms",
            "idempotency_key", "correlation_id", "headers", "callback_url", "group",
            "timeout_ms", "ttl_ms", "expires_at", "jobs", "max_jobs", "lease_ms", "worker",
            "lease_id", "progress", "result", "error", "retry_in_ms", "retryable", "ids",
            "paused", "max_leased", "rate_limit", "group_max_leased", "per_ms", "queue",
            "cron", "every_ms", "timezone", "job", "catch_up",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        prop::sample::select(vec![0u64, 1, 2, 1000, 60_000, 60_001, 43_200_001])
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[0-9a-f]{16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Long-polls would hold a case for up to a minute: never ask for one.
fn no_waiting(mut value: Value) -> Value {
    if let Some(wait) = value.get_mut("wait_ms") {
        if wait.as_u64().is_some_and(|ms| ms > 0) {
            *wait = json!(0);
        }
    }
    value
}

/// A valid body with one of a few mutations: a field replaced by any
/// value, a field removed, an unknown field added, the body put in an
/// array, or the whole text cut short.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Add(String, Value),
    Wrap,
    Cut(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => ("[a-z_]{1,8}", json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        1 => Just(Mutation::Wrap),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Cut),
    ]
}

fn mutate(body: &Value, mutation: &Mutation) -> Vec<u8> {
    let mut body = body.clone();
    match (mutation, body.as_object_mut()) {
        (Mutation::Replace(i, v), Some(map)) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(i.index(map.len()))
                .cloned()
                .unwrap_or_default();
            map.insert(key, v.clone());
        }
        (Mutation::Remove(i), Some(map)) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(i.index(map.len()))
                .cloned()
                .unwrap_or_default();
            map.remove(&key);
        }
        (Mutation::Add(k, v), Some(map)) => {
            map.insert(k.clone(), v.clone());
        }
        (Mutation::Wrap, _) => body = json!([body]),
        (Mutation::Cut(i), _) => {
            let text = body.to_string().into_bytes();
            return text[..i.index(text.len() + 1)].to_vec();
        }
        _ => {}
    }
    no_waiting(body).to_string().into_bytes()
}

/// The routes that read a body, each with a valid body, given a job id and
/// its lease id.
fn bodies(id: &str, lease_id: &str) -> Vec<(Method, String, Value)> {
    let enqueue = json!({"payload": {"a": [1, 2]}, "priority": 3, "max_attempts": 2,
        "headers": {"k": "v"}, "group": "g", "ttl_ms": 60_000});
    vec![
        (Method::POST, "/v1/queues/q/jobs".into(), enqueue.clone()),
        (
            Method::POST,
            "/v1/queues/q/jobs/batch".into(),
            json!({"jobs": [enqueue.clone(), {"payload": 2}]}),
        ),
        (
            Method::POST,
            "/v1/queues/q/lease".into(),
            json!({"max_jobs": 1, "lease_ms": 30_000, "worker": "w"}),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_id": lease_id, "progress": {"p": 1}}),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": lease_id, "result": [1]}),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/fail"),
            json!({"lease_id": lease_id, "error": "e", "retryable": true}),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/release"),
            json!({"lease_id": lease_id}),
        ),
        (
            Method::POST,
            "/v1/queues/q/dead/requeue".into(),
            json!({"ids": [id]}),
        ),
        (
            Method::PATCH,
            "/v1/queues/q".into(),
            json!({"paused": false, "max_leased": 5, "rate_limit": {"jobs": 5, "per_ms": 1000}}),
        ),
        (
            Method::PUT,
            "/v1/schedules/s".into(),
            json!({"queue": "q", "every_ms": 60_000, "job": {"payload": 1}, "paused": true}),
        ),
    ]
}

/// A leased job of queue `q`: its id and lease id.
fn leased(app: &App, runtime: &tokio::runtime::Runtime) -> (String, String) {
    let (_, job) = send(
        app,
        runtime,
        &Method::POST,
        "/v1/queues/q/jobs",
        br#"{"payload": 1, "priority": 1000000}"#,
    )
    .unwrap_or_default();
    let (_, lease) = send(
        app,
        runtime,
        &Method::POST,
        "/v1/queues/q/lease",
        br#"{"max_jobs": 1}"#,
    )
    .unwrap_or_default();
    let id = job["id"].as_str().unwrap_or("0000000000000000").to_owned();
    let lease_id = lease["jobs"][0]["lease_id"]
        .as_str()
        .unwrap_or("0000000000000000")
        .to_owned();
    (id, lease_id)
}

fn random_and_mutated_bodies_get_an_answer_on_every_route(backend: Backend) {
    let (app, runtime, _dir) = app(backend);
    let (id, lease_id) = leased(&app, &runtime);
    let routes = bodies(&id, &lease_id);
    // Valid bodies first: each is accepted as it stands.
    for (method, path, body) in &routes {
        let (status, json) = send(&app, &runtime, method, path, body.to_string().as_bytes())
            .unwrap_or((0, Value::Null));
        assert!(
            (200..300).contains(&status) || status == 409,
            "{method} {path}: {status} {json}"
        );
    }
    let strategy = (0..routes.len(), mutation());
    runner(400, 21)
        .run(&strategy, |(which, mutation)| {
            let (method, path, body) = &routes[which];
            send(&app, &runtime, method, path, &mutate(body, &mutation))?;
            Ok(())
        })
        .unwrap();
    let strategy = (0..routes.len(), json_value());
    runner(300, 22)
        .run(&strategy, |(which, value)| {
            let (method, path, _) = &routes[which];
            send(
                &app,
                &runtime,
                method,
                path,
                no_waiting(value).to_string().as_bytes(),
            )?;
            Ok(())
        })
        .unwrap();
    let strategy = (0..routes.len(), prop::collection::vec(any::<u8>(), 0..64));
    runner(200, 23)
        .run(&strategy, |(which, bytes)| {
            let (method, path, _) = &routes[which];
            send(&app, &runtime, method, path, &bytes)?;
            Ok(())
        })
        .unwrap();
}

fn random_ids_names_and_query_strings_get_an_answer(backend: Backend) {
    let (app, runtime, _dir) = app(backend);
    let (id, lease_id) = leased(&app, &runtime);
    // A finished job: a `wait_ms` on it answers at once.
    let done = format!(r#"{{"lease_id": "{lease_id}"}}"#);
    send(
        &app,
        &runtime,
        &Method::POST,
        &format!("/v1/jobs/{id}/complete"),
        done.as_bytes(),
    )
    .unwrap_or_default();
    let segment = prop_oneof![
        "[0-9a-f]{16}",
        "[0-9a-fA-FxX%+ -]{0,20}",
        ".{0,20}",
        "(%[0-9A-Fa-f]{2}|[a-z.]){0,12}",
    ];
    let query = prop_oneof![
        "(wait_ms|limit|after|state|queue|job|type)=[0-9a-z%+-]{0,8}(&(limit|after|state|wait_ms|x)=[0-9a-z%+]{0,6}){0,3}",
        ".{0,24}",
    ];
    let strategy = (segment, query, 0..6usize);
    runner(500, 31)
        .run(&strategy, |(segment, query, route)| {
            let encoded: String = segment
                .bytes()
                .map(|b| match b {
                    b'%' | b'+' | b'-' | b'.' | b'_' => (b as char).to_string(),
                    b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect();
            let query = query.replace(['#', ' '], "");
            let heartbeat = json!({"lease_id": segment}).to_string();
            let (method, uri, body) = match route {
                0 => (Method::GET, format!("/v1/jobs/{encoded}"), String::new()),
                1 => (
                    Method::POST,
                    format!("/v1/jobs/{encoded}/release"),
                    r#"{"lease_id": "0000000000000001"}"#.to_owned(),
                ),
                2 => (Method::POST, format!("/v1/jobs/{id}/heartbeat"), heartbeat),
                3 => (
                    Method::GET,
                    format!("/v1/queues/{encoded}/dead?{query}"),
                    String::new(),
                ),
                4 => (Method::GET, format!("/v1/jobs/{id}?{query}"), String::new()),
                _ => (Method::GET, format!("/v1/callbacks?{query}"), String::new()),
            };
            send(&app, &runtime, &method, &uri, body.as_bytes())?;
            let _ = queue_server::routes::route(&method, &format!("/{segment}/{query}"));
            let _ = segment.parse::<queue_core::JobId>();
            let _ = segment.parse::<queue_core::LeaseId>();
            Ok(())
        })
        .unwrap();
}

test_support::backend_tests! {
    #[test]
    fn random_and_mutated_bodies_get_an_answer_on_every_route;
    #[test]
    fn random_ids_names_and_query_strings_get_an_answer;
}
