//! `[webhooks]`: what webhook calls may reach and how they are signed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// PEM file of extra CA certificates to trust for https:// webhooks (an internal CA),
    /// on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// `whsec_...` (base64): sign every webhook call per Standard Webhooks
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Hosts webhooks may call (`api.example.com`, `*.example.com`); empty: any host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Networks webhooks (and providers) may never reach, as CIDRs (`10.0.0.0/8`,
    /// `169.254.0.0/16`, `::1/128`): checked on every resolved address.
    #[serde(default)]
    pub denied_networks: Vec<String>,
}

impl WebhookConfig {
    pub fn denied_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.denied_networks
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|e| format!("webhooks.denied_networks[{i}] {text:?}: {e}"))
            })
            .collect()
    }
}
