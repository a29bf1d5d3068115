//! The email channel: SMTP through a pool of kept-open connections, one sending
//! configuration per template's `sender`, unsubscribe headers, open and click tracking.

mod config;
mod pool;
mod sender;
mod tracking;

pub use config::{EmailConfig, EmailSenderConfig};
pub use sender::Mailer;
