//! Calendar readings (`calendar.month()`, `calendar.day(profile.traits.birthday)`): a field
//! of now, or of a date the profile holds, in the person's time zone (their `timezone`
//! trait, else UTC). A reading of now changes only at the next boundary of its field there
//! (midnight, the first of the month, the top of the hour), which is when the rule is
//! decided again: "birthday this month" flips at the person's own midnight, not at a sweep.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime as Zoned};
use serde_json::Value;
use waymark_core::ProfileState;
use waymark_core::audience::{CalendarCall, CalendarField};
use waymark_core::time::Millis;

use super::CallValue;

/// The reading's value (an int, or null for a date that is missing or unreadable, and for
/// the hour of a date without a time), and when time alone next changes it.
pub(super) fn read(
    call: &CalendarCall,
    profile: &ProfileState,
    now: Millis,
    zone: &TimeZone,
) -> (CallValue, Option<Millis>) {
    let (value, change) = match &call.of {
        None => match Timestamp::from_millisecond(now) {
            Ok(at) => {
                let at = at.to_zoned_datetime(zone.clone());
                (
                    Value::from(field_of(call.field, &at.date(), Some(&at))),
                    next_boundary(call.field, &at),
                )
            }
            Err(_) => (Value::Null, None),
        },
        Some(path) => {
            let value =
                date_at(profile, path, zone).and_then(|(date, time)| match (call.field, &time) {
                    (CalendarField::Hour, None) => None,
                    _ => Some(field_of(call.field, &date, time.as_ref())),
                });
            (value.map_or(Value::Null, Value::from), None)
        }
    };
    (
        CallValue {
            call: call.text.clone(),
            value,
            matched: 0,
            oldest: None,
            newest: None,
        },
        change,
    )
}

fn field_of(field: CalendarField, date: &Date, time: Option<&Zoned>) -> i64 {
    match field {
        CalendarField::Month => i64::from(date.month()),
        CalendarField::Day => i64::from(date.day()),
        CalendarField::Weekday => i64::from(date.weekday().to_monday_one_offset()),
        CalendarField::Hour => time.map_or(0, |t| i64::from(t.hour())),
    }
}

/// The first instant, after `at`, at which the field reads differently in `at`'s zone.
fn next_boundary(field: CalendarField, at: &Zoned) -> Option<Millis> {
    let zone = at.time_zone().clone();
    let next = match field {
        CalendarField::Month => at
            .date()
            .first_of_month()
            .checked_add(1.month())
            .ok()?
            .to_zoned_datetime(zone)
            .ok()?,
        CalendarField::Day | CalendarField::Weekday => {
            at.date().tomorrow().ok()?.to_zoned_datetime(zone).ok()?
        }
        CalendarField::Hour => at
            .with()
            .minute(0)
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.hour())
            .ok()?,
    };
    Some(next.timestamp().as_millisecond())
}

/// The date (and, for a timestamp, the time in `zone`) of the value at `path` under the
/// profile: `YYYY-MM-DD`, an RFC 3339 timestamp, or milliseconds since the epoch.
fn date_at(
    profile: &ProfileState,
    path: &[String],
    zone: &TimeZone,
) -> Option<(Date, Option<Zoned>)> {
    let value = match path {
        [first, key, rest @ ..] if first == "traits" => {
            let mut at = profile.traits.get(key)?;
            for field in rest {
                at = at.get(field.as_str())?;
            }
            at.clone()
        }
        [only] if only == "first_seen" => Value::from(profile.first_seen),
        [only] if only == "last_seen" => Value::from(profile.last_seen),
        _ => return None,
    };
    let at = match &value {
        Value::String(text) => {
            if let Ok(date) = text.parse::<Date>() {
                return Some((date, None));
            }
            text.parse::<Timestamp>().ok()?
        }
        Value::Number(n) => Timestamp::from_millisecond(n.as_i64()?).ok()?,
        _ => return None,
    };
    let at = at.to_zoned_datetime(zone.clone());
    Some((at.date(), Some(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(field: CalendarField, of: Option<&str>) -> CalendarCall {
        CalendarCall {
            field,
            of: of.map(|p| p.split('.').map(str::to_owned).collect()),
            text: String::new(),
        }
    }

    fn ms(text: &str) -> Millis {
        text.parse::<Timestamp>().expect("time").as_millisecond()
    }

    #[test]
    fn now_is_read_in_the_persons_zone_and_changes_at_its_boundaries() {
        let profile = ProfileState::new("p".into(), 0, 0);
        let tokyo = TimeZone::get("Asia/Tokyo").expect("zone");
        // 31 Jan 20:00 UTC is already 1 February in Tokyo.
        let now = ms("2027-01-31T20:00:00Z");
        let (month, change) = read(&call(CalendarField::Month, None), &profile, now, &tokyo);
        assert_eq!(month.value, Value::from(2));
        assert_eq!(
            change,
            Some(ms("2027-02-28T15:00:00Z")),
            "1 March, Tokyo midnight"
        );
        let (month, change) = read(
            &call(CalendarField::Month, None),
            &profile,
            now,
            &TimeZone::UTC,
        );
        assert_eq!(month.value, Value::from(1));
        assert_eq!(change, Some(ms("2027-02-01T00:00:00Z")));
        let (day, change) = read(&call(CalendarField::Weekday, None), &profile, now, &tokyo);
        assert_eq!(day.value, Value::from(1), "Monday 1 February 2027 in Tokyo");
        assert_eq!(change, Some(ms("2027-02-01T15:00:00Z")));
        // A zone half an hour off: the hour turns at :30 UTC.
        let kolkata = TimeZone::get("Asia/Kolkata").expect("zone");
        let (hour, change) = read(&call(CalendarField::Hour, None), &profile, now, &kolkata);
        assert_eq!(hour.value, Value::from(1));
        assert_eq!(change, Some(ms("2027-01-31T20:30:00Z")));
        // The spring-forward day is 23 hours long, and the next one starts at its midnight.
        let berlin = TimeZone::get("Europe/Berlin").expect("zone");
        let (_, change) = read(
            &call(CalendarField::Day, None),
            &profile,
            ms("2027-03-28T12:00:00Z"),
            &berlin,
        );
        assert_eq!(change, Some(ms("2027-03-28T22:00:00Z")));
    }

    #[test]
    fn dates_the_profile_holds() {
        let mut profile = ProfileState::new("p".into(), 0, 0);
        profile
            .traits
            .insert("birthday".into(), "1990-05-17".into());
        profile
            .traits
            .insert("signed_up".into(), "2026-12-31T23:30:00Z".into());
        profile
            .traits
            .insert("nested".into(), serde_json::json!({"at": 0}));
        profile.traits.insert("junk".into(), "soon".into());
        let tokyo = TimeZone::get("Asia/Tokyo").expect("zone");
        let read_of = |field, path| read(&call(field, Some(path)), &profile, 0, &tokyo).0.value;
        assert_eq!(
            read_of(CalendarField::Month, "traits.birthday"),
            Value::from(5)
        );
        assert_eq!(
            read_of(CalendarField::Day, "traits.birthday"),
            Value::from(17)
        );
        assert_eq!(read_of(CalendarField::Hour, "traits.birthday"), Value::Null);
        // A timestamp is read in the person's zone: already 1 January in Tokyo.
        assert_eq!(
            read_of(CalendarField::Month, "traits.signed_up"),
            Value::from(1)
        );
        assert_eq!(
            read_of(CalendarField::Hour, "traits.signed_up"),
            Value::from(8)
        );
        assert_eq!(
            read_of(CalendarField::Hour, "traits.nested.at"),
            Value::from(9)
        );
        assert_eq!(read_of(CalendarField::Month, "traits.junk"), Value::Null);
        assert_eq!(read_of(CalendarField::Month, "traits.missing"), Value::Null);
        let (_, change) = read(
            &call(CalendarField::Month, Some("traits.birthday")),
            &profile,
            0,
            &tokyo,
        );
        assert_eq!(change, None, "a stored date does not change with time");
    }
}
