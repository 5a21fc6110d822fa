//! What the workspace's test crates (`queue-server/tests`, `queue-client/tests`
//! and `tests/`) share to run one test body on both storage backends: the
//! embedded sled store in a temporary directory, and PostgreSQL in a fresh
//! database of its own.
//!
//! - [`Backend`]: which store a test runs on.
//! - [`Store`]: a fresh place for one test's jobs (a temporary directory or a
//!   fresh database), removed when dropped; [`Store::config`] opens it.
//! - [`postgres_url`]: the test cluster's URL: `QUEUE_TEST_DATABASE_URL` when
//!   set (a real server the tests may create databases on), otherwise the
//!   throwaway cluster `scripts/postgres.sh start` installs and starts (once
//!   per process; the script is idempotent and safe to run concurrently).
//! - [`fresh_database`]: a new, uniquely named database on that cluster.
//!   Each [`TestDatabase`] is dropped (`DROP DATABASE … WITH (FORCE)`) when
//!   the value is; a test process killed before that leaves its databases
//!   behind (named `queue_test_<pid>_…`, about 8 MB each):
//!   `scripts/postgres.sh destroy` removes the whole throwaway cluster.
//! - [`backend_tests!`]: turns `async fn name(backend: Backend)` test bodies
//!   into the tests `sled::name` and `postgres::name`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use queue_core::Config;

/// The environment variable naming a PostgreSQL server for the tests
/// (a `postgres://user[:password]@host:port/database` URL of a role that may
/// create databases). Without it the tests start the throwaway cluster of
/// `scripts/postgres.sh`.
pub const DATABASE_URL_ENV: &str = "QUEUE_TEST_DATABASE_URL";

/// Which storage backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The embedded sled store in a temporary directory.
    Sled,
    /// PostgreSQL, in a fresh database on the test cluster.
    Postgres,
}

impl Backend {
    /// Both backends, sled first.
    pub const ALL: [Backend; 2] = [Backend::Sled, Backend::Postgres];
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sled => "sled",
            Backend::Postgres => "postgres",
        })
    }
}

/// The workspace's root directory (where `scripts/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_owned()
}

/// The URL of the PostgreSQL server the tests use (its maintenance database,
/// from which [`fresh_database`] creates the others): `QUEUE_TEST_DATABASE_URL`
/// when set, otherwise the throwaway cluster that `scripts/postgres.sh start`
/// installs (when missing), starts (when stopped) and names. Runs the script
/// once per process; panics with the script's messages when it fails.
pub fn postgres_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            if !url.trim().is_empty() {
                return url.trim().to_owned();
            }
        }
        start_cluster(None)
    })
    .clone()
}

/// Runs `scripts/postgres.sh` with `args` (and `--dir`/`--port` from
/// `cluster` when given), returning its standard output; panics with its
/// messages when it fails.
pub fn postgres_script(cluster: Option<(&Path, u16)>, args: &[&str]) -> String {
    let script = workspace_root().join("scripts/postgres.sh");
    let mut command = Command::new("bash");
    command.arg(&script);
    if let Some((dir, port)) = cluster {
        command
            .arg("--dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string());
    }
    command.args(args);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        panic!(
            "{} {args:?} failed ({}):\n{}\n{}",
            script.display(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
}

/// Starts (or finds running) the cluster of `scripts/postgres.sh` in `cluster`
/// (`--dir`, `--port`; the script's defaults when `None`) and returns its URL.
pub fn start_cluster(cluster: Option<(&Path, u16)>) -> String {
    let out = postgres_script(cluster, &["start"]);
    out.lines()
        .last()
        .filter(|line| line.starts_with("postgres://"))
        .unwrap_or_else(|| panic!("scripts/postgres.sh start printed no URL: {out}"))
        .to_owned()
}

/// `url` with its database replaced by `database` (a `postgres://` URL; the
/// query string, if any, is kept).
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url
        .find("://")
        .unwrap_or_else(|| panic!("{DATABASE_URL_ENV} must be a postgres:// URL, got {url:?}"))
        + 3;
    let rest = &url[scheme_end..];
    let (before_query, query) = match rest.find('?') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match before_query.find('/') {
        Some(i) => &before_query[..i],
        None => before_query,
    };
    format!("{}{authority}/{database}{query}", &url[..scheme_end])
}

/// Connects to the server at `url` on a thread and runtime of its own (so
/// that it works from plain tests and from inside a runtime alike), runs
/// `work` with the client, then closes the connection.
fn with_client<R, F, Fut>(url: &str, work: F) -> Result<R, String>
where
    R: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, String>>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connecting to the test database server: {e}"))?;
            let driver = tokio::spawn(connection);
            // The client goes with `work`: dropped, it ends the connection.
            let result = work(client).await;
            let _ = driver.await;
            result
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_owned())?
}

/// Runs `statement` on the server at `url` (see [`with_client`]).
pub fn execute(url: &str, statement: &str) -> Result<(), String> {
    let statement = statement.to_owned();
    with_client(url, move |client| async move {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| format!("{statement}: {e}"))
    })
}

/// Runs the query `sql` on the server at `url` (as [`execute`]) and
/// returns the first column of each row as text (`NULL` as `None`): for
/// tests that check what the database holds, such as which transaction
/// wrote a row (`SELECT xmin::text …`).
pub fn query_texts(url: &str, sql: &str) -> Result<Vec<Option<String>>, String> {
    let sql = sql.to_owned();
    with_client(url, move |client| async move {
        let messages = client
            .simple_query(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            })
            .collect())
    })
}

/// A database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a new, uniquely named database on the server at `admin_url`.
    pub fn create_on(admin_url: &str) -> TestDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "queue_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = execute(admin_url, &format!("CREATE DATABASE \"{name}\"")) {
            panic!("creating the test database {name}: {e}");
        }
        TestDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the cluster may be stopped (the fault tests stop their
        // own), and a leftover database is harmless.
        let _ = execute(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
    }
}

/// A fresh database on the test server ([`postgres_url`]), dropped with the
/// returned value.
pub fn fresh_database() -> TestDatabase {
    TestDatabase::create_on(&postgres_url())
}

/// A fresh place for one test's jobs, removed when dropped: a temporary
/// directory for sled, a fresh database for PostgreSQL. Opening it again
/// (after a restart) finds what the last opening left.
#[derive(Debug)]
pub enum Store {
    /// A temporary data directory.
    Sled(tempfile::TempDir),
    /// A fresh database.
    Postgres(TestDatabase),
}

impl Store {
    /// A fresh store on `backend`.
    pub fn new(backend: Backend) -> Store {
        match backend {
            Backend::Sled => Store::Sled(tempfile::tempdir().expect("tempdir")),
            Backend::Postgres => Store::Postgres(fresh_database()),
        }
    }

    /// Its backend.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sled(_) => Backend::Sled,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// The defaults of [`Config::new`] (or [`Config::postgres`]) on this store.
    pub fn config(&self) -> Config {
        match self {
            Store::Sled(dir) => Config::new(dir.path()),
            Store::Postgres(database) => Config::postgres(database.url()),
        }
    }

    /// The data directory, for sled.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Store::Sled(dir) => Some(dir.path()),
            Store::Postgres(_) => None,
        }
    }

    /// The database URL, for PostgreSQL.
    pub fn url(&self) -> Option<&str> {
        match self {
            Store::Sled(_) => None,
            Store::Postgres(database) => Some(database.url()),
        }
    }

    /// The flags that point `queue-server` at this store:
    /// `--data-dir DIR` or `--database-url URL`.
    pub fn server_args(&self) -> Vec<String> {
        match self {
            Store::Sled(dir) => vec!["--data-dir".into(), dir.path().display().to_string()],
            Store::Postgres(database) => vec!["--database-url".into(), database.url().to_owned()],
        }
    }
}

/// Runs each listed test body on both backends.
///
/// A body is a function taking the [`Backend`] (`async fn name(backend:
/// Backend)`, or a plain `fn` for blocking tests); the macro, given each
/// body's test attribute and name, makes the tests `sled::name` and
/// `postgres::name` that call it. One copy of each body; a body left out of
/// the list is an unused function (a warning, so clippy catches it).
///
/// ```ignore
/// async fn enqueue_answers_202(backend: Backend) { /* … */ }
///
/// test_support::backend_tests! {
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async fn enqueue_answers_202;
///     #[test]
///     fn blocking_client_works;
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($cases:tt)*) => {
        mod sled {
            $crate::__backend_cases!(Sled; $($cases)*);
        }
        mod postgres {
            $crate::__backend_cases!(Postgres; $($cases)*);
        }
    };
}

/// The cases of [`backend_tests!`] for one backend (not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_cases {
    ($backend:ident;) => {};
    ($backend:ident; $(#[$meta:meta])* async fn $name:ident; $($rest:tt)*) => {
        $(#[$meta])*
        async fn $name() {
            super::$name($crate::Backend::$backend).await
        }
        $crate::__backend_cases!($backend; $($rest)*);
    };
    ($backend:ident; $(#[$meta:meta])* fn $name:ident; $($rest:tt)*) => {
        $(#[$meta])*
        fn $name() {
            super::$name($crate::Backend::$backend)
        }
        $crate::__backend_cases!($backend; $($rest)*);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:55432/postgres", "x"),
            "postgres://postgres@127.0.0.1:55432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://u@h", "x"), "postgresql://u@h/x");
    }
}
