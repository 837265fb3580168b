//! `switchboard kb eval`: how well the bot answers a customer's first message, and how well
//! it declines; the knowledge base's own verdicts beside.
//! Metrics as defined in `../shared/eval/README.md`.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::matcher::{Matcher, Policies, Policy, Scored, Verdict};
use super::{Decision, Responder};
use crate::model::EscalationReason;

#[derive(Debug, Deserialize)]
pub struct Query {
    pub text: String,
    /// The entry id that answers it; `None` for out-of-scope queries.
    pub expect: Option<String>,
}

pub fn read_queries(path: &Path) -> anyhow::Result<Vec<Query>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 1))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub queries: usize,
    pub in_scope: usize,
    pub out_of_scope: usize,
    pub in_scope_accuracy: f64,
    pub out_of_scope_recall: f64,
    pub wrong_answer_rate: f64,
    pub clarify_rate: f64,
    /// In-scope queries clarified with the expected entry among the options offered: a
    /// customer one tap from the right answer.
    pub clarify_hit_rate: f64,
    /// In-scope accuracy + clarify hit rate.
    pub resolved_rate: f64,
    pub escalate_rate: f64,
    /// Queries the conversation layer took before the knowledge base was asked: handed
    /// over as a request for a person, upset or sensitive, or answered as small talk.
    pub conversation_rate: f64,
    /// The knowledge base alone (the matcher's verdict, no conversation layer): what the
    /// figures above would be if every query were taken as a question.
    pub faq_only: FaqFigures,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub model: Option<String>,
    pub entries: usize,
    pub variants: usize,
    pub index_build_ms: f64,
    /// With the model's scores.
    pub semantic_policy: Policy,
    /// With words only.
    pub lexical_policy: Policy,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaqFigures {
    pub in_scope_accuracy: f64,
    pub out_of_scope_recall: f64,
    pub wrong_answer_rate: f64,
    pub clarify_hit_rate: f64,
    pub resolved_rate: f64,
}

impl From<&Tally> for FaqFigures {
    fn from(t: &Tally) -> FaqFigures {
        FaqFigures {
            in_scope_accuracy: t.accuracy(),
            out_of_scope_recall: t.oos_recall(),
            wrong_answer_rate: t.wrong_rate(),
            clarify_hit_rate: t.clarify_hit_rate(),
            resolved_rate: t.accuracy() + t.clarify_hit_rate(),
        }
    }
}

/// Scores every query once against the knowledge base alone (for the sweep, the dump and
/// the FAQ-only figures).
pub fn score_all(matcher: &Matcher, queries: &[Query]) -> anyhow::Result<Vec<Scored>> {
    queries
        .iter()
        .map(|q| Ok(matcher.score(&q.text)?))
        .collect()
}

/// Decides every query as the daemon decides a new customer's first message (the
/// conversation layer, then the knowledge base), timing each decision.
pub fn decide_all(responder: &dyn Responder, queries: &[Query]) -> (Vec<Decision>, Vec<f64>) {
    let mut decisions = Vec::with_capacity(queries.len());
    let mut latencies = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let d = responder.decide(&super::BotInput {
            text: &q.text,
            misses: 0,
            last_entry: None,
        });
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        decisions.push(d);
    }
    (decisions, latencies)
}

/// What one query met, as far as the figures go.
#[derive(Debug, PartialEq)]
enum Outcome<'a> {
    Answer(&'a str),
    /// Offered these entries to pick from.
    Clarify(Vec<&'a str>),
    /// Handed over at once.
    Escalate,
    /// Not answered from the knowledge base: a request to rephrase, or small talk.
    Decline,
}

impl<'a> Outcome<'a> {
    fn of_verdict(matcher: &'a Matcher, verdict: &Verdict) -> Outcome<'a> {
        let id = |e: usize| matcher.entries()[e].id.as_str();
        match verdict {
            Verdict::Answer { entry, .. } => Outcome::Answer(id(*entry)),
            Verdict::Clarify { options } => {
                Outcome::Clarify(options.iter().map(|&(e, _)| id(e)).collect())
            }
            Verdict::NoMatch { .. } => Outcome::Escalate,
        }
    }

    fn of_decision(decision: &'a Decision) -> Outcome<'a> {
        match decision {
            Decision::Answer { entry, .. } => Outcome::Answer(entry),
            Decision::Clarify { options, .. } => {
                let entries: Vec<&str> = options
                    .iter()
                    .filter_map(|b| super::responder::picked_entry(&b.payload))
                    .collect();
                if entries.is_empty() {
                    Outcome::Decline
                } else {
                    Outcome::Clarify(entries)
                }
            }
            Decision::Escalate { .. } => Outcome::Escalate,
            Decision::Reply { .. } => Outcome::Decline,
        }
    }
}

/// Whether the conversation layer took the decision before the knowledge base was asked.
fn by_conversation_layer(decision: &Decision) -> bool {
    match decision {
        Decision::Reply { .. } => true,
        Decision::Escalate { reason, .. } => matches!(
            reason,
            EscalationReason::AskedForHuman
                | EscalationReason::Frustrated
                | EscalationReason::Sensitive
        ),
        _ => false,
    }
}

/// Counts of one policy over scored queries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub in_scope: usize,
    pub out_of_scope: usize,
    pub correct: usize,
    pub wrong: usize,
    pub oos_declined: usize,
    pub clarified: usize,
    pub clarify_hits: usize,
    pub escalated: usize,
}

impl Tally {
    /// The knowledge base's verdicts alone.
    pub fn of(matcher: &Matcher, policy: &Policies, queries: &[Query], scored: &[Scored]) -> Tally {
        let mut t = Tally::default();
        for (q, s) in queries.iter().zip(scored) {
            t.add(
                q.expect.as_deref(),
                Outcome::of_verdict(matcher, &policy.decide(s)),
            );
        }
        t
    }

    /// The whole bot's decisions.
    pub fn of_decisions(queries: &[Query], decisions: &[Decision]) -> Tally {
        let mut t = Tally::default();
        for (q, d) in queries.iter().zip(decisions) {
            t.add(q.expect.as_deref(), Outcome::of_decision(d));
        }
        t
    }

    fn add(&mut self, expect: Option<&str>, outcome: Outcome<'_>) {
        let answered = match outcome {
            Outcome::Answer(id) => Some(id),
            Outcome::Clarify(offered) => {
                self.clarified += 1;
                if expect.is_some_and(|want| offered.contains(&want)) {
                    self.clarify_hits += 1;
                }
                None
            }
            Outcome::Escalate => {
                self.escalated += 1;
                None
            }
            Outcome::Decline => None,
        };
        match expect {
            Some(_) => self.in_scope += 1,
            None => self.out_of_scope += 1,
        }
        match (expect, answered) {
            (Some(want), Some(got)) if want == got => self.correct += 1,
            (_, Some(_)) => self.wrong += 1,
            (None, None) => self.oos_declined += 1,
            (Some(_), None) => {}
        }
    }

    pub fn clarify_hit_rate(&self) -> f64 {
        Self::share(self.clarify_hits, self.in_scope)
    }

    fn share(n: usize, of: usize) -> f64 {
        if of == 0 { 0.0 } else { n as f64 / of as f64 }
    }
    pub fn accuracy(&self) -> f64 {
        Self::share(self.correct, self.in_scope)
    }
    pub fn oos_recall(&self) -> f64 {
        Self::share(self.oos_declined, self.out_of_scope)
    }
    pub fn wrong_rate(&self) -> f64 {
        Self::share(self.wrong, self.in_scope + self.out_of_scope)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The figures of the bot's decisions (`decisions`, one per query, timed by
/// `latencies`), with the knowledge base's alone beside them.
pub fn report(
    matcher: &Matcher,
    policy: &Policies,
    queries: &[Query],
    scored: &[Scored],
    decisions: &[Decision],
    mut latencies: Vec<f64>,
    index_build_ms: f64,
) -> Report {
    let t = Tally::of_decisions(queries, decisions);
    let faq = Tally::of(matcher, policy, queries, scored);
    latencies.sort_by(f64::total_cmp);
    let n = queries.len();
    let taken = decisions
        .iter()
        .filter(|d| by_conversation_layer(d))
        .count();
    Report {
        queries: n,
        in_scope: t.in_scope,
        out_of_scope: t.out_of_scope,
        in_scope_accuracy: t.accuracy(),
        out_of_scope_recall: t.oos_recall(),
        wrong_answer_rate: t.wrong_rate(),
        clarify_rate: Tally::share(t.clarified, n),
        clarify_hit_rate: t.clarify_hit_rate(),
        resolved_rate: t.accuracy() + t.clarify_hit_rate(),
        escalate_rate: Tally::share(t.escalated, n),
        conversation_rate: Tally::share(taken, n),
        faq_only: FaqFigures::from(&faq),
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        model: matcher.model_id().map(str::to_owned),
        entries: matcher.entries().len(),
        variants: matcher.variants(),
        index_build_ms,
        semantic_policy: policy.semantic,
        lexical_policy: policy.lexical,
    }
}

/// Tries many policies on one scoring pass; returns the most accurate few that keep the
/// wrong-answer rate at or under `max_wrong` and decline at least `min_oos` of the
/// out-of-scope queries.
pub fn sweep(
    matcher: &Matcher,
    queries: &[Query],
    scored: &[Scored],
    base: &Policies,
    max_wrong: f64,
    min_oos: f64,
) -> Vec<(Policy, Tally)> {
    let weights: &[f32] = if matcher.has_model() {
        &[0.0, 0.1, 0.15, 0.2, 0.25, 0.3]
    } else {
        &[1.0]
    };
    let top_ks: &[usize] = if matcher.has_model() {
        &[2, 3, 4, 5]
    } else {
        &[1]
    };
    let mut found = Vec::new();
    for &lexical_weight in weights {
        for &top_k in top_ks {
            for a in 0..=80 {
                let answer = 0.1 + a as f32 * 0.01;
                for &margin in &[
                    0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3,
                ] {
                    let policy = Policy {
                        answer,
                        margin,
                        clarify: answer - 0.15,
                        lexical_weight,
                        top_k,
                        centroid_weight: base.semantic.centroid_weight,
                        confidence: None,
                    };
                    let both = if matcher.has_model() {
                        Policies {
                            semantic: policy,
                            ..*base
                        }
                    } else {
                        Policies {
                            lexical: policy,
                            ..*base
                        }
                    };
                    let t = Tally::of(matcher, &both, queries, scored);
                    if t.wrong_rate() <= max_wrong && t.oos_recall() >= min_oos {
                        found.push((policy, t));
                    }
                }
            }
        }
    }
    found.sort_by(|a, b| b.1.accuracy().total_cmp(&a.1.accuracy()));
    found.truncate(15);
    found
}

/// Raw scores of the queries and of the calibration's samples, one JSON line each:
/// `{"kind", "expect", "semantic", "candidates": [[entry, lexical, [cosines], centroid]]}`.
/// With a model, also `kind = "variant"` lines (`expect`: the variant's entry) and, in
/// `path` with the extension `f32`, the vectors as little-endian f32: every variant's, then
/// every query's (zeros for one the model does not read).
pub fn dump(
    path: &Path,
    matcher: &Matcher,
    queries: &[Query],
    scored: &[Scored],
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut line = |kind: &str, expect: Option<usize>, s: &Scored| -> anyhow::Result<()> {
        let candidates: Vec<_> = s
            .candidates
            .iter()
            .map(|c| serde_json::json!([c.entry, c.lexical, c.semantic, c.centroid]))
            .collect();
        let v = serde_json::json!({
            "kind": kind, "expect": expect, "semantic": s.semantic, "candidates": candidates,
        });
        writeln!(out, "{v}")?;
        Ok(())
    };
    let index = |id: &str| matcher.entries().iter().position(|e| e.id == id);
    if matcher.has_model() {
        let mut raw = std::io::BufWriter::new(std::fs::File::create(path.with_extension("f32"))?);
        let dim = matcher.variant_vector(0).map_or(0, <[f32]>::len);
        let mut put = |v: Option<&[f32]>| -> anyhow::Result<()> {
            for i in 0..dim {
                let x = v.map_or(0.0, |v| v[i]);
                raw.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        };
        for v in 0..matcher.variants() {
            put(matcher.variant_vector(v))?;
        }
        for q in queries {
            put(matcher.query_vector(&q.text)?.as_deref())?;
        }
        for v in 0..matcher.variants() {
            line("variant", Some(matcher.variant(v).0), &Scored::default())?;
        }
    }
    for (q, s) in queries.iter().zip(scored) {
        line("query", q.expect.as_deref().and_then(index), s)?;
    }
    for semantic in [false, true] {
        if semantic && !matcher.has_model() {
            continue;
        }
        for s in super::calibrate::samples(matcher, semantic)? {
            let kind = match (s.expect, s.off_topic) {
                (Some(_), _) => "in",
                (None, true) => "off_topic",
                (None, false) => "held_out",
            };
            let kind = format!("{}_{kind}", if semantic { "sem" } else { "lex" });
            line(&kind, s.expect, &s.scored)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_channel::Button;

    fn q(expect: Option<&str>) -> Query {
        Query {
            text: String::new(),
            expect: expect.map(str::to_owned),
        }
    }

    fn answer(entry: &str, escalate_after: bool) -> Decision {
        Decision::Answer {
            entry: entry.into(),
            text: String::new(),
            score: 0.9,
            escalate_after,
            buttons: vec![],
            detail: String::new(),
        }
    }

    fn clarify(payloads: &[&str]) -> Decision {
        Decision::Clarify {
            text: String::new(),
            options: payloads
                .iter()
                .map(|p| Button {
                    label: String::new(),
                    payload: (*p).into(),
                })
                .collect(),
            score: None,
            detail: String::new(),
        }
    }

    fn escalate(reason: EscalationReason) -> Decision {
        Decision::Escalate {
            reason,
            detail: String::new(),
        }
    }

    #[test]
    fn the_bots_decisions_are_counted_as_a_customer_meets_them() {
        let cases = [
            (q(Some("a")), answer("a", false)),
            // Answered, then a person: still an answer, right or wrong.
            (q(Some("b")), answer("b", true)),
            (q(Some("c")), answer("a", true)),
            (q(None), answer("a", false)),
            // One tap away; "none of these" is not an entry.
            (q(Some("d")), clarify(&["kb:x", "kb:d", "kb:none"])),
            (q(Some("e")), clarify(&["kb:x", "kb:none"])),
            // A request to rephrase offers only a person: declined, not clarified.
            (q(None), clarify(&["human"])),
            (q(None), escalate(EscalationReason::AskedForHuman)),
            (q(Some("f")), escalate(EscalationReason::Sensitive)),
            (
                q(None),
                Decision::Reply {
                    text: "你好！".into(),
                    detail: String::new(),
                },
            ),
        ];
        let (queries, decisions): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        let t = Tally::of_decisions(&queries, &decisions);
        assert_eq!((t.in_scope, t.out_of_scope), (6, 4));
        assert_eq!((t.correct, t.wrong), (2, 2));
        assert_eq!((t.clarified, t.clarify_hits), (2, 1));
        assert_eq!(t.oos_declined, 3);
        assert_eq!(t.escalated, 2);
        assert_eq!(
            decisions
                .iter()
                .filter(|d| by_conversation_layer(d))
                .count(),
            3
        );
    }
}
