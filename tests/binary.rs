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
        "QUEUE_WEBHOOK_SECRET",
        "[default: 24h]",
        "QUEUE_DATA_DIR",
        "[default: ./queue-data]",
        "[default: 127.0.0.1:7878]",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
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
