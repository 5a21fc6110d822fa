//! The schema, versioned: each migration runs once, under an advisory lock,
//! in its own transaction with the version row it sets.
//!
//! | table | rows |
//! |---|---|
//! | `queue_schema_version` | one: the schema's version |
//! | `queue_jobs` | one per job: its record (the embedded store's versioned encoding) and the columns the indexes and timers need, derived from it in the transaction of every change |
//! | `queue_counts`, `queue_group_leased` | jobs per (queue, state) and leased jobs per (queue, group) |
//! | `queue_settings` | one per queue with settings (limits, pause, token bucket) |
//! | `queue_events` | the durable event log; ids from `queue_meta.last_event`, locked by each committing transaction so that ids increase in commit order |
//! | `queue_schedules` | one per schedule, `next_run_at` null while paused |
//! | `queue_history` | one per (queue, minute); minutes past the retention are removed but the newest of each queue, reduced to its depths (`depths_only`) |
//! | `queue_ids` | the sequence of job and lease ids |
//! | `queue_secrets` | secrets every process shares (the callbacks' signing key) |

use super::conn::{Conn, db_error};
use crate::{Error, Result};

/// The version this build writes and the newest it can read.
pub(crate) const VERSION: i32 = 1;

/// The advisory lock that serializes migrations between processes.
const MIGRATION_LOCK: i64 = 0x7175_6575_6531;

/// Migration `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [r#"
CREATE TABLE queue_jobs (
    id bigint PRIMARY KEY,
    revision bigint NOT NULL,
    queue text NOT NULL,
    state smallint NOT NULL,
    lease_rank integer NOT NULL,
    run_at bigint NOT NULL,
    grp text,
    idempotency_key text,
    correlation_id text,
    callback_status smallint,
    due_kind smallint,
    due_at bigint,
    due_lease bigint,
    due_callback bigint,
    due_ttl bigint,
    record bytea NOT NULL
);
CREATE UNIQUE INDEX queue_jobs_idempotency ON queue_jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX queue_jobs_state ON queue_jobs (queue, state, id);
CREATE INDEX queue_jobs_ready ON queue_jobs (queue, lease_rank, run_at, id) WHERE state = 1;
CREATE INDEX queue_jobs_age ON queue_jobs (queue, run_at) WHERE state = 1;
CREATE INDEX queue_jobs_correlation ON queue_jobs (correlation_id, id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX queue_jobs_callbacks ON queue_jobs (callback_status, id)
    WHERE callback_status IS NOT NULL;
CREATE INDEX queue_jobs_due ON queue_jobs (due_kind, due_at, id) WHERE due_kind IS NOT NULL;
CREATE INDEX queue_jobs_due_callback ON queue_jobs (due_callback, id)
    WHERE due_callback IS NOT NULL;
CREATE INDEX queue_jobs_due_ttl ON queue_jobs (due_ttl, id) WHERE due_ttl IS NOT NULL;
CREATE TABLE queue_counts (
    queue text NOT NULL,
    state smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE queue_group_leased (
    queue text NOT NULL,
    grp text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (queue, grp)
);
CREATE TABLE queue_settings (queue text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE queue_events (id bigint PRIMARY KEY, at bigint NOT NULL, record bytea NOT NULL);
CREATE TABLE queue_meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO queue_meta (key, value) VALUES ('last_event', 0);
CREATE TABLE queue_schedules (
    name text PRIMARY KEY,
    revision bigint NOT NULL,
    next_run_at bigint,
    record bytea NOT NULL
);
CREATE INDEX queue_schedules_due ON queue_schedules (next_run_at, name)
    WHERE next_run_at IS NOT NULL;
CREATE TABLE queue_history (
    queue text NOT NULL,
    minute bigint NOT NULL,
    record bytea NOT NULL,
    depths_only boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue, minute)
);
CREATE SEQUENCE queue_ids;
CREATE TABLE queue_secrets (name text PRIMARY KEY, value text NOT NULL);
"#];

/// Creates or migrates the schema; refuses a database whose schema is
/// newer than this build.
pub(crate) async fn migrate(conn: &Conn, database: &str) -> Result<()> {
    let client = &conn.client;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    let result = migrate_locked(conn, database).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error);
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(conn: &Conn, database: &str) -> Result<()> {
    let client = &conn.client;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS queue_schema_version (version integer NOT NULL)")
        .await
        .map_err(db_error)?;
    let rows = client
        .query("SELECT version FROM queue_schema_version", &[])
        .await
        .map_err(db_error)?;
    let current: i32 = match rows.as_slice() {
        [] => 0,
        [row] => row.get(0),
        _ => {
            return Err(Error::Corrupt(format!(
                "{database}: queue_schema_version has {} rows, expected one",
                rows.len()
            )));
        }
    };
    if current > VERSION {
        return Err(Error::Corrupt(format!(
            "{database} has queue schema version {current}, newer than this build's \
             {VERSION}: run a newer release (downgrades are not supported)"
        )));
    }
    for version in current..VERSION {
        let sql = MIGRATIONS[version as usize];
        let next = version + 1;
        let bump = if version == 0 {
            format!("INSERT INTO queue_schema_version (version) VALUES ({next});")
        } else {
            format!("UPDATE queue_schema_version SET version = {next};")
        };
        client
            .batch_execute(&format!("BEGIN;\n{sql}\n{bump}\nCOMMIT;"))
            .await
            .map_err(|e| {
                let err = db_error(e);
                Error::Storage(crate::error::StorageError::new(format!(
                    "{database}: migrating the queue schema to version {next} failed: {err}"
                )))
            })?;
        tracing::info!(database, version = next, "queue schema migrated");
    }
    Ok(())
}
