//! Every outgoing HTTP client of the binary starts here, so TLS (rustls with ring) is set up
//! once: webhooks, `journeys apply` against an https:// server, and the bench tools.

/// A client builder with the TLS crypto provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Only the first call installs it; later ones find it there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
