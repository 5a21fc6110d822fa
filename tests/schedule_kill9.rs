//! The built binary is SIGKILLed around the ticks of a schedule that fires
//! every second, again and again, and restarted on the same directory.
//! Every tick from the first up to the last one fired has exactly one job
//! (`catch_up: all`): none fired twice by a restart, none lost by a kill
//! between a tick's job and the schedule's move to the next tick.
//!
//! The kill moments are real time (the child runs on the system clock):
//! each is a tick's time plus a random offset of up to ±40 ms, so that
//! kills land just before, during and just after the commit of a tick;
//! the server then stays down for up to 2.5 s, so that ticks are missed
//! and caught up at the restart.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::kill9::spawn_server_at;
use crate::raw_http::Client;

const PERIOD_MS: u64 = 1_000;
const ROUNDS: u64 = 6;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("ms fit in u64")
}

/// splitmix64: the kill moments, reproducible from the printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_fires_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let seed = now_ms();
    let mut random = seed;
    println!("kill moments seeded with {seed}");

    let (mut child, addr) = spawn_server_at(dir.path(), "127.0.0.1:0");
    let c = Client::new(addr);
    let put = c
        .send(
            "PUT",
            "/v1/schedules/tick",
            Some(
                &json!({
                    "queue": "ticks",
                    "every_ms": PERIOD_MS,
                    "catch_up": "all",
                    "job": {"payload": {"from": "kill9"}},
                })
                .to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    let first = put.json["next_run_at"].as_u64().expect("next_run_at");

    let mut addr = addr;
    for round in 0..ROUNDS {
        // A tick one to three periods ahead of now, plus or minus 40 ms.
        let ahead = 1 + next_random(&mut random) % 3;
        let offset = i64::try_from(next_random(&mut random) % 81).unwrap() - 40;
        let grid = first + (now_ms().saturating_sub(first) / PERIOD_MS + ahead) * PERIOD_MS;
        let at = grid.saturating_add_signed(offset);
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Down for up to 2.5 periods: the ticks meanwhile are caught up.
        let down = next_random(&mut random) % 2_500;
        println!("round {round}: killed {offset:+} ms from tick {grid}, down {down} ms");
        tokio::time::sleep(Duration::from_millis(down)).await;
        (child, addr) = spawn_server_at(dir.path(), "127.0.0.1:0");
    }

    // Pausing commits after any tick in flight; from then on nothing fires,
    // and every tick up to the schedule's last_run_at must have one job.
    let c = Client::new(addr);
    let paused = c.post("/v1/schedules/tick/pause", json!({})).await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    let last = paused.json["last_run_at"].as_u64().expect("ticks fired");
    let expected: Vec<u64> = (first..=last).step_by(PERIOD_MS as usize).collect();
    assert!(
        expected.len() >= 2 + ROUNDS as usize,
        "the run covers several ticks: {expected:?}"
    );
    let leased = c
        .post(
            "/v1/queues/ticks/lease",
            json!({"max_jobs": 1000, "lease_ms": 60_000}),
        )
        .await;
    assert_eq!(leased.status, 200, "{}", leased.text);
    let mut fired: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for job in leased.json["jobs"].as_array().expect("jobs") {
        let run_at = job["run_at"].as_u64().expect("run_at");
        assert_eq!(
            job["idempotency_key"],
            format!("schedule:tick:{run_at}"),
            "{job}"
        );
        assert_eq!(job["schedule"], "tick");
        fired
            .entry(run_at)
            .or_default()
            .push(job["id"].as_str().unwrap_or_default().to_owned());
    }
    let twice: Vec<_> = fired.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "ticks fired more than once: {twice:?}");
    let ticks: Vec<u64> = fired.keys().copied().collect();
    assert_eq!(
        ticks, expected,
        "one job for each tick from the first to the last"
    );
    let stats = c.get("/v1/queues/ticks").await.json;
    assert_eq!(
        stats["leased"].as_u64(),
        Some(expected.len() as u64),
        "{stats}"
    );
    child.kill().expect("stop the checker");
    child.wait().expect("reap");
}
