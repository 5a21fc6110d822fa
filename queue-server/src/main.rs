//! `queue-server`: parses flags, sets up logging, opens the store and serves
//! until SIGTERM or Ctrl-C.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use queue_server::callbacks::secrets::Source;
use queue_server::cli::{Args, Listen, LogFormat};
use queue_server::{App, run};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than the system allocator: see the `jemalloc` feature.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let queue_config = args.queue_config();
    let storage = queue_config.storage.clone();
    let queue = tokio::task::spawn_blocking(move || queue_core::Queue::open_with(queue_config))
        .await?
        .with_context(|| format!("opening {storage}"))?;
    let mut config = args.server_config();
    let shared = queue_server::callbacks::secrets::resolve_shared(&args.webhook_secret, &queue)
        .await
        .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?;
    let (secrets, source) = match shared {
        Some(shared) => shared,
        None => queue_server::callbacks::secrets::resolve(&args.webhook_secret, &args.data_dir)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?,
    };
    match &source {
        Source::Configured => tracing::info!(secrets = secrets.len(), "webhook secrets configured"),
        Source::Stored(path) => tracing::info!(
            path = %path.display(),
            "callbacks are signed with the webhook secret stored in this file"
        ),
        Source::Generated(path) => tracing::info!(
            path = %path.display(),
            "generated a webhook secret for signing callbacks; give receivers the secret in this file"
        ),
        Source::Database => tracing::info!(
            "callbacks are signed with the webhook secret stored in the database \
             (table queue_secrets), shared by every server on it"
        ),
        Source::GeneratedInDatabase => tracing::info!(
            "generated a webhook secret for signing callbacks and stored it in the database \
             (table queue_secrets, name webhook-secret); give receivers that secret"
        ),
    }
    config.callbacks.secrets = secrets;
    let listener = bind(&args.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        storage = %storage,
        durability = ?args.durability,
        auth = args.token.is_some(),
        "queue-server ready"
    );
    let app = App::new(queue, config);
    run(listener, app, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds `--listen`: its address, or the first address its name resolves
/// to that can be bound.
async fn bind(listen: &Listen) -> anyhow::Result<tokio::net::TcpListener> {
    let addrs = listen
        .resolve()
        .await
        .with_context(|| format!("resolving {listen}"))?;
    let mut last = None;
    for addr in addrs {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) => Err(anyhow::Error::new(e).context(format!("binding {listen} ({addr})"))),
        None => Err(anyhow::anyhow!("{listen} resolves to no address")),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
