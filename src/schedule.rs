//! Cron schedules in a job's time zone.
//!
//! croner follows standard cron (0 and 7 are Sunday, `1-5` is Monday to
//! Friday, day-of-month OR day-of-week) and handles DST gaps and overlaps.
//! Fire times leave this module as UTC instants.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron expression bound to the time zone it is read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as the operator wrote it, for display.
    pub expr: String,
    pub tz: Tz,
    cron: Cron,
}

const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

impl Schedule {
    /// Parses a 5-field (`min hour dom mon dow`) or 6-field (seconds first)
    /// expression. The error names the offending field.
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 && fields.len() != 6 {
            return Err(format!(
                "invalid cron schedule '{expr}': found {} fields, expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)",
                fields.len()
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        match parser.parse(expr) {
            Ok(cron) => Ok(Schedule {
                expr: expr.to_string(),
                tz,
                cron,
            }),
            Err(whole) => {
                // Find the field at fault by parsing it alone among wildcards.
                let offset = 6 - fields.len();
                for (i, field) in fields.iter().enumerate() {
                    let mut probe = ["*"; 6];
                    probe[0] = "0";
                    probe[i + offset] = field;
                    if parser.parse(&probe.join(" ")).is_err() {
                        return Err(format!(
                            "invalid cron schedule '{expr}': bad {} field '{field}'",
                            FIELD_NAMES[i + offset]
                        ));
                    }
                }
                Err(format!("invalid cron schedule '{expr}': {whole}"))
            }
        }
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Weekday};

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn runs_on_local_day(s: &Schedule, day: NaiveDate) -> Vec<DateTime<Tz>> {
        let start =
            s.tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
                .earliest()
                .unwrap()
                .with_timezone(&Utc);
        s.upcoming(start - chrono::Duration::seconds(1), 10)
            .into_iter()
            .map(|t| t.with_timezone(&s.tz))
            .filter(|t| t.date_naive() == day)
            .collect()
    }

    #[test]
    fn daily_0230_runs_once_on_new_york_spring_forward_day() {
        let s = Schedule::parse("30 2 * * *", chrono_tz::America::New_York).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(); // 02:00 -> 03:00
        let runs = runs_on_local_day(&s, day);
        assert_eq!(runs.len(), 1, "runs on spring-forward day: {runs:?}");
        assert_eq!(
            runs[0].hour(),
            3,
            "02:30 does not exist, so it runs in the 03:00 hour"
        );
    }

    #[test]
    fn daily_0230_runs_once_on_new_york_fall_back_day() {
        let s = Schedule::parse("30 2 * * *", chrono_tz::America::New_York).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(); // 02:00 -> 01:00
        let runs = runs_on_local_day(&s, day);
        assert_eq!(runs.len(), 1, "runs on fall-back day: {runs:?}");
        assert_eq!((runs[0].hour(), runs[0].minute()), (2, 30));
    }

    #[test]
    fn daily_0130_runs_once_during_the_repeated_fall_back_hour() {
        let s = Schedule::parse("30 1 * * *", chrono_tz::America::New_York).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let runs = runs_on_local_day(&s, day);
        assert_eq!(
            runs.len(),
            1,
            "01:30 happens twice on the wall clock: {runs:?}"
        );
    }

    #[test]
    fn weekday_range_one_to_five_is_monday_to_friday() {
        let s = Schedule::parse("0 6 * * 1-5", chrono_tz::UTC).unwrap();
        // 2026-11-21 is a Saturday.
        let days: Vec<Weekday> = s
            .upcoming(utc(2026, 11, 21, 0, 0), 7)
            .iter()
            .map(|t| t.weekday())
            .collect();
        use Weekday::*;
        assert_eq!(days, vec![Mon, Tue, Wed, Thu, Fri, Mon, Tue]);
    }

    #[test]
    fn both_zero_and_seven_mean_sunday() {
        for dow in ["0", "7"] {
            let s = Schedule::parse(&format!("0 6 * * {dow}"), chrono_tz::UTC).unwrap();
            let next = s.next_after(utc(2026, 11, 24, 0, 0)).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "dow {dow}");
        }
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored_like_standard_cron() {
        // The 1st of the month OR any Monday.
        let s = Schedule::parse("0 0 1 * 1", chrono_tz::UTC).unwrap();
        let next = s.upcoming(utc(2026, 11, 24, 0, 0), 3);
        let dates: Vec<(u32, u32)> = next.iter().map(|t| (t.month(), t.day())).collect();
        assert_eq!(dates, vec![(11, 30), (12, 1), (12, 7)]);
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *", chrono_tz::UTC).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 1).unwrap();
        let next = s.upcoming(t0, 3);
        let secs: Vec<u32> = next.iter().map(|t| t.second()).collect();
        assert_eq!(secs, vec![2, 4, 6]);
        let s5 = Schedule::parse("15 * * * *", chrono_tz::UTC).unwrap();
        let n = s5.next_after(t0).unwrap();
        assert_eq!((n.minute(), n.second()), (15, 0), "5 fields: minute first");
    }

    #[test]
    fn fire_times_follow_the_jobs_time_zone() {
        let s = Schedule::parse("0 9 * * *", chrono_tz::America::New_York).unwrap();
        let next = s.next_after(utc(2026, 11, 24, 0, 0)).unwrap();
        assert_eq!(next, utc(2026, 11, 24, 14, 0), "09:00 EST is 14:00 UTC");
    }

    #[test]
    fn a_bad_field_is_named() {
        let e = Schedule::parse("0 25 * * *", chrono_tz::UTC).unwrap_err();
        assert!(e.contains("bad hour field '25'"), "{e}");
        let e = Schedule::parse("0 0 * * 1-9", chrono_tz::UTC).unwrap_err();
        assert!(e.contains("bad day-of-week field '1-9'"), "{e}");
        let e = Schedule::parse("61 * * * * *", chrono_tz::UTC).unwrap_err();
        assert!(e.contains("bad second field '61'"), "{e}");
        let e = Schedule::parse("* * *", chrono_tz::UTC).unwrap_err();
        assert!(e.contains("found 3 fields"), "{e}");
        let e = Schedule::parse("0 0 0 1 1 * 2030", chrono_tz::UTC).unwrap_err();
        assert!(e.contains("found 7 fields"), "{e}");
    }
}
