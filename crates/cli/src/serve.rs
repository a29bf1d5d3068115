//! `waymark serve`: open the store, serve the API, prune old events, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;
use waymark_store::wall_clock_ms as now_ms;

use tracing_subscriber::EnvFilter;
use waymark_server::AppState;
use waymark_store::Store;
use waymark_store_postgres::PostgresStore;
use waymark_store_sqlite::SqliteStore;

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

    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match store.prune_expired(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "pruned events past retention"),
                    Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
                }
            }
        })
    };

    // Timer service: fires due journey timers in due order. The due index is the source of
    // truth, so a restart fires everything that came due while the server was down.
    let timers = {
        let store = store.clone();
        tokio::spawn(async move {
            const BATCH: u32 = 1000;
            loop {
                let fired = store.fire_due_timers(now_ms(), BATCH).await;
                if let Ok(n) = fired {
                    metrics::counter!("waymark_journey_timers_fired_total").increment(n as u64);
                }
                match fired {
                    Ok(n) if n as u32 == BATCH => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "firing journey timers failed; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let http = crate::dispatch::client(&config.webhooks, false)?;
    let link_secret = crate::config::link_secret(&config)?;
    let direct_mail = config
        .direct_mail
        .as_ref()
        .map(|d| crate::direct_mail::Extractor::new(d).map(Arc::new))
        .transpose()?;
    if let Some(extractor) = &direct_mail {
        tokio::spawn(crate::direct_mail::rotate_runs(extractor.clone()));
    }
    let channels = crate::dispatch::Channels {
        direct_mail,
        sms: config
            .sms
            .as_ref()
            .map(crate::sms::SmsSender::new)
            .transpose()?,
        email: config
            .email
            .as_ref()
            .map(|e| crate::email::Mailer::new(e, &link_secret).map(Arc::new))
            .transpose()?,
        push: config
            .push
            .as_ref()
            .map(|p| crate::push::Pusher::new(p).map(Arc::new))
            .transpose()?,
        webhook_key: config
            .webhooks
            .signing_secret
            .as_deref()
            .map(waymark_core::links::webhook_secret)
            .transpose()?,
        soft_bounce_limit: config.governance.soft_bounce_limit()?,
        retry_window_ms: config.governance.retry_window_ms()?,
        throttles: config.governance.throttles()?,
        lease_ms: config.outbox.lease_ms()?,
        webhooks: crate::dispatch::WebhookPolicy {
            following: Some(crate::dispatch::client(&config.webhooks, true)?),
            allowed_hosts: config.webhooks.allowed_hosts.clone(),
            denied_networks: config.webhooks.denied_networks()?,
        },
    };
    let dispatcher = tokio::spawn(crate::dispatch::run(store.clone(), http, channels));

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "listening");
    println!("Waymark listening on http://{addr}");
    let mut state = AppState::new(store.clone(), keys.keys)
        .with_link_secret(link_secret)
        .with_identity_secret(crate::config::identity_secret(&config)?);
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
    store.close().await;
    tracing::info!("stopped");
    served.map_err(|e| format!("server error: {e}"))
}
