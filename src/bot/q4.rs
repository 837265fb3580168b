//! 4-bit weights (GGML's Q4_0 layout) and the integer matrix product they are used with.
//!
//! A Q4_0 row is cut into blocks of 32 weights; each block is 18 bytes: an f16 scale `d`, then
//! 16 bytes in which byte `j` holds weight `j` (low nibble) and weight `j + 16` (high nibble).
//! A weight is `(nibble - 8) * d`. multilingual-e5-small ships like this: its word table
//! takes 54 MB instead of 384 MB as f32, its linear layers 21 MB (unpacked to a byte a
//! weight, see [`Q4Linear`]) instead of 85 MB.
//!
//! Activations are quantised on the fly to int8 per block of 32 (`d_a = max|x| / 127`), so a
//! block's contribution is `d_w · d_a · Σ w·a` over small integers: one integer dot product.
//! This is the arithmetic of the engine the model was published with, so our vectors match
//! its vectors (the golden test checks cosine ≥ 0.999).

/// Weights per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK: usize = 18;

/// A matrix of `rows` rows in Q4_0 blocks, row-major, packed as stored.
pub struct Q4Matrix {
    bytes: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Q4Matrix {
    /// `bytes` holds `rows` rows of `cols / 32` blocks.
    pub fn new(bytes: Vec<u8>, rows: usize, cols: usize) -> Result<Q4Matrix, String> {
        if !cols.is_multiple_of(QK) || bytes.len() != rows * cols / QK * BLOCK {
            return Err(format!(
                "{} bytes are not {rows} Q4_0 rows of {cols} weights",
                bytes.len()
            ));
        }
        Ok(Q4Matrix { bytes, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn blocks(&self) -> impl Iterator<Item = (f32, [i8; QK])> + '_ {
        self.bytes.chunks_exact(BLOCK).map(|block| {
            let mut w = [0i8; QK];
            for j in 0..16 {
                w[j] = (block[2 + j] & 0x0F) as i8 - 8;
                w[j + 16] = (block[2 + j] >> 4) as i8 - 8;
            }
            (half::f16::from_le_bytes([block[0], block[1]]).to_f32(), w)
        })
    }

    /// Row `r` as f32, into `out` (`cols` long).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let per_row = self.cols / QK;
        let bytes = &self.bytes[r * per_row * BLOCK..(r + 1) * per_row * BLOCK];
        for (block, o) in bytes.chunks_exact(BLOCK).zip(out.chunks_exact_mut(QK)) {
            let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            for j in 0..16 {
                o[j] = (f32::from(block[2 + j] & 0x0F) - 8.0) * d;
                o[j + 16] = (f32::from(block[2 + j] >> 4) - 8.0) * d;
            }
        }
    }

    /// The matrix ready for [`Q4Linear::product`].
    pub fn into_linear(self) -> Q4Linear {
        let mut weights = Vec::with_capacity(self.rows * self.cols);
        let mut scales = Vec::with_capacity(self.rows * self.cols / QK);
        for (d, w) in self.blocks() {
            scales.push(d);
            weights.extend_from_slice(&w);
        }
        Q4Linear {
            weights,
            scales,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A Q4_0 weight matrix unpacked to one signed byte a weight (−8..7), twice the packed size,
/// so that a product spends its time multiplying.
pub struct Q4Linear {
    weights: Vec<i8>,
    scales: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Q4Linear {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `out[t][r] = x[t] · row r` for the `n` rows of `x` (each `cols` long).
    pub fn product(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let q = Q8::quantise(&x[..n * self.cols]);
        let blocks = self.cols / QK;
        let fast = avx2_available();
        for r0 in (0..self.rows).step_by(ROWS) {
            let rows = ROWS.min(self.rows - r0);
            let weights = &self.weights[r0 * self.cols..(r0 + rows) * self.cols];
            let scales = &self.scales[r0 * blocks..(r0 + rows) * blocks];
            for t in 0..n {
                let a = &q.values[t * self.cols..(t + 1) * self.cols];
                let a_scales = &q.scales[t * blocks..(t + 1) * blocks];
                let mut dots = [0f32; ROWS];
                #[cfg(target_arch = "x86_64")]
                if fast && rows == ROWS {
                    // SAFETY: `fast` says the CPU has AVX2 and FMA; the slices hold ROWS
                    // rows and one token of `blocks * 32` values.
                    unsafe { avx2::dots(a, a_scales, weights, scales, blocks, &mut dots) };
                } else {
                    portable(a, a_scales, weights, scales, blocks, &mut dots[..rows]);
                }
                #[cfg(not(target_arch = "x86_64"))]
                portable(a, a_scales, weights, scales, blocks, &mut dots[..rows]);
                out[t * self.rows + r0..][..rows].copy_from_slice(&dots[..rows]);
            }
        }
    }
}

/// Weight rows handled together: each activation block is loaded once for all of them.
const ROWS: usize = 4;

/// `out[i] = Σ_b d_w[i][b] · d_a[b] · Σ w·a` for each row `i` of `weights`.
fn portable(
    a: &[i8],
    a_scales: &[f32],
    weights: &[i8],
    w_scales: &[f32],
    blocks: usize,
    out: &mut [f32],
) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = (0..blocks)
            .map(|b| {
                let w = &weights[(i * blocks + b) * QK..][..QK];
                let dot: i32 = a[b * QK..(b + 1) * QK]
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum();
                dot as f32 * w_scales[i * blocks + b] * a_scales[b]
            })
            .sum();
    }
}

/// Activations quantised to int8 per block of 32: values and the blocks' scales.
struct Q8 {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8 {
    fn quantise(x: &[f32]) -> Q8 {
        let mut q = Q8 {
            values: vec![0; x.len()],
            scales: Vec::with_capacity(x.len() / QK),
        };
        for (xs, qs) in x.chunks_exact(QK).zip(q.values.chunks_exact_mut(QK)) {
            let max = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (v, o) in xs.iter().zip(qs.iter_mut()) {
                // To nearest, ties to even, as C's lrintf in the default rounding mode: adding
                // and taking away 1.5 · 2^23 rounds so (|v · inv| <= 127 here).
                const ROUND: f32 = 12_582_912.0;
                *o = ((v * inv + ROUND) - ROUND).clamp(-128.0, 127.0) as i8;
            }
            q.scales.push(d);
        }
        q
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{QK, ROWS};

    /// [`super::portable`] for ROWS rows, with 32 byte products an instruction.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots(
        a: &[i8],
        a_scales: &[f32],
        weights: &[i8],
        w_scales: &[f32],
        blocks: usize,
        out: &mut [f32; ROWS],
    ) {
        assert!(a.len() >= blocks * QK && a_scales.len() >= blocks);
        assert!(weights.len() >= ROWS * blocks * QK && w_scales.len() >= ROWS * blocks);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); ROWS];
        for b in 0..blocks {
            // SAFETY: every 32-byte load is inside the slices (asserted above).
            let av = unsafe { _mm256_loadu_si256(a.as_ptr().add(b * QK).cast()) };
            let da = a_scales[b];
            for (i, acc) in acc.iter_mut().enumerate() {
                let at = (i * blocks + b) * QK;
                // SAFETY: as above.
                let wv = unsafe { _mm256_loadu_si256(weights.as_ptr().add(at).cast()) };
                // maddubs multiplies unsigned by signed bytes: |w| times a with w's sign,
                // pairs summed to i16 without saturation (2 · 8 · 128 < 32767), then to i32.
                let pairs =
                    _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
                let dot = _mm256_madd_epi16(pairs, ones);
                let s = _mm256_set1_ps(w_scales[i * blocks + b] * da);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            let mut lanes = [0f32; 8];
            // SAFETY: 8 floats fit in `lanes`.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            *o = lanes.iter().sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q4_0 matrix from f32 weights, quantised the way GGML does (d = max / -8).
    fn quantise(w: &[f32], rows: usize, cols: usize) -> Q4Matrix {
        let mut bytes = Vec::new();
        for block in w.chunks_exact(QK) {
            let max = block
                .iter()
                .copied()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            bytes.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
            let q = |v: f32| ((v * inv + 8.5) as i32).clamp(0, 15) as u8;
            for j in 0..16 {
                bytes.push(q(block[j]) | (q(block[j + 16]) << 4));
            }
        }
        Q4Matrix::new(bytes, rows, cols).unwrap()
    }

    #[test]
    fn the_product_matches_dequantised_f32_and_both_kernels_agree() {
        let (rows, cols, n) = (5, 96, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 10.0)
            .collect();
        let m = quantise(&w, rows, cols);
        let mut deq = vec![0f32; rows * cols];
        for r in 0..rows {
            m.row_into(r, &mut deq[r * cols..(r + 1) * cols]);
        }
        // 4-bit weights are close to the originals.
        for (a, b) in w.iter().zip(&deq) {
            assert!((a - b).abs() < 0.2, "{a} vs {b}");
        }
        let linear = quantise(&w, rows, cols).into_linear();
        assert_eq!(linear.rows(), rows);
        let mut out = vec![0f32; n * rows];
        linear.product(&x, n, &mut out);
        for t in 0..n {
            for r in 0..rows {
                let want: f32 = (0..cols).map(|c| x[t * cols + c] * deq[r * cols + c]).sum();
                let got = out[t * rows + r];
                // Only the int8 rounding of the activations separates them: at most half a
                // step (max |x| / 127 / 2 per block) on each weight.
                let bound: f32 = (0..cols)
                    .map(|c| {
                        let block = &x[t * cols + c / QK * QK..][..QK];
                        let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                        deq[r * cols + c].abs() * step / 2.0
                    })
                    .sum();
                assert!((want - got).abs() <= bound * 1.01 + 1e-4, "{want} vs {got}");
            }
        }
        // The portable kernel gives the same.
        let q = Q8::quantise(&x[..cols]);
        let (mut fast, mut slow) = ([0f32; ROWS], [0f32; ROWS]);
        let (weights, scales) = (&linear.weights, &linear.scales);
        let blocks = cols / QK;
        portable(&q.values, &q.scales, weights, scales, blocks, &mut slow);
        #[cfg(target_arch = "x86_64")]
        if avx2_available() {
            // SAFETY: checked just above; the slices hold ROWS rows.
            unsafe { avx2::dots(&q.values, &q.scales, weights, scales, blocks, &mut fast) };
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        let _ = &mut fast;
    }

    #[test]
    fn a_wrong_size_is_refused() {
        assert!(Q4Matrix::new(vec![0; 17], 1, 32).is_err());
        assert!(Q4Matrix::new(vec![0; 18], 1, 33).is_err());
        assert!(Q4Matrix::new(vec![0; 36], 1, 64).is_ok());
    }
}
