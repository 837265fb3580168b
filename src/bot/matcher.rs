//! Hybrid matching: lexical (BM25) and, with a model, semantic (cosine) scores per
//! knowledge-base entry, and the policy that turns them into answer / clarify / no match.
//!
//! Scoring and deciding are separate on purpose: [`Matcher::score`] does the expensive part
//! once and returns raw features per candidate entry; [`Policy::decide`] is cheap, so the
//! evaluation can sweep thresholds over one scoring pass.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::confidence::{Confidence, features_of};
use super::embed::{EmbedError, Embedder, VectorCache, dot};
use super::kb::Entry;
use super::lexical::{Lexical, LexicalError};

/// Semantic features kept per candidate: its best variant cosines, best first.
pub const TOP_VARIANTS: usize = 5;
/// Candidates taken from each retriever before combining.
const CANDIDATES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error(transparent)]
    Lexical(#[from] LexicalError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One entry that might be what the customer means.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub entry: usize,
    /// Best variant's BM25 as a share of what the query could score (about 0..1).
    pub lexical: f32,
    /// Cosines of the entry's best variants, best first (empty without a model).
    pub semantic: Vec<f32>,
    /// Cosine with the entry's centroid, the mean of its variants' vectors (0 without a
    /// model). An entry with many variants is a region, not a few points: its centre tells
    /// a paraphrase of the whole from a lucky hit on one variant.
    pub centroid: f32,
}

#[derive(Debug, Clone, Default)]
pub struct Scored {
    pub candidates: Vec<Candidate>,
    /// Whether the model scored this text (it has one, and understands the language).
    pub semantic: bool,
}

struct Semantic {
    embedder: Arc<Embedder>,
    /// Row-major: one normalised vector per variant.
    vectors: Vec<f32>,
    /// Row-major: per entry, the sum of its variants' vectors (its centroid, unnormalised).
    sums: Vec<f32>,
}

pub struct Matcher {
    /// Languages the model understands ("en", "zh"); other texts are matched by words.
    model_languages: Vec<String>,
    entries: Vec<Entry>,
    /// Variants are stored entry by entry: entry `e` has variants `first[e]..first[e + 1]`.
    variant_entry: Vec<usize>,
    first: Vec<usize>,
    variant_text: Vec<String>,
    /// Per entry: whether it is written in Chinese (its first question has CJK).
    entry_cjk: Vec<bool>,
    lexical: Lexical,
    semantic: Option<Semantic>,
}

impl Matcher {
    /// Indexes every question variant; with a model, embeds them (through `cache`).
    pub fn build(
        entries: Vec<Entry>,
        model: Option<(Arc<Embedder>, &dyn VectorCache)>,
        progress: &dyn Fn(usize),
    ) -> Result<Matcher, MatchError> {
        let mut variant_entry = Vec::new();
        let mut texts = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            for q in e.questions.iter().filter(|q| !q.trim().is_empty()) {
                variant_entry.push(i);
                texts.push(q.as_str());
            }
        }
        let lexical = Lexical::build(
            variant_entry
                .iter()
                .zip(&texts)
                .map(|(&e, &t)| (e as u32, t)),
        )?;
        let semantic = match model {
            Some((embedder, cache)) => {
                let vectors = embedder.embed_all(&texts, cache, progress)?;
                let dim = embedder.dim();
                let mut sums = vec![0.0f32; entries.len() * dim];
                for (row, &e) in vectors.chunks_exact(dim).zip(&variant_entry) {
                    for (s, x) in sums[e * dim..(e + 1) * dim].iter_mut().zip(row) {
                        *s += x;
                    }
                }
                Some(Semantic {
                    embedder,
                    vectors,
                    sums,
                })
            }
            None => None,
        };
        let variant_text = texts.iter().map(|t| t.to_string()).collect();
        let mut first = vec![0; entries.len() + 1];
        for &e in &variant_entry {
            first[e + 1] += 1;
        }
        for e in 0..entries.len() {
            first[e + 1] += first[e];
        }
        let entry_cjk = entries
            .iter()
            .map(|e| e.questions.first().is_some_and(|q| super::text::has_cjk(q)))
            .collect();
        Ok(Matcher {
            model_languages: vec!["en".into()],
            entries,
            variant_entry,
            first,
            variant_text,
            entry_cjk,
            lexical,
            semantic,
        })
    }

    /// Languages the model understands: all-MiniLM-L6-v2 knows English only, and its
    /// cosines between Chinese texts are noise; a multilingual model knows both.
    pub fn with_model_languages(mut self, languages: &[String]) -> Matcher {
        self.model_languages = languages.to_vec();
        self
    }

    fn understands(&self, text: &str) -> bool {
        let lang = if super::text::has_cjk(text) {
            "zh"
        } else {
            "en"
        };
        self.model_languages.iter().any(|l| l == lang)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn variants(&self) -> usize {
        self.variant_entry.len()
    }

    pub fn has_model(&self) -> bool {
        self.semantic.is_some()
    }

    pub fn model_id(&self) -> Option<&str> {
        self.semantic.as_ref().map(|s| s.embedder.id())
    }

    /// Raw features of the likeliest entries for `text`.
    pub fn score(&self, text: &str) -> Result<Scored, MatchError> {
        let query = self.query_vector(text)?;
        self.score_without(text, query.as_deref(), &|_| false)
    }

    /// The vector of `text` when meaning is used for it (a model that knows its language).
    pub fn query_vector(&self, text: &str) -> Result<Option<Vec<f32>>, MatchError> {
        match self.semantic.as_ref().filter(|_| self.understands(text)) {
            Some(sem) => Ok(Some(sem.embedder.embed_one(text)?)),
            None => Ok(None),
        }
    }

    /// The stored vector of variant `v` (with a model).
    pub fn variant_vector(&self, v: usize) -> Option<&[f32]> {
        let sem = self.semantic.as_ref()?;
        let dim = sem.embedder.dim();
        sem.vectors.get(v * dim..(v + 1) * dim)
    }

    /// The entry of variant `v`, and its text.
    pub fn variant(&self, v: usize) -> (usize, &str) {
        let e = self.variant_entry[v];
        (e, self.variant_text[v].as_str())
    }

    /// Whether meaning is used for `text` (a model that knows its language).
    pub fn semantic_for(&self, text: &str) -> bool {
        self.semantic.is_some() && self.understands(text)
    }

    /// [`Matcher::score`] with the text's vector given (`None`: words only), as if the
    /// variants for which `skip` holds were not in the knowledge base.
    ///
    /// A knowledge base with entries in the message's script (Chinese or not) answers from
    /// those only: a Chinese customer gets the Chinese entry, not its English twin.
    pub fn score_without(
        &self,
        text: &str,
        query: Option<&[f32]>,
        skip: &dyn Fn(usize) -> bool,
    ) -> Result<Scored, MatchError> {
        let cjk = super::text::has_cjk(text);
        let own_script = self.entry_cjk.contains(&cjk);
        let other = |e: usize| own_script && self.entry_cjk[e] != cjk;
        let skip = &|v: usize| skip(v) || other(self.variant_entry[v]);
        let lexical = self.lexical.score_without(text, CANDIDATES, skip)?;
        let (Some(sem), Some(query)) = (self.semantic.as_ref(), query) else {
            let candidates = lexical
                .into_iter()
                .map(|(entry, lexical)| Candidate {
                    entry: entry as usize,
                    lexical,
                    semantic: Vec::new(),
                    centroid: 0.0,
                })
                .collect();
            return Ok(Scored {
                candidates,
                semantic: false,
            });
        };
        let dim = query.len();
        // Per entry, its best few variant cosines.
        let mut best = vec![[f32::NEG_INFINITY; TOP_VARIANTS]; self.entries.len()];
        for (v, (row, &entry)) in sem
            .vectors
            .chunks_exact(dim)
            .zip(&self.variant_entry)
            .enumerate()
        {
            let s = dot(row, query);
            let slots = &mut best[entry];
            if s > slots[TOP_VARIANTS - 1] && !skip(v) {
                let at = slots
                    .iter()
                    .position(|&b| s > b)
                    .unwrap_or(TOP_VARIANTS - 1);
                slots.copy_within(at..TOP_VARIANTS - 1, at + 1);
                slots[at] = s;
            }
        }
        let mut order: Vec<usize> = (0..self.entries.len())
            .filter(|&e| best[e][0].is_finite())
            .collect();
        order.sort_by(|&a, &b| best[b][0].total_cmp(&best[a][0]));
        order.truncate(CANDIDATES);
        for &(entry, _) in &lexical {
            if !order.contains(&(entry as usize)) {
                order.push(entry as usize);
            }
        }
        let candidates = order
            .into_iter()
            .map(|entry| Candidate {
                entry,
                lexical: lexical
                    .iter()
                    .find(|(e, _)| *e as usize == entry)
                    .map_or(0.0, |(_, s)| *s),
                semantic: best[entry]
                    .iter()
                    .copied()
                    .filter(|s| s.is_finite())
                    .collect(),
                centroid: centroid_cosine(
                    &sem.sums[entry * dim..(entry + 1) * dim],
                    &sem.vectors,
                    self.first[entry]..self.first[entry + 1],
                    query,
                    skip,
                ),
            })
            .collect();
        Ok(Scored {
            candidates,
            semantic: true,
        })
    }
}

/// Cosine of `query` with the centroid of one entry's `variants` (rows of `vectors`, summed
/// in `sum`), leaving out those for which `skip` holds (0 when none is left).
fn centroid_cosine(
    sum: &[f32],
    vectors: &[f32],
    variants: std::ops::Range<usize>,
    query: &[f32],
    skip: &dyn Fn(usize) -> bool,
) -> f32 {
    let dim = query.len();
    let mut sum = std::borrow::Cow::Borrowed(sum);
    let mut left = variants.len();
    for v in variants {
        if skip(v) {
            left -= 1;
            let row = &vectors[v * dim..(v + 1) * dim];
            for (s, x) in sum.to_mut().iter_mut().zip(row) {
                *s -= x;
            }
        }
    }
    let norm = dot(&sum, &sum).sqrt();
    if left == 0 || norm <= f32::EPSILON {
        return 0.0;
    }
    dot(&sum, query) / norm
}

/// How scores become decisions. Two sets live in the config: one for when a model is
/// loaded, one for lexical-only matching.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Answer when the best entry scores at least this...
    pub answer: f32,
    /// ...and leads the runner-up by at least this.
    pub margin: f32,
    /// Between `clarify` and `answer` (or without the margin): ask which entry is meant.
    /// Below: no match.
    pub clarify: f32,
    /// Share of the lexical score in the combined score (0 = semantic only). Ignored
    /// without a model.
    #[serde(default)]
    pub lexical_weight: f32,
    /// An entry's semantic score is the mean of its best `top_k` variant cosines...
    #[serde(default = "one")]
    pub top_k: usize,
    /// ...blended with the cosine to its centroid at this share (0 = variants only).
    #[serde(default)]
    pub centroid_weight: f32,
    /// Learned by the calibration: when set, the bot answers when the probability that the
    /// best entry is right reaches its threshold, instead of `answer` and `margin`.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

fn one() -> usize {
    1
}

impl Policy {
    /// Tuned on the CLINC150 dev split with all-MiniLM-L6-v2 and the full knowledge base
    /// (`switchboard kb eval --sweep`): the most accurate setting that keeps wrong answers
    /// under 5% and declines most out-of-scope questions.
    pub const SEMANTIC: Policy = Policy {
        answer: 0.46,
        margin: 0.02,
        clarify: 0.32,
        lexical_weight: 0.2,
        top_k: 5,
        centroid_weight: 0.0,
        confidence: None,
    };
    /// Tuned on the same split, lexical only: the lead over the runner-up is what tells;
    /// answers far less, so that it is rarely wrong.
    pub const LEXICAL: Policy = Policy {
        answer: 0.3,
        margin: 0.1,
        clarify: 0.2,
        lexical_weight: 1.0,
        top_k: 1,
        centroid_weight: 0.0,
        confidence: None,
    };

    /// Combined score per candidate, best first.
    pub fn rank(&self, scored: &Scored) -> Vec<(usize, f32)> {
        let mut out: Vec<(usize, f32)> = scored
            .candidates
            .iter()
            .map(|c| {
                let lexical = c.lexical.min(1.0);
                let score = if c.semantic.is_empty() {
                    lexical
                } else {
                    let k = self.top_k.clamp(1, c.semantic.len());
                    let variants = c.semantic[..k].iter().sum::<f32>() / k as f32;
                    let sem =
                        (1.0 - self.centroid_weight) * variants + self.centroid_weight * c.centroid;
                    (1.0 - self.lexical_weight) * sem + self.lexical_weight * lexical
                };
                (c.entry, score)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    pub fn decide(&self, scored: &Scored) -> Verdict {
        let ranked = self.rank(scored);
        let Some(&(top, s1)) = ranked.first() else {
            return Verdict::NoMatch { best: None };
        };
        let s2 = ranked.get(1).map_or(0.0, |r| r.1);
        let answered = match &self.confidence {
            Some(c) => {
                features_of(&ranked, scored).is_some_and(|(_, x)| c.probability(&x) >= c.answer)
            }
            None => s1 >= self.answer && s1 - s2 >= self.margin,
        };
        if answered {
            return Verdict::Answer {
                entry: top,
                score: s1,
                runner_up: s2,
            };
        }
        if s1 >= self.clarify {
            let options = ranked
                .iter()
                .take(3)
                .filter(|r| r.1 >= self.clarify && s1 - r.1 < 0.1_f32.max(self.margin * 2.0))
                .copied()
                .collect();
            return Verdict::Clarify { options };
        }
        Verdict::NoMatch {
            best: Some((top, s1)),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.confidence {
            Some(c) => write!(f, "answer when p(right) >= {:.3} (learned)", c.answer)?,
            None => write!(
                f,
                "answer >= {:.3}, margin >= {:.3}",
                self.answer, self.margin
            )?,
        }
        write!(
            f,
            ", clarify >= {:.3}, lexical_weight {:.1}, top_k {}, centroid_weight {:.1}",
            self.clarify, self.lexical_weight, self.top_k, self.centroid_weight
        )
    }
}

/// The two policies of a bot: with the model's scores, and with words only (no model, or a
/// language the model does not know).
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub semantic: Policy,
    pub lexical: Policy,
}

impl Policies {
    pub fn for_scores(&self, scored: &Scored) -> &Policy {
        if scored.semantic {
            &self.semantic
        } else {
            &self.lexical
        }
    }

    pub fn decide(&self, scored: &Scored) -> Verdict {
        self.for_scores(scored).decide(scored)
    }

    pub fn rank(&self, scored: &Scored) -> Vec<(usize, f32)> {
        self.for_scores(scored).rank(scored)
    }
}

/// What the policy concluded for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Answer {
        entry: usize,
        score: f32,
        runner_up: f32,
    },
    /// Entries (with scores) the customer may mean, best first.
    Clarify {
        options: Vec<(usize, f32)>,
    },
    NoMatch {
        best: Option<(usize, f32)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(c: &[(usize, f32, &[f32])]) -> Scored {
        Scored {
            candidates: c
                .iter()
                .map(|&(entry, lexical, sem)| Candidate {
                    entry,
                    lexical,
                    semantic: sem.to_vec(),
                    centroid: sem.first().copied().unwrap_or(0.0),
                })
                .collect(),
            semantic: true,
        }
    }

    const P: Policy = Policy {
        answer: 0.6,
        margin: 0.05,
        clarify: 0.4,
        lexical_weight: 0.0,
        top_k: 2,
        centroid_weight: 0.0,
        confidence: None,
    };

    #[test]
    fn answers_clarifies_or_declines_on_score_and_margin() {
        let s = scored(&[(1, 0.0, &[0.9, 0.7]), (2, 0.0, &[0.5])]);
        assert!(matches!(P.decide(&s), Verdict::Answer { entry: 1, .. }));
        // Close runner-up: ask.
        let s = scored(&[(1, 0.0, &[0.8, 0.7]), (2, 0.0, &[0.74])]);
        match P.decide(&s) {
            Verdict::Clarify { options } => {
                assert_eq!(options.iter().map(|o| o.0).collect::<Vec<_>>(), [1, 2])
            }
            other => panic!("{other:?}"),
        }
        // In the band below `answer`.
        let s = scored(&[(1, 0.0, &[0.5, 0.5])]);
        assert!(matches!(P.decide(&s), Verdict::Clarify { .. }));
        let s = scored(&[(1, 0.0, &[0.3])]);
        assert!(matches!(
            P.decide(&s),
            Verdict::NoMatch { best: Some((1, _)) }
        ));
        assert!(matches!(
            P.decide(&Scored::default()),
            Verdict::NoMatch { best: None }
        ));
    }

    #[test]
    fn the_centroid_leaves_out_skipped_variants() {
        // Three variants of one entry in the plane; the query lies along the first.
        let vectors = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
        let sum = [0.0, 1.0];
        let query = [1.0, 0.0];
        // All three: the centre points straight up, at right angles to the query.
        let all = centroid_cosine(&sum, &vectors, 0..3, &query, &|_| false);
        assert!(all.abs() < 1e-6, "{all}");
        // Without the third (pointing away), the centre is at 45 degrees.
        let without = centroid_cosine(&sum, &vectors, 0..3, &query, &|v| v == 2);
        assert!(
            (without - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{without}"
        );
        // Nothing left: no score.
        assert_eq!(
            centroid_cosine(&sum, &vectors, 0..3, &query, &|_| true),
            0.0
        );
    }

    #[test]
    fn centroid_weight_blends_variants_and_centre() {
        let p = Policy {
            top_k: 1,
            centroid_weight: 0.5,
            ..P
        };
        let mut s = scored(&[(1, 0.0, &[0.9]), (2, 0.0, &[0.8])]);
        s.candidates[0].centroid = 0.5;
        s.candidates[1].centroid = 0.8;
        // 0.7 against 0.8: the entry whose centre is near wins over a lucky variant.
        let r = p.rank(&s);
        assert_eq!(r[0].0, 2);
        assert!(
            (r[0].1 - 0.8).abs() < 1e-6 && (r[1].1 - 0.7).abs() < 1e-6,
            "{r:?}"
        );
    }

    #[test]
    fn lexical_weight_mixes_scores() {
        let p = Policy {
            lexical_weight: 0.5,
            ..P
        };
        let r = p.rank(&scored(&[(1, 1.0, &[0.4]), (2, 0.0, &[0.8])]));
        assert_eq!(r[0], (1, 0.7));
        // Without a model the lexical score is the score.
        let r = p.rank(&scored(&[(3, 0.9, &[])]));
        assert_eq!(r[0], (3, 0.9));
    }
}
