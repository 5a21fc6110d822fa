//! The admin CLI, `queuectl` (built as `queuectl-under-test`, see
//! Cargo.toml), run as a child process against a real server on
//! 127.0.0.1: each command, its exit codes, and its `--json` output
//! checked against the API's own answers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use queue_client::{CallbackState, Failure, JobState, LeaseOptions};
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Harness, Kind, PATIENCE};

/// What a run of queuectl printed and how it ended.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.stdout))
    }

    /// Stdout as JSON lines.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    #[track_caller]
    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn fails(self, code: i32, error_code: &str) -> Out {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(&format!("[{error_code}]"))
                || self.stderr.contains(&format!("\"code\":\"{error_code}\"")),
            "stderr: {}",
            self.stderr
        );
        self
    }
}

/// Runs queuectl with `args` against `url`, with `stdin` (or none: not a
/// terminal) and extra environment; kills it and fails after a minute.
fn run_with(url: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_queuectl-under-test"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("QUEUE_URL")
        .env_remove("QUEUE_TOKEN")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run queuectl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("queuectl {args:?} did not end within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

fn run(url: &str, args: &[&str]) -> Out {
    run_with(url, args, None, &[])
}

/// The server's own JSON for `GET path`, read without the SDK.
fn api_get(url: &str, path: &str) -> Value {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

fn http() -> (Harness, String) {
    // The CLI is a client of the HTTP API: its tests run on the embedded
    // store only (the API itself is tested on both in queue-server/tests).
    let h = Harness::new(Kind::Http, Backend::Sled);
    let url = h.url.clone().unwrap();
    (h, url)
}

#[test]
fn json_output_is_the_api_s_own_documents() {
    let (_h, url) = http();
    let job = run(
        &url,
        &[
            "--json",
            "enqueue",
            "emails",
            r#"{"to": "a@example.com"}"#,
            "--priority",
            "-5",
            "--delay",
            "1h",
            "--max-attempts",
            "3",
            "--backoff",
            "2s",
            "--correlation-id",
            "req-1",
            "--header",
            "tenant=acme",
            "--group",
            "g1",
            "--job-timeout",
            "5m",
            "--ttl",
            "2h",
            "--idempotency-key",
            "k-1",
        ],
    )
    .ok()
    .json();
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["payload"], json!({"to": "a@example.com"}));
    assert_eq!(
        (&job["priority"], &job["max_attempts"], &job["backoff_ms"]),
        (&json!(-5), &json!(3), &json!(2000))
    );
    assert_eq!(job["correlation_id"], "req-1");
    assert_eq!(job["headers"], json!({"tenant": "acme"}));
    assert_eq!(
        (&job["group"], &job["timeout_ms"]),
        (&json!("g1"), &json!(300_000))
    );
    assert_eq!(job["idempotency_key"], "k-1");
    let id = job["id"].as_str().unwrap().to_owned();
    // Field for field what the server answers.
    let api = api_get(&url, &format!("/v1/jobs/{id}"));
    assert_eq!(job, api);
    assert_eq!(run(&url, &["--json", "get", &id]).ok().json(), api);

    // The same key again: no new job, and the human output says so.
    let again = run(
        &url,
        &[
            "enqueue",
            "emails",
            r#"{"to": "a@example.com"}"#,
            "--priority",
            "-5",
            "--delay",
            "1h",
            "--max-attempts",
            "3",
            "--backoff",
            "2s",
            "--correlation-id",
            "req-1",
            "--header",
            "tenant=acme",
            "--group",
            "g1",
            "--job-timeout",
            "5m",
            "--ttl",
            "2h",
            "--idempotency-key",
            "k-1",
        ],
    )
    .ok();
    assert!(
        again.stdout.contains("nothing enqueued"),
        "{}",
        again.stdout
    );
    // With other options, the reused key is a conflict.
    run(
        &url,
        &["enqueue", "emails", "1", "--idempotency-key", "k-1"],
    )
    .fails(4, "conflict");

    // Stats: all queues, and one.
    assert_eq!(
        run(&url, &["--json", "stats"]).ok().json(),
        api_get(&url, "/v1/queues")
    );
    assert_eq!(
        run(&url, &["--json", "stats", "emails"]).ok().json(),
        api_get(&url, "/v1/queues/emails")
    );

    // Human output: the job's fields, one per line, with units.
    let shown = run(&url, &["get", &id]).ok().stdout;
    for expected in [
        "scheduled",
        "req-1",
        "tenant: acme",
        "0 of 3",
        "5m",
        "in 59m",
    ] {
        assert!(shown.contains(expected), "{expected:?} in\n{shown}");
    }
    let table = run(&url, &["stats"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("QUEUE") && lines[0].contains("SCHEDULED"),
        "{table}"
    );
    assert!(lines[1].starts_with("emails"), "{table}");
}

#[test]
fn payloads_come_from_an_argument_a_file_or_stdin() {
    let (h, url) = http();
    let from_stdin = run_with(
        &url,
        &["--json", "enqueue", "q", "-"],
        Some("[1, 2, 3]\n"),
        &[],
    )
    .ok()
    .json();
    assert_eq!(from_stdin["payload"], json!([1, 2, 3]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.json");
    std::fs::write(&path, r#"{"from": "file"}"#).unwrap();
    let from_file = run(
        &url,
        &["--json", "enqueue", "q", "--file", path.to_str().unwrap()],
    )
    .ok()
    .json();
    assert_eq!(from_file["payload"], json!({"from": "file"}));
    let human = run(&url, &["enqueue", "q", "\"text\""]).ok().stdout;
    assert!(human.starts_with("enqueued job "), "{human}");

    // Bad payloads are usage errors, and nothing is enqueued.
    let bad = run(&url, &["enqueue", "q", "{nope"]).fails(2, "usage");
    assert!(bad.stderr.contains("not JSON"), "{}", bad.stderr);
    run(&url, &["enqueue", "q"]).fails(2, "usage");
    run(
        &url,
        &["enqueue", "q", "--file", "/nonexistent/payload.json"],
    )
    .fails(2, "usage");
    // Out of range for the server: its refusal, exit 1, naming the field.
    let refused =
        run(&url, &["enqueue", "q", "1", "--max-attempts", "0"]).fails(1, "invalid_request");
    assert!(
        refused.stderr.contains("max_attempts"),
        "{}",
        refused.stderr
    );
    assert_eq!(h.blocking().stats("q").unwrap().ready, 3);
}

#[test]
fn exit_codes_tell_what_went_wrong() {
    let (h, url) = http();
    let client = h.blocking();
    let queue = client.queue::<u32>("jobs");

    // Not found, and conflict.
    run(&url, &["get", "nope"]).fails(3, "not_found");
    let id = queue.enqueue(&1).unwrap().id().to_string();
    run(&url, &["cancel", &id]).ok();
    run(&url, &["cancel", &id]).fails(4, "conflict");
    // Waiting on a cancelled job: 8, with the job shown.
    let cancelled = run(&url, &["--json", "wait", &id]).fails(8, "job_cancelled");
    assert_eq!(cancelled.json()["state"], "cancelled");

    // A wait that ends first: 7, the job still shown.
    let ready = queue.enqueue(&2).unwrap().id().to_string();
    let waited =
        run(&url, &["--json", "wait", &ready, "--timeout", "200ms"]).fails(7, "wait_timed_out");
    assert_eq!(waited.json()["state"], "ready");
    run(&url, &["enqueue", "jobs", "3", "--wait", "100ms"]).fails(7, "wait_timed_out");

    // A completed job: 0 and its result; a dead one: 8.
    let mut leased = queue.lease(&LeaseOptions::new().max_jobs(2)).unwrap();
    let second = leased.pop().unwrap();
    let first = leased.pop().unwrap();
    let (done, dead) = (first.job().id.to_string(), second.job().id.to_string());
    first.complete(&42).unwrap();
    second.fail(Failure::permanent("no")).unwrap();
    let completed = run(&url, &["--json", "wait", &done]).ok().json();
    assert_eq!(completed["result"], 42);
    let failed = run(&url, &["wait", &dead]).fails(8, "job_dead");
    assert!(failed.stderr.contains("no"), "{}", failed.stderr);

    // Usage errors are clap's: 2.
    assert_eq!(run(&url, &["frobnicate"]).code, 2);
    assert_eq!(run(&url, &["enqueue"]).code, 2);
    assert_eq!(run(&url, &["--timeout", "soon", "stats"]).code, 2);
    run("ftp://example.com", &["stats"]).fails(2, "usage");

    // Nobody listening: 5.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    run(&closed, &["stats"]).fails(5, "unreachable");

    // JSON errors on stderr with --json.
    let json_error = run(&url, &["--json", "get", "nope"]);
    assert_eq!(json_error.code, 3);
    let error: Value = serde_json::from_str(json_error.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
}

#[test]
fn a_wrong_or_missing_token_is_unauthorized() {
    let h = Harness::with_config(
        Kind::Http,
        Backend::Sled,
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    );
    let url = h.url.clone().unwrap();
    run(&url, &["stats"]).fails(6, "unauthorized");
    run(&url, &["--token", "wrong", "stats"]).fails(6, "unauthorized");
    run(&url, &["--token", "s3cret", "stats"]).ok();
    run_with(&url, &["stats"], None, &[("QUEUE_TOKEN", "s3cret")]).ok();
}

#[test]
fn json_lines_are_enqueued_in_batches_and_bad_lines_named() {
    let (h, url) = http();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.jsonl");
    std::fs::write(
        &path,
        [
            r#"{"payload": {"n": 1}}"#,
            r#"{"payload": {"n": 2}, "max_attempts": 0}"#,
            r#"{"payload": {"n": 3}, "priority": 7}"#,
            r#"{"payload": "#,
            "",
            r#"{"payload": {"n": 6}, "idempotency_key": "six"}"#,
            r#"{"payload": {"n": 6}, "idempotency_key": "six"}"#,
            r#"{"payload": {"n": 8}, "prority": 1}"#,
            r#"{"payload": {"n": 9}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let out = run(
        &url,
        &[
            "--json",
            "enqueue",
            "bulk",
            "--jsonl",
            path,
            "--lines",
            "body",
            "--max-attempts",
            "2",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let summary = out.json();
    assert_eq!(
        (
            &summary["lines"],
            &summary["accepted"],
            &summary["replayed"],
            &summary["refused"]
        ),
        (&json!(8), &json!(4), &json!(1), &json!(3))
    );
    let refused: Vec<u64> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [2, 4, 8]);
    assert!(
        summary["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("max_attempts"),
        "{summary}"
    );
    assert!(
        summary["errors"][2]["message"]
            .as_str()
            .unwrap()
            .contains("prority")
    );
    // Exactly the good lines are jobs, with their own options over the flags'.
    let client = h.blocking();
    assert_eq!(client.stats("bulk").unwrap().ready, 4);
    let leased = client
        .queue::<Value>("bulk")
        .lease(&LeaseOptions::new().max_jobs(10))
        .unwrap();
    let mut seen: Vec<(i64, i32, u32)> = leased
        .iter()
        .map(|l| {
            (
                l.payload()["n"].as_i64().unwrap(),
                l.job().priority,
                l.job().max_attempts,
            )
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [(1, 0, 2), (3, 7, 2), (6, 0, 2), (9, 0, 2)]);

    // Human output: each refused line on stderr, the summary on stdout.
    // Run again, the keyed lines are replays.
    let human = run(
        &url,
        &[
            "enqueue",
            "bulk",
            "--jsonl",
            path,
            "--lines",
            "body",
            "--max-attempts",
            "2",
        ],
    );
    assert_eq!(human.code, 1);
    assert!(
        human.stderr.contains("line 4: refused [invalid_request]"),
        "{}",
        human.stderr
    );
    assert!(
        human
            .stdout
            .contains("8 line(s): 3 accepted, 2 replayed, 3 refused"),
        "{}",
        human.stdout
    );

    // Payload lines, more than one batch; from stdin too.
    let many: String = (0..1_200).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let out = run_with(
        &url,
        &[
            "--json",
            "enqueue",
            "many",
            "--jsonl",
            "-",
            "--batch-size",
            "500",
            "--priority",
            "2",
        ],
        Some(&many),
        &[],
    )
    .ok();
    assert_eq!(out.json()["accepted"], 1_200);
    let stats = client.stats("many").unwrap();
    assert_eq!(stats.ready, 1_200);
}

/// Three dead jobs in `queue`.
fn make_dead(client: &queue_client::blocking::Client, queue: &str) -> Vec<String> {
    let jobs = client.queue::<u32>(queue);
    for n in 0..3 {
        jobs.enqueue(&n).unwrap();
    }
    jobs.lease(&LeaseOptions::new().max_jobs(3))
        .unwrap()
        .into_iter()
        .map(|leased| {
            let id = leased.job().id.to_string();
            assert_eq!(
                leased.fail(Failure::permanent("bounced")).unwrap(),
                JobState::Dead
            );
            id
        })
        .collect()
}

#[test]
fn dead_letters_are_listed_requeued_and_purged_with_confirmation() {
    let (h, url) = http();
    let client = h.blocking();
    let ids = make_dead(&client, "mail");

    let page = run(&url, &["--json", "dead", "list", "mail", "--limit", "2"])
        .ok()
        .json();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(page, api_get(&url, "/v1/queues/mail/dead?limit=2"));
    let next = page["next"].as_str().unwrap();
    let rest = run(&url, &["--json", "dead", "list", "mail", "--after", next])
        .ok()
        .json();
    assert_eq!(
        (rest["jobs"].as_array().unwrap().len(), &rest["next"]),
        (1, &Value::Null)
    );
    let all = run(
        &url,
        &["--json", "dead", "list", "mail", "--all", "--limit", "2"],
    )
    .ok()
    .lines();
    let listed: Vec<&str> = all.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids);
    let table = run(&url, &["dead", "list", "mail"]).ok().stdout;
    assert!(
        table.contains("bounced") && table.contains("1/5"),
        "{table}"
    );

    // Requeue-all and purge ask first; with no terminal to ask on, they
    // refuse and change nothing.
    let refused = run(&url, &["dead", "requeue", "mail", "--all"]).fails(2, "usage");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    run(&url, &["dead", "purge", "mail"]).fails(2, "usage");
    assert_eq!(client.stats("mail").unwrap().dead, 3);

    // Requeueing by id needs no confirmation.
    let one = run(&url, &["--json", "dead", "requeue", "mail", &ids[0]])
        .ok()
        .json();
    assert_eq!(one, json!({"requeued": 1}));
    let rest = run(
        &url,
        &["--json", "dead", "requeue", "mail", "--all", "--yes"],
    )
    .ok()
    .json();
    assert_eq!(rest, json!({"requeued": 2}));
    let stats = client.stats("mail").unwrap();
    assert_eq!((stats.dead, stats.ready), (0, 3));

    make_dead(&client, "mail");
    let purged = run(&url, &["dead", "purge", "mail", "--yes"]).ok().stdout;
    assert!(purged.contains("deleted 3 dead job(s)"), "{purged}");
    assert_eq!(client.stats("mail").unwrap().dead, 0);
}

#[test]
fn tail_follows_events_and_resumes_after_the_last_id() {
    let (h, url) = http();
    let client = h.blocking();
    let tailed = client.queue::<u32>("tailed");
    let other = client.queue::<u32>("other");
    let first: Vec<String> = (0..3)
        .map(|n| {
            other.enqueue(&n).unwrap();
            tailed.enqueue(&n).unwrap().id().to_string()
        })
        .collect();
    let out = run(
        &url,
        &[
            "--json", "tail", "--queue", "tailed", "--after", "0", "--count", "3",
        ],
    )
    .ok();
    let events = out.lines();
    let seen: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(seen, first);
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "ready" && e["queue"] == "tailed")
    );
    let last = events[2]["event_id"].as_u64().unwrap();
    assert!(
        out.stderr.contains(&format!("last event id: {last}")),
        "{}",
        out.stderr
    );

    // Resuming after it: only what came later.
    let later: Vec<String> = (3..5)
        .map(|n| tailed.enqueue(&n).unwrap().id().to_string())
        .collect();
    let last = last.to_string();
    let resumed = run(
        &url,
        &[
            "--json", "tail", "--queue", "tailed", "--after", &last, "--count", "2",
        ],
    )
    .ok()
    .lines();
    let seen: Vec<&str> = resumed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(seen, later);

    // Type filters, and human lines.
    client.job::<u32>(later[0].as_str()).cancel().unwrap();
    let human = run(
        &url,
        &[
            "tail",
            "--type",
            "cancelled",
            "--after",
            "0",
            "--count",
            "1",
        ],
    )
    .ok()
    .stdout;
    assert!(
        human.contains("cancelled") && human.contains(&later[0]),
        "{human}"
    );
    assert_eq!(run(&url, &["tail", "--type", "exploded"]).code, 2);

    // One job's events end with the job.
    let job_events = run(&url, &["--json", "events", &later[0]]).ok().lines();
    assert_eq!(job_events.last().unwrap()["type"], "cancelled");
}

#[test]
fn queues_are_paused_limited_and_scheduled() {
    let (_h, url) = http();
    run(&url, &["enqueue", "a", "1"]).ok();
    assert_eq!(
        run(&url, &["--json", "pause", "a"]).ok().json()["paused"],
        true
    );
    let paused = run(&url, &["stats", "a"]).ok().stdout;
    assert!(paused.contains("paused"), "{paused}");
    assert_eq!(
        run(&url, &["--json", "resume", "a"]).ok().json()["paused"],
        false
    );

    let limits = run(
        &url,
        &[
            "--json",
            "limits",
            "a",
            "--max-leased",
            "3",
            "--rate",
            "10/1s",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        limits,
        json!({"max_leased": 3, "rate_limit": {"jobs": 10, "per_ms": 1000}, "group_max_leased": null})
    );
    let lifted = run(&url, &["--json", "limits", "a", "--rate", "none"])
        .ok()
        .json();
    assert_eq!(
        (&lifted["max_leased"], &lifted["rate_limit"]),
        (&json!(3), &Value::Null)
    );
    assert_eq!(api_get(&url, "/v1/queues/a")["limits"], lifted);
    let shown = run(&url, &["limits", "a"]).ok().stdout;
    assert!(
        shown.contains("max_leased        3") && shown.contains("rate_limit        none"),
        "{shown}"
    );
    assert_eq!(run(&url, &["limits", "a", "--max-leased", "0"]).code, 2);

    // Schedules, each subcommand.
    let put = run(
        &url,
        &[
            "--json",
            "schedules",
            "put",
            "hourly",
            "--every",
            "1h",
            "--queue",
            "reports",
            r#"{"report": "sales"}"#,
            "--max-attempts",
            "2",
        ],
    )
    .ok()
    .json();
    assert_eq!(put, api_get(&url, "/v1/schedules/hourly"));
    assert_eq!(
        (&put["every_ms"], &put["queue"]),
        (&json!(3_600_000), &json!("reports"))
    );
    assert_eq!(put["job"]["payload"], json!({"report": "sales"}));
    let list = run(&url, &["--json", "schedules", "list"]).ok().json();
    assert_eq!(list, api_get(&url, "/v1/schedules"));
    let table = run(&url, &["schedules", "list"]).ok().stdout;
    assert!(
        table.contains("every 1h") && table.contains("reports"),
        "{table}"
    );
    let job = run(&url, &["--json", "schedules", "trigger", "hourly"])
        .ok()
        .json();
    assert_eq!(
        (&job["queue"], &job["schedule"]),
        (&json!("reports"), &json!("hourly"))
    );
    assert_eq!(job["max_attempts"], 2);
    assert_eq!(
        run(&url, &["--json", "schedules", "pause", "hourly"])
            .ok()
            .json()["paused"],
        true
    );
    assert_eq!(
        run(&url, &["--json", "schedules", "resume", "hourly"])
            .ok()
            .json()["paused"],
        false
    );
    let shown = run(&url, &["schedules", "get", "hourly"]).ok().stdout;
    assert!(shown.contains("every 1h"), "{shown}");
    run(&url, &["schedules", "delete", "hourly"]).ok();
    run(&url, &["schedules", "get", "hourly"]).fails(3, "not_found");
    assert_eq!(
        run(&url, &["schedules", "put", "x", "1"]).code,
        2,
        "--cron or --every is required"
    );
    run(&url, &["schedules", "put", "x", "--cron", "not cron"]).fails(1, "invalid_request");
}

/// A callback receiver on 127.0.0.1 that answers `410 Gone` to each
/// request (at most `max` of them, for at most a minute) and reports each.
fn gone_receiver(max: usize) -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut socket, _)) => {
                    socket.set_nonblocking(false).unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut bytes = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // Read the head and the body its Content-Length names.
                    while let Ok(n) = socket.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        bytes.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |n| n.trim().parse::<usize>().unwrap_or(0));
                            if bytes.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let _ = socket.write_all(
                        b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    served += 1;
                    let _ = tx.send(());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (url, rx)
}

#[test]
fn callbacks_are_listed_by_state_and_retried() {
    let (h, url) = http();
    let client = h.blocking();
    let (hook, delivered) = gone_receiver(2);
    let job = run(
        &url,
        &["--json", "enqueue", "hooked", "1", "--callback-url", &hook],
    )
    .ok()
    .json();
    let id = job["id"].as_str().unwrap().to_owned();
    let plain = client
        .queue::<u32>("hooked")
        .enqueue(&2)
        .unwrap()
        .id()
        .to_string();
    // Not finished yet: nothing to retry.
    run(&url, &["callbacks", "retry", &id]).fails(4, "conflict");
    run(&url, &["cancel", &id]).ok();
    delivered
        .recv_timeout(PATIENCE)
        .expect("the callback was sent");
    // The 410 ends the delivery as failed; its settling is a store write
    // after the answer, so look until it shows (bounded).
    let deadline = Instant::now() + PATIENCE;
    while client
        .callbacks(CallbackState::Failed, None, 10)
        .unwrap()
        .jobs
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the delivery never failed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let page = run(&url, &["--json", "callbacks", "list", "--state", "failed"])
        .ok()
        .json();
    assert_eq!(page, api_get(&url, "/v1/callbacks?state=failed"));
    assert_eq!(page["jobs"][0]["id"], id.as_str());
    assert_eq!(page["jobs"][0]["callback"]["last_status"], 410);
    let table = run(&url, &["callbacks", "list", "--state", "failed"])
        .ok()
        .stdout;
    assert!(table.contains("410") && table.contains(&id), "{table}");
    let none = run(&url, &["callbacks", "list", "--state", "delivered"])
        .ok()
        .stdout;
    assert!(none.contains("no jobs with a delivered callback"), "{none}");

    let retried = run(&url, &["--json", "callbacks", "retry", &id])
        .ok()
        .json();
    assert_eq!(retried["id"], id.as_str());
    assert_eq!(retried["callback"]["state"], "pending");
    delivered
        .recv_timeout(PATIENCE)
        .expect("the callback was sent again");
    run(&url, &["callbacks", "retry", &plain]).fails(4, "conflict");
    run(&url, &["callbacks", "retry", "nope"]).fails(3, "not_found");
    assert_eq!(run(&url, &["callbacks", "list", "--state", "lost"]).code, 2);
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run("http://127.0.0.1:1", &["completions", shell]).ok();
        assert!(
            out.stdout.contains("queuectl") && out.stdout.contains("enqueue"),
            "{shell}: {}",
            out.stdout
        );
    }
    assert_eq!(run("http://127.0.0.1:1", &["completions", "tcsh"]).code, 2);
    let help = run("http://127.0.0.1:1", &["--help"]).ok().stdout;
    assert!(
        help.contains("Exit codes:") && help.contains("QUEUE_TOKEN"),
        "{help}"
    );
}

#[test]
fn jobs_are_listed_by_state_and_by_correlation_id() {
    let (h, url) = http();
    let mut traced = Vec::new();
    for (queue, payload) in [("orders", "1"), ("mail", "2"), ("orders", "3")] {
        let job = run(
            &url,
            &[
                "--json",
                "enqueue",
                queue,
                payload,
                "--correlation-id",
                "req-9",
            ],
        )
        .ok()
        .json();
        traced.push(job["id"].as_str().unwrap().to_owned());
    }
    let untraced = run(&url, &["--json", "enqueue", "orders", "4"]).ok().json();
    h.blocking()
        .job::<u32>(traced[2].as_str())
        .cancel()
        .unwrap();

    let ready = run(&url, &["--json", "jobs", "orders", "--state", "ready"])
        .ok()
        .json();
    assert_eq!(
        ready,
        api_get(&url, "/v1/queues/orders/jobs?state=ready&limit=100")
    );
    let ids: Vec<&str> = ready["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [traced[0].as_str(), untraced["id"].as_str().unwrap()]);

    // Paged one at a time, --all follows `next` to the end.
    let all = run(
        &url,
        &[
            "--json",
            "jobs",
            "--correlation-id",
            "req-9",
            "--all",
            "--limit",
            "1",
        ],
    )
    .ok()
    .lines();
    let ids: Vec<&str> = all.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, traced);
    let first = run(&url, &["jobs", "--correlation-id", "req-9", "--limit", "1"])
        .ok()
        .stdout;
    assert!(
        first.contains(&traced[0]) && first.contains("--after"),
        "{first}"
    );
    let cancelled = run(&url, &["jobs", "orders", "--state", "cancelled"])
        .ok()
        .stdout;
    assert!(cancelled.contains(&traced[2]), "{cancelled}");
    let none = run(&url, &["jobs", "orders", "--state", "dead"])
        .ok()
        .stdout;
    assert!(none.contains("no dead jobs in queue orders"), "{none}");

    // A queue needs a state, a state a queue; one or the other.
    assert_eq!(run(&url, &["jobs", "orders"]).code, 2);
    assert_eq!(run(&url, &["jobs", "--state", "ready"]).code, 2);
    assert_eq!(
        run(&url, &["jobs", "orders", "--state", "finished"]).code,
        2
    );
    run(&url, &["jobs"]).fails(2, "usage");
}

#[test]
fn history_is_shown_as_a_table_and_as_the_api_s_json() {
    let (h, url) = http();
    let client = h.blocking();
    let queue = client.queue::<u32>("h");
    for n in 0..3 {
        queue.enqueue(&n).unwrap();
    }
    let leased = queue.lease(&LeaseOptions::new()).unwrap();
    for job in leased {
        job.complete(&()).unwrap();
    }
    let now = now_ms();
    let (from, to) = ((now - 600_000).to_string(), (now + 60_000).to_string());
    let history = run(
        &url,
        &[
            "--json", "history", "h", "--from", &from, "--to", &to, "--step", "1m",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        history,
        api_get(
            &url,
            &format!("/v1/queues/h/history?from={from}&to={to}&step_ms=60000")
        )
    );
    let points = history["points"].as_array().unwrap();
    let total = |field: &str| -> u64 { points.iter().map(|p| p[field].as_u64().unwrap()).sum() };
    assert_eq!((total("enqueued"), total("completed")), (3, 1));

    let table = run(&url, &["history", "h", "--from", "10m"]).ok().stdout;
    assert!(
        table.starts_with("AT (UTC)")
            && table.contains("ENQUEUED")
            && table.contains("steps of 1m"),
        "{table}"
    );
    run(&url, &["history", "h", "--step", "90s"]).fails(1, "invalid_request");
    assert_eq!(run(&url, &["history", "h", "--from", "soon"]).code, 2);
}

/// Unix ms now.
fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn tail_reconnects_after_a_restart_without_losing_or_repeating_events() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = crate::kill9::spawn_server(dir.path());
    let url = format!("http://{addr}");
    let queue = queue_client::blocking::Client::connect(&url)
        .unwrap()
        .queue::<u32>("r");
    let first = queue.enqueue(&1).unwrap().id().to_string();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_queuectl-under-test"))
        .args([
            "--url", &url, "--json", "tail", "--queue", "r", "--after", "0",
        ])
        .args(["--count", "2"])
        .env_remove("QUEUE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen_first: Value = serde_json::from_str(&lines.recv_timeout(PATIENCE).unwrap()).unwrap();
    assert_eq!(seen_first["id"], first.as_str());

    // SIGKILL the server under the open stream, restart it on the same
    // address and data, and make the next event there.
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, _) = crate::kill9::spawn_server_at(dir.path(), &addr.to_string());
    let second = queue_client::blocking::Client::connect(&url)
        .unwrap()
        .queue::<u32>("r")
        .enqueue(&2)
        .unwrap()
        .id()
        .to_string();
    let seen_second: Value = serde_json::from_str(&lines.recv_timeout(PATIENCE).unwrap()).unwrap();
    assert_eq!(seen_second["id"], second.as_str());
    assert!(seen_second["event_id"].as_u64() > seen_first["event_id"].as_u64());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tail did not stop after 2 events"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(
        lines.recv_timeout(Duration::from_millis(100)).is_err(),
        "nothing repeated"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
