//! The listener: one connection `LISTEN`s on `queue_wake` and hands every
//! other process's wake-ups to the engine; when the connection is lost it
//! reconnects, and wakes everything once listening again (notifications
//! sent meanwhile were missed).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::backend::wake::Wake;

/// Where wake-ups go (set by the engine).
pub(crate) type Sink = Arc<std::sync::RwLock<Option<Arc<dyn Fn(&Wake) + Send + Sync>>>>;

pub(crate) async fn run(
    config: tokio_postgres::Config,
    origin: u64,
    latest: Arc<watch::Sender<u64>>,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) {
    let deliver = |wake: &Wake| {
        if wake.latest_event > 0 {
            latest.send_modify(|value| *value = (*value).max(wake.latest_event));
        }
        let sink = sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            sink(wake);
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %super::conn::full(&e), "the PostgreSQL listener's connection failed");
                                return;
                            }
                        }
                    }
                });
                let listening = client.batch_execute("LISTEN queue_wake").await;
                let latest_row = client
                    .query_opt("SELECT value FROM queue_meta WHERE key = 'last_event'", &[])
                    .await;
                if listening.is_ok() {
                    backoff = Duration::from_millis(100);
                    let mut everything = Wake::everything();
                    if let Ok(Some(row)) = latest_row {
                        everything.latest_event = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
                    }
                    deliver(&everything);
                    loop {
                        tokio::select! {
                            payload = rx.recv() => match payload {
                                Some(payload) => match Wake::parse(&payload) {
                                    Some((from, _)) if from == origin => {}
                                    Some((_, wake)) => deliver(&wake),
                                    None => tracing::debug!(payload, "a notification not ours to read"),
                                },
                                None => break,
                            },
                            _ = stop.changed() => {
                                driver.abort();
                                return;
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %super::conn::full(&e), "the PostgreSQL listener cannot connect; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
