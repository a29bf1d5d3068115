//! Signed links (unsubscribe): the parameters a link carries are signed with HMAC-SHA256
//! under the server's link secret, so a link cannot be forged or altered, and it carries no
//! URL of its own (it can never redirect anywhere).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signature of `payload`, as lowercase hex.
pub fn sign(secret: &[u8], payload: &str) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return String::new(); // HMAC takes keys of any length; unreachable
    };
    mac.update(payload.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `signature` is `payload`'s, compared in constant time.
pub fn verify(secret: &[u8], payload: &str, signature: &str) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(payload.as_bytes());
    let Some(bytes) = (0..signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(signature.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac.verify_slice(&bytes).is_ok()
}

/// What an unsubscribe link says: the person with this identity (`email:ada@example.com`)
/// leaves this channel's marketing messages.
pub fn unsubscribe_payload(identity: &str, channel: &str) -> String {
    format!("unsubscribe:{channel}:{identity}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
