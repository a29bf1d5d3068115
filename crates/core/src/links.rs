//! Signed links (unsubscribe, email open pixels and click redirects): the parameters a link
//! carries are signed with HMAC-SHA256 under the server's link secret, so a link cannot be
//! forged or altered. A click link's destination is one of the signed parameters, so it can
//! only ever redirect to a URL that was in the message it was made for.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], payload: &str) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this only fails on an impossible key size.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(payload.as_bytes());
    Some(mac)
}

/// The signature of `payload`, as lowercase hex.
pub fn sign(secret: &[u8], payload: &str) -> String {
    mac(secret, payload).map_or_else(String::new, |m| {
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The shortest link secret accepted: anyone who can guess it can sign any link.
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether `signature` is `payload`'s, compared in constant time. Only the one spelling
/// [`sign`] writes is accepted (64 lowercase hex digits): `+0f` or `0F` would decode to
/// the same bytes, and a second spelling of one link would defeat de-duplication by it.
pub fn verify(secret: &[u8], payload: &str, signature: &str) -> bool {
    let canonical = signature.len() == 64
        && signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical || secret.is_empty() {
        return false;
    }
    let bytes = (0..signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(signature.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>();
    match (mac(secret, payload), bytes) {
        (Some(m), Some(bytes)) => m.verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// Twilio's request signature (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed by the
/// auth token, over the URL Twilio called followed by each POST parameter's name and value,
/// sorted by name.
fn twilio_mac(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
) -> Option<Hmac<sha1::Sha1>> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(mac)
}

/// Whether a request carries Twilio's signature, compared in constant time.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    use base64::Engine;
    let (Some(mac), Ok(bytes)) = (
        twilio_mac(auth_token, url, params),
        base64::engine::general_purpose::STANDARD.decode(signature),
    ) else {
        return false;
    };
    mac.verify_slice(&bytes).is_ok()
}

/// Signs like Twilio does (for tests and for providers that imitate it).
pub fn sign_twilio(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    twilio_mac(auth_token, url, params).map_or_else(String::new, |mac| {
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    })
}

/// A Standard Webhooks secret (`whsec_` followed by base64) as key bytes.
pub fn webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not whsec_ followed by base64: {e}"))?;
    if key.len() < 24 {
        return Err("shorter than 24 bytes; use at least 32 random bytes".into());
    }
    Ok(key)
}

/// The Standard Webhooks `webhook-signature` header value: `v1,` and base64 of HMAC-SHA256
/// over `{webhook-id}.{webhook-timestamp}.{body}`.
pub fn webhook_signature(key: &[u8], id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    use base64::Engine;
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp_secs}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The proof that a browser or app speaks for one person (`X-Waymark-User-Hash`): the
/// customer's backend signs the person's identity, `namespace:value` as Waymark normalises
/// it (`user_id:ada`, `email:ada@example.com`), with the server's identity secret; hex of
/// HMAC-SHA256, the "user hash" that Intercom and Braze SDKs send.
pub fn user_hash(secret: &[u8], namespace: &str, value: &str) -> String {
    sign(secret, &identity_payload(namespace, value))
}

/// Whether `hash` is the person's [`user_hash`], compared in constant time.
pub fn verify_user_hash(secret: &[u8], namespace: &str, value: &str, hash: &str) -> bool {
    verify(secret, &identity_payload(namespace, value), hash)
}

fn identity_payload(namespace: &str, value: &str) -> String {
    format!("{namespace}:{value}")
}

/// What an unsubscribe link says: the person with this identity (`email:ada@example.com`)
/// leaves this channel's marketing messages.
pub fn unsubscribe_payload(identity: &str, channel: &str) -> String {
    format!("unsubscribe:{channel}:{identity}")
}

/// Fields joined so that no two different field lists give the same text: each is
/// prefixed by its length (a URL may contain any separator we could pick).
fn fields(kind: &str, values: &[&str]) -> String {
    let mut out = kind.to_owned();
    for v in values {
        out.push_str(&format!(":{}:{v}", v.len()));
    }
    out
}

/// What an open pixel says: this message (its outbox key), from this journey, to this
/// identity, was opened.
pub fn open_payload(message: &str, journey: &str, identity: &str) -> String {
    fields("open", &[message, journey, identity])
}

/// What a click link says: this message's recipient followed this URL (which was in it).
pub fn click_payload(message: &str, journey: &str, identity: &str, url: &str) -> String {
    fields("click", &[message, journey, identity, url])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_payloads_cannot_be_shifted_between_fields() {
        // Moving text from one field to the next changes the payload, so a signature made
        // for one link cannot be replayed with the fields split differently.
        assert_ne!(
            click_payload("m", "j", "email:a@x.io", "https://x.io/a:b"),
            click_payload("m", "j", "email:a@x.io:https://x.io/a", "b")
        );
        assert_ne!(open_payload("m:1", "j", "i"), open_payload("m", "1:j", "i"));
        assert_ne!(
            open_payload("m", "j", "i"),
            click_payload("m", "j", "i", "")
        );
    }

    #[test]
    fn twilio_signatures_match_an_independent_implementation() {
        // Expected value computed with Python's hmac/hashlib/base64 from Twilio's documented
        // recipe (URL, then sorted name+value pairs; HMAC-SHA1 keyed by the auth token).
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let token = "12345";
        let sig = sign_twilio(token, url, &params);
        assert_eq!(sig, "vNe7KK2kJwCsxc9K3OLkkKB3qqI=");
        assert!(verify_twilio(token, url, &params, &sig));
        assert!(!verify_twilio("other", url, &params, &sig));
        assert!(!verify_twilio(
            token,
            "https://example.com/other",
            &params,
            &sig
        ));
    }

    #[test]
    fn standard_webhooks_signatures_match_the_specification_example() {
        // The example of the Standard Webhooks specification (expected value also computed
        // with Python's hmac/hashlib/base64).
        let key = webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = webhook_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(webhook_secret("whsec_not base64!").is_err());
        assert!(webhook_secret("whsec_c2hvcnQ=").is_err(), "too short");
    }

    #[test]
    fn signatures_verify_and_any_change_breaks_them() {
        let secret = b"s3cret";
        let p = unsubscribe_payload("p-1", "email");
        let sig = sign(secret, &p);
        assert_eq!(sig.len(), 64);
        assert!(verify(secret, &p, &sig));
        assert!(!verify(secret, &unsubscribe_payload("p-2", "email"), &sig));
        assert!(!verify(b"other", &p, &sig));
        let mut tampered = sig.clone();
        tampered.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert!(!verify(secret, &p, &tampered));
        assert!(!verify(secret, &p, "zz"));
        assert!(!verify(secret, &p, ""));
        // Other spellings of the same bytes are not the signature.
        assert!(!verify(secret, &p, &sig.to_uppercase()));
        let plus: String = format!("+{}", &sig[1..]);
        assert!(!verify(secret, &p, &plus));
        assert!(!verify(secret, &p, &format!("{sig}00")));
        // Nothing verifies under an empty secret, not even its own signature.
        assert!(!verify(b"", &p, &sign(b"", &p)));
    }
}
