//! `[sms]`: the SMS provider.

use serde::{Deserialize, Serialize};

/// An SMS provider: Twilio's REST API (Twilio itself, or any compatible one), or any HTTP
/// API described by a templated request (`provider = "http"`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// `twilio` (default) or `http`.
    #[serde(default = "default_sms_provider")]
    pub provider: String,
    /// Twilio: default `https://api.twilio.com`.
    #[serde(default = "default_twilio")]
    pub base_url: String,
    /// Twilio: the account and its token (also what inbound requests are signed with).
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub auth_token: Option<String>,
    /// The sender: a phone number (`+15550100`) or a messaging service / alphanumeric id.
    pub from: String,
    /// `http`: where to POST each message.
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: request headers (`Authorization = "Bearer ..."`); templates allowed.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `http`: the JSON body, its strings Handlebars templates over `to`, `from`, `text`
    /// and `message_id`: `{to = "{{to}}", sender = "{{from}}", content = "{{text}}"}`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// `http`: where the provider's message id is in its JSON answer (`id`,
    /// `messages.0.id`).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Twilio: the full URL the provider posts inbound messages to (as configured there; it
    /// signs it), e.g. `https://waymark.example.com/v1/sms/inbound`. Without it, inbound SMS
    /// (STOP/START/HELP) is refused.
    #[serde(default)]
    pub inbound_url: Option<String>,
    /// Twilio: this server's `/v1/sms/status` as the provider reaches it, e.g.
    /// `https://waymark.example.com/v1/sms/status`. Given with each send (with the
    /// message's id added), so the provider reports delivery, and numbers it finds dead
    /// are suppressed. Without it, SMS stay `sent`.
    #[serde(default)]
    pub status_url: Option<String>,
    /// The reply to HELP.
    #[serde(default = "default_help_text")]
    pub help_text: String,
}

fn default_sms_provider() -> String {
    "twilio".into()
}

fn default_help_text() -> String {
    "Reply STOP to unsubscribe, START to subscribe again.".into()
}

fn default_twilio() -> String {
    "https://api.twilio.com".into()
}
