//! A SentencePiece unigram tokenizer (XLM-R's, for multilingual-e5), read from a standard
//! `tokenizer.json`.
//!
//! Why not the `tokenizers` crate's own Unigram model: for a 250,000-piece vocabulary it
//! builds a byte trie of hash maps that costs well over 100 MB; this keeps the pieces in one
//! hash map (about 10 MB). The normaliser is still the `tokenizers` crate's, from the same
//! file, so text is normalised exactly as that file says. Segmentation is the unigram
//! Viterbi search: the most probable split into pieces, an unknown character costing the
//! lowest piece score minus 10, as SentencePiece does.

use std::collections::HashMap;

use serde::Deserialize;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{NormalizedString, Normalizer};

/// SentencePiece's word-boundary mark.
const SPACE: char = '\u{2581}';

pub struct Unigram {
    normalizer: Option<NormalizerWrapper>,
    pieces: HashMap<Box<str>, (u32, f32)>,
    unk: u32,
    unk_score: f32,
    longest: usize,
    bos: u32,
    eos: u32,
}

#[derive(Deserialize)]
struct File {
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<serde_json::Value>,
    post_processor: Option<serde_json::Value>,
    model: Model,
}

#[derive(Deserialize)]
struct Model {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    unk_id: Option<u32>,
    /// A list of `[piece, score]` for Unigram (other models have other shapes).
    #[serde(default)]
    vocab: serde_json::Value,
}

impl Unigram {
    /// The tokenizer in `json`, if it is one this type runs exactly: a Unigram model with a
    /// Metaspace pre-tokenizer that prepends the mark and does not split, and `<s> … </s>`
    /// around each text. `Ok(None)` for any other tokenizer (the `tokenizers` crate runs it).
    pub fn from_json(json: &str) -> Result<Option<Unigram>, String> {
        let file: File = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if file.model.kind != "Unigram" {
            return Ok(None);
        }
        let metaspace = file.pre_tokenizer.as_ref().is_some_and(|p| {
            p["type"] == "Metaspace"
                && p["replacement"] == SPACE.to_string()
                && p["prepend_scheme"] == "always"
                && p["split"] == false
        });
        let special = |name: &str| {
            file.post_processor.as_ref().and_then(|p| {
                let ids = &p["special_tokens"][name]["ids"];
                ids.as_array()
                    .filter(|a| a.len() == 1)
                    .and_then(|a| a[0].as_u64())
                    .map(|id| id as u32)
            })
        };
        let (Some(bos), Some(eos)) = (special("<s>"), special("</s>")) else {
            return Ok(None);
        };
        let Some(unk) = file.model.unk_id.filter(|_| metaspace) else {
            return Ok(None);
        };
        let vocab: Vec<(String, f64)> =
            serde_json::from_value(file.model.vocab).map_err(|e| format!("vocab: {e}"))?;
        if vocab.len() > u32::MAX as usize || unk as usize >= vocab.len() {
            return Err("unk_id is outside the vocabulary".into());
        }
        let min = vocab.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let longest = vocab.iter().map(|v| v.0.len()).max().unwrap_or(1);
        let mut pieces = HashMap::with_capacity(vocab.len());
        for (id, (piece, score)) in vocab.into_iter().enumerate() {
            // The first of duplicate pieces wins, as in SentencePiece.
            pieces
                .entry(piece.into_boxed_str())
                .or_insert((id as u32, score as f32));
        }
        Ok(Some(Unigram {
            normalizer: file.normalizer,
            pieces,
            unk,
            unk_score: (min - 10.0) as f32,
            longest,
            bos,
            eos,
        }))
    }

    /// Token ids of `text` with `<s>` and `</s>`, at most `max` in all.
    pub fn encode(&self, text: &str, max: usize) -> Result<Vec<u32>, String> {
        let mut normalized = NormalizedString::from(text);
        if let Some(n) = &self.normalizer {
            n.normalize(&mut normalized).map_err(|e| e.to_string())?;
        }
        let mut s = String::with_capacity(normalized.get().len() + 3);
        if !normalized.get().starts_with(' ') {
            s.push(SPACE);
        }
        s.extend(
            normalized
                .get()
                .chars()
                .map(|c| if c == ' ' { SPACE } else { c }),
        );
        let mut ids = Vec::with_capacity(s.len() / 2 + 2);
        ids.push(self.bos);
        ids.extend(self.segment(&s));
        ids.truncate(max.max(2) - 1);
        ids.push(self.eos);
        Ok(ids)
    }

    /// The best split of `s` into pieces (Viterbi over character boundaries).
    fn segment(&self, s: &str) -> Vec<u32> {
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let n = bounds.len() - 1;
        // Per boundary: best score so far, the piece that ends there, and where it starts.
        let mut best = vec![(f32::NEG_INFINITY, self.unk, 0usize); n + 1];
        best[0].0 = 0.0;
        for i in 0..n {
            let here = best[i].0;
            if here == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n {
                let len = bounds[e] - bounds[i];
                if len > self.longest {
                    break;
                }
                if let Some(&(id, score)) = self.pieces.get(&s[bounds[i]..bounds[e]])
                    && id != self.unk
                    && here + score > best[e].0
                {
                    best[e] = (here + score, id, i);
                }
            }
            let unknown = here + self.unk_score;
            if unknown > best[i + 1].0 {
                best[i + 1] = (unknown, self.unk, i);
            }
        }
        let mut out = Vec::new();
        let mut at = n;
        while at > 0 {
            out.push(best[at].1);
            at = best[at].2;
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Unigram {
        let json = serde_json::json!({
            "normalizer": {"type": "NFKC"},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                              "prepend_scheme": "always", "split": false},
            "post_processor": {"type": "TemplateProcessing", "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
            "model": {"type": "Unigram", "unk_id": 1, "vocab": [
                ["<s>", 0.0], ["<unk>", 0.0], ["</s>", 0.0],
                ["\u{2581}", -2.0], ["\u{2581}退", -3.0], ["款", -3.0], ["退款", -2.5],
                ["\u{2581}re", -4.0], ["fund", -4.0], ["\u{2581}refund", -5.0],
                ["A", -1.0]]}
        });
        Unigram::from_json(&json.to_string()).unwrap().unwrap()
    }

    #[test]
    fn the_most_probable_split_wins() {
        let t = tiny();
        // ▁refund (-5) beats ▁re + fund (-8).
        assert_eq!(t.encode("refund", 64).unwrap(), [0, 9, 2]);
        // ▁ + 退款 (-4.5) beats ▁退 + 款 (-6).
        assert_eq!(t.encode("退款", 64).unwrap(), [0, 3, 6, 2]);
        // NFKC turns the full-width Ａ into A; an unknown character is <unk>.
        assert_eq!(t.encode("Ａ", 64).unwrap(), [0, 3, 10, 2]);
        assert_eq!(t.encode("猫", 64).unwrap(), [0, 3, 1, 2]);
        // Truncated, the end mark kept.
        assert_eq!(t.encode("refund refund", 3).unwrap(), [0, 9, 2]);
    }

    #[test]
    fn other_tokenizers_are_left_to_the_tokenizers_crate() {
        let wordpiece = r#"{"model": {"type": "WordPiece", "vocab": {}}}"#;
        assert!(Unigram::from_json(wordpiece).unwrap().is_none());
    }
}
