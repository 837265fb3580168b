//! A BERT encoder forward pass for one sequence, in plain Rust.
//!
//! Why our own and not a tensor library's: the bot embeds one short customer message at a
//! time, and at 5–20 tokens a general matrix multiply spends most of its time packing the
//! weights (42 MB for MiniLM-L6) rather than multiplying. Here every linear layer is a set
//! of dot products along each weight row as stored (row-major, out × in), four tokens by
//! three rows at a time (AVX2 + FMA when the CPU has them, checked at run time), so each
//! weight is read once per query. One sequence means no padding and no attention mask.
//! Measured against candle-transformers' `BertModel` on the same weights (the golden values
//! in the tests came from it).
//!
//! Supports what sentence-transformers BERT models use (XLM-R ones too: their position
//! offset is folded into the table by `scripts/convert-e5`): absolute positions,
//! post-layer-norm blocks, `gelu` (erf), `gelu_new` / `gelu_pytorch_tanh`, `relu`; F32, F16
//! or BF16 weights, with or without the `bert.` name prefix. A weight or the word table may
//! instead be stored 4-bit as `NAME.q4_0` (U8, GGML Q4_0 blocks; see [`super::q4`]): it stays
//! 4-bit in memory and its products run on integers.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use super::q4::{Q4Linear, Q4Matrix, Q8, ROWS};

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}

fn default_eps() -> f64 {
    1e-12
}

#[derive(Debug, Clone, Copy)]
enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

/// A weight matrix, `out × in`, row-major, as stored.
enum Matrix {
    F32(Vec<f32>),
    Q4(Q4Matrix),
}

impl Matrix {
    fn rows(&self, cols: usize) -> usize {
        match self {
            Matrix::F32(v) => v.len() / cols,
            Matrix::Q4(m) => m.rows(),
        }
    }

    /// Row `r` added to `out`.
    fn add_row(&self, r: usize, out: &mut [f32], scratch: &mut Vec<f32>) {
        let cols = out.len();
        let row: &[f32] = match self {
            Matrix::F32(v) => &v[r * cols..(r + 1) * cols],
            Matrix::Q4(m) => {
                scratch.resize(cols, 0.0);
                m.row_into(r, scratch);
                scratch
            }
        };
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

/// A linear layer's weights: as floats, or 4-bit.
enum Weight {
    F32(Vec<f32>),
    Q4(Q4Linear),
}

struct Linear {
    weight: Weight,
    bias: Vec<f32>,
    inputs: usize,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

pub struct Bert {
    hidden: usize,
    heads: usize,
    act: Act,
    max_positions: usize,
    word: Matrix,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// The weights of a safetensors file, by name: floats as f32, 4-bit ones as they are.
struct Weights {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    q4: HashMap<String, (Vec<usize>, Vec<u8>)>,
    prefix: &'static str,
}

impl Weights {
    fn read(path: &Path) -> Result<Weights, String> {
        use safetensors::{Dtype, SafeTensors};
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| e.to_string())?;
        let mut tensors = HashMap::new();
        let mut q4 = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            if let Some(base) = name.strip_suffix(".q4_0") {
                if view.dtype() != Dtype::U8 || view.shape().len() != 2 {
                    return Err(format!("{name}: a Q4_0 tensor is U8 [rows, bytes]"));
                }
                q4.insert(base.to_owned(), (view.shape().to_vec(), data.to_vec()));
                continue;
            }
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                // Integer tensors (position ids buffers) are not weights.
                _ => continue,
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight")
            || q4.contains_key("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        };
        Ok(Weights {
            tensors,
            q4,
            prefix,
        })
    }

    /// Takes the tensor `name` (trying old names `gamma`/`beta` for norms), checking its size.
    fn take(&mut self, name: &str, len: usize) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let old = full
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        let (shape, values) = self
            .tensors
            .remove(&full)
            .or_else(|| self.tensors.remove(&old))
            .ok_or_else(|| format!("model.safetensors has no tensor {full}"))?;
        if values.len() != len {
            return Err(format!(
                "tensor {full} has shape {shape:?}, expected {len} values"
            ));
        }
        Ok(values)
    }

    /// A matrix `cols` wide, 4-bit if stored so; `rows` checked when given.
    fn matrix(&mut self, name: &str, rows: Option<usize>, cols: usize) -> Result<Matrix, String> {
        let full = format!("{}{name}", self.prefix);
        if let Some((shape, bytes)) = self.q4.remove(&full) {
            let m = Q4Matrix::new(bytes, shape[0], cols).map_err(|e| format!("{full}: {e}"))?;
            if rows.is_some_and(|r| r != m.rows()) {
                return Err(format!(
                    "tensor {full} has {} rows, expected {rows:?}",
                    m.rows()
                ));
            }
            return Ok(Matrix::Q4(m));
        }
        Ok(Matrix::F32(match rows {
            Some(rows) => self.take(name, rows * cols)?,
            None => self.table(name, cols)?,
        }))
    }

    fn linear(&mut self, name: &str, outputs: usize, inputs: usize) -> Result<Linear, String> {
        let weight = match self.matrix(&format!("{name}.weight"), Some(outputs), inputs)? {
            Matrix::F32(w) => Weight::F32(w),
            Matrix::Q4(w) => Weight::Q4(w.into_linear()),
        };
        Ok(Linear {
            weight,
            bias: self.take(&format!("{name}.bias"), outputs)?,
            inputs,
        })
    }

    fn norm(&mut self, name: &str, size: usize, eps: f32) -> Result<Norm, String> {
        Ok(Norm {
            gamma: self.take(&format!("{name}.weight"), size)?,
            beta: self.take(&format!("{name}.bias"), size)?,
            eps,
        })
    }

    /// An embedding table: its rows, checked to be `width` wide.
    fn table(&mut self, name: &str, width: usize) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let len = self
            .tensors
            .get(&full)
            .map(|(_, v)| v.len())
            .ok_or_else(|| format!("model.safetensors has no tensor {full}"))?;
        if len % width != 0 {
            return Err(format!("tensor {full} is not {width} wide"));
        }
        self.take(name, len)
    }
}

impl Bert {
    pub fn load(config: &BertConfig, weights: &Path) -> Result<Bert, String> {
        let act = match config.hidden_act.as_str() {
            "gelu" => Act::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => return Err(format!("hidden_act {other:?} is not supported")),
        };
        if let Some(kind) = config
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(format!("position_embedding_type {kind:?} is not supported"));
        }
        let (h, i) = (config.hidden_size, config.intermediate_size);
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err("hidden_size is not a multiple of num_attention_heads".into());
        }
        let eps = config.layer_norm_eps as f32;
        let mut w = Weights::read(weights)?;
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"), i, h)?,
                    output: w.linear(&format!("{p}.output.dense"), h, i)?,
                    output_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Bert {
            hidden: h,
            heads: config.num_attention_heads,
            act,
            max_positions: config.max_position_embeddings,
            word: w.matrix("embeddings.word_embeddings.weight", None, h)?,
            position: w.table("embeddings.position_embeddings.weight", h)?,
            token_type: w.table("embeddings.token_type_embeddings.weight", h)?,
            embedding_norm: w.norm("embeddings.LayerNorm", h, eps)?,
            layers,
        })
    }

    /// The mean of the last hidden states over all tokens, L2-normalised.
    /// With `split`, each large product is shared between two threads (rayon's): for one
    /// message a customer waits on; a batch already keeps every core busy with one text each.
    pub fn embed(&self, ids: &[u32], type_ids: &[u32], split: bool) -> Result<Vec<f32>, String> {
        let h = self.hidden;
        let n = ids.len().min(self.max_positions);
        if n == 0 {
            return Err("no tokens".into());
        }
        let vocab = self.word.rows(h);
        let types = self.token_type.len() / h;
        let mut x = vec![0f32; n * h];
        let mut scratch = Vec::new();
        for (t, row) in x.chunks_exact_mut(h).enumerate() {
            let id = ids[t] as usize;
            let ty = type_ids.get(t).copied().unwrap_or(0) as usize;
            if id >= vocab || ty >= types {
                return Err(format!(
                    "token {id} (type {ty}) is outside the model's tables"
                ));
            }
            let pos = &self.position[t * h..(t + 1) * h];
            let typ = &self.token_type[ty * h..(ty + 1) * h];
            for (j, v) in row.iter_mut().enumerate() {
                *v = pos[j] + typ[j];
            }
            self.word.add_row(id, row, &mut scratch);
        }
        self.embedding_norm.apply(&mut x);
        let mut scratch = Scratch::default();
        let mut layers = |x: &mut Vec<f32>| {
            for layer in &self.layers {
                self.layer(layer, x, n, &mut scratch, split);
            }
        };
        if split {
            // Inside the pool, each split is a cheap local join rather than a hand-over
            // from this thread and back.
            rayon::scope(|_| layers(&mut x));
        } else {
            layers(&mut x);
        }
        let mut mean = vec![0f32; h];
        for row in x.chunks_exact(h) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        mean.iter_mut().for_each(|v| *v /= norm);
        Ok(mean)
    }

    fn layer(&self, l: &Layer, x: &mut [f32], n: usize, s: &mut Scratch, split: bool) {
        let h = self.hidden;
        l.query.apply(x, n, &mut s.q, split);
        l.key.apply(x, n, &mut s.k, split);
        l.value.apply(x, n, &mut s.v, split);
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        s.ctx.clear();
        s.ctx.resize(n * h, 0.0);
        s.probs.resize(n, 0.0);
        for head in 0..self.heads {
            let cols = head * d..(head + 1) * d;
            for i in 0..n {
                let q = &s.q[i * h..][cols.clone()];
                let mut max = f32::NEG_INFINITY;
                for (j, p) in s.probs.iter_mut().enumerate() {
                    let k = &s.k[j * h..][cols.clone()];
                    *p = crate::bot::embed::dot(q, k) * scale;
                    max = max.max(*p);
                }
                let mut total = 0.0;
                for p in s.probs.iter_mut() {
                    *p = (*p - max).exp();
                    total += *p;
                }
                let out = &mut s.ctx[i * h..][cols.clone()];
                for (j, p) in s.probs.iter().enumerate() {
                    let v = &s.v[j * h..][cols.clone()];
                    let p = p / total;
                    for (o, v) in out.iter_mut().zip(v) {
                        *o += p * v;
                    }
                }
            }
        }
        l.attention_out.apply(&s.ctx, n, &mut s.q, split);
        add_norm(x, &s.q, &l.attention_norm);
        l.intermediate.apply(x, n, &mut s.inter, split);
        match self.act {
            Act::GeluErf => s.inter.iter_mut().for_each(|v| *v = gelu_erf(*v)),
            Act::GeluTanh => s.inter.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Act::Relu => s.inter.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
        l.output.apply(&s.inter, n, &mut s.q, split);
        add_norm(x, &s.q, &l.output_norm);
    }
}

/// Buffers reused across the layers of one forward pass.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    probs: Vec<f32>,
}

/// `x = norm(x + y)`, row by row.
fn add_norm(x: &mut [f32], y: &[f32], norm: &Norm) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    norm.apply(x);
}

impl Norm {
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        for row in x.chunks_exact_mut(h) {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

impl Linear {
    /// `out = x · Wᵀ + b` for `n` rows of `x`; with `split`, a large product is shared
    /// between two threads, each taking half of the outputs.
    fn apply(&self, x: &[f32], n: usize, out: &mut Vec<f32>, split: bool) {
        let outputs = self.bias.len();
        out.clear();
        out.resize(n * outputs, 0.0);
        let x = &x[..n * self.inputs];
        let split = split && n * outputs * self.inputs >= SPLIT_MIN;
        match &self.weight {
            Weight::F32(w) => in_halves(n, out, split, |rows, part| {
                let w = &w[rows.start * self.inputs..rows.end * self.inputs];
                kernel::linear(x, n, self.inputs, w, rows.len(), part);
            }),
            Weight::Q4(w) => {
                let q = Q8::quantise(x);
                in_halves(n, out, split, |rows, part| w.product_rows(&q, rows, part));
            }
        }
        for row in out.chunks_exact_mut(outputs) {
            for (o, b) in row.iter_mut().zip(&self.bias) {
                *o += b;
            }
        }
    }
}

/// Multiply-adds from which a product is worth splitting: under it, handing half to
/// another thread costs about what it saves.
const SPLIT_MIN: usize = 1 << 20;

/// Fills `out` (`n` rows of outputs) with `product(outputs, part)`, where `part` holds
/// the `n` rows of just those outputs: in one call, or with `split` in two on two threads
/// (rayon's), cut at a multiple of the 4-bit kernel's row group.
fn in_halves(
    n: usize,
    out: &mut [f32],
    split: bool,
    product: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    let outputs = out.len() / n.max(1);
    let mid = outputs / 2 / ROWS * ROWS;
    if !split || mid == 0 {
        return product(0..outputs, out);
    }
    let (mut low, mut high) = (vec![0f32; n * mid], vec![0f32; n * (outputs - mid)]);
    rayon::join(
        || product(0..mid, &mut low),
        || product(mid..outputs, &mut high),
    );
    for ((row, low), high) in out
        .chunks_exact_mut(outputs)
        .zip(low.chunks_exact(mid))
        .zip(high.chunks_exact(outputs - mid))
    {
        row[..mid].copy_from_slice(low);
        row[mid..].copy_from_slice(high);
    }
}

fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// The error function, to 1.2e-7 (Numerical Recipes' erfc by Chebyshev fitting).
fn erf(x: f32) -> f32 {
    let z = f64::from(x.abs());
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = (1.0 - erfc) as f32;
    if x >= 0.0 { r } else { -r }
}

/// `out[i][j] = x[i] · w[j]` for `m` rows of `x` (each `k` long) and `n` rows of `w`.
mod kernel {
    pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::linear(x, m, k, w, n, out) };
            return;
        }
        portable(x, m, k, w, n, out);
    }

    fn portable(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
        for (i, xr) in x.chunks_exact(k).take(m).enumerate() {
            for (j, wr) in w.chunks_exact(k).take(n).enumerate() {
                out[i * n + j] = crate::bot::embed::dot(xr, wr);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::*;

        /// Dot products of `M` rows of x with `N` rows of w, eight lanes at a time.
        ///
        /// # Safety
        /// AVX2 and FMA must be available; every pointer must have `k` readable floats.
        #[inline(always)]
        unsafe fn block<const M: usize, const N: usize>(
            x: &[*const f32; M],
            w: &[*const f32; N],
            k: usize,
        ) -> [[f32; N]; M] {
            // SAFETY: the caller guarantees the features and `k` floats behind each pointer;
            // every load reads lanes i..i+8 with i + 8 <= k, and the tail reads j < k.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); N]; M];
                let mut i = 0;
                while i + 8 <= k {
                    let ws: [__m256; N] = std::array::from_fn(|b| _mm256_loadu_ps(w[b].add(i)));
                    for a in 0..M {
                        let xa = _mm256_loadu_ps(x[a].add(i));
                        for b in 0..N {
                            acc[a][b] = _mm256_fmadd_ps(xa, ws[b], acc[a][b]);
                        }
                    }
                    i += 8;
                }
                let mut out = [[0f32; N]; M];
                for a in 0..M {
                    for b in 0..N {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[a][b]);
                        let mut s: f32 = lanes.iter().sum();
                        for j in i..k {
                            s += *x[a].add(j) * *w[b].add(j);
                        }
                        out[a][b] = s;
                    }
                }
                out
            }
        }

        /// Rows `m0..m0 + M` of the output.
        #[inline(always)]
        unsafe fn rows<const M: usize>(
            x: &[f32],
            m0: usize,
            k: usize,
            w: &[f32],
            n: usize,
            out: &mut [f32],
        ) {
            let xr: [*const f32; M] = std::array::from_fn(|a| x[(m0 + a) * k..][..k].as_ptr());
            let mut j = 0;
            while j + 3 <= n {
                let wr: [*const f32; 3] = std::array::from_fn(|b| w[(j + b) * k..][..k].as_ptr());
                // SAFETY: features per the caller; the slices above are k long.
                let r = unsafe { block::<M, 3>(&xr, &wr, k) };
                for (a, r) in r.iter().enumerate() {
                    out[(m0 + a) * n + j..][..3].copy_from_slice(r);
                }
                j += 3;
            }
            while j < n {
                // SAFETY: as above.
                let r = unsafe { block::<M, 1>(&xr, &[w[j * k..][..k].as_ptr()], k) };
                for (a, r) in r.iter().enumerate() {
                    out[(m0 + a) * n + j] = r[0];
                }
                j += 1;
            }
        }

        /// # Safety
        /// AVX2 and FMA must be available.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
            assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
            let mut i = 0;
            // SAFETY (all calls): features per the caller; sizes asserted above.
            while i + 4 <= m {
                unsafe { rows::<4>(x, i, k, w, n, out) };
                i += 4;
            }
            match m - i {
                3 => unsafe { rows::<3>(x, i, k, w, n, out) },
                2 => unsafe { rows::<2>(x, i, k, w, n, out) },
                1 => unsafe { rows::<1>(x, i, k, w, n, out) },
                _ => {}
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn fast_and_portable_kernels_agree() {
            let (m, k, n) = (7, 21, 10);
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0)
                .collect();
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
                }
            }
            let mut fast = vec![0f32; m * n];
            super::linear(&x, m, k, &w, n, &mut fast);
            let mut portable = vec![0f32; m * n];
            super::portable(&x, m, k, &w, n, &mut portable);
            for ((a, b), c) in want.iter().zip(&fast).zip(&portable) {
                assert!((a - b).abs() < 1e-3 && (a - c).abs() < 1e-3, "{a} {b} {c}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 1e-6, "erf({x}) = {}", erf(x));
        }
    }
}
