//! What providers report about a message after they took it (delivery receipts, bounces
//! that arrive later, complaints from feedback loops), and how a report finds its message:
//! SMS status callbacks carry the message's key in their (signed) URL; an email report
//! names the Message-ID header, which carries the outbox row and a hash of its key.

use crate::governance::{CARRIER_OPT_OUT, COMPLAINT, HARD_BOUNCE, INVALID};

pub const DELIVERED: &str = "delivered";
pub const UNDELIVERED: &str = "undelivered";
pub const BOUNCED: &str = "bounced";
pub const COMPLAINED: &str = "complained";
/// The statuses a report may give.
pub const REPORTS: &[&str] = &[DELIVERED, UNDELIVERED, BOUNCED, COMPLAINED];

/// The suppression list reason a report puts the address on the list for, if any.
pub fn suppression_for(report: &str) -> Option<&'static str> {
    match report {
        BOUNCED => Some(HARD_BOUNCE),
        COMPLAINED => Some(COMPLAINT),
        _ => None,
    }
}

/// Twilio error codes that say the number cannot get messages, with the list reason for
/// each: 21610 the person replied STOP to the carrier; 21211/21614 not a valid mobile
/// number (refused at send); 30005 unknown or inactive number, 30006 a landline or a
/// carrier that cannot take SMS (reported by status callbacks).
pub fn twilio_suppression(code: u64) -> Option<&'static str> {
    match code {
        21610 => Some(CARRIER_OPT_OUT),
        21211 | 21614 | 30005 | 30006 => Some(INVALID),
        _ => None,
    }
}

/// The report a Twilio `MessageStatus` makes, if it is final (`queued`, `sending`, `sent`
/// and the like are steps on the way and are not recorded).
pub fn twilio_report(message_status: &str) -> Option<&'static str> {
    match message_status {
        "delivered" | "read" => Some(DELIVERED),
        "undelivered" | "failed" => Some(UNDELIVERED),
        _ => None,
    }
}

fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// The Message-ID of the email sent for the outbox row `seq` with idempotency key `key`:
/// the same on every attempt, so a repeat after a crash is the same message to receivers.
pub fn email_message_id(key: &str, seq: i64, domain: &str) -> String {
    format!("<{:016x}.{seq}@{domain}>", key_hash(key))
}

/// The outbox row a Message-ID (with or without its angle brackets) names, and the hash
/// its key must have, or `None` if it is not one of ours.
pub fn parse_email_message_id(id: &str) -> Option<(i64, u64)> {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    let (local, _domain) = id.split_once('@')?;
    let (hash, seq) = local.split_once('.')?;
    if hash.len() != 16 {
        return None;
    }
    Some((seq.parse().ok()?, u64::from_str_radix(hash, 16).ok()?))
}

/// Whether `key` is the key of the row a parsed Message-ID names (a made-up id that
/// guesses a row number does not match).
pub fn message_id_matches(hash: u64, key: &str) -> bool {
    key_hash(key) == hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_their_row_and_key() {
        let key = "welcome:p-1:0:send:2";
        let id = email_message_id(key, 42, "example.com");
        let (seq, hash) = parse_email_message_id(&id).expect("ours");
        assert_eq!(seq, 42);
        assert!(message_id_matches(hash, key));
        assert!(!message_id_matches(hash, "welcome:p-2:0:send:2"));
        // Without brackets, as some report formats give it.
        assert_eq!(
            parse_email_message_id(id.trim_matches(|c| c == '<' || c == '>')),
            Some((42, hash))
        );
        for foreign in [
            "<CAF=abc@mail.gmail.com>",
            "<x.1@a>",
            "",
            "<0123456789abcdef.x@a>",
        ] {
            assert_eq!(parse_email_message_id(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn twilio_statuses_and_codes() {
        assert_eq!(twilio_report("delivered"), Some(DELIVERED));
        assert_eq!(twilio_report("failed"), Some(UNDELIVERED));
        assert_eq!(twilio_report("sent"), None);
        assert_eq!(twilio_suppression(30005), Some(INVALID));
        assert_eq!(twilio_suppression(21610), Some(CARRIER_OPT_OUT));
        // Temporary: unreachable handset, carrier trouble.
        assert_eq!(twilio_suppression(30003), None);
        assert_eq!(twilio_suppression(30008), None);
    }
}
