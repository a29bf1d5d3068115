//! The `sms` channel: Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded `To`, `From`, `Body`, HTTP Basic auth with the account SID and auth token),
//! against Twilio or any provider that speaks it (`sms.base_url`).

use serde_json::{Value, json};
use waymark_store::{Delivery, OutboxItem};

use crate::config::Sms;
use crate::dispatch::{Bounce, Retry};

/// Twilio error codes that say the number cannot get messages: the list reason for each.
/// (21610: the person replied STOP to the carrier; 21211/21614: not a valid mobile number.)
fn bounce_of(code: &Value) -> Option<&'static str> {
    match code.as_u64()? {
        21610 => Some(waymark_core::governance::CARRIER_OPT_OUT),
        21211 | 21614 => Some(waymark_core::governance::INVALID),
        _ => None,
    }
}

/// Sends one rendered SMS. 2xx is sent (the provider's message id is kept); 429 and 5xx
/// and connection failures are retried with backoff while `retry` allows; other 4xx (a bad
/// number, a blocked recipient) fail at once with the provider's code and message, and
/// the codes that say the number cannot receive put it on the suppression list.
pub async fn send(
    client: &reqwest::Client,
    config: Option<&Sms>,
    item: &OutboxItem,
    retry: Retry,
) -> (Delivery, Option<Bounce>) {
    let Some(config) = config else {
        let reason = "sms is not configured ([sms] in the configuration)";
        return (Delivery::Failed(reason.into()), None);
    };
    let e = &item.effect;
    let (Some(to), Some(body)) = (e["to"].as_str(), e["content"]["fields"]["text"].as_str()) else {
        let reason = "the message has no recipient or no rendered text";
        return (Delivery::Failed(reason.into()), None);
    };
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        config.base_url.trim_end_matches('/'),
        config.account_sid
    );
    let request = client
        .post(url)
        .basic_auth(&config.account_sid, Some(&config.auth_token))
        .timeout(std::time::Duration::from_secs(15))
        .form(&[("To", to), ("From", config.from.as_str()), ("Body", body)]);
    let retry_or_fail = |error: String| crate::dispatch::retry_or_fail(item, retry, error);
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
            if status.is_server_error() || status.as_u16() == 429 {
                // The provider's trouble, not the number's.
                (retry_or_fail(reason), None)
            } else {
                let bounce = bounce_of(&answer["code"]).map(|why| Bounce::Hard {
                    reason: why,
                    detail: reason.clone(),
                });
                (Delivery::Failed(reason), bounce)
            }
        }
        Err(err) => {
            let reason = format!("request failed: {}", crate::dispatch::with_causes(&err));
            (retry_or_fail(reason), None)
        }
    }
}
