//! The web dashboard (`/ui/`) driven in a real headless Chromium (Debian's
//! `chromium`, installed by `scripts/install-chromium.sh`) against a real
//! server on 127.0.0.1: the overview shows the numbers the API reports, a
//! requeue clicked in the page (through its confirmation) changes the
//! store, a live event appears without a reload, and the token prompt
//! refuses a wrong token and loads the data with the right one.
//!
//! Waiting is on the page itself: each wait is a promise evaluated in the
//! page that a `MutationObserver` resolves when the condition holds, with a
//! bounded timeout, so no test sleeps. Every test writes screenshots (PNG,
//! 1366x768) under `target/ci-artifacts/screenshots/` and fails, not skips,
//! when Chromium is missing. JavaScript exceptions thrown by the page fail
//! the test.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::js_protocol::runtime::{EvaluateParams, EventExceptionThrown};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use queue_client::{ClientOptions, EnqueueOptions, Failure, JobState, LeaseOptions};
use queue_core::{Config, ManualClock, Queue};
use queue_server::{App, ServerConfig};
use serde_json::Value;

use crate::common::{Backend, Harness, Kind};

/// How long a wait on the page may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// Where Debian installs Chromium; `QUEUE_TEST_CHROMIUM` overrides it.
/// Without an override and with no Chromium there, the project's own
/// `scripts/install-chromium.sh` installs it first (once per test run), so
/// that `cargo test --workspace` on a fresh machine needs nothing else.
fn chromium() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let overridden = std::env::var_os("QUEUE_TEST_CHROMIUM").map(PathBuf::from);
    let path = overridden
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if overridden.is_none() && !path.exists() {
        let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        if !path.exists() {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-chromium.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .expect("run scripts/install-chromium.sh");
            assert!(
                status.success(),
                "scripts/install-chromium.sh failed ({status}): the dashboard's browser tests \
                 need Debian's chromium"
            );
        }
    }
    assert!(
        path.exists(),
        "Chromium is not installed at {}: run scripts/install-chromium.sh (the dashboard's \
         browser tests need it{})",
        path.display(),
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            "; under CI=true they fail rather than skip"
        } else {
            ""
        }
    );
    path
}

/// The folder the screenshots go to, created on first use.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ci-artifacts/screenshots")
        .components()
        .collect::<PathBuf>();
    std::fs::create_dir_all(&dir).expect("create the screenshots folder");
    dir
}

/// A headless Chromium with a fresh profile, and one page in it.
struct Session {
    browser: Browser,
    page: Page,
    handler: tokio::task::JoinHandle<()>,
    exceptions: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Session {
    async fn open(url: &str) -> Session {
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .no_sandbox()
            .args([
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "disable-dev-shm-usage",
            ])
            .user_data_dir(profile.path())
            .window_size(1366, 768)
            .viewport(Viewport {
                width: 1366,
                height: 768,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            })
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(WAIT)
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config)
            .await
            .expect("launch Chromium (scripts/install-chromium.sh installs it)");
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page("about:blank").await.expect("a page");
        let exceptions = Arc::new(Mutex::new(Vec::new()));
        let mut thrown = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("listen for exceptions");
        let seen = Arc::clone(&exceptions);
        tokio::spawn(async move {
            while let Some(event) = thrown.next().await {
                let details = &event.exception_details;
                let text = details
                    .exception
                    .as_ref()
                    .and_then(|e| e.description.clone())
                    .unwrap_or_else(|| details.text.clone());
                seen.lock().unwrap().push(text);
            }
        });
        page.goto(url).await.expect("open the dashboard");
        Session {
            browser,
            page,
            handler,
            exceptions,
            _profile: profile,
        }
    }

    /// Evaluates `expression` (which may be a promise) and returns its value.
    async fn eval(&self, expression: &str) -> Value {
        let params = EvaluateParams::builder()
            .expression(expression)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .expect("evaluate params");
        self.page
            .evaluate(params)
            .await
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
            .value()
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until the JavaScript expression `condition` is truthy in the
    /// page (re-checked on every DOM change), and returns its value.
    async fn wait_for(&self, what: &str, condition: &str) -> Value {
        let script = format!(
            r#"new Promise((resolve, reject) => {{
                const check = () => {{
                    let value;
                    try {{ value = ({condition}); }} catch (e) {{ value = null; }}
                    if (value) {{ observer.disconnect(); clearTimeout(timer); resolve(value); }}
                    return value;
                }};
                const observer = new MutationObserver(check);
                const timer = setTimeout(() => {{
                    observer.disconnect();
                    reject(new Error({what:?} + ' did not happen within {ms} ms'));
                }}, {ms});
                if (!check()) observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
            }})"#,
            ms = WAIT.as_millis(),
        );
        let params = EvaluateParams::builder()
            .expression(script)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .expect("evaluate params");
        match self.page.evaluate(params).await {
            Ok(result) => result.value().cloned().unwrap_or(Value::Null),
            Err(e) => {
                let shot = self.screenshot("failed-wait").await;
                panic!("waiting until {what}: {e} (screenshot: {})", shot.display())
            }
        }
    }

    /// Clicks `opener`, waits for the confirmation dialog, answers it (its
    /// OK button when `ok`, else Cancel) and waits for it to close.
    async fn confirm(&self, opener: &str, ok: bool) {
        self.click(opener).await;
        self.wait_for(
            "the confirmation opens",
            "document.querySelector('#confirm').open",
        )
        .await;
        self.click(if ok { "#confirm-ok" } else { "#confirm-cancel" })
            .await;
        self.wait_for(
            "the confirmation closes",
            "!document.querySelector('#confirm').open",
        )
        .await;
    }

    /// Moves to another view of the page (its hash route), without a reload.
    async fn show(&self, hash: &str) {
        self.eval(&format!("location.hash = {hash:?}")).await;
    }

    /// Clicks the element once it is there and enabled. The click is
    /// dispatched in the page, in the same task that finds the element:
    /// the page redraws its lists as events arrive, and a click through the
    /// DevTools input (find the node, then press the mouse on it) could
    /// land between a redraw's removal of the node and its replacement.
    async fn click(&self, selector: &str) {
        let found = format!(
            "(() => {{ const el = document.querySelector({selector:?}); \
             if (!el || el.disabled) return false; el.scrollIntoView({{block: 'center'}}); \
             el.click(); return true; }})()"
        );
        self.wait_for(&format!("{selector} can be clicked"), &found)
            .await;
    }

    async fn type_into(&self, selector: &str, text: &str) {
        let element = self
            .page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("no element {selector}: {e}"));
        element.click().await.expect("focus the field");
        element.type_str(text).await.expect("type");
    }

    /// Saves a PNG of the viewport and returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let path = screenshots().join(format!("{name}.png"));
        self.page
            .save_screenshot(ScreenshotParams::builder().build(), &path)
            .await
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }

    /// Checks that the page threw nothing, and closes the browser.
    async fn close(mut self) {
        let exceptions = self.exceptions.lock().unwrap().clone();
        assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// A server over HTTP, and a client of it (with `token` when given).
fn server(token: Option<&str>) -> (Harness, queue_client::Client) {
    let config = ServerConfig {
        token: token.map(str::to_owned),
        ..ServerConfig::default()
    };
    // The page is a client of the HTTP API: the browser tests run on the
    // embedded store only (the API is tested on both in queue-server/tests).
    let h = Harness::with_config(Kind::Http, Backend::Sled, config);
    let options = match token {
        Some(token) => ClientOptions::new().token(token),
        None => ClientOptions::new(),
    };
    let client = h.client_with(options);
    (h, client)
}

fn ui(h: &Harness, fragment: &str) -> String {
    format!(
        "{}/ui/{fragment}",
        h.url.as_deref().expect("an HTTP harness")
    )
}

/// A server whose store runs on a manual clock, on a runtime of its own.
struct ManualServer {
    url: String,
    clock: ManualClock,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl ManualServer {
    fn start(start_ms: u64) -> ManualServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(start_ms);
        let core = Queue::open_with(Config::new(dir.path()).clock(clock.clone())).expect("open");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = App::new(core, ServerConfig::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("adopt listener");
            queue_server::run(listener, app, async move {
                let _ = stopped.await;
            })
            .await
        });
        ManualServer {
            url,
            clock,
            runtime: Some(runtime),
            stop: Some(stop),
            _dir: dir,
        }
    }
}

impl Drop for ManualServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An hour of traffic on three queues, one simulated minute at a time,
/// ending at the current minute: enqueues rising and falling, waits and
/// run times that vary, failed attempts and dead letters on two queues.
/// It leaves jobs in every state: ready, leased, scheduled (delayed),
/// completed, dead and cancelled, and one queue paused.
async fn an_hour_of_traffic(server: &ManualServer, client: &queue_client::Client) {
    const MINUTE: u64 = 60_000;
    for minute in 0..60u64 {
        let wave = ((minute as f64) / 60.0 * std::f64::consts::TAU).sin() / 2.0 + 0.5;
        let mut spent = 0;
        let plan: [(&str, usize, usize); 3] =
            [("emails", 8, 6), ("thumbnails", 5, 0), ("webhooks", 3, 4)];
        for (queue, base, _) in plan {
            let n = base + (wave * base as f64).round() as usize;
            let payloads: Vec<Value> = (0..n)
                .map(|i| serde_json::json!({"queue": queue, "minute": minute, "n": i}))
                .collect();
            client
                .queue::<Value>(queue)
                .enqueue_batch(&payloads)
                .await
                .unwrap();
        }
        let wait = 800 + (wave * 4_000.0) as u64;
        server.clock.advance(Duration::from_millis(wait));
        spent += wait;
        for (queue, base, fail_every) in plan {
            let jobs = client.queue::<Value>(queue);
            let leased = jobs
                .lease(&LeaseOptions::new().max_jobs(100))
                .await
                .unwrap();
            let run = 120 + (minute % 7) * 40 + base as u64 * 10;
            server.clock.advance(Duration::from_millis(run));
            spent += run;
            for (i, job) in leased.into_iter().enumerate() {
                if fail_every > 0 && i % fail_every == 1 {
                    let failure = if minute % 3 == 0 {
                        Failure::permanent("HTTP 410 from the receiver")
                    } else {
                        Failure::new("connection reset by peer").retry_in(Duration::from_secs(20))
                    };
                    job.fail(failure).await.unwrap();
                } else {
                    job.complete(&serde_json::json!({"ok": true}))
                        .await
                        .unwrap();
                }
            }
        }
        server.clock.advance(Duration::from_millis(MINUTE - spent));
    }
    // What is left: a few ready, two leased, three delayed, one cancelled,
    // and a paused queue with a backlog.
    let emails = client.queue::<Value>("emails");
    for n in 0..6 {
        emails
            .enqueue(
                &serde_json::json!({"to": format!("user{n}@example.com"), "template": "welcome"}),
            )
            .await
            .unwrap();
    }
    let leased = emails
        .lease(&LeaseOptions::new().max_jobs(2))
        .await
        .unwrap();
    // They stay leased: the manual clock does not move again.
    drop(leased);
    let reports = client.queue::<Value>("reports");
    for n in 0..3 {
        reports
            .enqueue_with(
                &serde_json::json!({"report": n}),
                EnqueueOptions::new().delay(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
    }
    let cancelled = reports
        .enqueue(&serde_json::json!({"report": "x"}))
        .await
        .unwrap();
    cancelled.cancel().await.unwrap();
    let thumbnails = client.queue::<Value>("thumbnails");
    thumbnails.pause().await.unwrap();
    for n in 0..12 {
        thumbnails
            .enqueue(&serde_json::json!({"image": format!("img-{n}.jpg")}))
            .await
            .unwrap();
    }
    server.clock.advance(Duration::from_millis(1_500));
}

/// How the dashboard prints a count: as it is below 1,000, else with a
/// unit and at most two significant figures below ten (`1.2k`, `35k`,
/// `4.1M`).
fn readable(n: u64) -> String {
    if n < 1000 {
        return n.to_string();
    }
    let (x, unit) = if n < 999_500 {
        (n as f64 / 1e3, "k")
    } else {
        (n as f64 / 1e6, "M")
    };
    let text = if x < 10.0 {
        format!("{:.1}", (x * 10.0).round() / 10.0)
    } else {
        format!("{:.0}", x.round())
    };
    format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// The number the page shows for `queue` and `field` (its `data-value`)
/// must be the API's, and the text must be that number as the dashboard
/// prints it; the totals above the table add the queues up; the charts
/// are drawn from the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_numbers_the_api_reports() {
    // The hour ends at the current minute, so that the page's "last hour"
    // (the browser's clock) shows it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let server = ManualServer::start(now / 60_000 * 60_000 - 60 * 60_000);
    let client = queue_client::Client::connect(&server.url).expect("client");
    an_hour_of_traffic(&server, &client).await;
    let session = Session::open(&format!("{}/ui/", server.url)).await;
    let reported = client.queues().await.unwrap();
    assert_eq!(reported.len(), 4);
    session
        .wait_for(
            "the queues table lists the four queues",
            "document.querySelectorAll('#queues tbody tr[data-queue]').length === 4",
        )
        .await;
    let shown = session
        .eval(
            r#"[...document.querySelectorAll('#queues tbody tr[data-queue]')].map((row) => ({
                queue: row.dataset.queue,
                paused: row.querySelector('.badge').textContent,
                cells: Object.fromEntries([...row.querySelectorAll('td[data-field]')]
                    .map((td) => [td.dataset.field, [td.dataset.value, td.textContent]])),
            }))"#,
        )
        .await;
    let shown = shown.as_array().expect("rows");
    assert_eq!(shown.len(), reported.len());
    for (row, stats) in shown.iter().zip(&reported) {
        assert_eq!(row["queue"], stats.queue.as_str());
        assert_eq!(
            row["paused"],
            if stats.paused { "paused" } else { "active" },
            "{}",
            stats.queue
        );
        for (field, value) in [
            ("scheduled", stats.scheduled),
            ("ready", stats.ready),
            ("leased", stats.leased),
            ("completed", stats.completed),
            ("dead", stats.dead),
            ("cancelled", stats.cancelled),
        ] {
            let cell = &row["cells"][field];
            assert_eq!(cell[0], value.to_string(), "{} {field}", stats.queue);
            assert_eq!(
                cell[1],
                value.to_string(),
                "{} {field} as shown",
                stats.queue
            );
        }
        let age = &row["cells"]["oldest_ready_age_ms"][0];
        match stats.oldest_ready_age_ms {
            None => assert_eq!(age, "", "{}", stats.queue),
            Some(_) => assert_ne!(age, "", "{}", stats.queue),
        }
    }
    // The totals above the table add the queues up.
    let totals = session
        .eval(
            "Object.fromEntries([...document.querySelectorAll('[data-total]')].map((el) => [el.dataset.total, el.textContent]))",
        )
        .await;
    for (field, sum) in [
        ("ready", reported.iter().map(|s| s.ready).sum::<u64>()),
        ("leased", reported.iter().map(|s| s.leased).sum()),
        ("scheduled", reported.iter().map(|s| s.scheduled).sum()),
        ("dead", reported.iter().map(|s| s.dead).sum()),
    ] {
        assert_eq!(totals[field], readable(sum), "total {field}");
    }
    session
        .wait_for(
            "both charts are drawn from the history",
            "document.querySelectorAll('.chart .uplot canvas').length === 2",
        )
        .await;
    session.screenshot("overview").await;

    // The queue page shows the same counts on its tabs.
    session.show("#/queues/emails/ready").await;
    let emails = client.stats("emails").await.unwrap();
    session
        .wait_for(
            "the queue page shows its counts",
            &format!(
                "document.querySelector('.tabs .count[data-field=\"dead\"]')?.textContent === '{}'",
                emails.dead
            ),
        )
        .await;
    // Its ready jobs are listed (the listing is oldest first).
    session
        .wait_for(
            "the queue page lists its ready jobs",
            &format!(
                "document.querySelectorAll('table.jobs tbody tr[data-job]').length === {}",
                emails.ready
            ),
        )
        .await;
    session.screenshot("queue").await;

    // Limits edited in the page are the queue's limits.
    session.click("#edit-limits").await;
    session.type_into("#limit-max-leased", "5").await;
    session.type_into("#limit-rate-jobs", "100").await;
    session.type_into("#limit-rate-per", "1000").await;
    session.click("#save-limits").await;
    session
        .wait_for(
            "the limits are shown saved",
            "document.querySelector('#edit-limits') && document.querySelector('.kv dd')?.textContent === '5'",
        )
        .await;
    let limits = client.stats("emails").await.unwrap().limits;
    assert_eq!(limits.max_leased, Some(5));
    assert_eq!(
        limits.rate_limit.map(|r| (r.jobs, r.per_ms)),
        Some((100, 1000))
    );
    assert_eq!(limits.group_max_leased, None);

    // Pause and resume.
    session.click("#pause-toggle").await;
    session
        .wait_for(
            "the queue shows paused",
            "document.querySelector('#pause-toggle')?.textContent === 'Resume'",
        )
        .await;
    assert!(client.stats("emails").await.unwrap().paused);
    session.click("#pause-toggle").await;
    session
        .wait_for(
            "the queue shows resumed",
            "document.querySelector('#pause-toggle')?.textContent === 'Pause'",
        )
        .await;
    assert!(!client.stats("emails").await.unwrap().paused);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_clicked_in_the_page_changes_the_store() {
    let (h, client) = server(None);
    let mail = client.queue::<Value>("mail");
    let mut handles = Vec::new();
    for n in 0..4 {
        let handle = mail
            .enqueue(&serde_json::json!({"to": format!("user{n}@example.com")}))
            .await
            .unwrap();
        handles.push(handle);
    }
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
    for job in mail.lease(&LeaseOptions::new().max_jobs(4)).await.unwrap() {
        let n = job.payload()["to"].as_str().unwrap_or("").to_owned();
        job.fail(Failure::permanent(format!("bounce {n}")))
            .await
            .unwrap();
    }
    assert_eq!(client.stats("mail").await.unwrap().dead, 4);

    let session = Session::open(&ui(&h, "#/dead/mail")).await;
    session
        .wait_for(
            "the dead letters are listed",
            "document.querySelectorAll('table.jobs tbody tr[data-job]').length === 4",
        )
        .await;

    // Cancelling the confirmation changes nothing.
    let first = &ids[0];
    session.click(&format!("[data-requeue=\"{first}\"]")).await;
    session
        .wait_for(
            "the confirmation opens",
            "document.querySelector('#confirm').open",
        )
        .await;
    session.screenshot("requeue-confirm").await;
    session.click("#confirm-cancel").await;
    session
        .wait_for(
            "the confirmation closes",
            "!document.querySelector('#confirm').open",
        )
        .await;
    assert_eq!(client.stats("mail").await.unwrap().dead, 4);

    // Confirmed: the job is ready again with its attempts reset.
    session
        .confirm(&format!("[data-requeue=\"{first}\"]"), true)
        .await;
    session
        .wait_for(
            "the requeued job leaves the list",
            &format!(
                "document.querySelectorAll('table.jobs tbody tr[data-job]').length === 3 && \
                 !document.querySelector('tr[data-job=\"{first}\"]')"
            ),
        )
        .await;
    let job = handles[0].get().await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Ready, 0));
    for handle in &handles[1..] {
        assert_eq!(handle.status().await.unwrap(), JobState::Dead);
    }

    // Two selected, requeued together.
    for id in &ids[1..3] {
        session
            .click(&format!("tr[data-job=\"{id}\"] input[type=checkbox]"))
            .await;
    }
    session
        .wait_for(
            "the button counts the selection",
            "document.querySelector('#requeue-selected').textContent.includes('(2)')",
        )
        .await;
    session.confirm("#requeue-selected", true).await;
    session
        .wait_for(
            "one dead letter is left",
            "document.querySelectorAll('table.jobs tbody tr[data-job]').length === 1",
        )
        .await;
    let stats = client.stats("mail").await.unwrap();
    assert_eq!((stats.dead, stats.ready), (1, 3));
    assert_eq!(handles[3].status().await.unwrap(), JobState::Dead);
    session.screenshot("dead-letters").await;

    // The three requeued jobs fail for good again: the page shows all four
    // (live, from the events), and "Requeue all" takes every one.
    let kill = || async {
        for job in mail.lease(&LeaseOptions::new().max_jobs(4)).await.unwrap() {
            job.fail(Failure::permanent("bounce again")).await.unwrap();
        }
    };
    kill().await;
    assert_eq!(client.stats("mail").await.unwrap().dead, 4);
    let four_listed = "document.querySelectorAll('table.jobs tbody tr[data-job]').length === 4 && \
                       document.querySelector('#requeue-all').textContent.includes('(4)')";
    session
        .wait_for("the four dead letters are listed", four_listed)
        .await;
    session.confirm("#requeue-all", true).await;
    let none_listed = "document.querySelectorAll('table.jobs tbody tr[data-job]').length === 0";
    session
        .wait_for("no dead letter is left", none_listed)
        .await;
    let stats = client.stats("mail").await.unwrap();
    assert_eq!((stats.dead, stats.ready), (0, 4));
    for handle in &handles {
        let job = handle.get().await.unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Ready, 0));
    }

    // Dead again, then purged: cancelling keeps them, confirming deletes
    // every one from the store.
    kill().await;
    session
        .wait_for("the four dead letters are back", four_listed)
        .await;
    session.confirm("#purge", false).await;
    assert_eq!(client.stats("mail").await.unwrap().dead, 4);
    session.confirm("#purge", true).await;
    session
        .wait_for("the purged list is empty", none_listed)
        .await;
    assert_eq!(client.stats("mail").await.unwrap().dead, 0);
    for handle in &handles {
        assert!(
            handle.get().await.is_err(),
            "purged job {} is still stored",
            handle.id()
        );
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_appears_without_a_reload() {
    let (h, client) = server(None);
    client.queue::<u32>("existing").enqueue(&1).await.unwrap();
    let session = Session::open(&ui(&h, "")).await;
    session
        .wait_for(
            "the page is subscribed to the events",
            "document.querySelector('#live').dataset.state === 'live' && \
             document.querySelector('#queues tr[data-queue=\"existing\"]')",
        )
        .await;
    // A mark on the window: a reload would lose it.
    session.eval("window.__notReloaded = true").await;

    let handle = client.queue::<u32>("fresh").enqueue(&7).await.unwrap();
    let id = handle.id().to_string();
    session
        .wait_for(
            "the event shows in the live activity",
            &format!("document.querySelector('#activity [data-job=\"{id}\"]')"),
        )
        .await;
    session
        .wait_for(
            "the new queue shows in the table",
            "document.querySelector('#queues tr[data-queue=\"fresh\"] td[data-field=\"ready\"]')?.dataset.value === '1'",
        )
        .await;
    assert_eq!(session.eval("window.__notReloaded === true").await, true);
    session
        .eval("document.querySelector('#activity').scrollIntoView({block: 'end'})")
        .await;
    session.screenshot("live").await;

    // The job's page follows it live too.
    // The search box finds it by id.
    session.type_into("#search-input", &id).await;
    session
        .page
        .find_element("#search-input")
        .await
        .expect("the search box")
        .press_key("Enter")
        .await
        .expect("press Enter");
    session
        .wait_for(
            "the search opens the job's page",
            &format!("location.hash === '#/jobs/{id}'"),
        )
        .await;
    session
        .wait_for(
            "the job page shows its timeline",
            "document.querySelectorAll('#timeline li:not(.recorded) .badge').length >= 1",
        )
        .await;
    let leased = client
        .queue::<u32>("fresh")
        .lease(&LeaseOptions::new())
        .await
        .unwrap();
    leased
        .into_iter()
        .next()
        .unwrap()
        .complete(&())
        .await
        .unwrap();
    session
        .wait_for(
            "the timeline shows the completion",
            "[...document.querySelectorAll('#timeline li .badge')].some((b) => b.textContent === 'completed')",
        )
        .await;
    session
        .wait_for(
            "the job page re-reads the job",
            "document.querySelector('.page-head .badge')?.textContent === 'completed'",
        )
        .await;
    session.screenshot("job").await;

    // Its correlation id links to every job of that id.
    let correlation = client
        .queue::<u32>("fresh")
        .enqueue_with(&8, EnqueueOptions::new().correlation_id("order-17"))
        .await
        .unwrap();
    session.show("#/correlation/order-17").await;
    session
        .wait_for(
            "the correlation id's jobs are listed",
            &format!(
                "document.querySelector('table.jobs tr[data-job=\"{}\"]')",
                correlation.id()
            ),
        )
        .await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_prompt_refuses_a_wrong_token_and_loads_with_the_right_one() {
    let (h, client) = server(Some("s3cret-t0ken"));
    client.queue::<u32>("guarded").enqueue(&1).await.unwrap();
    let session = Session::open(&ui(&h, "")).await;
    session
        .wait_for(
            "the token prompt opens",
            "document.querySelector('#token-dialog').open",
        )
        .await;
    session.screenshot("token-prompt").await;

    session.type_into("#token-input", "wrong").await;
    session.click("#token-submit").await;
    session
        .wait_for(
            "the prompt says the token was refused",
            "document.querySelector('#token-dialog').open && \
             document.querySelector('#token-message').classList.contains('wrong')",
        )
        .await;
    let message = session
        .eval("document.querySelector('#token-message').textContent")
        .await;
    assert!(
        message.as_str().unwrap_or("").contains("refused"),
        "{message}"
    );
    session.screenshot("token-refused").await;

    session.type_into("#token-input", "s3cret-t0ken").await;
    session.click("#token-submit").await;
    session
        .wait_for(
            "the data loads",
            "!document.querySelector('#token-dialog').open && \
             document.querySelector('#queues tr[data-queue=\"guarded\"] td[data-field=\"ready\"]')?.dataset.value === '1'",
        )
        .await;
    assert_eq!(
        session
            .eval("sessionStorage.getItem('queue-dashboard.token')")
            .await,
        "s3cret-t0ken"
    );
    session
        .wait_for(
            "the event stream is live with the token",
            "document.querySelector('#live').dataset.state === 'live'",
        )
        .await;
    session.screenshot("token-accepted").await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_paused_resumed_and_run_from_the_page() {
    let (h, client) = server(None);
    client
        .schedule("nightly")
        .cron("0 3 * * *")
        .queue("reports")
        .job(&serde_json::json!({"report": "sales"}))
        .put()
        .await
        .unwrap();
    let session = Session::open(&ui(&h, "#/schedules")).await;
    let row = "tr[data-schedule=\"nightly\"]";
    let badge = |text: &str| {
        format!("(document.querySelector('{row} .badge') || {{}}).textContent === '{text}'")
    };
    session
        .wait_for("the schedule is listed as active", &badge("active"))
        .await;
    // The first button of the row pauses (then resumes); the second runs it.
    let toggle = format!("{row} .toolbar button:nth-child(1)");
    let run_now = format!("{row} .toolbar button:nth-child(2)");

    session.click(&toggle).await;
    session
        .wait_for("the schedule shows as paused", &badge("paused"))
        .await;
    assert!(client.get_schedule("nightly").await.unwrap().paused);

    session.click(&toggle).await;
    session
        .wait_for("the schedule shows as active again", &badge("active"))
        .await;
    assert!(!client.get_schedule("nightly").await.unwrap().paused);

    // "Run now" asks first; cancelling enqueues nothing.
    session.confirm(&run_now, false).await;
    assert_eq!(client.stats("reports").await.unwrap().ready, 0);

    session.confirm(&run_now, true).await;
    let shown = session
        .wait_for(
            "the page shows the job the run enqueued",
            &format!(
                "(() => {{ const a = document.querySelector('{row} a[href^=\"#/jobs/\"]'); \
                 return a ? a.textContent : false; }})()"
            ),
        )
        .await;
    let stored = client.get_schedule("nightly").await.unwrap();
    let last = stored
        .last_job_id
        .expect("the run is recorded on the schedule");
    assert_eq!(shown.as_str(), Some(last.to_string().as_str()));
    assert_eq!(client.stats("reports").await.unwrap().ready, 1);
    session.screenshot("schedules").await;
    session.close().await;
}
