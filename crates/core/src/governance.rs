//! Delivery governance: whether a message decided now may go, wait, or must not go.
//! Applied to every message in one place (`engine::run`, in the transaction that records the
//! message, with the person's recent messages read in that same transaction, so two journeys
//! racing for the same person cannot both pass a cap).
//!
//! Order: consent (the engine, before a message exists) → suppression list → frequency caps
//! → quiet hours. Transactional messages skip caps and quiet hours; nothing skips consent or
//! suppression.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Channels whose addresses can be on the suppression list, with the identity namespace
/// their addresses are normalised like.
pub const SUPPRESSIBLE: &[(&str, &str)] = &[("email", "email"), ("sms", "phone")];

/// An address as the suppression list keys it (emails lowercased, phone numbers as `+` and
/// digits), or why it is not one. Unknown channels are refused.
pub fn suppression_address(channel: &str, raw: &str) -> Result<String, String> {
    let (_, namespace) = SUPPRESSIBLE
        .iter()
        .find(|(c, _)| *c == channel)
        .ok_or_else(|| format!("channel {channel:?} has no suppression list (email, sms)"))?;
    crate::Identity::parse(namespace, raw).map(|i| i.value)
}

/// Why an address is on the suppression list.
pub const HARD_BOUNCE: &str = "hard_bounce";
pub const SOFT_BOUNCES: &str = "soft_bounces";
pub const COMPLAINT: &str = "complaint";
pub const INVALID: &str = "invalid_address";
pub const CARRIER_OPT_OUT: &str = "carrier_opt_out";
pub const MANUAL: &str = "manual";
/// The recipient opted out of the channel (an unsubscribe link, an SMS STOP).
pub const UNSUBSCRIBED: &str = "unsubscribed";
pub const REASONS: &[&str] = &[
    HARD_BOUNCE,
    SOFT_BOUNCES,
    COMPLAINT,
    INVALID,
    CARRIER_OPT_OUT,
    MANUAL,
    UNSUBSCRIBED,
];

/// What an inbound SMS asks for, by the keywords carriers honour. Case, punctuation and
/// spacing do not matter (`Stop.`, `stop all`, `OPT-OUT`); an opt-out keyword also counts
/// as the first word of a longer reply (`stop texting me`), since a person who writes that
/// means it, while opting back in takes the keyword alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsKeyword {
    OptOut,
    OptIn,
    Help,
}

pub fn sms_keyword(body: &str) -> Option<SmsKeyword> {
    const OPT_OUT: [&str; 8] = [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
    ];
    const OPT_IN: [&str; 3] = ["START", "YES", "UNSTOP"];
    const HELP: [&str; 2] = ["HELP", "INFO"];
    let words: Vec<String> = body
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase)
        .collect();
    let whole = words.concat();
    let first = words.first().map(String::as_str).unwrap_or_default();
    if OPT_OUT.contains(&whole.as_str()) || OPT_OUT.contains(&first) {
        Some(SmsKeyword::OptOut)
    } else if OPT_IN.contains(&whole.as_str()) {
        Some(SmsKeyword::OptIn)
    } else if HELP.contains(&whole.as_str()) {
        Some(SmsKeyword::Help)
    } else {
        None
    }
}

/// A throttled send's slot under GCRA (sends `interval_ms` apart on average, bursts of up
/// to `burst`): `arrival` is the channel's theoretical arrival time, already moved up to
/// `now` if it was behind. The caller then moves the arrival time on by one interval.
pub fn gcra_slot(arrival: f64, now: Millis, interval_ms: f64, burst: f64) -> Millis {
    (arrival - (burst - 1.0) * interval_ms)
        .max(now as f64)
        .ceil() as Millis
}

/// The rules, from the server's `[governance]` configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub caps: Vec<Cap>,
    pub quiet_hours: Option<QuietHours>,
}

/// At most `max` marketing messages per `window_ms`, on `channel` (or on all channels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    pub channel: Option<String>,
    pub max: u32,
    pub window_ms: Millis,
    /// As configured (`7d`), for reasons people read.
    pub window: String,
}

/// No marketing messages between `start` and `end` (HH:MM) in the person's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    /// `hold` (send when they end) or `drop`.
    pub action: QuietAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietAction {
    Hold,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Send, but not before this instant.
    Hold {
        until: Millis,
        reason: String,
    },
    Suppress {
        reason: String,
    },
}

/// A message the person was already sent (or has queued), for caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub channel: String,
    pub at: Millis,
}

fn minutes(hhmm: &str) -> Option<i32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

impl Policy {
    /// Checks configured values; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        for (i, cap) in self.caps.iter().enumerate() {
            if cap.max == 0 || cap.window_ms <= 0 {
                return Err(format!(
                    "governance.caps[{i}]: max and window must be positive"
                ));
            }
        }
        if let Some(q) = &self.quiet_hours {
            for (name, v) in [("start", &q.start), ("end", &q.end)] {
                if minutes(v).is_none() {
                    return Err(format!("governance.quiet_hours.{name}: {v:?} is not HH:MM"));
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.quiet_hours.is_none()
    }

    /// The longest cap window: how far back a store must read the person's messages.
    pub fn lookback_ms(&self) -> Millis {
        self.caps.iter().map(|c| c.window_ms).max().unwrap_or(0)
    }

    /// Decides one message. `recent` is what the person was sent or has queued (any channel);
    /// `zone` is the person's time zone.
    pub fn decide(
        &self,
        channel: &str,
        transactional: bool,
        now: Millis,
        zone: &jiff::tz::TimeZone,
        recent: &[Sent],
    ) -> Decision {
        if transactional {
            return Decision::Send;
        }
        for cap in &self.caps {
            if cap.channel.as_deref().is_some_and(|c| c != channel) {
                continue;
            }
            let used = recent
                .iter()
                .filter(|s| now - s.at < cap.window_ms)
                .filter(|s| cap.channel.as_deref().is_none_or(|c| c == s.channel))
                .count();
            if used >= cap.max as usize {
                let scope = cap.channel.as_deref().unwrap_or("all channels");
                return Decision::Suppress {
                    reason: format!("frequency cap: {} per {} on {scope}", cap.max, cap.window),
                };
            }
        }
        if let Some(q) = &self.quiet_hours
            && let Some(until) = quiet_until(q, now, zone)
        {
            let reason = format!("quiet hours {}–{}", q.start, q.end);
            return match q.action {
                QuietAction::Hold => Decision::Hold { until, reason },
                QuietAction::Drop => Decision::Suppress { reason },
            };
        }
        Decision::Send
    }
}

/// If `now` falls in the quiet hours (in `zone`), when they end.
fn quiet_until(q: &QuietHours, now: Millis, zone: &jiff::tz::TimeZone) -> Option<Millis> {
    let (start, end) = (minutes(&q.start)?, minutes(&q.end)?);
    let local = jiff::Timestamp::from_millisecond(now)
        .ok()?
        .to_zoned_datetime(zone.clone());
    let at = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let quiet = if start <= end {
        (start..end).contains(&at)
    } else {
        at >= start || at < end // across midnight
    };
    if !quiet {
        return None;
    }
    // The next local `end` after now.
    let mut date = local.date();
    for _ in 0..3 {
        let candidate = date
            .at((end / 60) as i8, (end % 60) as i8, 0, 0)
            .to_zoned_datetime(zone.clone())
            .ok()?
            .timestamp()
            .as_millisecond();
        if candidate > now {
            return Some(candidate);
        }
        date = date.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_keywords_match_as_carriers_do() {
        for body in [
            "STOP",
            "Stop.",
            "stop all",
            " STOP ALL! ",
            "opt-out",
            "Unsubscribe",
            "quit",
            "Stop texting me",
            "REVOKE",
        ] {
            assert_eq!(sms_keyword(body), Some(SmsKeyword::OptOut), "{body:?}");
        }
        for body in ["start", "Yes!", "UNSTOP"] {
            assert_eq!(sms_keyword(body), Some(SmsKeyword::OptIn), "{body:?}");
        }
        assert_eq!(sms_keyword("help?"), Some(SmsKeyword::Help));
        for body in [
            "",
            "yes please send more",
            "see you at the end",
            "Stopover in Paris?",
        ] {
            assert_eq!(sms_keyword(body), None, "{body:?}");
        }
    }

    fn t(iso: &str) -> Millis {
        crate::time::parse_iso8601(iso).expect("time")
    }

    fn policy() -> Policy {
        Policy {
            caps: vec![
                Cap {
                    channel: Some("email".into()),
                    max: 2,
                    window_ms: 86_400_000,
                    window: "1d".into(),
                },
                Cap {
                    channel: None,
                    max: 3,
                    window_ms: 7 * 86_400_000,
                    window: "7d".into(),
                },
            ],
            quiet_hours: Some(QuietHours {
                start: "21:00".into(),
                end: "08:00".into(),
                action: QuietAction::Hold,
            }),
        }
    }

    #[test]
    fn caps_count_recent_messages_per_channel_and_across_channels() {
        let p = policy();
        let utc = jiff::tz::TimeZone::UTC;
        let now = t("2026-11-29T12:00:00Z");
        let sent = |channel: &str, hours_ago: i64| Sent {
            channel: channel.into(),
            at: now - hours_ago * 3_600_000,
        };
        assert_eq!(p.decide("email", false, now, &utc, &[]), Decision::Send);
        let two_emails = [sent("email", 1), sent("email", 5)];
        assert!(matches!(
            p.decide("email", false, now, &utc, &two_emails),
            Decision::Suppress { reason } if reason.contains("2 per 1d on email")
        ));
        assert_eq!(
            p.decide("sms", false, now, &utc, &two_emails),
            Decision::Send,
            "the email cap does not apply to sms"
        );
        let old = [sent("email", 30), sent("email", 40)];
        assert_eq!(p.decide("email", false, now, &utc, &old), Decision::Send);
        let three = [sent("sms", 30), sent("email", 40), sent("sms", 50)];
        assert!(matches!(
            p.decide("sms", false, now, &utc, &three),
            Decision::Suppress { reason } if reason.contains("all channels")
        ));
        assert_eq!(
            p.decide("email", true, now, &utc, &two_emails),
            Decision::Send,
            "transactional skips caps"
        );
    }

    #[test]
    fn quiet_hours_hold_until_they_end_in_the_persons_zone() {
        let p = policy();
        let tokyo = jiff::tz::TimeZone::get("Asia/Tokyo").expect("zone");
        // 13:00 UTC is 22:00 in Tokyo: quiet until 08:00 Tokyo = 23:00 UTC.
        let now = t("2026-11-29T13:00:00Z");
        assert_eq!(
            p.decide("email", false, now, &tokyo, &[]),
            Decision::Hold {
                until: t("2026-11-29T23:00:00Z"),
                reason: "quiet hours 21:00–08:00".into()
            }
        );
        assert_eq!(
            p.decide("email", false, now, &jiff::tz::TimeZone::UTC, &[]),
            Decision::Send,
            "13:00 in UTC is not quiet"
        );
        assert_eq!(p.decide("email", true, now, &tokyo, &[]), Decision::Send);
        let mut drop = p.clone();
        drop.quiet_hours.as_mut().expect("quiet").action = QuietAction::Drop;
        assert!(matches!(
            drop.decide("email", false, now, &tokyo, &[]),
            Decision::Suppress { .. }
        ));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut p = policy();
        p.quiet_hours.as_mut().expect("quiet").end = "8am".into();
        assert_eq!(
            p.check().expect_err("bad"),
            "governance.quiet_hours.end: \"8am\" is not HH:MM"
        );
        let mut p = policy();
        p.caps[1].max = 0;
        assert!(
            p.check()
                .expect_err("bad")
                .starts_with("governance.caps[1]")
        );
    }
}
