//! Time as Waymark stores it: milliseconds since the Unix epoch, UTC.

use jiff::Timestamp;

pub type Millis = i64;

pub fn parse_iso8601(text: &str) -> Option<Millis> {
    text.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

pub fn format_iso8601(ms: Millis) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_millisecond_precision() {
        let ms = parse_iso8601("2026-11-29T10:15:30.123Z").expect("valid");
        assert_eq!(format_iso8601(ms), "2026-11-29T10:15:30.123Z");
        assert_eq!(parse_iso8601("2026-11-29T12:15:30.123+02:00"), Some(ms));
        assert_eq!(parse_iso8601("yesterday"), None);
    }
}
