//! Connections: one per role (the writer, the listener, the readers),
//! each with its prepared statements, reconnected when lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, NoTls, Statement};

use crate::error::StorageError;
use crate::{Error, Result};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The database a URL names, as it may be shown: without the password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Parses a database URL (or libpq `key=value` string).
pub(crate) fn parse(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::invalid(
            "database_url",
            format!("not a PostgreSQL connection string: {e}"),
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("queue-server");
    // A connection whose peer vanished (a network partition, not a clean
    // close) is noticed instead of waited on for ever.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    Ok(config)
}

/// A storage error for a failure of the database or of the connection to
/// it: the operation did not take effect (or, for a commit whose answer
/// was lost, may have; it was not acknowledged).
pub(crate) fn db_error(e: tokio_postgres::Error) -> Error {
    if e.as_db_error().is_some() {
        Error::Storage(StorageError::new(format!("PostgreSQL: {}", full(&e))))
    } else {
        Error::Storage(StorageError::new(format!(
            "the PostgreSQL connection failed: {}",
            full(&e)
        )))
    }
}

/// The error with its database message, or its cause.
pub(crate) fn full(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether a failed transaction may simply be run again: a deadlock or a
/// serialization failure.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code().map(|c| c.code()), Some("40001") | Some("40P01"))
}

/// One connection and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    /// Connects; the connection is driven by a task of the current runtime.
    pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Conn> {
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            Error::Storage(StorageError::new(format!(
                "cannot connect to {}: {}",
                describe(config),
                full(&e)
            )))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %full(&e), "PostgreSQL connection ended");
            }
        });
        Ok(Conn {
            client,
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// `sql`, prepared once per connection.
    pub(crate) async fn stmt(&self, sql: &'static str) -> Result<Statement> {
        if let Some(stmt) = self
            .statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
        {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).await.map_err(db_error)?;
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, stmt.clone());
        Ok(stmt)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A fixed set of connections shared round robin (a connection pipelines
/// the queries of concurrent callers), each reconnected on first use after
/// it was lost.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(config: tokio_postgres::Config, size: usize) -> Pool {
        Pool {
            config,
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A live connection.
    pub(crate) async fn get(&self) -> Result<Arc<Conn>> {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[at].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let conn = Arc::new(Conn::connect(&self.config).await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }
}
