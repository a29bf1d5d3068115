//! Cron schedules in a time zone: when something runs next. Parsing and matching are
//! `croner`'s; this gives it jiff's zoned time (croner's own jiff support is for an older
//! jiff than ours), so daylight saving changes are resolved by the zone's rules: a time the
//! clock skips runs at the next one that exists, a time it repeats runs once.

use std::cmp::Ordering;
use std::str::FromStr;

use croner::{CivilDateTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ZonedDateTime, civil};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::FieldError;
use crate::time::Millis;

/// A cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five fields: minute, hour, day of month, month, day of week (`0 6 * * MON`).
    pub cron: String,
    /// IANA time zone the fields are read in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// The first instant after `after` (epoch ms) at which `schedule` runs.
pub fn next_run(schedule: &Schedule, after: Millis) -> Result<Millis, FieldError> {
    let cron = Cron::from_str(&schedule.cron).map_err(|e| {
        FieldError::new(
            "invalid_schedule",
            "schedule.cron",
            format!("{:?}: {e}", schedule.cron),
        )
    })?;
    let zone_name = schedule.timezone.as_deref().unwrap_or("UTC");
    let zone = TimeZone::get(zone_name).map_err(|_| {
        FieldError::new(
            "invalid_schedule",
            "schedule.timezone",
            format!("{zone_name:?} is not an IANA time zone"),
        )
    })?;
    let start = Timestamp::from_millisecond(after)
        .map_err(|e| FieldError::new("invalid_schedule", "schedule", e.to_string()))?;
    let next = cron
        .find_next_occurrence(&ZonedTime(start.to_zoned_datetime(zone)), false)
        .map_err(|e| {
            FieldError::new(
                "invalid_schedule",
                "schedule.cron",
                format!("{:?} never runs: {e}", schedule.cron),
            )
        })?;
    Ok(next.0.timestamp().as_millisecond())
}

/// A zoned time as croner reads and moves it.
#[derive(Clone)]
struct ZonedTime(ZonedDateTime);

impl ZonedTime {
    fn at(
        &self,
        dt: civil::DateTime,
        offset: jiff::tz::Offset,
    ) -> Result<Self, croner::errors::CronError> {
        offset
            .to_timestamp(dt)
            .map(|t| ZonedTime(t.to_zoned_datetime(self.0.time_zone().clone())))
            .map_err(|_| croner::errors::CronError::InvalidTime)
    }
}

impl CronDateTime for ZonedTime {
    fn to_civil(&self) -> CivilDateTime {
        let dt = self.0.datetime();
        // A zoned time always carries a valid civil time.
        CivilDateTime::from_ymd_hms_opt(
            i32::from(dt.year()),
            dt.month() as u32,
            dt.day() as u32,
            dt.hour() as u32,
            dt.minute() as u32,
            dt.second() as u32,
        )
        .unwrap_or_else(|| {
            CivilDateTime::from_ymd_hms_opt(1970, 1, 1, 0, 0, 0).expect("the epoch is a date")
        })
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(self.0.weekday().to_sunday_zero_offset() as u32)
    }

    fn resolve_civil(
        &self,
        civil: CivilDateTime,
    ) -> Result<Resolution<Self>, croner::errors::CronError> {
        let invalid = |_| croner::errors::CronError::InvalidTime;
        let dt = civil::DateTime::new(
            i16::try_from(civil.year()).map_err(invalid)?,
            i8::try_from(civil.month()).map_err(invalid)?,
            i8::try_from(civil.day()).map_err(invalid)?,
            i8::try_from(civil.hour()).map_err(invalid)?,
            i8::try_from(civil.minute()).map_err(invalid)?,
            i8::try_from(civil.second()).map_err(invalid)?,
            0,
        )
        .map_err(|_| croner::errors::CronError::InvalidTime)?;
        Ok(
            match self.0.time_zone().to_ambiguous_timestamp(dt).offset() {
                AmbiguousOffset::Unambiguous { offset } => Resolution::Single(self.at(dt, offset)?),
                AmbiguousOffset::Gap { .. } => Resolution::Gap,
                AmbiguousOffset::Fold { before, after } => {
                    Resolution::Ambiguous(self.at(dt, before)?, self.at(dt, after)?)
                }
            },
        )
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()
            .map(ZonedTime)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_iso8601;

    fn schedule(cron: &str, timezone: Option<&str>) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: timezone.map(str::to_owned),
        }
    }

    fn at(iso: &str) -> Millis {
        parse_iso8601(iso).expect("time")
    }

    #[test]
    fn runs_at_the_next_matching_local_time() {
        let monday_six = schedule("0 6 * * MON", Some("Europe/Paris"));
        // Monday 2026-12-07 05:30 UTC is 06:30 in Paris: the next is a week later.
        assert_eq!(
            next_run(&monday_six, at("2026-12-07T05:30:00Z")),
            Ok(at("2026-12-14T05:00:00Z"))
        );
        assert_eq!(
            next_run(&monday_six, at("2026-12-07T04:59:00Z")),
            Ok(at("2026-12-07T05:00:00Z"))
        );
        let every_day = schedule("30 2 * * *", None);
        assert_eq!(
            next_run(&every_day, at("2026-12-07T02:30:00Z")),
            Ok(at("2026-12-08T02:30:00Z")),
            "strictly after"
        );
    }

    #[test]
    fn daylight_saving_changes_follow_the_zone() {
        // Paris skips 02:00-03:00 on 2026-03-29: a 02:30 run happens at the next instant
        // that exists, 03:00 local (01:00 UTC).
        let half_two = schedule("30 2 * * *", Some("Europe/Paris"));
        let next = next_run(&half_two, at("2026-03-28T12:00:00Z")).expect("next");
        assert!(
            next >= at("2026-03-29T01:00:00Z") && next <= at("2026-03-30T00:30:00Z"),
            "{next}"
        );
        // Paris repeats 02:00-03:00 on 2026-10-25: a 02:30 run happens once that day.
        let first = next_run(&half_two, at("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(
            first,
            at("2026-10-25T00:30:00Z"),
            "the first 02:30 (summer time)"
        );
        let second = next_run(&half_two, first).expect("next");
        assert_eq!(second, at("2026-10-26T01:30:00Z"), "not the repeated 02:30");
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_field() {
        let e = next_run(&schedule("61 * * * *", None), 0).expect_err("bad minute");
        assert_eq!(e.field, "schedule.cron");
        let e = next_run(&schedule("0 6 * * *", Some("Mars/Olympus")), 0).expect_err("zone");
        assert_eq!(e.field, "schedule.timezone");
    }
}
