//! Every outgoing HTTP client of the binary starts here, so TLS (rustls with ring) is set up
//! once: webhooks, `journeys apply` against an https:// server, and the bench tools.

/// A client builder with the TLS crypto provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Only the first call installs it; later ones find it there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// DNS resolution that drops addresses in denied networks (`webhooks.denied_networks`), so a
/// name that resolves to one (or is re-pointed at one later) is never connected to.
pub struct FilteredResolver {
    denied: std::sync::Arc<Vec<ipnet::IpNet>>,
}

impl FilteredResolver {
    pub fn new(denied: Vec<ipnet::IpNet>) -> Self {
        Self {
            denied: std::sync::Arc::new(denied),
        }
    }
}

impl reqwest::dns::Resolve for FilteredResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let denied = self.denied.clone();
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host(host).await?.collect();
            let allowed: Vec<std::net::SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !denied.iter().any(|net| net.contains(&a.ip())))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{} resolves only to denied networks (webhooks.denied_networks)",
                    name.as_str()
                )
                .into();
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
