//! Producers on the client SDK while the binary is SIGKILLed and restarted
//! on the same directory and port: the SDK retries the enqueues caught by
//! the crash with the same idempotency keys, so every enqueue it reported
//! as done is stored, and none is stored twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use queue_client::{Client, ClientOptions, JobId, RetryPolicy};
use tokio::sync::Notify;

use crate::kill9::{send_sigterm, spawn_server_at};

const PRODUCERS: u32 = 4;

#[derive(Default)]
struct Progress {
    /// (producer, n) of every enqueue the SDK reported done, with its job.
    acked: Mutex<HashMap<(u32, u32), JobId>>,
    /// Enqueues the SDK reported failed (they may or may not be stored).
    failed: AtomicU64,
    count: AtomicU64,
    changed: Notify,
    stop: AtomicBool,
}

impl Progress {
    async fn reach(&self, target: u64) {
        while self.count.load(Ordering::SeqCst) < target {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.count.load(Ordering::SeqCst) >= target {
                break;
            }
            tokio::time::timeout(Duration::from_secs(60), changed)
                .await
                .expect("the producers make progress");
        }
    }
}

async fn producer(client: Client, tag: u32, progress: Arc<Progress>) {
    let queue = client.queue::<(u32, u32)>("sdk-k9");
    for n in 0..50_000 {
        if progress.stop.load(Ordering::SeqCst) {
            return;
        }
        match queue.enqueue(&(tag, n)).await {
            Ok(handle) => {
                progress
                    .acked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((tag, n), handle.id().clone());
            }
            Err(_) => {
                progress.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        progress.count.fetch_add(1, Ordering::SeqCst);
        progress.changed.notify_waiters();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_enqueues_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let listen = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let (mut server, _) = spawn_server_at(dir.path(), &listen);
    // Retries long enough to outlast a restart.
    let retry = RetryPolicy {
        retries: 200,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let client = Client::connect_with(
        &format!("http://{listen}"),
        ClientOptions::new().retry(retry),
    )
    .unwrap();
    let progress = Arc::new(Progress::default());
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|tag| tokio::spawn(producer(client.clone(), tag, Arc::clone(&progress))))
        .collect();

    for round in 0..5u64 {
        progress.reach(300 + round * 300).await;
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");
        // Producers now hit a dead port; the restart lets their retries in.
        let (restarted, _) = spawn_server_at(dir.path(), &listen);
        server = restarted;
    }
    progress.reach(1900).await;
    progress.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let acked = progress.acked.lock().unwrap().clone();
    let failed = progress.failed.load(Ordering::SeqCst);
    assert_eq!(failed, 0, "every enqueue got through within its retries");
    let stats = client.stats("sdk-k9").await.unwrap();
    assert_eq!(
        stats.ready,
        acked.len() as u64,
        "exactly the acknowledged enqueues are stored, none twice"
    );
    let queue = client.queue::<(u32, u32)>("sdk-k9");
    for (payload, id) in &acked {
        let job = queue.job(id.clone()).get().await.unwrap();
        assert_eq!(&job.payload, payload, "job {id}");
    }
    assert_eq!(send_sigterm(server.id()), 0);
    assert!(server.wait().expect("reap").success());
}
