//! `waymark serve`: open the store, serve the API, prune old events, shut down gracefully.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use waymark_server::AppState;
use waymark_store::Store;
use waymark_store_postgres::PostgresStore;
use waymark_store_sqlite::SqliteStore;

use waymark_runtime::channels::Channels;

use crate::config::{Config, resolve_keys};

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_env("WAYMARK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn open_store(config: &Config, lease_owner: String) -> Result<Arc<dyn Store>, String> {
    let options = waymark_store::StoreOptions {
        lease_owner,
        ..config.store_options()
    };
    if config.store.starts_with("postgres://") || config.store.starts_with("postgresql://") {
        let store = PostgresStore::open(&config.store, options)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(store))
    } else if config.store == "sqlite" {
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(store))
    } else {
        Err(format!(
            "store must be \"sqlite\" or a postgres:// URL, not {:?}",
            config.store
        ))
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

#[allow(
    clippy::print_stdout,
    reason = "generated credentials are shown once, on the terminal, by design"
)]
pub async fn run(config: Config) -> Result<(), String> {
    init_logging(&config.log_format);
    let from = &config.loaded_from;
    tracing::info!(
        file = from
            .file
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string()),
        variables = from.variables.join(", "),
        "configuration read (variable values not shown: some are secrets)"
    );
    let keys = resolve_keys(&config)?;
    if let Some(creds) = &keys.generated {
        println!(
            "Generated credentials (stored in {}; shown only this once):",
            keys.file.display()
        );
        println!("  write key:   {}", creds.write_key);
        if let Some(client) = &creds.client_write_key {
            println!("  client write key: {client}");
        }
        println!("  admin token: {}", creds.admin_token);
        println!(
            "Send events from your servers with the write key, and from web pages and apps with the client write key."
        );
    }
    // Held for as long as the server runs.
    let (node, _node_lock) = crate::config::node_identity(&config)?;
    let store = open_store(&config, node).await?;
    tracing::info!(
        backend = store.backend(),
        partitions = store.partitions(),
        "store open"
    );

    let pruner = tokio::spawn(waymark_runtime::retention::run(store.clone()));
    let timers = tokio::spawn(waymark_runtime::timers::run(store.clone()));

    let link_secret = crate::config::link_secret(&config)?;
    let (channels, rotation) = channels(&config, &store, &link_secret)?;
    let settings = waymark_runtime::dispatcher::Settings {
        soft_bounce_limit: config.governance.soft_bounce_limit()?,
        retry_window_ms: config.governance.retry_window_ms()?,
        throttles: config.governance.throttles()?,
        lease_ms: config.outbox.lease_ms()?,
    };
    let dispatcher = tokio::spawn(waymark_runtime::dispatcher::run(
        store.clone(),
        channels,
        settings,
    ));

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "listening");
    println!("Waymark listening on http://{addr}");
    let mut state = AppState::new(store.clone(), keys.keys)
        .with_link_secret(link_secret)
        .with_identity_secret(crate::config::identity_secret(&config)?)
        .with_event_retention(config.store_options().max_event_age_ms)
        .with_cors_origins(config.http.cors_origins.clone());
    if let Some(sms) = &config.sms
        && let Some(url) = &sms.inbound_url
    {
        state = state.with_sms_inbound(waymark_server::links::SmsInbound {
            auth_token: sms.auth_token.clone().unwrap_or_default(),
            url: url.clone(),
            help_text: sms.help_text.clone(),
        });
    }
    if let Some(email) = &config.email {
        state = state.with_email_senders(email.senders.keys().cloned().collect());
    }
    if let Some(sms) = &config.sms
        && let Some(url) = &sms.status_url
    {
        state = state.with_sms_status(waymark_server::reports::SmsStatus {
            auth_token: sms.auth_token.clone().unwrap_or_default(),
            url: url.clone(),
        });
    }
    let app = waymark_server::app(state);
    let served =
        waymark_server::listen::serve(listener, app, config.http.limits()?, shutdown_signal())
            .await;
    pruner.abort();
    timers.abort();
    dispatcher.abort();
    if let Some(rotation) = rotation {
        rotation.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    served.map_err(|e| format!("server error: {e}"))
}

/// The senders of every configured channel. Webhooks always have one; the HTTP client it
/// builds (its TLS roots, denied networks) is the one the SMS and FCM calls use too. Also
/// the task that ends direct mail runs on time, if direct mail is configured.
fn channels(
    config: &Config,
    store: &Arc<dyn Store>,
    link_secret: &[u8],
) -> Result<(Channels, Option<tokio::task::JoinHandle<()>>), String> {
    use waymark_runtime::channels::{direct_mail, email, push, sms, webhook};
    let http = webhook::client(&config.webhooks, false)?;
    let mut channels = Channels::default()
        .with_webhooks(webhook::WebhookSender::new(&config.webhooks, http.clone())?);
    if let Some(c) = &config.email {
        channels = channels.with("email", Arc::new(email::Mailer::new(c, link_secret)?));
    }
    if let Some(c) = &config.sms {
        channels = channels.with("sms", Arc::new(sms::SmsSender::new(c, http.clone())?));
    }
    if let Some(c) = &config.push {
        let pusher = push::Pusher::new(c, http.clone(), store.clone())?;
        channels = channels.with("push", Arc::new(pusher));
    }
    let mut rotation = None;
    if let Some(c) = &config.direct_mail {
        let extractor = Arc::new(direct_mail::Extractor::new(c)?);
        rotation = Some(tokio::spawn(direct_mail::rotate_runs(extractor.clone())));
        channels = channels.with("direct_mail", extractor);
    }
    Ok((channels, rotation))
}
