//! What a journey asks the runtime to do, as the outbox stores it and the channels
//! receive it: one typed, versioned value per effect, keyed for idempotency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use waymark_core::content::Rendered;
use waymark_core::time::Millis;

/// The idempotency key of an effect: which step of which instance planned it, written
/// `journey:profile:instance:node:step` (`profile` is the one it was planned for; a later
/// merge may fold that profile into another). The step is the index of the step the effect
/// belongs to in the instance's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EffectKey<'a> {
    pub journey: &'a str,
    pub profile: &'a str,
    pub instance: u32,
    pub node: &'a str,
    pub step: usize,
}

impl<'a> EffectKey<'a> {
    /// Reads a key back; node ids may not hold `:` but the parse does not rely on it.
    pub fn parse(key: &'a str) -> Option<Self> {
        let (rest, step) = key.rsplit_once(':')?;
        let (journey, rest) = rest.split_once(':')?;
        let (profile, rest) = rest.split_once(':')?;
        let (instance, node) = rest.split_once(':')?;
        Some(EffectKey {
            journey,
            profile,
            instance: instance.parse().ok()?,
            node,
            step: step.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EffectKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let EffectKey {
            journey,
            profile,
            instance,
            node,
            step,
        } = self;
        write!(f, "{journey}:{profile}:{instance}:{node}:{step}")
    }
}

/// What the runtime must do after an input. Keys make each effect idempotent: the same
/// step of the same instance always has the same key, so a retried dispatch is recognised.
///
/// Stored in the outbox as JSON ([`Effect::encode`]): the variant's fields at the top level,
/// its name in `effect` and the layout's version in `v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Message(Message),
    Webhook(WebhookCall),
    UpdateProfile(ProfileUpdate),
    /// Not stored in the outbox: the run writes it as a timer row (or fires it at once).
    Timer {
        instance: u32,
        timer: u64,
        due: Millis,
    },
    Jump(JumpTo),
}

/// A message for a channel to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub key: String,
    pub instance: u32,
    pub node: String,
    pub channel: String,
    pub template: String,
    /// The pinned template rendered for this person, if the journey version pins one; the
    /// outbox keeps exactly what is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Rendered>,
    /// Where it goes: the address for `email`, the phone number for `sms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Transactional messages skip frequency caps and quiet hours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transactional: bool,
    /// `in_app`: when the message leaves the inbox; `code_based`: when the content leaves
    /// its surface, if before the instance ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// `code_based`: the placement the content goes on (key or surface URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    /// `code_based`: the journey's priority on the surface.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// The subscription list it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// `push`: the person's devices, as (`apns` or `fcm`, token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<(String, String)>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Message {
    /// A rendered field (`subject`, `html`, `text`, `title`, ...), if the content has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.content.as_ref()?.fields.get(name).map(String::as_str)
    }

    /// The rendered `data` (push payloads, direct mail columns), if any.
    pub fn data(&self) -> Option<&Value> {
        self.content.as_ref()?.data.as_ref()
    }
}

/// An HTTP call a webhook node makes; its outcome moves the instance on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookCall {
    pub key: String,
    pub instance: u32,
    pub node: String,
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
    /// Defaults (here and for `retries`) are the node's, for rows written before the
    /// fields were stored.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: i64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_redirects: bool,
}

/// Profile traits to set and unset, applied when the row is recorded as delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    pub key: String,
    pub set: Map<String, Value>,
    pub unset: Vec<String>,
}

/// Enter the person into another journey (carried out through the outbox, so the target's
/// state is read and written in its own transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JumpTo {
    pub key: String,
    pub journey: String,
    /// The journey jumped from, and the entry context the target's instance starts with.
    pub from: String,
    pub entry: Value,
}

/// The layout of effects this build writes. Rows without `v` were written before the field
/// existed, in this same layout. A later layout bumps it and reads the older ones.
pub const EFFECT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct Encoded<'a> {
    v: u32,
    #[serde(flatten)]
    effect: &'a Effect,
}

#[derive(Deserialize)]
struct Decoded {
    #[serde(default = "first_format")]
    v: u32,
    #[serde(flatten)]
    effect: Effect,
}

/// A webhook node's timeout and retries when it names none.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: i64 = 10_000;
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 3;

fn default_timeout_ms() -> i64 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}

fn default_retries() -> u32 {
    DEFAULT_WEBHOOK_RETRIES
}

fn first_format() -> u32 {
    1
}

impl Effect {
    /// The outbox `kind` column: what the dispatcher does with the row.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Message(_) => "message",
            Effect::Webhook(_) => "webhook",
            Effect::UpdateProfile(_) => "update_profile",
            Effect::Timer { .. } => "timer",
            Effect::Jump(_) => "jump",
        }
    }

    /// The message, if this is one.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Effect::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The idempotency key (timers are keyed by their row instead).
    pub fn key(&self) -> Option<&str> {
        match self {
            Effect::Message(m) => Some(&m.key),
            Effect::Webhook(w) => Some(&w.key),
            Effect::UpdateProfile(u) => Some(&u.key),
            Effect::Jump(j) => Some(&j.key),
            Effect::Timer { .. } => None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        let encoded = Encoded {
            v: EFFECT_FORMAT,
            effect: self,
        };
        // Plain data (strings, numbers, maps with string keys) always serialises.
        serde_json::to_string(&encoded).unwrap_or_default()
    }

    /// Reads a stored effect back; one from a newer layout is refused, not guessed at.
    pub fn decode(stored: &str) -> Result<Effect, String> {
        let decoded: Decoded = serde_json::from_str(stored).map_err(|e| format!("effect: {e}"))?;
        if decoded.v > EFFECT_FORMAT {
            return Err(format!(
                "effect layout {} is newer than this build reads ({EFFECT_FORMAT})",
                decoded.v
            ));
        }
        Ok(decoded.effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Effect {
        Effect::Message(Message {
            key: "j:p:1:send:2".into(),
            instance: 1,
            node: "send".into(),
            channel: "sms".into(),
            template: "hello".into(),
            content: Some(Rendered {
                channel: "sms".into(),
                fields: [("text".to_owned(), "Hi".to_owned())].into(),
                data: None,
                sender: None,
            }),
            to: Some("+15550100".into()),
            transactional: false,
            expires_at: None,
            surface: None,
            priority: 0,
            subscription: None,
            devices: vec![],
        })
    }

    #[test]
    fn effects_read_back_as_written_with_their_version() {
        let effect = message();
        let stored = effect.encode();
        let json: Value = serde_json::from_str(&stored).expect("JSON");
        assert_eq!(json["v"], EFFECT_FORMAT);
        assert_eq!(json["effect"], "message");
        // The fields stay at the top level, where the stores' SQL reads the channel.
        assert_eq!(json["channel"], "sms");
        assert_eq!(Effect::decode(&stored).expect("reads back"), effect);
    }

    #[test]
    fn rows_written_before_the_version_field_still_read() {
        let old = r#"{"effect":"webhook","key":"k","instance":1,"node":"n","method":"POST",
            "url":"http://127.0.0.1:9/","headers":{},"body":null,"timeout_ms":1000,"retries":3}"#;
        let Effect::Webhook(call) = Effect::decode(old).expect("an old row reads") else {
            panic!("not a webhook");
        };
        assert_eq!(call.url, "http://127.0.0.1:9/");
        assert!(!call.follow_redirects);
    }

    #[test]
    fn a_newer_layout_is_refused_by_name() {
        let newer = message().encode().replace("\"v\":1", "\"v\":2");
        let err = Effect::decode(&newer).expect_err("refused");
        assert!(err.contains("layout 2 is newer"), "{err}");
        assert!(Effect::decode(r#"{"effect":"teleport","key":"k"}"#).is_err());
    }
}
