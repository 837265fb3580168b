//! Business hours: when people are at work, in the team's own time zone, and when they open
//! next. Outside them the bot keeps serving and tells customers when a person will reply.

use std::collections::BTreeSet;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Deserialize;

use crate::model::availability::Availability;

/// `[hours]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// IANA time zone, e.g. `Europe/Berlin`, `Asia/Shanghai`.
    pub time_zone: String,
    /// Opening ranges per weekday, `"09:00-12:30"`; `"24:00"` may end a range. A day without
    /// ranges is closed.
    #[serde(default)]
    pub mon: Vec<String>,
    #[serde(default)]
    pub tue: Vec<String>,
    #[serde(default)]
    pub wed: Vec<String>,
    #[serde(default)]
    pub thu: Vec<String>,
    #[serde(default)]
    pub fri: Vec<String>,
    #[serde(default)]
    pub sat: Vec<String>,
    #[serde(default)]
    pub sun: Vec<String>,
    /// Whole days closed (holidays), `"2026-12-25"`.
    #[serde(default)]
    pub closed: Vec<String>,
}

/// How far ahead an opening is looked for.
const HORIZON_DAYS: i32 = 400;

/// Parsed business hours.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    tz: TimeZone,
    tz_name: String,
    /// Monday first; each day's ranges sorted, `end` exclusive (`None` = midnight).
    week: [Vec<(Time, Option<Time>)>; 7],
    closed: BTreeSet<Date>,
}

fn range(s: &str) -> Result<(Time, Option<Time>), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a range like 09:00-17:00"))?;
    let time = |t: &str| -> Result<Time, String> {
        Time::strptime("%H:%M", t.trim()).map_err(|_| format!("`{t}` is not a time like 09:00"))
    };
    let start = time(a)?;
    let end = if b.trim() == "24:00" {
        None
    } else {
        Some(time(b)?)
    };
    if end.is_some_and(|e| e <= start) {
        return Err(format!(
            "`{s}`: the range must end after it starts (split ranges over midnight into two days)"
        ));
    }
    Ok((start, end))
}

impl BusinessHours {
    pub fn from_config(c: &HoursConfig) -> Result<BusinessHours, String> {
        let tz = TimeZone::get(&c.time_zone)
            .map_err(|_| format!("time_zone `{}` is not an IANA time zone", c.time_zone))?;
        let days = [&c.mon, &c.tue, &c.wed, &c.thu, &c.fri, &c.sat, &c.sun];
        let mut week: [Vec<(Time, Option<Time>)>; 7] = Default::default();
        for (slot, ranges) in week.iter_mut().zip(days) {
            *slot = ranges.iter().map(|r| range(r)).collect::<Result<_, _>>()?;
            slot.sort();
        }
        let closed = c
            .closed
            .iter()
            .map(|d| {
                d.parse::<Date>()
                    .map_err(|_| format!("closed day `{d}` is not a date like 2026-12-25"))
            })
            .collect::<Result<_, _>>()?;
        if week.iter().all(Vec::is_empty) {
            return Err("no opening hours on any day".into());
        }
        Ok(BusinessHours {
            tz,
            tz_name: c.time_zone.clone(),
            week,
            closed,
        })
    }

    fn day(&self, date: Date) -> &[(Time, Option<Time>)] {
        if self.closed.contains(&date) {
            return &[];
        }
        &self.week[date.weekday().to_monday_zero_offset() as usize]
    }

    /// Whether the team is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let z = at.to_zoned(self.tz.clone());
        let t = z.time();
        self.day(z.date())
            .iter()
            .any(|(start, end)| t >= *start && end.is_none_or(|e| t < e))
    }

    /// The next opening strictly after `at` when closed at `at`; `None` when open now or
    /// when no opening comes within about a year.
    pub fn next_opening(&self, at: Timestamp) -> Option<Zoned> {
        if self.is_open(at) {
            return None;
        }
        let today = at.to_zoned(self.tz.clone()).date();
        for offset in 0..HORIZON_DAYS {
            let date = today.checked_add(jiff::Span::new().days(offset)).ok()?;
            for (start, _) in self.day(date) {
                // A start inside a DST gap resolves to the first valid instant after it.
                let opening = date.to_datetime(*start).to_zoned(self.tz.clone()).ok()?;
                if opening.timestamp() > at {
                    return Some(opening);
                }
            }
        }
        None
    }

    /// The instant when `ms` of open time have passed since `from` (closed time does not
    /// count); `None` beyond the horizon.
    pub fn after_open_time(&self, from: Timestamp, ms: i64) -> Option<Timestamp> {
        let mut left = ms.max(0);
        let first = from.to_zoned(self.tz.clone()).date();
        for offset in 0..HORIZON_DAYS {
            let date = first.checked_add(jiff::Span::new().days(offset)).ok()?;
            for (start, end) in self.day(date) {
                let at = |t: Time| date.to_datetime(t).to_zoned(self.tz.clone()).ok();
                let open = at(*start)?.timestamp().max(from);
                let close = match end {
                    Some(e) => at(*e)?.timestamp(),
                    None => date
                        .tomorrow()
                        .ok()?
                        .to_datetime(Time::midnight())
                        .to_zoned(self.tz.clone())
                        .ok()?
                        .timestamp(),
                };
                if close <= open {
                    continue;
                }
                let span = close.as_millisecond() - open.as_millisecond();
                if left <= span {
                    return Timestamp::from_millisecond(open.as_millisecond() + left).ok();
                }
                left -= span;
            }
        }
        None
    }

    /// An opening as customers read it in any language: `2026-11-30 09:00 (Europe/Berlin)`.
    pub fn describe(&self, z: &Zoned) -> String {
        format!("{} ({})", z.strftime("%Y-%m-%d %H:%M"), self.tz_name)
    }
}

impl Availability for BusinessHours {
    fn after_working(&self, from_ms: i64, ms: i64) -> i64 {
        Timestamp::from_millisecond(from_ms)
            .ok()
            .and_then(|from| self.after_open_time(from, ms))
            .map_or(i64::MAX, |t| t.as_millisecond())
    }

    fn next_shift(&self, now_ms: i64) -> Option<String> {
        let at = Timestamp::from_millisecond(now_ms).ok()?;
        if self.is_open(at) {
            return None;
        }
        Some(match self.next_opening(at) {
            Some(z) => self.describe(&z),
            None => "the team is back".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(tz: &str, closed: &[&str]) -> BusinessHours {
        let weekday = vec!["09:00-12:00".to_string(), "13:00-17:30".to_string()];
        BusinessHours::from_config(&HoursConfig {
            time_zone: tz.into(),
            mon: weekday.clone(),
            tue: weekday.clone(),
            wed: weekday.clone(),
            thu: weekday.clone(),
            fri: vec!["09:00-15:00".into()],
            sat: vec![],
            sun: vec![],
            closed: closed.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn at(s: &str, tz: &str) -> Timestamp {
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
    }

    fn next(h: &BusinessHours, s: &str, tz: &str) -> Option<String> {
        h.next_opening(at(s, tz)).map(|z| h.describe(&z))
    }

    #[test]
    fn open_closed_and_lunch() {
        let b = "Europe/Berlin";
        let h = hours(b, &[]);
        assert!(h.is_open(at("2026-11-30T09:00", b)), "opens on the minute");
        assert!(!h.is_open(at("2026-11-30T12:00", b)), "lunch");
        assert_eq!(
            next(&h, "2026-11-30T12:10", b).as_deref(),
            Some("2026-11-30 13:00 (Europe/Berlin)")
        );
        assert!(
            !h.is_open(at("2026-11-30T17:30", b)),
            "closes on the minute"
        );
        assert_eq!(
            next(&h, "2026-11-30T08:59", b).as_deref(),
            Some("2026-11-30 09:00 (Europe/Berlin)")
        );
        assert_eq!(next(&h, "2026-11-30T10:00", b), None, "open now");
    }

    #[test]
    fn across_a_weekend_and_holidays() {
        let b = "Europe/Berlin";
        // Friday 24 Dec 2027 closes at 15:00; 25-26 are a weekend, 27 a holiday.
        let h = hours(b, &["2027-12-27", "2027-12-28"]);
        assert_eq!(
            next(&h, "2027-12-24T15:00", b).as_deref(),
            Some("2027-12-29 09:00 (Europe/Berlin)")
        );
        // A plain weekend.
        assert_eq!(
            next(&h, "2026-11-27T18:00", b).as_deref(),
            Some("2026-11-30 09:00 (Europe/Berlin)")
        );
    }

    #[test]
    fn dst_changes_in_berlin() {
        let b = "Europe/Berlin";
        // Clocks go forward on Sunday 29 March 2026 (02:00 -> 03:00): Monday 09:00 is CEST,
        // 07:00 UTC, one hour earlier in UTC than the Friday before.
        let h = hours(b, &[]);
        let monday = h.next_opening(at("2026-03-27T16:00", b)).unwrap();
        assert_eq!(monday.timestamp().to_string(), "2026-03-30T07:00:00Z");
        let friday = h.next_opening(at("2026-03-26T18:00", b)).unwrap();
        assert_eq!(friday.timestamp().to_string(), "2026-03-27T08:00:00Z");
        // An opening inside the gap (02:30 does not exist that night) moves to 03:30.
        let mut c = HoursConfig {
            time_zone: b.into(),
            mon: vec![],
            tue: vec![],
            wed: vec![],
            thu: vec![],
            fri: vec![],
            sat: vec![],
            sun: vec!["02:30-04:00".into()],
            closed: vec![],
        };
        let gap = BusinessHours::from_config(&c).unwrap();
        let z = gap.next_opening(at("2026-03-28T12:00", b)).unwrap();
        assert_eq!(z.strftime("%H:%M %Z").to_string(), "03:30 CEST");
        c.sun = vec!["22:00-24:00".into()];
        let late = BusinessHours::from_config(&c).unwrap();
        assert!(late.is_open(at("2026-03-29T23:59", b)));
    }

    #[test]
    fn shanghai_and_the_message_for_customers() {
        let s = "Asia/Shanghai";
        let h = hours(s, &["2027-02-08"]);
        // Friday evening in Shanghai is Friday noon in Berlin: closed in Shanghai.
        let friday_evening = at("2027-02-05T19:00", s);
        assert_eq!(
            h.next_shift(friday_evening.as_millisecond()).as_deref(),
            Some("2027-02-09 09:00 (Asia/Shanghai)"),
            "weekend, then the Monday holiday"
        );
        assert_eq!(
            h.next_shift(at("2027-02-09T10:00", s).as_millisecond()),
            None
        );
    }

    #[test]
    fn sla_time_counts_business_hours_only() {
        let b = "Europe/Berlin";
        let h = hours(b, &["2026-12-25"]);
        let after = |from: &str, minutes: i64| {
            h.after_open_time(at(from, b), minutes * 60_000)
                .unwrap()
                .to_zoned(TimeZone::get(b).unwrap())
                .strftime("%a %Y-%m-%d %H:%M")
                .to_string()
        };
        // Inside a range; across lunch; from closed time; across a weekend.
        assert_eq!(after("2026-11-30T09:00", 60), "Mon 2026-11-30 10:00");
        assert_eq!(after("2026-11-30T11:30", 60), "Mon 2026-11-30 13:30");
        assert_eq!(after("2026-11-30T20:00", 30), "Tue 2026-12-01 09:30");
        assert_eq!(after("2026-12-04T14:30", 60), "Mon 2026-12-07 09:30");
        // A holiday (Friday 25 December) is skipped.
        assert_eq!(after("2026-12-24T17:00", 60), "Mon 2026-12-28 09:30");
        // Across the DST change: Friday 14:00 + 2 h of work = Monday 10:00 CEST, 08:00 UTC.
        let monday = h
            .after_open_time(at("2026-03-27T14:00", b), 120 * 60_000)
            .unwrap();
        assert_eq!(monday.to_string(), "2026-03-30T08:00:00Z");
        // Shanghai (no DST), through the engine's interface.
        let s = hours("Asia/Shanghai", &[]);
        let from = at("2027-02-05T14:30", "Asia/Shanghai").as_millisecond();
        let due = s.after_working(from, 60 * 60_000);
        assert_eq!(
            due,
            at("2027-02-08T09:30", "Asia/Shanghai").as_millisecond()
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let mut c = HoursConfig {
            time_zone: "Mars/Olympus".into(),
            mon: vec!["09:00-17:00".into()],
            tue: vec![],
            wed: vec![],
            thu: vec![],
            fri: vec![],
            sat: vec![],
            sun: vec![],
            closed: vec![],
        };
        assert!(
            BusinessHours::from_config(&c)
                .unwrap_err()
                .contains("Mars/Olympus")
        );
        c.time_zone = "UTC".into();
        c.mon = vec!["17:00-09:00".into()];
        assert!(
            BusinessHours::from_config(&c)
                .unwrap_err()
                .contains("end after")
        );
        c.mon = vec!["9am-5pm".into()];
        assert!(
            BusinessHours::from_config(&c)
                .unwrap_err()
                .contains("not a time")
        );
        c.mon = vec!["09:00-17:00".into()];
        c.closed = vec!["Christmas".into()];
        assert!(
            BusinessHours::from_config(&c)
                .unwrap_err()
                .contains("Christmas")
        );
    }
}
