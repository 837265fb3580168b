//! How likely the best entry is the right answer, learned from the knowledge base itself.
//!
//! A single threshold on a single score (with a margin over the runner-up) throws away most
//! of what the scores say: a paraphrase of an entry tends to be near its best variant *and*
//! its centre *and* to lead on every score, while a question about something the knowledge
//! base does not cover tends to be near one lucky variant of a close topic and to be
//! contested on the others. So the calibration (`bot::calibrate`) fits a logistic regression
//! over a few such features on its simulated questions (held-out variants answered right are
//! the positives; everything else, the negatives) and then picks the probability above which
//! the bot answers. Nothing here is tuned on any dataset: the weights are fitted per
//! knowledge base, at load, from its own questions.

use serde::Serialize;

use super::matcher::{Policy, Scored};

/// Features of the best entry, in this order (see [`features`]).
pub const FEATURES: usize = 9;
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "score",
    "score_margin",
    "variant",
    "variant_margin",
    "centroid",
    "centroid_margin",
    "top3",
    "words",
    "words_margin",
];

/// A fitted logistic model and the probability at which the bot answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Confidence {
    /// Per feature: subtracted, then divided by `scale`, before the weights apply.
    pub mean: [f32; FEATURES],
    pub scale: [f32; FEATURES],
    pub weights: [f32; FEATURES],
    pub bias: f32,
    /// Answer when the probability is at least this.
    pub answer: f32,
}

/// The best entry under `policy`'s ranking and its features, `None` when nothing is ranked:
/// its combined score and lead over the runner-up; its best variant cosine, centroid
/// cosine, mean of its best three variants, and words score, each with its lead over the
/// best other candidate on that same score (negative when another entry leads there).
pub fn features(policy: &Policy, scored: &Scored) -> Option<(usize, [f32; FEATURES])> {
    features_of(&policy.rank(scored), scored)
}

/// [`features`] of a ranking already made.
pub fn features_of(ranked: &[(usize, f32)], scored: &Scored) -> Option<(usize, [f32; FEATURES])> {
    let &(top, s1) = ranked.first()?;
    let s2 = ranked.get(1).map_or(0.0, |r| r.1);
    let own = scored.candidates.iter().find(|c| c.entry == top)?;
    let lead = |f: &dyn Fn(&super::matcher::Candidate) -> f32| {
        let best_other = scored
            .candidates
            .iter()
            .filter(|c| c.entry != top)
            .map(f)
            .fold(0.0f32, f32::max);
        (f(own), f(own) - best_other)
    };
    let (variant, variant_margin) = lead(&|c| c.semantic.first().copied().unwrap_or(0.0));
    let (centroid, centroid_margin) = lead(&|c| c.centroid);
    let (words, words_margin) = lead(&|c| c.lexical.min(1.0));
    let k = own.semantic.len().min(3);
    let top3 = if k == 0 {
        0.0
    } else {
        own.semantic[..k].iter().sum::<f32>() / k as f32
    };
    Some((
        top,
        [
            s1,
            s1 - s2,
            variant,
            variant_margin,
            centroid,
            centroid_margin,
            top3,
            words,
            words_margin,
        ],
    ))
}

impl Confidence {
    /// The probability that the entry these features describe is the right answer.
    pub fn probability(&self, x: &[f32; FEATURES]) -> f32 {
        let z = self.bias
            + x.iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((x, m), s), w)| w * (x - m) / s)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }

    /// Fits the model to labelled, weighted examples (Newton's method on the weighted log
    /// loss with a little L2 so that separable data stays finite). `answer` starts at 0.5.
    pub fn fit(xs: &[[f32; FEATURES]], positive: &[bool], weight: &[f64]) -> Confidence {
        const N: usize = FEATURES + 1;
        const L2: f64 = 1e-3;
        let total: f64 = weight.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut mean = [0.0f32; FEATURES];
        let mut scale = [1.0f32; FEATURES];
        for i in 0..FEATURES {
            let m = xs
                .iter()
                .zip(weight)
                .map(|(x, w)| x[i] as f64 * w)
                .sum::<f64>()
                / total;
            let v = xs
                .iter()
                .zip(weight)
                .map(|(x, w)| (x[i] as f64 - m).powi(2) * w)
                .sum::<f64>()
                / total;
            mean[i] = m as f32;
            scale[i] = (v.sqrt() as f32).max(1e-4);
        }
        let row = |x: &[f32; FEATURES]| {
            let mut z = [1.0f64; N];
            for i in 0..FEATURES {
                z[i] = ((x[i] - mean[i]) / scale[i]) as f64;
            }
            z
        };
        let rows: Vec<[f64; N]> = xs.iter().map(row).collect();
        let mut b = [0.0f64; N];
        for _ in 0..50 {
            let mut grad = [0.0f64; N];
            let mut hess = [[0.0f64; N]; N];
            for ((z, &y), &w) in rows.iter().zip(positive).zip(weight) {
                let w = w / total;
                let p = 1.0 / (1.0 + (-dot(&b, z)).exp());
                let r = p - f64::from(u8::from(y));
                let s = (p * (1.0 - p)).max(1e-9);
                for i in 0..N {
                    grad[i] += w * r * z[i];
                    for j in 0..N {
                        hess[i][j] += w * s * z[i] * z[j];
                    }
                }
            }
            for i in 0..N {
                grad[i] += L2 * b[i];
                hess[i][i] += L2;
            }
            let Some(step) = solve(hess, grad) else { break };
            let mut moved = 0.0f64;
            for i in 0..N {
                b[i] -= step[i];
                moved = moved.max(step[i].abs());
            }
            if moved < 1e-6 {
                break;
            }
        }
        let mut weights = [0.0f32; FEATURES];
        for i in 0..FEATURES {
            weights[i] = b[i] as f32;
        }
        Confidence {
            mean,
            scale,
            weights,
            bias: b[FEATURES] as f32,
            answer: 0.5,
        }
    }
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..N {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0f64; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::matcher::Candidate;

    fn x(score: f32, margin: f32) -> [f32; FEATURES] {
        let mut x = [0.0; FEATURES];
        x[0] = score;
        x[1] = margin;
        x
    }

    #[test]
    fn solves_a_small_system() {
        let a = [[2.0, 1.0], [1.0, 3.0]];
        let s = solve(a, [3.0, 5.0]).unwrap();
        assert!(
            (s[0] - 0.8).abs() < 1e-9 && (s[1] - 1.4).abs() < 1e-9,
            "{s:?}"
        );
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }

    /// Right answers sit high with a clear lead; wrong ones either low, or high with no
    /// lead (a lucky variant of a close topic). One score alone cannot split them; the
    /// fitted model does.
    #[test]
    fn learns_that_a_lead_matters_as_much_as_the_score() {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..200 {
            let t = i as f32 / 200.0;
            xs.push(x(0.85 + 0.1 * t, 0.05 + 0.05 * t));
            ys.push(true);
            xs.push(x(0.8 + 0.15 * t, 0.01 * t));
            ys.push(false);
            xs.push(x(0.5 + 0.2 * t, 0.03 + 0.03 * t));
            ys.push(false);
        }
        let w = vec![1.0; xs.len()];
        let c = Confidence::fit(&xs, &ys, &w);
        let right = xs.iter().zip(&ys).filter(|(_, y)| **y);
        let wrong = xs.iter().zip(&ys).filter(|(_, y)| !**y);
        let min_right = right.map(|(x, _)| c.probability(x)).fold(1.0, f32::min);
        let max_wrong = wrong.map(|(x, _)| c.probability(x)).fold(0.0, f32::max);
        assert!(min_right > max_wrong, "{min_right} {max_wrong}");
        assert!(c.weights[0] > 0.0 && c.weights[1] > 0.0, "{c:?}");
    }

    #[test]
    fn weights_tip_the_balance() {
        // The same overlapping points; weighing the negatives up lowers every probability.
        let xs: Vec<_> = (0..100).map(|i| x(i as f32 / 100.0, 0.0)).collect();
        let ys: Vec<_> = (0..100).map(|i| (i * 7) % 10 < 5).collect();
        let even = Confidence::fit(&xs, &ys, &vec![1.0; 100]);
        let heavy: Vec<f64> = ys.iter().map(|&y| if y { 1.0 } else { 4.0 }).collect();
        let cautious = Confidence::fit(&xs, &ys, &heavy);
        for x in &xs {
            assert!(cautious.probability(x) < even.probability(x));
        }
    }

    #[test]
    fn features_describe_the_best_entry_against_the_others() {
        let c = |entry, lexical, semantic: &[f32], centroid| Candidate {
            entry,
            lexical,
            semantic: semantic.to_vec(),
            centroid,
        };
        let scored = Scored {
            candidates: vec![
                c(4, 0.2, &[0.9, 0.8, 0.7, 0.1], 0.85),
                c(7, 0.6, &[0.7], 0.88),
            ],
            semantic: true,
        };
        let policy = Policy {
            answer: 0.5,
            margin: 0.0,
            clarify: 0.4,
            lexical_weight: 0.0,
            top_k: 1,
            centroid_weight: 0.0,
            confidence: None,
        };
        let (top, f) = features(&policy, &scored).unwrap();
        assert_eq!(top, 4);
        let want = [0.9, 0.2, 0.9, 0.2, 0.85, -0.03, 0.8, 0.2, -0.4];
        for (i, (a, b)) in f.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-6, "{}: {a} {b}", FEATURE_NAMES[i]);
        }
        assert!(features(&policy, &Scored::default()).is_none());
    }
}
