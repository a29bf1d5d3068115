//! The `push` channel: Firebase Cloud Messaging's HTTP v1 API and Apple's APNs provider API
//! (HTTP/2, token-based authentication), endpoints configurable. A push goes to every
//! device token the person has (`fcm_token` / `apns_token` identities). A token the provider
//! says is dead (FCM `UNREGISTERED`, APNs 410 or `BadDeviceToken`) is detached from the
//! profile, so it is never tried again.
//!
//! A retry resends to every device, including those that accepted the first time; each
//! notification carries a collapse id made from the message key, so a device shows it once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use waymark_engine::Message;
use waymark_store::{Delivery, OutboxItem, Store};

use super::PushConfig;
use crate::channels::Channel;
use crate::delivery::{Attempt, Retry};

pub struct Pusher {
    config: PushConfig,
    /// FCM's client (HTTP/1.1, shared with the other channels).
    client: reqwest::Client,
    /// Dead tokens are detached from their profiles.
    store: Arc<dyn Store>,
    fcm_account: Option<ServiceAccount>,
    /// HTTP/2 (APNs requires it; over cleartext, as a local stand-in speaks it, by prior
    /// knowledge).
    apns_client: reqwest::Client,
    apns_key: Option<ApnsKey>,
}

/// The APNs signing key (`.p8`, ES256) and the provider token made from it, renewed before
/// Apple's one-hour limit.
struct ApnsKey {
    key: ring::signature::EcdsaKeyPair,
    key_id: String,
    team_id: String,
    token: std::sync::Mutex<Option<(i64, String)>>,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT's first two parts (`header.claims`, base64url), the text its signature covers.
fn jwt_signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

impl ApnsKey {
    fn load(config: &PushConfig) -> Result<Option<Self>, String> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let Some(path) = &config.apns_key_file else {
            return Ok(None);
        };
        let (Some(key_id), Some(team_id)) = (&config.apns_key_id, &config.apns_team_id) else {
            return Err("push.apns_key_file needs push.apns_key_id and push.apns_team_id".into());
        };
        let der = PrivatePkcs8KeyDer::from_pem_file(path)
            .map_err(|e| format!("push.apns_key_file {}: {e}", path.display()))?;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| {
            format!(
                "push.apns_key_file {}: not a P-256 key: {e}",
                path.display()
            )
        })?;
        Ok(Some(Self {
            key,
            key_id: key_id.clone(),
            team_id: team_id.clone(),
            token: std::sync::Mutex::new(None),
        }))
    }

    /// The provider token (a JWT signed ES256), reused for 50 minutes. Made here with ring,
    /// already in the build for TLS, rather than a JWT crate: the current `jsonwebtoken`
    /// needs another crypto backend for a three-part string.
    fn token(&self) -> Result<String, String> {
        let now = waymark_store::wall_clock_ms() / 1000;
        let mut cached = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, token)) = cached.as_ref()
            && now - at < 50 * 60
        {
            return Ok(token.clone());
        }
        let signing_input = jwt_signing_input(
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": now}),
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "signing the APNs provider token failed".to_owned())?;
        let token = format!("{signing_input}.{}", b64url(signature.as_ref()));
        *cached = Some((now, token.clone()));
        Ok(token)
    }
}

/// A Google service account: signs its own OAuth 2 assertion (RS256, with ring, as the
/// APNs token above) and trades it at `token_uri` for an access token, kept until five
/// minutes before it expires.
struct ServiceAccount {
    email: String,
    token_uri: String,
    key: ring::signature::RsaKeyPair,
    token: tokio::sync::Mutex<Option<(i64, String)>>,
}

const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

impl ServiceAccount {
    fn load(path: &std::path::Path) -> Result<Self, String> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let what = |e: &dyn std::fmt::Display| {
            format!("push.fcm_service_account_file {}: {e}", path.display())
        };
        let text = std::fs::read_to_string(path).map_err(|e| what(&e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| what(&e))?;
        let field = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| what(&format!("no {name}")))
        };
        let pem = field("private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| what(&e))?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| what(&format!("private_key is not an RSA key: {e}")))?;
        Ok(Self {
            email: field("client_email")?,
            token_uri: field("token_uri")?,
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn access_token(&self, client: &reqwest::Client) -> Result<String, String> {
        let now = waymark_store::wall_clock_ms() / 1000;
        let mut cached = self.token.lock().await;
        if let Some((until, token)) = cached.as_ref()
            && now < *until
        {
            return Ok(token.clone());
        }
        let signing_input = jwt_signing_input(
            &json!({"alg": "RS256", "typ": "JWT"}),
            &json!({"iss": self.email, "scope": FCM_SCOPE, "aud": self.token_uri,
                "iat": now, "exp": now + 3600}),
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the service account assertion failed".to_owned())?;
        let assertion = format!("{signing_input}.{}", b64url(&signature));
        let response = client
            .post(&self.token_uri)
            .timeout(Duration::from_secs(15))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("token request: {}", crate::delivery::with_causes(&e)))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let (Some(token), true) = (answer["access_token"].as_str(), status.is_success()) else {
            return Err(format!("token request: HTTP {status} {}", answer["error"]));
        };
        let lifetime = answer["expires_in"].as_i64().unwrap_or(3600);
        *cached = Some((now + lifetime - 300, token.to_owned()));
        Ok(token.to_owned())
    }
}

/// How one device answered.
enum Answer {
    Sent(Value),
    /// The token is dead: detach it.
    Dead(String),
    Retry(String),
    Failed(String),
}

impl Pusher {
    pub fn new(
        config: &PushConfig,
        client: reqwest::Client,
        store: Arc<dyn Store>,
    ) -> Result<Self, String> {
        let mut builder = crate::http::client_builder();
        if config.apns_url.starts_with("http://") {
            builder = builder.http2_prior_knowledge();
        }
        let apns_client = builder
            .build()
            .map_err(|e| format!("cannot build the APNs HTTP client: {e}"))?;
        let fcm_account = config
            .fcm_service_account_file
            .as_deref()
            .map(ServiceAccount::load)
            .transpose()?;
        let credentials = fcm_account.is_some() || config.fcm_access_token.is_some();
        if config.fcm_project_id.is_some() != credentials {
            return Err("push.fcm_project_id goes with push.fcm_service_account_file (or push.fcm_access_token)".into());
        }
        Ok(Self {
            fcm_account,
            apns_key: ApnsKey::load(config)?,
            config: config.clone(),
            client,
            store,
            apns_client,
        })
    }

    /// Sends to each of the message's devices. Sent if any device took it; retried if none
    /// did and one may later; failed otherwise. Dead tokens are detached from the profile.
    async fn send_push(&self, item: &OutboxItem, message: &Message, retry: Retry) -> Delivery {
        let (client, store) = (&self.client, &self.store);
        let devices = &message.devices;
        if devices.is_empty() {
            return Delivery::Failed("the person has no push token".into());
        }
        let collapse = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(item.key.as_bytes()));
        let (mut sent, mut retry_reason, mut failures) = (Vec::new(), None, Vec::new());
        for (platform, token) in devices {
            let answer = match platform.as_str() {
                "apns" => self.apns(token, message, &collapse).await,
                _ => self.fcm(client, token, message, &collapse).await,
            };
            match answer {
                Answer::Sent(v) => sent.push(json!({"platform": platform, "answer": v})),
                Answer::Dead(reason) => {
                    let namespace = waymark_core::identity::Namespace::of_push_platform(platform);
                    if let Ok(identity) = waymark_core::Identity::parse(namespace, token) {
                        match store.forget_identity(&identity, waymark_store::wall_clock_ms()).await {
                            Ok(_) => metrics::counter!("waymark_push_tokens_removed_total", "platform" => platform.clone()).increment(1),
                            Err(e) => tracing::warn!(error = %e, "could not detach a dead push token"),
                        }
                    }
                    failures.push(format!("{platform}: {reason} (token removed)"));
                }
                Answer::Retry(reason) => retry_reason = Some(format!("{platform}: {reason}")),
                Answer::Failed(reason) => failures.push(format!("{platform}: {reason}")),
            }
        }
        if !sent.is_empty() {
            return Delivery::Delivered(json!({"devices": sent, "failed": failures}));
        }
        match retry_reason {
            Some(reason) => crate::delivery::retry_or_fail(item, retry, reason),
            None => Delivery::Failed(failures.join("; ")),
        }
    }

    /// FCM HTTP v1: `POST {fcm_url}/v1/projects/{project}/messages:send`.
    async fn fcm(
        &self,
        client: &reqwest::Client,
        token: &str,
        message: &Message,
        collapse: &str,
    ) -> Answer {
        let Some(project) = &self.config.fcm_project_id else {
            return Answer::Failed("FCM is not configured (push.fcm_project_id)".into());
        };
        let access_token = match (&self.fcm_account, &self.config.fcm_access_token) {
            (Some(account), _) => match account.access_token(client).await {
                Ok(t) => t,
                // Google's token endpoint may be down for a moment: try again later.
                Err(e) => return Answer::Retry(e),
            },
            (None, Some(t)) => t.clone(),
            (None, None) => return Answer::Failed("FCM has no credentials".into()),
        };
        // FCM data values must be strings.
        let data: serde_json::Map<String, Value> = message
            .data()
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), Value::String(text))
            })
            .collect();
        let body = json!({"message": {
            "token": token,
            "notification": {"title": message.field("title"), "body": message.field("body")},
            "data": data,
            "android": {"collapse_key": collapse},
            "apns": {"headers": {"apns-collapse-id": collapse}},
        }});
        let url = format!(
            "{}/v1/projects/{project}/messages:send",
            self.config.fcm_url.trim_end_matches('/')
        );
        let response = client
            .post(url)
            .bearer_auth(access_token)
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status();
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                let code = answer["error"]["details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|d| d["errorCode"].as_str())
                    .or_else(|| answer["error"]["status"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                let reason = format!("HTTP {status} {code}");
                if status.is_success() {
                    Answer::Sent(json!({"provider_id": answer["name"]}))
                } else if code == "UNREGISTERED" || status.as_u16() == 404 {
                    Answer::Dead(reason)
                } else if crate::delivery::provider_busy(status) {
                    Answer::Retry(reason)
                } else {
                    Answer::Failed(reason)
                }
            }
            Err(e) => Answer::Retry(format!(
                "request failed: {}",
                crate::delivery::with_causes(&e)
            )),
        }
    }

    /// APNs: `POST {apns_url}/3/device/{token}` over HTTP/2 with a provider token.
    async fn apns(&self, token: &str, message: &Message, collapse: &str) -> Answer {
        let (Some(key), Some(topic)) = (&self.apns_key, &self.config.apns_topic) else {
            return Answer::Failed(
                "APNs is not configured (push.apns_key_file, apns_topic)".into(),
            );
        };
        let jwt = match key.token() {
            Ok(t) => t,
            Err(e) => return Answer::Failed(e),
        };
        let alert = json!({"title": message.field("title"), "body": message.field("body")});
        let mut body = json!({"aps": {"alert": alert}});
        let data = message.data().and_then(Value::as_object);
        for (k, v) in data.into_iter().flatten() {
            if k != "aps" {
                body[k] = v.clone();
            }
        }
        let url = format!(
            "{}/3/device/{token}",
            self.config.apns_url.trim_end_matches('/')
        );
        let response = self
            .apns_client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", topic)
            .header("apns-push-type", "alert")
            .header("apns-collapse-id", collapse)
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await;
        match response {
            Ok(r) => {
                let busy = crate::delivery::provider_busy(r.status());
                let status = r.status().as_u16();
                let id = r
                    .headers()
                    .get("apns-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                let why = answer["reason"].as_str().unwrap_or_default();
                let reason = format!("HTTP {status} {why}");
                match status {
                    200 => Answer::Sent(json!({"provider_id": id})),
                    410 => Answer::Dead(reason),
                    400 if why == "BadDeviceToken" => Answer::Dead(reason),
                    _ if busy => Answer::Retry(reason),
                    _ => Answer::Failed(reason),
                }
            }
            Err(e) => Answer::Retry(format!(
                "request failed: {}",
                crate::delivery::with_causes(&e)
            )),
        }
    }
}

#[async_trait::async_trait]
impl Channel for Pusher {
    async fn send(&self, item: &OutboxItem, message: &Message, retry: Retry) -> Attempt {
        self.send_push(item, message, retry).await.into()
    }
}
