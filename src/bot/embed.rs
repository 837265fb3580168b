//! Sentence embeddings: a BERT forward pass in pure Rust (candle), from a local
//! sentence-transformers directory (`config.json`, `tokenizer.json`, `model.safetensors`),
//! mean-pooled over real tokens and L2-normalised, so a dot product is the cosine.
//!
//! Any BERT-family model in that layout works: all-MiniLM-L6-v2 for English, a multilingual
//! one for Chinese. Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// sentence-transformers' `max_seq_length` for the MiniLM family.
const MAX_TOKENS: usize = 256;
/// Sentences per forward pass when embedding a knowledge base.
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

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    /// Names the model in cache keys: the directory name and a hash of its config and
    /// weights' size, so a swapped model never reuses old vectors.
    id: String,
}

impl Embedder {
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let err = |message: String| EmbedError::Load {
            dir: dir.to_owned(),
            message,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| err(format!("config.json: {e}")))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| err(format!("config.json: {e}")))?;
        let dim = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v["hidden_size"].as_u64())
            .ok_or_else(|| err("config.json has no hidden_size".into()))?
            as usize;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        // tokenizer.json ships with fixed padding to 128: pad to the longest of the batch
        // instead, or every short question costs 128 tokens.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| err(format!("tokenizer: {e}")))?;
        let weights = dir.join("model.safetensors");
        let size = std::fs::metadata(&weights)
            .map_err(|e| err(format!("model.safetensors: {e}")))?
            .len();
        let device = Device::Cpu;
        // SAFETY: the weights are mapped read-only; operators must not rewrite the file in
        // place while the daemon runs (replacing it with a new file is fine).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| err(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| err(e.to_string()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hash = Sha256::digest(format!("{config_text}{size}"));
        Ok(Embedder {
            model,
            tokenizer,
            device,
            dim,
            id: format!("{name}-{}", hex::encode(&hash[..6])),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// One normalised vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(run_err)?;
        let (n, len) = (enc.len(), enc[0].get_ids().len());
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, (n, len), &self.device).map_err(run_err);
        let ids = tensor(flat(|e| e.get_ids()))?;
        let types = tensor(flat(|e| e.get_type_ids()))?;
        let mask = tensor(flat(|e| e.get_attention_mask()))?;
        let pooled = (|| {
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let mean = hidden
                .broadcast_mul(&mask)?
                .sum(1)?
                .broadcast_div(&mask.sum(1)?)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })()
        .map_err(run_err)?;
        Ok(pooled)
    }

    /// Embeds many texts: similar lengths batched together (less padding), through `cache`
    /// so that a restart or a reload only embeds what is new. `progress` is told how many
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
pub struct StateCache(pub std::sync::Arc<dyn switchboard_channel::ChannelState>);

impl VectorCache for StateCache {
    fn get(&self, key: &[u8]) -> Option<Vec<f32>> {
        let bytes = self.0.get(key).ok()??;
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
        if let Err(e) = self.0.put_all(&refs) {
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
