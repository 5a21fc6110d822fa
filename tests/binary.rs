//! The `queue-server` binary's command line.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args(args)
        .env_remove("QUEUE_TOKEN")
        .output()
        .expect("run queue-server");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_flag() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--data-dir",
        "--listen",
        "--token",
        "--max-body",
        "--durability",
        "--flush-interval",
        "--retain-completed",
        "--retain-dead",
        "--retain-cancelled",
        "--log-format",
        "--max-connections",
        "--shutdown-timeout",
        "--event-retention",
        "--event-max",
        "--webhook-secret",
        "--callback-timeout",
        "--callback-concurrency",
        "--callback-hosts",
        "--body-timeout",
        "--idle-timeout",
        "QUEUE_IDLE_TIMEOUT",
        "RUST_LOG",
        "QUEUE_WEBHOOK_SECRET",
        "[default: 24h]",
        "QUEUE_DATA_DIR",
        "[default: ./queue-data]",
        "[default: 127.0.0.1:7878]",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
}

/// The binary is built with jemalloc's options from the workspace's
/// `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`): asked to print
/// its statistics at exit, jemalloc shows them compiled in and in force.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[test]
fn the_binary_runs_with_the_workspace_s_jemalloc_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .arg("--help")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run queue-server");
    assert_eq!(output.status.code(), Some(0));
    let stats = String::from_utf8_lossy(&output.stderr);
    assert!(
        stats.contains("config.malloc_conf: \"tcache_gc_incr_bytes:4194304\""),
        "compiled-in options missing from jemalloc's statistics:\n{stats}"
    );
    assert!(
        stats.contains("opt.tcache_gc_incr_bytes: 4194304"),
        "the option is not in force:\n{stats}"
    );
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for (args, needle) in [
        (&["--listen", "nowhere"][..], "--listen"),
        (&["--durability", "sometimes"][..], "sometimes"),
        (&["--retain-dead", "7"][..], "unit"),
        (&["--max-body", "10"][..], "--max-body"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--callback-hosts", "some"][..], "--callback-hosts"),
        (&["--event-max", "0"][..], "--event-max"),
        (&["--event-retention", "forever"][..], "--event-retention"),
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let path = file.path().join("data");
    let (code, _, stderr) = run(&[
        "--data-dir",
        path.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("opening the data directory"), "{stderr}");
}

#[test]
fn a_malformed_webhook_secret_is_a_clear_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = run(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--webhook-secret",
        "whsec_c2hvcnQ=",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("webhook secret"), "{stderr}");
    assert!(stderr.contains("24 to 64 bytes"), "{stderr}");
    assert!(!stderr.contains("c2hvcnQ="), "{stderr}");
    assert!(
        !dir.path().join("webhook-secret").exists(),
        "a given secret is never replaced by a generated one"
    );
}

/// One request on a new connection (`Connection: close`), the whole answer.
fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn health(addr: std::net::SocketAddr) -> String {
    exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn listen_accepts_a_host_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = crate::kill9::spawn_server_at(dir.path(), "localhost:0");
    assert!(addr.ip().is_loopback(), "{addr}");
    let answer = health(addr);
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A name that does not resolve is a clear error, not a panic.
    let (code, _, stderr) = run(&[
        "--listen",
        "no-such-host.invalid:7878",
        "--data-dir",
        dir.path().join("other").to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("resolving no-such-host.invalid:7878"),
        "{stderr}"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_says_another_process_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut first, _) = crate::kill9::spawn_server_at(dir.path(), "127.0.0.1:0");
    let (code, _, stderr) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
    ]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("WouldBlock"), "{stderr}");
}

#[test]
fn logs_to_a_file_are_plain_text_and_scrapes_are_debug() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("QUEUE_TOKEN")
        .stdout(log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start queue-server");
    // The ready line gives the address (bounded wait).
    let mut addr = None;
    for _ in 0..400 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("queue-server ready")) {
            let at = line.find("listen=").expect("listen field") + "listen=".len();
            let end = line[at..].find(' ').map_or(line.len(), |e| at + e);
            addr = Some(
                line[at..end]
                    .parse::<std::net::SocketAddr>()
                    .expect("an address"),
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("no ready line in the log");
    };
    let health = health(addr);
    let metrics = exchange(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let enqueue = exchange(
        addr,
        "POST /v1/queues/logs/jobs HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"payload\": 42}",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(enqueue.starts_with("HTTP/1.1 202"), "{enqueue}");
    let lines: Vec<String> = BufReader::new(std::fs::File::open(&log_path).expect("log"))
        .lines()
        .map(|l| l.expect("a log line"))
        .collect();
    let text = lines.join("\n");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a file:\n{text}"
    );
    let requests: Vec<&String> = lines.iter().filter(|l| l.contains(" request ")).collect();
    assert_eq!(requests.len(), 1, "only the enqueue at INFO:\n{text}");
    assert!(requests[0].contains("/v1/queues/logs/jobs"), "{text}");
    // Whole microseconds: at most three decimals of a millisecond.
    let at = requests[0].find("duration_ms=").expect("duration_ms") + "duration_ms=".len();
    let value = requests[0][at..].split(' ').next().expect("a value");
    let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3, "duration_ms={value}");
    value.parse::<f64>().expect("a number");
}
