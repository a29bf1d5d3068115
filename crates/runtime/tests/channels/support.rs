//! What the channel tests hand the channels: claimed outbox rows and their messages. The
//! provider stand-ins are `waymark_test_support`'s, shared with the binary's live tests.

use serde_json::Value;
use waymark_engine::{Effect, Message};
use waymark_runtime::delivery::Retry;
use waymark_store::OutboxItem;

pub use waymark_test_support::http::Provider;

/// A message's retry window: a minute after it was recorded.
pub const WINDOW: Retry = Retry::Window(60_000);

/// A claimed outbox row holding `effect`, first attempt, recorded now.
pub fn claimed(effect: Effect) -> OutboxItem {
    OutboxItem {
        seq: 7,
        key: effect.key().unwrap_or("timer").to_owned(),
        profile_id: "p1".into(),
        journey: "welcome".into(),
        effect,
        attempts: 0,
        created_at: waymark_store::wall_clock_ms(),
    }
}

/// A message on `channel` with its rendered content (`{channel, fields, data}`).
pub fn message(key: &str, channel: &str, to: Option<&str>, content: Value) -> Effect {
    Effect::Message(Message {
        key: key.into(),
        instance: 1,
        node: "send".into(),
        channel: channel.into(),
        template: "hello".into(),
        content: Some(serde_json::from_value(content).expect("rendered content")),
        to: to.map(str::to_owned),
        transactional: false,
        expires_at: None,
        subscription: None,
        devices: vec![],
        surface: None,
        priority: 0,
    })
}

/// An SMS with rendered text, to `to`.
pub fn sms(to: &str, text: &str) -> Effect {
    let content = serde_json::json!({"channel": "sms", "fields": {"text": text}});
    message("welcome:p1:1:text:2", "sms", Some(to), content)
}
