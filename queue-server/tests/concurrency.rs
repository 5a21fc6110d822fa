//! Many workers lease and complete one queue over HTTP.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::common::{Backend, TestServer};

async fn every_job_completes_once_and_is_never_held_twice(backend: Backend) {
    let server = TestServer::start(backend).await;
    let total = 300usize;
    let jobs: Vec<_> = (0..total).map(|i| json!({"payload": i})).collect();
    for chunk in jobs.chunks(100) {
        let reply = server
            .client
            .post("/v1/queues/work/jobs/batch", json!({"jobs": chunk}))
            .await;
        assert_eq!(reply.status, 202);
    }
    let held = Arc::new(Mutex::new(HashSet::<String>::new()));
    let completed = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let c = server.client.clone();
            let (held, completed) = (Arc::clone(&held), Arc::clone(&completed));
            tokio::spawn(async move {
                // Bounded: at most one round per job and worker.
                for _ in 0..total {
                    let reply = c
                        .post(
                            "/v1/queues/work/lease",
                            json!({"max_jobs": 1 + w % 3, "lease_ms": 600000, "worker": format!("w{w}")}),
                        )
                        .await;
                    assert_eq!(reply.status, 200);
                    let jobs = reply.json["jobs"].as_array().cloned().unwrap_or_default();
                    if jobs.is_empty() {
                        return;
                    }
                    for job in jobs {
                        let id = job["id"].as_str().unwrap().to_owned();
                        assert!(
                            held.lock().unwrap().insert(id.clone()),
                            "job {id} leased while another worker holds it"
                        );
                        let done = c
                            .post(
                                &format!("/v1/jobs/{id}/complete"),
                                json!({"lease_id": job["lease_id"], "result": w}),
                            )
                            .await;
                        assert_eq!(done.status, 200, "{}", done.text);
                        held.lock().unwrap().remove(&id);
                        completed.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let completed = completed.lock().unwrap().clone();
    let unique: HashSet<_> = completed.iter().collect();
    assert_eq!(completed.len(), total, "every job completed exactly once");
    assert_eq!(unique.len(), total);
    let stats = server.client.get("/v1/queues/work").await.json;
    assert_eq!(
        (stats["completed"].as_u64(), stats["ready"].as_u64()),
        (Some(total as u64), Some(0))
    );
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_completes_once_and_is_never_held_twice;
}
