//! Whose hours apply: a team's own (`hours` in `[[routing.teams]]`), else the general
//! `[hours]`, else always open; and which team a conversation is for. The engine's
//! `Availability` for hand-over texts and SLA deadlines and targets.

use jiff::Timestamp;

use super::assign::TeamConfig;
use super::hours::{BusinessHours, HoursConfig};
use crate::model::Conversation;
use crate::model::availability::Availability;
use crate::model::availability::Topic;

pub struct Schedule {
    general: Option<BusinessHours>,
    teams: Vec<(TeamConfig, Option<BusinessHours>)>,
}

impl Schedule {
    pub fn new(general: Option<&HoursConfig>, teams: &[TeamConfig]) -> Result<Schedule, String> {
        let general = general.map(BusinessHours::from_config).transpose()?;
        let teams = teams
            .iter()
            .map(|t| {
                let hours = t.hours.as_ref().map(BusinessHours::from_config).transpose();
                hours
                    .map(|h| (t.clone(), h))
                    .map_err(|e| format!("team {}: {e}", t.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Schedule { general, teams })
    }

    /// Whether anything here differs from "always open".
    pub fn has_hours(&self) -> bool {
        self.general.is_some() || self.teams.iter().any(|(_, h)| h.is_some())
    }

    /// Whether it has anything to say (hours, or teams for per-team SLA targets).
    pub fn matters(&self) -> bool {
        self.has_hours() || !self.teams.is_empty()
    }

    fn hours_for(&self, conv: &Conversation, topic: Topic<'_>) -> Option<&BusinessHours> {
        match self.teams.iter().find(|(t, _)| t.matches(conv, topic)) {
            Some((_, Some(h))) => Some(h),
            _ => self.general.as_ref(),
        }
    }
}

impl Availability for Schedule {
    fn next_shift(&self, now_ms: i64) -> Option<String> {
        self.general.as_ref()?.next_shift(now_ms)
    }

    fn after_working(&self, from_ms: i64, ms: i64) -> i64 {
        match &self.general {
            Some(h) => h.after_working(from_ms, ms),
            None => from_ms.saturating_add(ms),
        }
    }

    fn next_shift_for(&self, now_ms: i64, conv: &Conversation, topic: Topic<'_>) -> Option<String> {
        self.hours_for(conv, topic)?.next_shift(now_ms)
    }

    fn after_working_for(
        &self,
        from_ms: i64,
        ms: i64,
        conv: &Conversation,
        topic: Topic<'_>,
    ) -> i64 {
        match self.hours_for(conv, topic) {
            Some(h) => h.after_working(from_ms, ms),
            None => from_ms.saturating_add(ms),
        }
    }

    fn team_of(&self, conv: &Conversation, topic: Topic<'_>) -> Option<String> {
        self.teams
            .iter()
            .find(|(t, _)| t.matches(conv, topic))
            .map(|(t, _)| t.name.clone())
    }

    fn team_openings(&self, now_ms: i64) -> Vec<(String, Option<String>)> {
        let Ok(now) = Timestamp::from_millisecond(now_ms) else {
            return Vec::new();
        };
        self.teams
            .iter()
            .filter_map(|(t, h)| {
                let h = h.as_ref()?;
                let next = (!h.is_open(now)).then(|| h.next_shift(now_ms)).flatten();
                Some((t.name.clone(), next))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContactId, ConversationId};
    use switchboard_channel::{ChannelId, ExternalThread};

    #[test]
    fn a_team_with_its_own_hours_answers_for_its_conversations() {
        // Everyone: always open. The Chinese team: Shanghai weekdays 09:00-18:00.
        let team: TeamConfig = toml::from_str(
            r#"name = "chinese"
               members = ["li"]
               languages = ["zh"]
               [hours]
               time_zone = "Asia/Shanghai"
               mon = ["09:00-18:00"]
               tue = ["09:00-18:00"]
               wed = ["09:00-18:00"]
               thu = ["09:00-18:00"]
               fri = ["09:00-18:00"]"#,
        )
        .unwrap();
        let s = Schedule::new(None, &[team]).unwrap();
        assert!(s.has_hours());
        let conv = Conversation::new(
            ConversationId(1),
            ContactId(1),
            ChannelId("web".into()),
            ExternalThread("t".into()),
            0,
        );
        let (zh, en) = (
            Topic {
                language: "zh",
                tags: &[],
            },
            Topic {
                language: "en",
                tags: &[],
            },
        );
        // Saturday 2027-02-06 12:00 in Shanghai.
        let saturday: Timestamp = "2027-02-06T04:00:00Z".parse().unwrap();
        let now = saturday.as_millisecond();
        assert_eq!(
            s.next_shift_for(now, &conv, zh).as_deref(),
            Some("2027-02-08 09:00 (Asia/Shanghai)")
        );
        assert_eq!(
            s.next_shift_for(now, &conv, en),
            None,
            "others: always open"
        );
        assert_eq!(s.next_shift(now), None);
        // Two hours of the team's time from Saturday: Monday 11:00 Shanghai.
        let due = s.after_working_for(now, 2 * 3_600_000, &conv, zh);
        let monday: Timestamp = "2027-02-08T03:00:00Z".parse().unwrap();
        assert_eq!(due, monday.as_millisecond());
        assert_eq!(s.after_working_for(now, 1000, &conv, en), now + 1000);
        assert_eq!(
            s.team_openings(now),
            [(
                "chinese".to_string(),
                Some("2027-02-08 09:00 (Asia/Shanghai)".to_string())
            )]
        );
    }
}
