//! Command-line flags of the `queue-server` binary. Each flag can also be
//! given as an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use queue_core::{Config, Durability, Retention};

use queue_core::service::CallbackHosts;

use crate::{CallbackConfig, ServerConfig};

/// What `--help` says about logging, after the flags.
pub const LOGGING_HELP: &str = "\
Logging:
  Log lines go to standard output, one per request and per notable event.
  RUST_LOG sets which (default: info), e.g. RUST_LOG=debug, or
  RUST_LOG=info,queue_server=debug. Requests are logged at INFO, except
  successful /healthz and /metrics requests, at DEBUG. Colours are used only
  when standard output is a terminal (and NO_COLOR is not set).";

/// A durable job queue over HTTP.
///
/// Serves the v1 API (enqueue, lease, heartbeat, complete, fail, release,
/// cancel, queues, dead letters, events, metrics) from a sled data directory.
#[derive(Debug, Clone, Parser)]
#[command(name = "queue-server", version, about, long_about = None, after_help = LOGGING_HELP)]
pub struct Args {
    /// Data directory (created if missing): the embedded store, the
    /// default. Not used with --database-url.
    #[arg(long, env = "QUEUE_DATA_DIR", default_value = "./queue-data")]
    pub data_dir: PathBuf,

    /// Keep the jobs in this PostgreSQL database instead of the data
    /// directory (`postgres://user:password@host:port/database`); several
    /// servers may share it. The schema is created or migrated at start.
    /// Prefer the environment variable QUEUE_DATABASE_URL when the URL
    /// holds a password: unlike an argument, it does not show in the
    /// process list.
    #[arg(long, env = "QUEUE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address to listen on: an IP address or a host name, and a port
    /// (`127.0.0.1:7878`, `[::1]:7878`, `localhost:7878`). A name is
    /// resolved at start; the server listens on its first address that
    /// can be bound.
    #[arg(long, env = "QUEUE_LISTEN", default_value = "127.0.0.1:7878", value_parser = parse_listen)]
    pub listen: Listen,

    /// Bearer token; when set, every route but /healthz and the dashboard's
    /// files (/ and /ui/, whose page asks for the token) needs
    /// `Authorization: Bearer <token>` (scheme case-insensitive). Prefer
    /// the environment variable QUEUE_TOKEN: unlike an argument, it does
    /// not show in the process list.
    #[arg(long, env = "QUEUE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest request body in bytes (larger requests get 413). A payload
    /// (or result) may use it up to the store's limit of 1.5 MiB.
    #[arg(long, env = "QUEUE_MAX_BODY", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    pub max_body: u64,

    /// `sync`: every acknowledged change is fsynced first (group-committed).
    /// `periodic`: acknowledged before the flush, flushed every
    /// --flush-interval; a crash can lose that last interval.
    #[arg(long, env = "QUEUE_DURABILITY", value_enum, default_value_t = DurabilityFlag::Sync)]
    pub durability: DurabilityFlag,

    /// Flush interval of the periodic durability mode (e.g. 100ms, 1s).
    #[arg(long, env = "QUEUE_FLUSH_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// How long completed jobs are kept (e.g. 24h, 30m, 7d).
    #[arg(long, env = "QUEUE_RETAIN_COMPLETED", default_value = "24h", value_parser = parse_duration)]
    pub retain_completed: Duration,

    /// How long dead jobs are kept.
    #[arg(long, env = "QUEUE_RETAIN_DEAD", default_value = "7d", value_parser = parse_duration)]
    pub retain_dead: Duration,

    /// How long cancelled jobs are kept.
    #[arg(long, env = "QUEUE_RETAIN_CANCELLED", default_value = "7d", value_parser = parse_duration)]
    pub retain_cancelled: Duration,

    /// Log line format.
    #[arg(long, env = "QUEUE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Connections open at once. A full table makes room for a new
    /// connection by closing the one idle the longest, else the one whose
    /// request body has been arriving the longest; connections serving a
    /// request or an event stream are never closed for it (with only those
    /// open, a new connection waits until one ends).
    #[arg(long, env = "QUEUE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Time a client has to send a request body once its headers are in
    /// (e.g. 30s); a slower body gets 400 and the connection is closed.
    #[arg(long, env = "QUEUE_BODY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub body_timeout: Duration,

    /// How long a connection may stay open with no request under way
    /// before the server closes it (e.g. 20s). Open event streams are not
    /// idle.
    #[arg(long, env = "QUEUE_IDLE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// How long shutdown waits for in-flight requests (e.g. 10s).
    #[arg(long, env = "QUEUE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long events stay in the durable event log, for streams that
    /// resume with Last-Event-ID or `after` (e.g. 24h, 7d).
    #[arg(long, env = "QUEUE_EVENT_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub event_retention: Duration,

    /// How long each queue's per-minute history (GET
    /// /v1/queues/{queue}/history) is kept (e.g. 7d, 24h); 0 turns history
    /// off (nothing is recorded, history reads as zeros).
    #[arg(long, env = "QUEUE_HISTORY_RETENTION", default_value = "7d", value_parser = parse_duration_or_zero)]
    pub history_retention: Duration,

    /// How many events the log keeps at most (the oldest go first).
    #[arg(long, env = "QUEUE_EVENT_MAX", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub event_max: u64,

    /// A callback signing secret, `whsec_` + base64 of 24 to 64 bytes
    /// (repeatable; the environment variable takes a comma-separated list).
    /// Each callback carries one signature per secret, so a new secret can
    /// be added before the old one is removed. Without one, the server
    /// generates a secret at first start and keeps it in the file
    /// webhook-secret of the data directory.
    #[arg(
        long,
        env = "QUEUE_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_secret: Vec<String>,

    /// How long one callback attempt may take, connection to answer.
    #[arg(long, env = "QUEUE_CALLBACK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub callback_timeout: Duration,

    /// Callback attempts under way at once.
    #[arg(long, env = "QUEUE_CALLBACK_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub callback_concurrency: u64,

    /// Where callbacks may go. `public` refuses loopback, private,
    /// link-local and other non-public addresses (at enqueue, and at
    /// delivery for what a name resolves to): use it when producers are
    /// not trusted, so that they cannot make the server call into its own
    /// network.
    #[arg(long, env = "QUEUE_CALLBACK_HOSTS", value_enum, default_value_t = CallbackHostsFlag::Any)]
    pub callback_hosts: CallbackHostsFlag,
}

/// `--callback-hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallbackHostsFlag {
    /// Any address (producers are trusted).
    Any,
    /// Public addresses only.
    Public,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityFlag {
    /// fsync before acknowledging.
    Sync,
    /// Flush every --flush-interval.
    Periodic,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// The store's configuration.
    pub fn queue_config(&self) -> Config {
        let durability = match self.durability {
            DurabilityFlag::Sync => Durability::Sync,
            DurabilityFlag::Periodic => Durability::Periodic(
                u64::try_from(self.flush_interval.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
        };
        let base = match self.database_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => Config::postgres(url),
            None => Config::new(&self.data_dir),
        };
        let mut config = base
            .durability(durability)
            .event_retention(self.event_retention)
            .max_events(self.event_max)
            .history_retention(self.history_retention)
            .retention(Retention {
                completed: self.retain_completed,
                dead: self.retain_dead,
                cancelled: self.retain_cancelled,
            });
        // The payload can use the whole body, up to the store's own limit.
        config.max_payload = usize::try_from(self.max_body)
            .unwrap_or(usize::MAX)
            .min(queue_core::MAX_PAYLOAD_LIMIT);
        config
    }

    /// The HTTP layer's configuration (the webhook secrets are resolved
    /// apart, see [`crate::callbacks::secrets::resolve`]).
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            token: self.token.clone().filter(|t| !t.is_empty()),
            max_body: usize::try_from(self.max_body).unwrap_or(usize::MAX),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            shutdown_timeout: self.shutdown_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            callbacks: CallbackConfig {
                secrets: Vec::new(),
                timeout: self.callback_timeout,
                concurrency: usize::try_from(self.callback_concurrency).unwrap_or(10_000),
                hosts: match self.callback_hosts {
                    CallbackHostsFlag::Any => CallbackHosts::Any,
                    CallbackHostsFlag::Public => CallbackHosts::Public,
                },
            },
            ..ServerConfig::default()
        }
    }
}

/// `--listen`: `host:port`, where the host is an IP address (IPv6 in
/// brackets) or a name resolved at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The host as given, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Listen {
    /// The addresses to try binding, in order: the address itself, or what
    /// the name resolves to.
    ///
    /// # Errors
    /// When the name does not resolve, or resolves to nothing.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

/// Parses `--listen`: `127.0.0.1:7878`, `[::1]:7878`, `localhost:7878`.
///
/// # Errors
/// A message naming the expected form.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Listen {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let form =
        || format!("{text:?} is not host:port (e.g. 127.0.0.1:7878, [::1]:7878, localhost:7878)");
    let (host, port) = text.rsplit_once(':').ok_or_else(form)?;
    let port: u16 = port.parse().map_err(|_| form())?;
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid_name {
        return Err(form());
    }
    Ok(Listen {
        host: host.to_owned(),
        port,
    })
}

/// Like [`parse_duration`], and not zero.
///
/// # Errors
/// As [`parse_duration`], or when zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(d)
}

/// Parses `500ms`, `30s`, `15m`, `24h`, `7d`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d (e.g. 30s)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 15m, 24h or 7d"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A duration as [`parse_duration`] reads it, or a bare `0` (off).
///
/// # Errors
/// As [`parse_duration`].
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_retention_takes_a_duration_or_zero() {
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration_or_zero("7d"),
            Ok(Duration::from_secs(7 * 86_400))
        );
        assert!(parse_duration_or_zero("7").is_err());
        let args = Args::try_parse_from(["queue-server"]).unwrap();
        assert_eq!(
            args.queue_config().history_retention,
            Duration::from_secs(7 * 86_400)
        );
        let off = Args::try_parse_from(["queue-server", "--history-retention", "0"]).unwrap();
        assert_eq!(off.queue_config().history_retention, Duration::ZERO);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn listen_takes_addresses_and_host_names() {
        let listen = |s: &str| parse_listen(s).map(|l| l.to_string());
        assert_eq!(listen("127.0.0.1:7879").unwrap(), "127.0.0.1:7879");
        assert_eq!(listen("[::1]:7879").unwrap(), "[::1]:7879");
        assert_eq!(listen("localhost:7879").unwrap(), "localhost:7879");
        assert_eq!(
            listen("queue.example-1.internal:80").unwrap(),
            "queue.example-1.internal:80"
        );
        for bad in [
            "localhost",
            "localhost:",
            ":7879",
            "local host:1",
            "a..b:1",
            "-a:1",
            "h:99999",
            "::1:80x",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn listen_resolves_localhost() {
        let addrs = parse_listen("localhost:7879")
            .unwrap()
            .resolve()
            .await
            .unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7879)
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let args = Args::try_parse_from(["queue-server"]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(args.body_timeout, Duration::from_secs(30));
        assert_eq!(args.idle_timeout, Duration::from_secs(20));
        assert!(Args::try_parse_from(["queue-server", "--idle-timeout", "0s"]).is_err());
        assert_eq!(args.data_dir, PathBuf::from("./queue-data"));
        assert_eq!(args.max_body, 1024 * 1024);
        assert_eq!(args.queue_config().durability, Durability::Sync);
        assert!(Args::try_parse_from(["queue-server", "--durability", "sometimes"]).is_err());
        let periodic = Args::try_parse_from([
            "queue-server",
            "--durability",
            "periodic",
            "--flush-interval",
            "50ms",
        ])
        .unwrap();
        assert_eq!(periodic.queue_config().durability, Durability::Periodic(50));
    }
}
