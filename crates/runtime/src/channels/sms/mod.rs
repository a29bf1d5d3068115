//! The SMS channel: Twilio's REST API (or a compatible one), or any HTTP API described by a
//! templated request.

mod config;
mod sender;

pub use config::SmsConfig;
pub use sender::SmsSender;
