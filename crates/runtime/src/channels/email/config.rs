//! `[email]`: the SMTP server, the senders and tracking.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An SMTP server for the `email` channel.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:25` (plain), `smtp://user:pass@host:587?tls=opportunistic` (STARTTLS if
    /// offered), `smtp://user:pass@host:587?tls=required` (STARTTLS or fail), or
    /// `smtps://user:pass@host:465` (TLS from the first byte).
    pub smtp_url: String,
    /// `Name <address@example.com>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Other sending configurations, by name: `[email.senders.billing] from = "Acme
    /// Billing <billing@acme.example>"`, `reply_to`. An email template picks one with
    /// `sender = "billing"`; the others send from `from`/`reply_to` above.
    #[serde(default)]
    pub senders: std::collections::BTreeMap<String, EmailSenderConfig>,
    /// Connections kept open to the SMTP server.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// PEM file of a CA to trust for the SMTP server's certificate (STARTTLS or `smtps://`;
    /// an internal relay), on top of the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The URL people reach this server at; unsubscribe links, the open pixel and click
    /// redirects point here. Without it, emails carry no List-Unsubscribe header and are
    /// not tracked.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Add an open pixel to HTML emails (needs `public_url`): the first open of each
    /// message is recorded as an `Email Opened` event.
    #[serde(default = "yes")]
    pub track_opens: bool,
    /// Send http(s) links in HTML emails through signed redirects (needs `public_url`):
    /// the first click on each link of each message is recorded as `Email Link Clicked`.
    #[serde(default = "yes")]
    pub track_clicks: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSenderConfig {
    /// `Name <address@example.com>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_pool_size() -> u32 {
    8
}
