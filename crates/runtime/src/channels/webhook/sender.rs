//! Webhook calls: an idempotency key on every call, Standard Webhooks signatures, hosts and
//! networks a call may reach, redirects followed only to the same host, response bodies
//! capped.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use waymark_engine::WebhookCall;
use waymark_store::{Delivery, OutboxItem, wall_clock_ms};

use super::WebhookConfig;
use crate::delivery::{Attempt, Retry, provider_busy, read_capped, retry_or_fail, with_causes};

/// The HTTP client webhooks (and SMS and push providers) are called with: HTTP/1.1 and
/// HTTPS (rustls, system roots plus `webhooks.ca_file`), connections kept per host, no
/// redirects followed, and addresses in `webhooks.denied_networks` never connected to.
/// `same_host_redirects` gives the client webhooks with `follow_redirects` use instead.
///
/// As many idle connections are kept per host as calls may be in flight: with fewer, each
/// burst of calls to one busy host (a provider API, a CRM) closed most of its connections
/// and opened them again for the next burst.
pub fn client(
    config: &WebhookConfig,
    same_host_redirects: bool,
) -> Result<reqwest::Client, String> {
    let policy = if same_host_redirects {
        // At most 5 hops, each to the host the call was made to: a redirect to another
        // host would carry this call's headers (and body) there.
        reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt.previous().first().is_some_and(|first| {
                first.host_str() == attempt.url().host_str()
                    && first.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if same {
                attempt.follow()
            } else {
                attempt.error("a redirect to another host is not followed")
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let denied = config.denied_networks()?;
    let mut builder = crate::http::client_builder()
        .pool_max_idle_per_host(crate::delivery::IN_FLIGHT)
        .redirect(policy);
    if !denied.is_empty() {
        builder = builder.dns_resolver(Arc::new(crate::http::FilteredResolver::new(denied)));
    }
    if let Some(path) = &config.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("webhooks.ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("webhooks.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "webhooks.ca_file {}: no PEM certificates in it",
                path.display()
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))
}

/// Which webhook URLs may be called (`webhooks.allowed_hosts`, `webhooks.denied_networks`).
#[derive(Default)]
pub struct WebhookPolicy {
    /// The client for webhooks that follow same-host redirects.
    pub following: Option<reqwest::Client>,
    /// Hosts calls may go to (`api.example.com`, or `*.example.com` for its subdomains);
    /// empty allows every host.
    pub allowed_hosts: Vec<String>,
    /// Networks no call may reach; checked on IP-literal URLs here and on every resolved
    /// address by the client's resolver.
    pub denied_networks: Vec<ipnet::IpNet>,
}

impl WebhookPolicy {
    /// Why a call to `url` may not be made, if it may not.
    pub(crate) fn refuses(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|allowed| match allowed.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.')),
                    None => host.eq_ignore_ascii_case(allowed),
                })
        {
            return Some(format!("host {host} is not in webhooks.allowed_hosts"));
        }
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
            url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        self.denied_networks
            .iter()
            .find(|net| net.contains(&ip))
            .map(|net| format!("{ip} is in a denied network ({net})"))
    }
}

/// Most bytes of a webhook's response body kept (in the outbox and the journey context);
/// the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Webhook calls (the journeys' `webhook` nodes).
pub struct WebhookSender {
    client: reqwest::Client,
    /// Standard Webhooks signing key for every call.
    key: Option<Vec<u8>>,
    policy: WebhookPolicy,
}

impl WebhookSender {
    /// `client` is [`client`]`(config, false)`, which other channels may share.
    pub fn new(config: &WebhookConfig, client: reqwest::Client) -> Result<Self, String> {
        Ok(Self {
            client,
            key: config
                .signing_secret
                .as_deref()
                .map(waymark_core::links::webhook_secret)
                .transpose()?,
            policy: WebhookPolicy {
                following: Some(self::client(config, true)?),
                allowed_hosts: config.allowed_hosts.clone(),
                denied_networks: config.denied_networks()?,
            },
        })
    }
}

impl WebhookSender {
    /// One call. Retried as the node says (`retries`), not by the messages' window.
    pub async fn call(&self, item: &OutboxItem, call: &WebhookCall) -> Attempt {
        self::call(&self.client, self.key.as_deref(), &self.policy, item, call)
            .await
            .into()
    }
}

async fn call(
    client: &reqwest::Client,
    key: Option<&[u8]>,
    policy: &WebhookPolicy,
    item: &OutboxItem,
    call: &WebhookCall,
) -> Delivery {
    let retries = call.retries;
    // Clamped for journeys published before the limit was checked.
    let timeout = Duration::from_millis(
        u64::try_from(call.timeout_ms)
            .unwrap_or(waymark_engine::DEFAULT_WEBHOOK_TIMEOUT_MS as u64)
            .min(waymark_core::journey::MAX_WEBHOOK_TIMEOUT_MS as u64),
    );
    let method =
        reqwest::Method::from_bytes(call.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let url = match reqwest::Url::parse(&call.url) {
        Ok(url) => url,
        Err(err) => return Delivery::Failed(format!("invalid URL: {err}")),
    };
    if let Some(why) = policy.refuses(&url) {
        return Delivery::Failed(format!("not called: {why}"));
    }
    let client = match &policy.following {
        Some(following) if call.follow_redirects => following,
        _ => client,
    };
    let mut request = client
        .request(method, url)
        .timeout(timeout)
        .header("idempotency-key", &item.key)
        .header("webhook-id", &item.key);
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let body = match &call.body {
        None | Some(Value::Null) => Vec::new(),
        Some(body) => {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(body).unwrap_or_default()
        }
    };
    if let Some(key) = key {
        // Signed over the exact bytes sent; the timestamp lets receivers refuse replays.
        let timestamp = wall_clock_ms() / 1000;
        request = request
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                waymark_core::links::webhook_signature(key, &item.key, timestamp, &body),
            );
    }
    if !body.is_empty() {
        request = request.body(body);
    }
    let retry_or_fail = |error: String| retry_or_fail(item, Retry::Attempts(retries), error);
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            let status = response.status().as_u16();
            let (bytes, truncated) = read_capped(response, MAX_RESPONSE_BYTES).await;
            if truncated {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Delivery::Delivered(
                    json!({"status": status, "body": text, "truncated": true}),
                );
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Delivery::Delivered(json!({"status": status, "body": body}))
        }
        Ok(response) if response.status().is_redirection() => Delivery::Failed(format!(
            "HTTP {} redirect not followed (to {}); set follow_redirects for same-host redirects",
            response.status(),
            response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
        )),
        Ok(response) if provider_busy(response.status()) => {
            retry_or_fail(format!("HTTP {}", response.status()))
        }
        Ok(response) => Delivery::Failed(format!("HTTP {}", response.status())),
        Err(err) if err.is_timeout() => retry_or_fail(format!("timed out after {timeout:?}")),
        Err(err) => retry_or_fail(format!("request failed: {}", with_causes(&err))),
    }
}
