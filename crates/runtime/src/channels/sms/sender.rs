//! The `sms` channel: Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded `To`, `From`, `Body`, HTTP Basic auth with the account SID and auth token),
//! against Twilio or any provider that speaks it (`sms.base_url`); or any HTTP API, its
//! request written as a templated JSON body and headers (`provider = "http"`).

use serde_json::{Value, json};
use waymark_engine::Message;
use waymark_store::{Delivery, OutboxItem};

use waymark_core::delivery::twilio_suppression;

use super::SmsConfig;
use crate::channels::Channel;
use crate::delivery::{Attempt, Bounce, Retry};

/// The configured provider, checked and compiled at start.
pub struct SmsSender {
    client: reqwest::Client,
    config: SmsConfig,
    http: Option<HttpApi>,
}

/// A generic HTTP provider's request: compiled body and header templates.
struct HttpApi {
    templates: waymark_core::template::Templates,
    body: waymark_core::template::JsonTemplate,
    headers: waymark_core::template::JsonTemplate,
}

impl SmsSender {
    pub fn new(config: &SmsConfig, client: reqwest::Client) -> Result<Self, String> {
        let http = match config.provider.as_str() {
            "twilio" => {
                if config.account_sid.is_none() || config.auth_token.is_none() {
                    return Err("sms: the twilio provider needs account_sid and auth_token".into());
                }
                None
            }
            "http" => {
                let url = config
                    .url
                    .as_deref()
                    .ok_or("sms: the http provider needs url")?;
                reqwest::Url::parse(url).map_err(|e| format!("sms.url {url:?}: {e}"))?;
                let body = config
                    .body
                    .as_ref()
                    .ok_or("sms: the http provider needs body")?;
                let mut templates = waymark_core::template::Templates::default();
                let body = templates
                    .json("body", body)
                    .map_err(|(at, e)| format!("sms.body{at}: {e}"))?;
                let headers = serde_json::to_value(&config.headers).unwrap_or_default();
                let headers = templates
                    .json("headers", &headers)
                    .map_err(|(at, e)| format!("sms.headers{at}: {e}"))?;
                Some(HttpApi {
                    templates,
                    body,
                    headers,
                })
            }
            other => return Err(format!("sms.provider {other:?}: expected twilio or http")),
        };
        if let Some(url) = &config.status_url {
            if config.provider != "twilio" {
                return Err("sms.status_url is for the twilio provider (a generic provider reports through POST /v1/messages/reports)".into());
            }
            reqwest::Url::parse(url).map_err(|e| format!("sms.status_url {url:?}: {e}"))?;
        }
        if config.inbound_url.is_some() && config.auth_token.is_none() {
            return Err(
                "sms.inbound_url needs the twilio auth_token (inbound requests are signed with it)"
                    .into(),
            );
        }
        Ok(Self {
            client,
            config: config.clone(),
            http,
        })
    }
}

/// Sends one rendered SMS. 2xx is sent (the provider's message id is kept); 429 and 5xx
/// and connection failures are retried with backoff while `retry` allows; other 4xx (a bad
/// number, a blocked recipient) fail at once with the provider's code and message, and
/// the codes that say the number cannot receive put it on the suppression list.
async fn send(
    sender: &SmsSender,
    item: &OutboxItem,
    message: &Message,
    retry: Retry,
) -> (Delivery, Option<Bounce>) {
    let client = &sender.client;
    let config = &sender.config;
    let (Some(to), Some(body)) = (message.to.as_deref(), message.field("text")) else {
        let reason = "the message has no recipient or no rendered text";
        return (Delivery::Failed(reason.into()), None);
    };
    if let Some(api) = &sender.http {
        return (
            http_api(client, config, api, item, to, body, retry).await,
            None,
        );
    }
    let (sid, token) = (
        config.account_sid.as_deref().unwrap_or_default(),
        config.auth_token.as_deref().unwrap_or_default(),
    );
    let url = format!(
        "{}/2010-04-01/Accounts/{sid}/Messages.json",
        config.base_url.trim_end_matches('/'),
    );
    let mut form = vec![
        ("To", to.to_owned()),
        ("From", config.from.clone()),
        ("Body", body.to_owned()),
    ];
    if let Some(base) = &config.status_url {
        // Checked at start; the URL library encodes the key in the query.
        if let Ok(callback) = reqwest::Url::parse_with_params(base, [("m", item.key.as_str())]) {
            form.push(("StatusCallback", callback.into()));
        }
    }
    let request = client
        .post(url)
        .basic_auth(sid, Some(token))
        .timeout(std::time::Duration::from_secs(15))
        .form(&form);
    let retry_or_fail = |error: String| crate::delivery::retry_or_fail(item, retry, error);
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                let answer = json!({"provider_id": answer["sid"], "status": answer["status"]});
                return (Delivery::Delivered(answer), None);
            }
            let reason = format!(
                "HTTP {status}: code {} {}",
                answer["code"],
                answer["message"].as_str().unwrap_or_default()
            );
            if crate::delivery::provider_busy(status) {
                // The provider's trouble, not the number's.
                (retry_or_fail(reason), None)
            } else {
                let code = answer["code"].as_u64().unwrap_or_default();
                let bounce = twilio_suppression(code).map(|why| Bounce::Hard {
                    reason: why,
                    detail: reason.clone(),
                });
                (Delivery::Failed(reason), bounce)
            }
        }
        Err(err) => {
            let reason = format!("request failed: {}", crate::delivery::with_causes(&err));
            (retry_or_fail(reason), None)
        }
    }
}

/// A generic HTTP provider: the configured body and headers rendered over `{to, from, text,
/// message_id}` and POSTed as JSON. 2xx is sent (the id read from `id_field`); 429, 5xx
/// and connection failures are retried; other answers fail with their status and body.
async fn http_api(
    client: &reqwest::Client,
    config: &SmsConfig,
    api: &HttpApi,
    item: &OutboxItem,
    to: &str,
    text: &str,
    retry: Retry,
) -> Delivery {
    let data = json!({"to": to, "from": config.from, "text": text, "message_id": item.key});
    let rendered = api
        .templates
        .render(&api.body, &data)
        .and_then(|body| Ok((body, api.templates.render(&api.headers, &data)?)));
    let (body, headers) = match rendered {
        Ok(r) => r,
        Err(e) => return Delivery::Failed(format!("sms request template: {e}")),
    };
    let mut request = client
        .post(config.url.as_deref().unwrap_or_default())
        .timeout(std::time::Duration::from_secs(15))
        .header("idempotency-key", &item.key)
        .json(&body);
    for (name, value) in headers.as_object().into_iter().flatten() {
        if let Some(v) = value.as_str() {
            request = request.header(name.as_str(), v);
        }
    }
    let retry_or_fail = |error: String| crate::delivery::retry_or_fail(item, retry, error);
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status.is_success() {
                let id = config.id_field.as_deref().map_or(Value::Null, |path| {
                    path.split('.')
                        .try_fold(&answer, |v, k| match k.parse::<usize>() {
                            Ok(i) => v.get(i),
                            Err(_) => v.get(k),
                        })
                        .cloned()
                        .unwrap_or(Value::Null)
                });
                return Delivery::Delivered(json!({"provider_id": id, "status": status.as_u16()}));
            }
            let reason = format!("HTTP {status}: {answer}");
            if crate::delivery::provider_busy(status) {
                retry_or_fail(reason)
            } else {
                Delivery::Failed(reason)
            }
        }
        Err(err) => retry_or_fail(format!(
            "request failed: {}",
            crate::delivery::with_causes(&err)
        )),
    }
}

#[async_trait::async_trait]
impl Channel for SmsSender {
    async fn send(&self, item: &OutboxItem, message: &Message, retry: Retry) -> Attempt {
        let (delivery, bounce) = send(self, item, message, retry).await;
        Attempt { delivery, bounce }
    }
}
