//! `webhooks::verify` on a callback the server really delivered, and on
//! deliveries signed with `webhooks::sign`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_client::webhooks::{self, CallbackEvent, Secret, VerifyError};
use queue_client::{Client, EnqueueOptions, JobState, LeaseOptions};
use queue_server::{CallbackConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::{Backend, PATIENCE, Server, Store};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A receiver that takes one request, answers `200`, and hands over its
/// headers (names in lower case) and body.
async fn receive_one() -> (String, oneshot::Receiver<(Vec<(String, String)>, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/jobs", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        let (head_end, length) = loop {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the request ended early");
            bytes.extend_from_slice(&buffer[..n]);
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                break (end + 4, length);
            }
        };
        while bytes.len() < head_end + length {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the body ended early");
            bytes.extend_from_slice(&buffer[..n]);
        }
        let head = String::from_utf8_lossy(&bytes[..head_end - 4]).into_owned();
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let _ = tx.send((headers, bytes[head_end..head_end + length].to_vec()));
    });
    (url, rx)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn a_callback_from_the_server_verifies_and_a_tampered_one_does_not(backend: Backend) {
    let secret: Secret = SECRET.parse().unwrap();
    let other: Secret = OTHER_SECRET.parse().unwrap();
    let (url, delivered) = receive_one().await;
    let dir = Store::new(backend);
    let config = ServerConfig {
        callbacks: CallbackConfig {
            secrets: vec![secret.clone()],
            ..CallbackConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::start_with(dir.config(), config, "127.0.0.1:0");
    let client = Client::connect(&server.url).unwrap();
    let jobs = client.queue::<u32>("hooked");
    jobs.enqueue(&4).await.unwrap();
    let handle = jobs
        .enqueue_with(
            &5,
            EnqueueOptions::new()
                .callback_url(&url)
                .correlation_id("hook-1"),
        )
        .await
        .unwrap();
    let mut leased = jobs.lease(&LeaseOptions::new().max_jobs(2)).await.unwrap();
    let ours = leased.pop().unwrap();
    assert_eq!(ours.job().id, *handle.id());
    ours.complete(&"five").await.unwrap();
    leased.pop().unwrap().complete(&"four").await.unwrap();

    let (headers, body) = tokio::time::timeout(PATIENCE, delivered)
        .await
        .expect("a delivery in time")
        .unwrap();
    let now = SystemTime::now();
    assert_eq!(
        webhooks::verify(std::slice::from_ref(&secret), &headers, &body, now),
        Ok(())
    );
    // Under a rotated set of secrets, too.
    assert_eq!(
        webhooks::verify(&[other.clone(), secret.clone()], &headers, &body, now),
        Ok(())
    );
    assert_eq!(header(&headers, "x-request-id"), "hook-1");
    let callback: CallbackEvent = serde_json::from_slice(&body).unwrap();
    assert_eq!(callback.kind, "job.completed");
    assert_eq!(callback.data.id, handle.id().as_str());
    assert_eq!(callback.data.state, JobState::Completed);
    assert_eq!(callback.data.correlation_id.as_deref(), Some("hook-1"));
    assert_eq!(
        callback.data.result.as_ref().map(|r| r.get()),
        Some("\"five\"")
    );

    // A changed body, another secret, a stale or missing header: refused.
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("five", "f1ve");
    assert_eq!(
        webhooks::verify(
            std::slice::from_ref(&secret),
            &headers,
            tampered.as_bytes(),
            now
        ),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        webhooks::verify(&[other], &headers, &body, now),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        webhooks::verify(
            std::slice::from_ref(&secret),
            &headers,
            &body,
            now + Duration::from_secs(600)
        ),
        Err(VerifyError::TooOld)
    );
    let unsigned: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != webhooks::HEADER_SIGNATURE)
        .cloned()
        .collect();
    assert_eq!(
        webhooks::verify(&[secret], &unsigned, &body, now),
        Err(VerifyError::MissingHeader(webhooks::HEADER_SIGNATURE))
    );
    server.stop().await;
}

#[test]
fn a_delivery_signed_with_sign_verifies_and_a_tampered_one_does_not() {
    let secret: Secret = SECRET.parse().unwrap();
    let body = br#"{"type":"job.dead","timestamp":"2026-12-01T10:00:00.000Z","data":{}}"#;
    let timestamp = 1_764_583_200;
    let signature = webhooks::sign(std::slice::from_ref(&secret), "job_7_1", timestamp, body);
    let headers = [
        (webhooks::HEADER_ID, "job_7_1"),
        (webhooks::HEADER_TIMESTAMP, "1764583200"),
        (webhooks::HEADER_SIGNATURE, signature.as_str()),
    ];
    let at = UNIX_EPOCH + Duration::from_secs(1_764_583_200 + 60);
    assert_eq!(
        webhooks::verify(std::slice::from_ref(&secret), &headers[..], body, at),
        Ok(())
    );
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        webhooks::verify(std::slice::from_ref(&secret), &headers[..], &tampered, at),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        webhooks::verify_with_tolerance(
            &[secret],
            &headers[..],
            body,
            at + Duration::from_secs(3600),
            Duration::from_secs(30)
        ),
        Err(VerifyError::TooOld)
    );
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callback_from_the_server_verifies_and_a_tampered_one_does_not;
}
