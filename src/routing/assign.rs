//! Who gets a conversation: teams, capacity and the choice between agents. Pure functions over
//! plain data, so every rule is tested without a clock, a store or a network.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use crate::model::availability::Topic;
use crate::model::{AgentId, Conversation, EscalationReason};

/// How an agent is chosen among those free to take a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In turn, one after another.
    RoundRobin,
    /// The one holding the fewest conversations (ties in turn).
    #[default]
    LeastLoaded,
}

/// `[routing]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Assign escalated conversations automatically (agents can always claim by hand).
    #[serde(default = "yes")]
    pub auto_assign: bool,
    #[serde(default)]
    pub strategy: Strategy,
    /// Most conversations an agent holds at once.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Per-agent capacity by agent name, overriding `capacity`.
    #[serde(default)]
    pub capacities: BTreeMap<String, u32>,
    /// An online agent whose inbox page has been closed this long is set away.
    #[serde(default = "default_away_after")]
    pub away_after_secs: u64,
    /// An agent away or offline this long gives their conversations back to the queue.
    #[serde(default = "default_return_after")]
    pub return_after_secs: u64,
    /// Teams, tried in order; a conversation goes to the first team whose rules all match.
    /// Without teams, or when none matches, every agent can take it.
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    /// Response-time targets (`[routing.sla]`); none by default.
    #[serde(default)]
    pub sla: Option<super::sla::SlaConfig>,
    /// Agents' shifts by agent name (`[routing.shifts.ana]`, laid out like `[hours]`):
    /// outside it an agent is set offline.
    #[serde(default)]
    pub shifts: BTreeMap<String, super::hours::HoursConfig>,
}

fn yes() -> bool {
    true
}
fn default_capacity() -> u32 {
    5
}
fn default_away_after() -> u64 {
    300
}
fn default_return_after() -> u64 {
    900
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            auto_assign: true,
            strategy: Strategy::default(),
            capacity: default_capacity(),
            capacities: BTreeMap::new(),
            away_after_secs: default_away_after(),
            return_after_secs: default_return_after(),
            teams: Vec::new(),
            sla: None,
            shifts: BTreeMap::new(),
        }
    }
}

/// `[[routing.teams]]`: members by agent name and the conversations they take. An empty rule
/// list matches anything.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    pub members: Vec<String>,
    /// Channel ids (`telegram`, `webchat`, ...).
    #[serde(default)]
    pub channels: Vec<String>,
    /// `zh` or `en`: the language of the customer's latest message.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Any of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Escalation reasons (`asked_for_human`, `sensitive`, `low_confidence`, ...).
    #[serde(default)]
    pub reasons: Vec<EscalationReason>,
    /// Tags of the knowledge-base entry the bot answered last before handing over (a
    /// sensitive topic such as `payments`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The team's own hours (laid out like `[hours]`), for its customers' hand-over texts and
    /// SLA deadlines; without them the general `[hours]` apply.
    #[serde(default)]
    pub hours: Option<super::hours::HoursConfig>,
}

impl TeamConfig {
    pub fn matches(&self, conv: &Conversation, topic: Topic<'_>) -> bool {
        let language = topic.language;
        let any = |rule: &[String], f: &dyn Fn(&str) -> bool| {
            rule.is_empty() || rule.iter().any(|r| f(r))
        };
        any(&self.channels, &|c| c == conv.channel.as_str())
            && any(&self.languages, &|l| l.eq_ignore_ascii_case(language))
            && any(&self.labels, &|l| conv.labels.contains(&l.to_lowercase()))
            && (self.reasons.is_empty()
                || conv
                    .escalation
                    .as_ref()
                    .is_some_and(|e| self.reasons.contains(&e.reason)))
            && any(&self.tags, &|t| {
                topic.tags.iter().any(|x| x.eq_ignore_ascii_case(t))
            })
    }
}

/// An agent who could take a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: AgentId,
    /// Conversations they hold now.
    pub load: u32,
    pub capacity: u32,
}

impl Candidate {
    fn free(&self) -> bool {
        self.load < self.capacity
    }
}

/// Chooses among `candidates` (online, in the right team): `preferred` if free (the agent a
/// reopened conversation had), else by `strategy`. `last` is the agent this team's previous
/// assignment went to; turns go on after it. `None` when nobody is free.
pub fn choose(
    strategy: Strategy,
    candidates: &[Candidate],
    preferred: Option<AgentId>,
    last: Option<AgentId>,
) -> Option<AgentId> {
    if let Some(p) = preferred
        && candidates.iter().any(|c| c.id == p && c.free())
    {
        return Some(p);
    }
    // Turn order: ids after `last` first, then from the start.
    let turn = |c: &Candidate| (last.is_some_and(|l| c.id <= l), c.id);
    let free = candidates.iter().filter(|c| c.free());
    match strategy {
        Strategy::RoundRobin => free.min_by_key(|c| turn(c)).map(|c| c.id),
        Strategy::LeastLoaded => free.min_by_key(|c| (c.load, turn(c))).map(|c| c.id),
    }
}

/// Each team's agent ids, resolved from member names.
pub fn resolve_teams(
    teams: &[TeamConfig],
    names: &HashMap<String, AgentId>,
) -> Vec<HashSet<AgentId>> {
    teams
        .iter()
        .map(|t| {
            t.members
                .iter()
                .filter_map(|m| names.get(&m.to_lowercase()).copied())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContactId, ConversationId, Escalation, Status};
    use switchboard_channel::{ChannelId, ExternalThread};

    fn cands(loads: &[(u64, u32)], capacity: u32) -> Vec<Candidate> {
        loads
            .iter()
            .map(|&(id, load)| Candidate {
                id: AgentId(id),
                load,
                capacity,
            })
            .collect()
    }

    #[test]
    fn round_robin_is_fair_over_a_hundred_escalations() {
        let mut agents = cands(&[(1, 0), (2, 0), (3, 0), (4, 0)], 1000);
        let mut last = None;
        let mut count: HashMap<AgentId, u32> = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..100 {
            let a = choose(Strategy::RoundRobin, &agents, None, last).unwrap();
            *count.entry(a).or_default() += 1;
            agents.iter_mut().find(|c| c.id == a).unwrap().load += 1;
            order.push(a.0);
            last = Some(a);
        }
        assert_eq!(&order[..6], &[1, 2, 3, 4, 1, 2]);
        assert!(count.values().all(|&n| n == 25), "{count:?}");
    }

    #[test]
    fn least_loaded_takes_the_lightest_and_breaks_ties_in_turn() {
        let agents = cands(&[(1, 3), (2, 1), (3, 1), (4, 2)], 5);
        assert_eq!(
            choose(Strategy::LeastLoaded, &agents, None, None),
            Some(AgentId(2))
        );
        assert_eq!(
            choose(Strategy::LeastLoaded, &agents, None, Some(AgentId(2))),
            Some(AgentId(3))
        );
        assert_eq!(
            choose(Strategy::LeastLoaded, &agents, None, Some(AgentId(3))),
            Some(AgentId(2)),
            "wraps around"
        );
    }

    #[test]
    fn capacity_is_respected_and_full_means_nobody() {
        let agents = cands(&[(1, 2), (2, 1)], 2);
        for s in [Strategy::RoundRobin, Strategy::LeastLoaded] {
            assert_eq!(choose(s, &agents, None, None), Some(AgentId(2)));
        }
        let full = cands(&[(1, 2), (2, 2)], 2);
        for s in [Strategy::RoundRobin, Strategy::LeastLoaded] {
            assert_eq!(choose(s, &full, None, None), None);
            assert_eq!(choose(s, &[], None, None), None);
        }
    }

    #[test]
    fn the_previous_agent_is_preferred_when_free() {
        let agents = cands(&[(1, 0), (2, 4)], 5);
        assert_eq!(
            choose(Strategy::LeastLoaded, &agents, Some(AgentId(2)), None),
            Some(AgentId(2))
        );
        let busy = cands(&[(1, 0), (2, 5)], 5);
        assert_eq!(
            choose(Strategy::LeastLoaded, &busy, Some(AgentId(2)), None),
            Some(AgentId(1))
        );
        assert_eq!(
            choose(Strategy::LeastLoaded, &agents, Some(AgentId(9)), None),
            Some(AgentId(1)),
            "not a candidate (offline, other team)"
        );
    }

    fn conv(channel: &str, labels: &[&str], reason: Option<&str>) -> Conversation {
        let reason = reason.map(|r| {
            *crate::model::EscalationReason::ALL
                .iter()
                .find(|x| x.as_str() == r)
                .expect("a reason")
        });
        let mut c = Conversation::new(
            ConversationId(1),
            ContactId(1),
            ChannelId(channel.into()),
            ExternalThread("t".into()),
            0,
        );
        c.status = Status::Queued;
        c.labels = labels.iter().map(|l| l.to_string()).collect();
        c.escalation = reason.map(|r| Escalation {
            reason: r,
            detail: String::new(),
            at_ms: 0,
        });
        c
    }

    fn lang(language: &str) -> Topic<'_> {
        Topic {
            language,
            tags: &[],
        }
    }

    #[test]
    fn teams_match_on_every_rule_they_have() {
        let team: TeamConfig = toml::from_str(
            r#"name = "zh-telegram"
               members = ["li"]
               channels = ["telegram"]
               languages = ["zh"]"#,
        )
        .unwrap();
        assert!(team.matches(&conv("telegram", &[], None), lang("zh")));
        assert!(!team.matches(&conv("telegram", &[], None), lang("en")));
        assert!(!team.matches(&conv("email", &[], None), lang("zh")));
        let billing: TeamConfig = toml::from_str(
            r#"name = "billing"
               members = ["ana"]
               labels = ["Billing"]
               reasons = ["sensitive"]"#,
        )
        .unwrap();
        assert!(billing.matches(&conv("email", &["billing"], Some("sensitive")), lang("en")));
        assert!(!billing.matches(
            &conv("email", &["billing"], Some("asked_for_human")),
            lang("en")
        ));
        let everyone: TeamConfig = toml::from_str("name = \"all\"\nmembers = []").unwrap();
        assert!(everyone.matches(&conv("webchat", &[], None), lang("en")));
        let payments: TeamConfig =
            toml::from_str("name = \"payments\"\nmembers = []\ntags = [\"Payments\"]").unwrap();
        let tagged = ["payments".to_string(), "refunds".to_string()];
        let about = Topic {
            language: "en",
            tags: &tagged,
        };
        assert!(payments.matches(&conv("webchat", &[], Some("sensitive")), about));
        assert!(!payments.matches(&conv("webchat", &[], Some("sensitive")), lang("en")));
    }
}
