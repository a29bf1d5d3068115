//! The channels, one module each with the same files: `config.rs` (its configuration
//! section), `sender.rs` (what delivers one claimed row), `mod.rs` (what it exports). Every
//! sender is a [`Channel`] and answers in the vocabulary of `crate::delivery`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use waymark_engine::{Effect, Message};
use waymark_store::OutboxItem;

use crate::delivery::{Attempt, Retry};

pub mod direct_mail;
pub mod email;
pub mod push;
pub mod sms;
pub mod webhook;

/// Sends messages on one channel.
#[async_trait]
pub trait Channel: Send + Sync {
    /// One attempt at `message`, the effect of the claimed row `item` (its key, attempts
    /// and age). `retry` is how long a failed message may be retried (the
    /// `governance.retry_window`); a failure worth retrying answers with
    /// `delivery::retry_or_fail`, so the row comes due again after a backoff.
    async fn send(&self, item: &OutboxItem, message: &Message, retry: Retry) -> Attempt;
}

/// The senders configured: one per message channel (`email`, `sms`, `push`,
/// `direct_mail`) and the webhook caller.
#[derive(Default, Clone)]
pub struct Channels {
    senders: HashMap<&'static str, Arc<dyn Channel>>,
    webhooks: Option<Arc<webhook::WebhookSender>>,
}

impl Channels {
    pub fn with(mut self, name: &'static str, sender: Arc<dyn Channel>) -> Self {
        self.senders.insert(name, sender);
        self
    }

    pub fn with_webhooks(mut self, sender: webhook::WebhookSender) -> Self {
        self.webhooks = Some(Arc::new(sender));
        self
    }

    /// Delivers one claimed row by its effect.
    pub async fn deliver(&self, item: &OutboxItem, retry: Retry) -> Attempt {
        match &item.effect {
            Effect::Webhook(call) => match &self.webhooks {
                Some(sender) => sender.call(item, call).await,
                None => not_configured("webhook", "webhooks"),
            },
            // Held by quiet hours until now; the inbox shows it once it is done.
            Effect::Message(m) if m.channel == "in_app" => Attempt::delivered(Value::Null),
            Effect::Message(m) => self.send_on(item, m, retry).await,
            // Applied by the store when it records the delivery (`update_profile`), or
            // carried out by it (`jump`: the person enters the target journey).
            Effect::UpdateProfile(_) | Effect::Jump(_) => Attempt::delivered(Value::Null),
            Effect::Timer { .. } => Attempt::failed("timers are not outbox effects"),
        }
    }

    async fn send_on(&self, item: &OutboxItem, message: &Message, retry: Retry) -> Attempt {
        let channel = message.channel.as_str();
        if let Some(sender) = self.senders.get(channel) {
            return sender.send(item, message, retry).await;
        }
        match channel {
            "email" | "sms" | "push" => not_configured(channel, channel),
            "direct_mail" => not_configured("direct mail", channel),
            // `log` messages are done when recorded; a channel without a sender cannot
            // deliver.
            _ => Attempt::failed(format!("channel {channel:?} cannot send")),
        }
    }
}

fn not_configured(what: &str, section: &str) -> Attempt {
    Attempt::failed(format!(
        "{what} is not configured ([{section}] in the configuration)"
    ))
}
