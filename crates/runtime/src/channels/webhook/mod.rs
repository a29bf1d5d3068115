//! The webhook channel: journeys' `webhook` nodes calling HTTP endpoints.

mod config;
mod sender;

pub use config::WebhookConfig;
pub use sender::{MAX_RESPONSE_BYTES, WebhookPolicy, WebhookSender, client};
