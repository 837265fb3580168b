//! Thresholds chosen for each knowledge base, from the knowledge base alone.
//!
//! Fixed thresholds do not carry from one knowledge base to another: how close questions sit
//! to each other depends on the domain, the language, the model and how many variants each
//! entry has. So the bot simulates its customers from what it has:
//!
//! - **in scope**: a question variant held out of its entry, asked as a customer would. The
//!   right answer is its own entry.
//! - **out of scope**: a whole entry held out, its questions asked of the rest. Nothing is the
//!   right answer, and the nearest neighbour is usually a close topic of the same domain: the
//!   hard case. Plus built-in off-topic chit-chat in Chinese and English (`data/offtopic.txt`).
//!
//! Each held-out question is scored once as if the held-out variants were not there; then a
//! grid of policies (answer threshold, margin over the runner-up, share of words in the
//! score, variants per entry, share of the entry's centroid) is tried on those scores. The
//! chosen policy answers as many in-scope questions right as it can while the estimated
//! wrong-answer rate stays at or under `max_wrong_rate`. That estimate weighs in scope and
//! out of scope equally, and within out of scope held-out entries and off-topic lines
//! equally: which kind a knowledge base's unanswerable questions are mostly of cannot be
//! told from the knowledge base, and each kind alone misleads on some (an FAQ of close
//! entries overrates the first, an assistant's of broad domains the second). All of it is
//! pure CPU work on stored vectors (the off-topic lines are embedded once): a few seconds
//! for 10,000 variants.

use serde::Serialize;

use super::matcher::{MatchError, Matcher, Policies, Policy, Scored};

/// Held-out questions kept in scope, at most.
const MAX_IN_SCOPE: usize = 2_000;
/// Entries held out whole, at most, and questions asked of each.
const MAX_HELD_OUT_ENTRIES: usize = 400;
/// Questions asked of the held-out entries in all, about (at least 2, at most 20 each).
const HELD_OUT_QUESTIONS: usize = 600;
/// Below these, the knowledge base is too small to say anything: the given policy stays.
const MIN_ENTRIES: usize = 6;
const MIN_IN_SCOPE: usize = 20;
/// Of the out-of-scope estimate, the share of held-out entries (the rest: off-topic lines).
const HARD_SHARE: f64 = 0.5;
/// At most this share of out-of-scope questions is answered or offered "did you mean"
/// options: a customer one tap from the right answer is worth a few who tap "none of these".
const MAX_OOS_CLARIFIED: f64 = 0.4;

const OFF_TOPIC: &str = include_str!("data/offtopic.txt");

/// The built-in off-topic lines.
pub fn off_topic() -> impl Iterator<Item = &'static str> {
    OFF_TOPIC
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// One simulated customer question, scored without what it was held out from.
pub struct Sample {
    pub scored: Scored,
    /// The entry that answers it; `None` out of scope.
    pub expect: Option<usize>,
    /// Off-topic chit-chat rather than a held-out entry.
    pub off_topic: bool,
}

/// What a calibration chose and what it expects of it.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub policy: Policy,
    /// Estimated on the simulated questions.
    pub in_scope_accuracy: f64,
    pub wrong_answer_rate: f64,
    pub clarify_hit_rate: f64,
    pub in_scope_samples: usize,
    pub out_of_scope_samples: usize,
    /// Set when the knowledge base was too small and the given policy was kept.
    pub note: Option<String>,
}

/// Simulated questions for the policy with the model (`semantic`) or words only.
pub fn samples(matcher: &Matcher, semantic: bool) -> Result<Vec<Sample>, MatchError> {
    let entries = matcher.entries().len();
    let mut by_entry: Vec<Vec<usize>> = vec![Vec::new(); entries];
    for v in 0..matcher.variants() {
        by_entry[matcher.variant(v).0].push(v);
    }
    let vector = |v: usize| {
        let text = matcher.variant(v).1;
        if semantic && matcher.semantic_for(text) {
            matcher.variant_vector(v)
        } else {
            None
        }
    };
    let mut out = Vec::new();
    // In scope: spread evenly over the entries that have a variant to spare.
    let spare: usize = by_entry.iter().map(|v| v.len().saturating_sub(1)).sum();
    let step = spare.div_ceil(MAX_IN_SCOPE).max(1);
    let mut n = 0usize;
    for (e, variants) in by_entry.iter().enumerate() {
        for &v in variants.iter().skip(1) {
            n += 1;
            if !n.is_multiple_of(step) {
                continue;
            }
            let text = matcher.variant(v).1;
            let scored = matcher.score_without(text, vector(v), &|u| u == v)?;
            out.push(Sample {
                scored,
                expect: Some(e),
                off_topic: false,
            });
        }
    }
    // Out of scope: whole entries held out, spread over the knowledge base.
    let step = entries.div_ceil(MAX_HELD_OUT_ENTRIES).max(1);
    let per_entry = (HELD_OUT_QUESTIONS * step / entries.max(1)).clamp(2, 20);
    for (e, variants) in by_entry.iter().enumerate().step_by(step) {
        for &v in variants.iter().take(per_entry) {
            let text = matcher.variant(v).1;
            let held_out = &by_entry[e];
            let scored = matcher.score_without(text, vector(v), &|u| held_out.contains(&u))?;
            out.push(Sample {
                scored,
                expect: None,
                off_topic: false,
            });
        }
    }
    // Off-topic lines, unless this knowledge base covers them (an assistant's FAQ may well
    // answer "what's the weather"): a line whose best match scores at least as high as the
    // median in-scope question's is taken to be in scope here and left out.
    let best = |s: &Scored| {
        s.candidates
            .iter()
            .map(|c| c.semantic.first().copied().unwrap_or(c.lexical))
            .fold(f32::NEG_INFINITY, f32::max)
    };
    let mut typical: Vec<f32> = out
        .iter()
        .filter(|s| s.expect.is_some())
        .map(|s| best(&s.scored))
        .collect();
    typical.sort_by(f32::total_cmp);
    let covered = typical
        .get(typical.len() / 2)
        .copied()
        .unwrap_or(f32::INFINITY);
    for text in off_topic() {
        let query = if semantic {
            matcher.query_vector(text)?
        } else {
            None
        };
        let scored = matcher.score_without(text, query.as_deref(), &|_| false)?;
        if best(&scored) >= covered {
            continue;
        }
        out.push(Sample {
            scored,
            expect: None,
            off_topic: true,
        });
    }
    Ok(out)
}

/// The best two combined scores of a sample under one way of combining, and the top entry.
#[derive(Clone, Copy)]
struct Top {
    entry: usize,
    first: f32,
    second: f32,
    /// Where the expected entry ranks, for clarify hits (0 = first; usize::MAX = absent).
    expected_rank: usize,
    /// The expected entry's score.
    expected_score: f32,
}

/// Counts of one policy over the samples.
#[derive(Default, Clone, Copy)]
struct Counts {
    in_scope: usize,
    correct: usize,
    in_wrong: usize,
    clarify_hits: usize,
    hard: usize,
    hard_answered: usize,
    hard_clarified: usize,
    easy: usize,
    easy_answered: usize,
    easy_clarified: usize,
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

impl Counts {
    fn oos_rate(&self, answered_hard: usize, answered_easy: usize) -> f64 {
        match (self.hard, self.easy) {
            (0, 0) => 0.0,
            (0, e) => share(answered_easy, e),
            (h, 0) => share(answered_hard, h),
            (h, e) => {
                HARD_SHARE * share(answered_hard, h) + (1.0 - HARD_SHARE) * share(answered_easy, e)
            }
        }
    }

    /// In scope and out of scope weighed equally.
    fn wrong_rate(&self) -> f64 {
        let oos = self.oos_rate(self.hard_answered, self.easy_answered);
        if self.hard + self.easy == 0 {
            return share(self.in_wrong, self.in_scope);
        }
        0.5 * share(self.in_wrong, self.in_scope) + 0.5 * oos
    }

    fn clarified_oos(&self) -> f64 {
        self.oos_rate(
            self.hard_answered + self.hard_clarified,
            self.easy_answered + self.easy_clarified,
        )
    }
}

fn tops(samples: &[Sample], policy: &Policy) -> Vec<Top> {
    samples
        .iter()
        .map(|s| {
            let ranked = policy.rank(&s.scored);
            let (entry, first) = ranked.first().copied().unwrap_or((usize::MAX, 0.0));
            let second = ranked.get(1).map_or(0.0, |r| r.1);
            let (expected_rank, expected_score) = s
                .expect
                .and_then(|want| {
                    ranked
                        .iter()
                        .position(|r| r.0 == want)
                        .map(|i| (i, ranked[i].1))
                })
                .unwrap_or((usize::MAX, 0.0));
            Top {
                entry,
                first,
                second,
                expected_rank,
                expected_score,
            }
        })
        .collect()
}

fn count(samples: &[Sample], tops: &[Top], answer: f32, margin: f32, clarify: f32) -> Counts {
    let mut c = Counts::default();
    for (s, t) in samples.iter().zip(tops) {
        let answered = t.first >= answer && t.first - t.second >= margin && t.entry != usize::MAX;
        let clarified = !answered && t.first >= clarify && t.entry != usize::MAX;
        match s.expect {
            Some(want) => {
                c.in_scope += 1;
                if answered && t.entry == want {
                    c.correct += 1;
                } else if answered {
                    c.in_wrong += 1;
                } else if clarified
                    && t.expected_rank < 3
                    && t.expected_score >= clarify
                    && t.first - t.expected_score < 0.1_f32.max(margin * 2.0)
                {
                    c.clarify_hits += 1;
                }
            }
            None if s.off_topic => {
                c.easy += 1;
                c.easy_answered += usize::from(answered);
                c.easy_clarified += usize::from(clarified);
            }
            None => {
                c.hard += 1;
                c.hard_answered += usize::from(answered);
                c.hard_clarified += usize::from(clarified);
            }
        }
    }
    c
}

/// Chooses the policy for these samples (see the module's text). `semantic` says whether
/// they carry the model's scores (then the share of words and variants per entry are tried
/// too); `base` is kept when there is too little to go on.
pub fn choose(
    samples: &[Sample],
    entries: usize,
    semantic: bool,
    base: Policy,
    max_wrong: f64,
) -> Calibration {
    let in_scope = samples.iter().filter(|s| s.expect.is_some()).count();
    let oos = samples.len() - in_scope;
    if entries < MIN_ENTRIES || in_scope < MIN_IN_SCOPE {
        return Calibration {
            policy: base,
            in_scope_accuracy: 0.0,
            wrong_answer_rate: 0.0,
            clarify_hit_rate: 0.0,
            in_scope_samples: in_scope,
            out_of_scope_samples: oos,
            note: Some(format!(
                "too small to calibrate ({entries} entries, {in_scope} questions to hold out; \
                 {MIN_ENTRIES} and {MIN_IN_SCOPE} needed): the configured thresholds stay"
            )),
        };
    }
    let (weights, top_ks, centroids): (&[f32], &[usize], &[f32]) = if semantic {
        (&[0.0, 0.1, 0.2, 0.3], &[1, 2, 3, 5], &[0.0, 0.5, 1.0])
    } else {
        (&[1.0], &[1], &[0.0])
    };
    const MARGINS: [f32; 11] = [
        0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15,
    ];
    // (accuracy, safety tie-break) -> policy and counts
    let mut best: Option<(f64, Policy, Counts)> = None;
    let shapes = weights.iter().flat_map(|&w| {
        top_ks
            .iter()
            .flat_map(move |&k| centroids.iter().map(move |&c| (w, k, c)))
    });
    for (lexical_weight, top_k, centroid_weight) in shapes {
        let shape = Policy {
            lexical_weight,
            top_k,
            centroid_weight,
            ..base
        };
        let tops = tops(samples, &shape);
        let mut levels: Vec<f32> = tops.iter().map(|t| t.first).collect();
        levels.sort_by(f32::total_cmp);
        levels.dedup();
        let grid: Vec<f32> = (0..=100)
            .map(|i| levels[(levels.len() - 1) * i / 100])
            .collect();
        for &margin in &MARGINS {
            for &answer in &grid {
                let c = count(samples, &tops, answer, margin, f32::INFINITY);
                if c.wrong_rate() > max_wrong {
                    continue;
                }
                let accuracy = share(c.correct, c.in_scope);
                let better = match &best {
                    None => true,
                    Some((a, p, _)) => {
                        accuracy > *a + 1e-9
                            || ((accuracy - *a).abs() <= 1e-9
                                && (margin, answer) > (p.margin, p.answer))
                    }
                };
                if better {
                    let policy = Policy {
                        answer,
                        margin,
                        clarify: answer,
                        ..shape
                    };
                    best = Some((accuracy, policy, c));
                }
            }
        }
    }
    let Some((_, mut policy, _)) = best else {
        // Nothing keeps wrong answers low enough: never answer, always ask.
        return Calibration {
            policy: Policy {
                answer: f32::INFINITY,
                ..base
            },
            in_scope_accuracy: 0.0,
            wrong_answer_rate: 0.0,
            clarify_hit_rate: 0.0,
            in_scope_samples: in_scope,
            out_of_scope_samples: oos,
            note: Some("no threshold keeps wrong answers low enough: the bot only asks".into()),
        };
    };
    // The lowest clarify threshold that answers or offers options to few out-of-scope
    // questions.
    let tops = tops(samples, &policy);
    let mut levels: Vec<f32> = tops
        .iter()
        .map(|t| t.first)
        .filter(|&s| s < policy.answer)
        .collect();
    levels.sort_by(f32::total_cmp);
    for &clarify in &levels {
        let c = count(samples, &tops, policy.answer, policy.margin, clarify);
        if c.clarified_oos() <= MAX_OOS_CLARIFIED {
            policy.clarify = clarify;
            break;
        }
    }
    let c = count(samples, &tops, policy.answer, policy.margin, policy.clarify);
    Calibration {
        policy,
        in_scope_accuracy: share(c.correct, c.in_scope),
        wrong_answer_rate: c.wrong_rate(),
        clarify_hit_rate: share(c.clarify_hits, c.in_scope),
        in_scope_samples: in_scope,
        out_of_scope_samples: oos,
        note: None,
    }
}

/// Samples and choice in one: the calibration of `matcher` for the model's scores
/// (`semantic`) or for words only.
pub fn calibrate(
    matcher: &Matcher,
    semantic: bool,
    base: Policy,
    max_wrong: f64,
) -> Result<Calibration, MatchError> {
    let samples = samples(matcher, semantic)?;
    Ok(choose(
        &samples,
        matcher.entries().len(),
        semantic,
        base,
        max_wrong,
    ))
}

/// Both policies of a bot calibrated on `matcher` in place: words only, and with the model
/// when there is one. Returns what was chosen for each ("lexical", "semantic").
pub fn calibrate_policies(
    matcher: &Matcher,
    policies: &mut Policies,
    max_wrong: f64,
) -> Result<Vec<(&'static str, Calibration)>, MatchError> {
    let mut chosen = Vec::new();
    for (name, semantic) in [("lexical", false), ("semantic", true)] {
        if semantic && !matcher.has_model() {
            continue;
        }
        let slot = if semantic {
            &mut policies.semantic
        } else {
            &mut policies.lexical
        };
        let c = calibrate(matcher, semantic, *slot, max_wrong)?;
        *slot = c.policy;
        chosen.push((name, c));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::kb::Entry;

    fn entry(id: &str, questions: &[&str]) -> Entry {
        Entry {
            id: id.into(),
            questions: questions.iter().map(|q| q.to_string()).collect(),
            answer: format!("answer {id}"),
            ..Default::default()
        }
    }

    #[test]
    fn a_tiny_knowledge_base_keeps_the_given_policy_and_says_so() {
        let m = Matcher::build(
            vec![entry("a", &["how do I pay", "payment methods"])],
            None,
            &|_| {},
        )
        .unwrap();
        let c = calibrate(&m, false, Policy::LEXICAL, 0.03).unwrap();
        assert_eq!(c.policy, Policy::LEXICAL);
        assert!(c.note.unwrap().contains("too small"));
    }

    /// Scores where answering is safe above 0.5 on this knowledge base but not on another:
    /// the chosen threshold follows the data.
    fn sample(first: (usize, f32), second: (usize, f32), expect: Option<usize>) -> Sample {
        use crate::bot::matcher::Candidate;
        let c = |(entry, s): (usize, f32)| Candidate {
            entry,
            lexical: 0.0,
            semantic: vec![s],
            centroid: s,
        };
        Sample {
            scored: Scored {
                candidates: vec![c(first), c(second)],
                semantic: true,
            },
            expect,
            off_topic: false,
        }
    }

    fn chosen(shift: f32) -> Policy {
        let mut s = Vec::new();
        for i in 0..100 {
            let x = i as f32 / 100.0;
            // In scope: right entry on top, scores spread from 0.6 to 1.0.
            s.push(sample(
                (i % 7, 0.6 + 0.4 * x + shift),
                (9, 0.2 + shift),
                Some(i % 7),
            ));
            // Out of scope: best scores spread from 0.3 to 0.7.
            s.push(sample(
                (i % 7, 0.3 + 0.4 * x + shift),
                (8, 0.2 + shift),
                None,
            ));
        }
        let base = Policy {
            lexical_weight: 0.0,
            top_k: 1,
            ..Policy::SEMANTIC
        };
        choose(&s, 10, true, base, 0.03).policy
    }

    #[test]
    fn entries_with_a_clear_centre_are_scored_by_it() {
        use crate::bot::matcher::Candidate;
        let c = |entry, best: f32, centroid| Candidate {
            entry,
            lexical: 0.0,
            semantic: vec![best],
            centroid,
        };
        let sample = |candidates, expect| Sample {
            scored: Scored {
                candidates,
                semantic: true,
            },
            expect,
            off_topic: false,
        };
        let mut s = Vec::new();
        for i in 0..100 {
            // In scope: one variant of a neighbour (9) is closer than any of the right
            // entry's, but the right entry's centre is far closer than the neighbour's.
            s.push(sample(
                vec![c(i % 7, 0.8, 0.9), c(9, 0.85, 0.6)],
                Some(i % 7),
            ));
            // Out of scope: near a variant, far from every centre.
            s.push(sample(vec![c(i % 7, 0.85, 0.6), c(8, 0.5, 0.5)], None));
        }
        let base = Policy {
            lexical_weight: 0.0,
            top_k: 1,
            ..Policy::SEMANTIC
        };
        let c = choose(&s, 10, true, base, 0.03);
        assert!(c.policy.centroid_weight > 0.0, "{:?}", c.policy);
        assert!(c.in_scope_accuracy > 0.99, "{c:?}");
        // Variants alone would answer the neighbour every time.
        let variants_only = Policy {
            centroid_weight: 0.0,
            ..c.policy
        };
        assert_eq!(variants_only.rank(&s[0].scored)[0].0, 9);
    }

    #[test]
    fn thresholds_move_with_the_knowledge_base() {
        let low = chosen(0.0);
        let high = chosen(0.2);
        // 3% wrong of all, weighed half and half: at most 6% of out of scope answered, so
        // the threshold sits near the top of the out-of-scope scores.
        assert!((0.66..=0.72).contains(&low.answer), "{low:?}");
        assert!(
            (high.answer - low.answer - 0.2).abs() < 0.03,
            "{low:?} {high:?}"
        );
        assert!(low.clarify <= low.answer);
    }
}
