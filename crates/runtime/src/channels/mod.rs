//! The channels, one module each with the same files: `config.rs` (its configuration
//! section), `sender.rs` (what delivers one claimed row), `mod.rs` (what it exports). Every
//! sender is a [`Channel`] and answers in the vocabulary of `crate::delivery`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use waymark_store::OutboxItem;

use crate::delivery::{Attempt, Retry};

pub mod direct_mail;
pub mod email;
pub mod push;
pub mod sms;
pub mod webhook;

/// Delivers one claimed outbox row: a message on its channel, or a webhook call.
#[async_trait]
pub trait Channel: Send + Sync {
    /// One attempt. `retry` is how long a failed message may be retried (the
    /// `governance.retry_window`); a failure worth retrying answers with
    /// `delivery::retry_or_fail`, so the row comes due again after a backoff.
    async fn send(&self, item: &OutboxItem, retry: Retry) -> Attempt;
}

/// Webhook effects are delivered by the sender registered under this name.
pub const WEBHOOK: &str = "webhook";

/// The senders configured, by channel name (`email`, `sms`, `push`, `direct_mail`, and
/// [`WEBHOOK`] for webhook calls).
#[derive(Default, Clone)]
pub struct Channels {
    senders: HashMap<&'static str, Arc<dyn Channel>>,
}

impl Channels {
    pub fn with(mut self, name: &'static str, sender: Arc<dyn Channel>) -> Self {
        self.senders.insert(name, sender);
        self
    }

    /// Delivers one claimed row by its kind and channel.
    pub async fn deliver(&self, item: &OutboxItem, retry: Retry) -> Attempt {
        match item.kind.as_str() {
            "webhook" => self.send_on(WEBHOOK, item, retry).await,
            "message" => match item.effect["channel"].as_str().unwrap_or_default() {
                // Held by quiet hours until now; the inbox shows it once it is done.
                "in_app" => Attempt::delivered(Value::Null),
                channel => self.send_on(channel, item, retry).await,
            },
            // Applied by the store when it records the delivery (`update_profile`), or
            // carried out by it (`jump`: the person enters the target journey).
            "update_profile" | "jump" => Attempt::delivered(Value::Null),
            other => Attempt::failed(format!("{other} effects are not supported yet")),
        }
    }

    async fn send_on(&self, channel: &str, item: &OutboxItem, retry: Retry) -> Attempt {
        if let Some(sender) = self.senders.get(channel) {
            return sender.send(item, retry).await;
        }
        let label = match channel {
            "email" | "sms" | "push" | WEBHOOK => channel,
            "direct_mail" => "direct mail",
            // `log` messages are done when recorded; a channel without a sender cannot
            // deliver.
            _ => return Attempt::failed(format!("channel {channel:?} cannot send")),
        };
        let section = if channel == WEBHOOK {
            "webhooks"
        } else {
            channel
        };
        Attempt::failed(format!(
            "{label} is not configured ([{section}] in the configuration)"
        ))
    }
}
