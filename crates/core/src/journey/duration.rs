//! Durations as people write them: `30s`, `15m`, `2h`, `1d`, `1w`, combinations such as
//! `1d 12h`, or ISO 8601 (`P1DT12H`). Parsed with jiff's span parser; a day is 24 hours
//! here, because a wait of "1d" means 24 hours of the person's time, whatever the zone.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DurationText(pub String);

/// Milliseconds in a duration, or a message saying why it is not one.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let span: jiff::Span = text.trim().parse().map_err(|e| {
        format!("{text:?} is not a duration such as 30s, 15m, 2h, 1d or P1DT12H ({e})")
    })?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "{text:?}: years and months have no fixed length; use days or weeks"
        ));
    }
    let ms = i64::from(span.get_weeks()) * 7 * 86_400_000
        + i64::from(span.get_days()) * 86_400_000
        + i64::from(span.get_hours()) * 3_600_000
        + span.get_minutes() * 60_000
        + span.get_seconds() * 1000
        + span.get_milliseconds();
    if ms < 0 {
        return Err(format!("{text:?} is negative"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_and_iso_durations() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1d 12h"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration_ms("P1DT12H"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration_ms("2w"), Ok(14 * 86_400_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("1 month").is_err());
        assert!(parse_duration_ms("-5m").is_err());
    }
}
