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
//! Each held-out question is scored once as if the held-out variants were not there; then
//! ways of ranking (share of words in the score, variants per entry, share of the entry's
//! centroid) are tried on those scores. With the model, each ranking gets a learned
//! confidence (`bot::confidence`: a logistic regression over the best entry's scores and
//! leads, fitted on these samples) and the probability above which it answers; words only,
//! a threshold and a margin over the runner-up. The chosen policy answers as many in-scope
//! questions right as it can while the estimated wrong-answer rate, plus one standard
//! error, stays at or under `max_wrong_rate`. The standard error counts a held-out entry's
//! questions as one observation (they stand or fall together), so a knowledge base with few
//! entries to hold out is answered more carefully, and the best of many policies is not
//! merely the luckiest on the samples. That estimate weighs in scope and
//! out of scope equally, and within out of scope held-out entries and off-topic lines
//! equally: which kind a knowledge base's unanswerable questions are mostly of cannot be
//! told from the knowledge base, and each kind alone misleads on some (an FAQ of close
//! entries overrates the first, an assistant's of broad domains the second). All of it is
//! pure CPU work on stored vectors (the off-topic lines are embedded once): a few seconds
//! for 10,000 variants.

use serde::Serialize;

use super::confidence::{self, Confidence};
use super::matcher::{MatchError, Matcher, Policies, Policy, Scored, Verdict};

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
/// Standard errors added to the wrong-answer estimate before it is held to the budget.
const BOUND_SIGMAS: f64 = 1.0;

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
    /// For a question of an entry held out whole: that entry. Its questions stand or fall
    /// together, so they count as one observation of how unknown topics fare.
    pub held_out: Option<usize>,
}

/// What a calibration chose and what it expects of it.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub policy: Policy,
    /// Estimated on the simulated questions.
    pub in_scope_accuracy: f64,
    pub wrong_answer_rate: f64,
    /// Its parts: in-scope questions answered wrong, questions of held-out entries
    /// answered, off-topic lines answered (each a share of its kind).
    pub in_scope_wrong: f64,
    pub held_out_answered: f64,
    pub off_topic_answered: f64,
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
                held_out: None,
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
                held_out: Some(e),
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
            held_out: None,
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
    /// Variance of the held-out entries' answered share, entries taken as the units.
    hard_variance: f64,
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

impl Counts {
    /// Out of scope, the two kinds weighed as in the wrong-answer estimate.
    fn oos_rate(&self, answered_hard: usize, answered_easy: usize) -> f64 {
        let (_, w_hard, w_easy) = self.weights();
        if w_hard + w_easy == 0.0 {
            return 0.0;
        }
        (w_hard * share(answered_hard, self.hard) + w_easy * share(answered_easy, self.easy))
            / (w_hard + w_easy)
    }

    /// See [`kind_weights`].
    fn weights(&self) -> (f64, f64, f64) {
        kind_weights(self.hard, self.easy)
    }

    /// In scope and out of scope weighed equally.
    fn wrong_rate(&self) -> f64 {
        let (w_in, w_hard, w_easy) = self.weights();
        w_in * share(self.in_wrong, self.in_scope)
            + w_hard * share(self.hard_answered, self.hard)
            + w_easy * share(self.easy_answered, self.easy)
    }

    /// The wrong-answer estimate plus `BOUND_SIGMAS` of its standard error: a policy must
    /// keep this under the budget, so that a knowledge base with few entries to hold out
    /// (whose estimate is rough) is answered more carefully, and picking the best of many
    /// policies does not reward one that was merely lucky on the samples.
    fn wrong_bound(&self) -> f64 {
        let (w_in, w_hard, w_easy) = self.weights();
        let binomial = |k: usize, n: usize| {
            let p = share(k, n);
            if n == 0 {
                0.0
            } else {
                p * (1.0 - p) / n as f64
            }
        };
        let variance = w_in * w_in * binomial(self.in_wrong, self.in_scope)
            + w_hard * w_hard * self.hard_variance
            + w_easy * w_easy * binomial(self.easy_answered, self.easy);
        self.wrong_rate() + BOUND_SIGMAS * variance.sqrt()
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

/// Counts with the samples for which `answered` holds answered, and the others above
/// `clarify` offered options.
fn count(
    samples: &[Sample],
    tops: &[Top],
    answered: &dyn Fn(usize) -> bool,
    margin: f32,
    clarify: f32,
) -> Counts {
    let mut c = Counts::default();
    // Per held-out entry: questions asked, answered.
    let mut groups: std::collections::HashMap<usize, (usize, usize)> = Default::default();
    for (i, (s, t)) in samples.iter().zip(tops).enumerate() {
        let answered = t.entry != usize::MAX && answered(i);
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
                let g = groups
                    .entry(s.held_out.unwrap_or(usize::MAX - i))
                    .or_default();
                g.0 += 1;
                g.1 += usize::from(answered);
            }
        }
    }
    c.hard_variance = cluster_variance(groups.values().copied(), c.hard, c.hard_answered);
    c
}

/// The variance of a share `answered / asked` whose questions come in groups that stand or
/// fall together (the ratio estimator's variance, groups as the units).
fn cluster_variance(
    groups: impl Iterator<Item = (usize, usize)>,
    asked: usize,
    answered: usize,
) -> f64 {
    let p = share(answered, asked);
    let mut n = 0usize;
    let mut spread = 0.0;
    for (asked_g, answered_g) in groups {
        n += 1;
        spread += (answered_g as f64 - p * asked_g as f64).powi(2);
    }
    if n < 2 {
        return 0.0;
    }
    n as f64 / (n - 1) as f64 * spread / (asked as f64).powi(2)
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
            in_scope_wrong: 0.0,
            held_out_answered: 0.0,
            off_topic_answered: 0.0,
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
    let shapes = weights.iter().flat_map(|&w| {
        top_ks
            .iter()
            .flat_map(move |&k| centroids.iter().map(move |&c| (w, k, c)))
    });
    // (accuracy, policy): the most answered right within the wrong-answer budget.
    let mut best: Option<(f64, Policy)> = None;
    let mut consider = |policy: Policy, c: &Counts| {
        if c.wrong_bound() > max_wrong {
            return;
        }
        let accuracy = share(c.correct, c.in_scope);
        if best.as_ref().is_none_or(|(a, _)| accuracy > *a + 1e-9) {
            best = Some((accuracy, policy));
        }
    };
    for (lexical_weight, top_k, centroid_weight) in shapes {
        let shape = Policy {
            lexical_weight,
            top_k,
            centroid_weight,
            confidence: None,
            ..base
        };
        let tops = tops(samples, &shape);
        if semantic {
            // A learned confidence over all the scores; then its answer threshold.
            let Some(fitted) = fit_confidence(samples, &shape) else {
                continue;
            };
            let p: Vec<f32> = samples
                .iter()
                .map(|s| {
                    confidence::features(&shape, &s.scored)
                        .map_or(0.0, |(_, x)| fitted.probability(&x))
                })
                .collect();
            for level in grid(&p) {
                let c = count(samples, &tops, &|i| p[i] >= level, 0.0, f32::INFINITY);
                let policy = Policy {
                    answer: answered_from(&tops, &|i| p[i] >= level),
                    margin: 0.0,
                    confidence: Some(Confidence {
                        answer: level,
                        ..fitted
                    }),
                    ..shape
                };
                consider(policy, &c);
            }
        } else {
            // Words only: a threshold and a lead over the runner-up.
            let first: Vec<f32> = tops.iter().map(|t| t.first).collect();
            for &margin in &MARGINS {
                for answer in grid(&first) {
                    let answered = |i: usize| {
                        let t = &tops[i];
                        t.first >= answer && t.first - t.second >= margin
                    };
                    let c = count(samples, &tops, &answered, margin, f32::INFINITY);
                    let policy = Policy {
                        answer,
                        margin,
                        ..shape
                    };
                    consider(policy, &c);
                }
            }
        }
    }
    let Some((_, mut policy)) = best else {
        // Nothing keeps wrong answers low enough: never answer, always ask.
        return Calibration {
            policy: Policy {
                answer: f32::INFINITY,
                ..base
            },
            in_scope_accuracy: 0.0,
            wrong_answer_rate: 0.0,
            in_scope_wrong: 0.0,
            held_out_answered: 0.0,
            off_topic_answered: 0.0,
            clarify_hit_rate: 0.0,
            in_scope_samples: in_scope,
            out_of_scope_samples: oos,
            note: Some("no threshold keeps wrong answers low enough: the bot only asks".into()),
        };
    };
    // The lowest clarify threshold that answers or offers options to few out-of-scope
    // questions.
    let tops = tops(samples, &policy);
    let answered: Vec<bool> = samples
        .iter()
        .map(|s| matches!(policy.decide(&s.scored), Verdict::Answer { .. }))
        .collect();
    let answered = |i: usize| answered[i];
    let mut levels: Vec<f32> = tops
        .iter()
        .enumerate()
        .filter(|&(i, _)| !answered(i))
        .map(|(_, t)| t.first)
        .collect();
    levels.sort_by(f32::total_cmp);
    policy.clarify = policy.answer;
    for &clarify in &levels {
        let c = count(samples, &tops, &answered, policy.margin, clarify);
        if c.clarified_oos() <= MAX_OOS_CLARIFIED {
            policy.clarify = clarify;
            break;
        }
    }
    let c = count(samples, &tops, &answered, policy.margin, policy.clarify);
    Calibration {
        policy,
        in_scope_accuracy: share(c.correct, c.in_scope),
        wrong_answer_rate: c.wrong_rate(),
        in_scope_wrong: share(c.in_wrong, c.in_scope),
        held_out_answered: share(c.hard_answered, c.hard),
        off_topic_answered: share(c.easy_answered, c.easy),
        clarify_hit_rate: share(c.clarify_hits, c.in_scope),
        in_scope_samples: in_scope,
        out_of_scope_samples: oos,
        note: None,
    }
}

const MARGINS: [f32; 11] = [
    0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15,
];

/// About a hundred levels spread over the distinct values of `scores`, lowest first.
fn grid(scores: &[f32]) -> Vec<f32> {
    let mut levels = scores.to_vec();
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    if levels.is_empty() {
        return Vec::new();
    }
    let mut grid: Vec<f32> = (0..=100)
        .map(|i| levels[(levels.len() - 1) * i / 100])
        .collect();
    grid.dedup();
    grid
}

/// The lowest combined score among the samples answered: the score from which the bot may
/// answer at all (what flags a proposed question as a near duplicate).
fn answered_from(tops: &[Top], answered: &dyn Fn(usize) -> bool) -> f32 {
    tops.iter()
        .enumerate()
        .filter(|&(i, t)| t.entry != usize::MAX && answered(i))
        .map(|(_, t)| t.first)
        .fold(f32::INFINITY, f32::min)
}

/// The weights of in-scope questions, questions of held-out entries and off-topic lines in
/// the wrong-answer estimate, given how many of the last two there are: in scope and out of
/// scope equally, and within out of scope the two kinds at `HARD_SHARE` (those present).
fn kind_weights(hard: usize, easy: usize) -> (f64, f64, f64) {
    match (hard, easy) {
        (0, 0) => (1.0, 0.0, 0.0),
        (0, _) => (0.5, 0.0, 0.5),
        (_, 0) => (0.5, 0.5, 0.0),
        _ => (0.5, 0.5 * HARD_SHARE, 0.5 * (1.0 - HARD_SHARE)),
    }
}

/// The logistic confidence fitted on the samples under one ranking: positives are in-scope
/// questions whose best entry is right, everything else negative, weighed as the
/// wrong-answer estimate weighs them (in scope and out of scope half each; within out of
/// scope, held-out entries and off-topic lines half each).
fn fit_confidence(samples: &[Sample], shape: &Policy) -> Option<Confidence> {
    let mut xs = Vec::with_capacity(samples.len());
    let mut positive = Vec::with_capacity(samples.len());
    let mut kind = Vec::with_capacity(samples.len());
    for s in samples {
        let Some((top, x)) = confidence::features(shape, &s.scored) else {
            continue;
        };
        xs.push(x);
        positive.push(s.expect == Some(top));
        kind.push(match (s.expect, s.off_topic) {
            (Some(_), _) => 0,
            (None, false) => 1,
            (None, true) => 2,
        });
    }
    let n = |k: usize| kind.iter().filter(|&&x| x == k).count();
    let (inside, hard, easy) = (n(0), n(1), n(2));
    if inside == 0 || !positive.contains(&true) || !positive.contains(&false) {
        return None;
    }
    let (inside_share, hard_share, easy_share) = kind_weights(hard, easy);
    let weight: Vec<f64> = kind
        .iter()
        .map(|&k| match k {
            0 => inside_share / inside as f64,
            1 => hard_share / hard as f64,
            _ => easy_share / easy as f64,
        })
        .collect();
    Some(Confidence::fit(&xs, &positive, &weight))
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
            held_out: None,
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
            held_out: None,
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

    /// Words-only samples: in scope, the right entry leads with scores spread over
    /// 0.5..1.0; out of scope, questions of held-out entries spread over 0.3..0.8, put in
    /// groups of `per_entry` neighbouring scores (an entry's questions score alike).
    fn grouped(per_entry: usize) -> Vec<Sample> {
        use crate::bot::matcher::Candidate;
        let c = |entry, lexical| Candidate {
            entry,
            lexical,
            semantic: Vec::new(),
            centroid: 0.0,
        };
        let mut s = Vec::new();
        for i in 0..200 {
            let x = i as f32 / 200.0;
            s.push(Sample {
                scored: Scored {
                    candidates: vec![c(i % 7, 0.5 + 0.5 * x), c(9, 0.1)],
                    semantic: false,
                },
                expect: Some(i % 7),
                off_topic: false,
                held_out: None,
            });
            s.push(Sample {
                scored: Scored {
                    candidates: vec![c(i % 7, 0.3 + 0.5 * x), c(9, 0.1)],
                    semantic: false,
                },
                expect: None,
                off_topic: false,
                held_out: Some(100 + i / per_entry),
            });
        }
        s
    }

    #[test]
    fn few_held_out_entries_are_answered_more_carefully() {
        let many = choose(&grouped(2), 120, false, Policy::LEXICAL, 0.03);
        let few = choose(&grouped(40), 10, false, Policy::LEXICAL, 0.03);
        // The same shares answered either way; with five entries to go on, a threshold that
        // looks safe may just be lucky, so the bound asks for more.
        assert!(few.policy.answer > many.policy.answer, "{many:?} {few:?}");
        assert!(few.held_out_answered < many.held_out_answered);
        assert!(few.in_scope_accuracy < many.in_scope_accuracy);
    }

    #[test]
    fn grouped_shares_vary_with_how_alike_the_groups_are() {
        // 4 groups of 10, 20 answered: spread evenly (5 each) or all in two groups.
        let even = cluster_variance([(10, 5); 4].into_iter(), 40, 20);
        let lumped = cluster_variance([(10, 10), (10, 10), (10, 0), (10, 0)].into_iter(), 40, 20);
        assert!(even.abs() < 1e-12, "{even}");
        // Each group is 5 off: 4/3 * 4 * 25 / 1600.
        assert!(
            (lumped - 4.0 / 3.0 * 100.0 / 1600.0).abs() < 1e-12,
            "{lumped}"
        );
        assert_eq!(cluster_variance([(10, 3)].into_iter(), 10, 3), 0.0);
    }

    #[test]
    fn with_the_model_a_learned_confidence_decides() {
        // The semantic samples of `chosen`: the calibration fits a confidence and says at
        // which probability it answers; the policy's `answer` is the lowest score answered.
        let mut s = Vec::new();
        for i in 0..100 {
            let x = i as f32 / 100.0;
            s.push(sample((i % 7, 0.6 + 0.4 * x), (9, 0.2), Some(i % 7)));
            s.push(sample((i % 7, 0.3 + 0.4 * x), (8, 0.2), None));
        }
        let base = Policy {
            lexical_weight: 0.0,
            top_k: 1,
            ..Policy::SEMANTIC
        };
        let c = choose(&s, 10, true, base, 0.03);
        let confidence = c.policy.confidence.expect("a fitted confidence");
        assert!((0.0..=1.0).contains(&confidence.answer), "{confidence:?}");
        assert!(c.in_scope_accuracy > 0.7, "{c:?}");
        assert!(c.wrong_answer_rate <= 0.03, "{c:?}");
        // Answered and declined as the confidence says.
        for x in &s {
            let answered = matches!(c.policy.decide(&x.scored), Verdict::Answer { .. });
            let (_, f) = confidence::features(&c.policy, &x.scored).unwrap();
            assert_eq!(answered, confidence.probability(&f) >= confidence.answer);
        }
    }
}
