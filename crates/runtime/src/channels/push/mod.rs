//! The push channel: FCM HTTP v1 and APNs (token-based), dead tokens detached.

mod config;
mod sender;

pub use config::PushConfig;
pub use sender::Pusher;
