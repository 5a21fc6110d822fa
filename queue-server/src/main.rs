//! `queue-server`: parses flags, sets up logging, opens the store and serves
//! until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use queue_server::callbacks::secrets::Source;
use queue_server::cli::{Args, LogFormat};
use queue_server::{App, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let queue_config = args.queue_config();
    let queue = tokio::task::spawn_blocking(move || queue_core::Queue::open_with(queue_config))
        .await?
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    let mut config = args.server_config();
    let (secrets, source) =
        queue_server::callbacks::secrets::resolve(&args.webhook_secret, &args.data_dir)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?;
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
    }
    config.callbacks.secrets = secrets;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %args.data_dir.display(),
        durability = ?args.durability,
        auth = args.token.is_some(),
        "queue-server ready"
    );
    let app = App::new(queue, config);
    run(listener, app, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
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
