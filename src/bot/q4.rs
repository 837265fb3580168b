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
            weights.extend(w.iter().map(|&v| (v + 8) as u8));
        }
        Q4Linear {
            weights,
            scales,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A Q4_0 weight matrix unpacked to one byte a weight, twice the packed size, so that a
/// product spends its time multiplying. The bytes are the nibbles as stored (0..15, the
/// weight plus 8): unsigned, they go straight into AVX2's unsigned-by-signed byte product,
/// and the 8 is taken back once per block from the activations' sum (see [`Q8::offsets`]).
pub struct Q4Linear {
    weights: Vec<u8>,
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
        self.product_rows(&Q8::quantise(&x[..n * self.cols]), 0..self.rows, out);
    }

    /// `out[t][r - rows.start] = x[t] · row r` for the rows in `rows`, with `x` quantised
    /// once by [`Q8::quantise`].
    pub fn product_rows(&self, q: &Q8, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let n = q.values.len() / self.cols;
        let width = rows.len();
        let blocks = self.cols / QK;
        assert!(out.len() >= n * width && rows.end <= self.rows);
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if avx2_available() {
            done = width / ROWS * ROWS;
            let weights = &self.weights[rows.start * self.cols..(rows.start + done) * self.cols];
            let scales = &self.scales[rows.start * blocks..(rows.start + done) * blocks];
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::product(q, weights, scales, blocks, out, width) };
        }
        for r in rows.start + done..rows.end {
            let weights = &self.weights[r * self.cols..(r + 1) * self.cols];
            let scales = &self.scales[r * blocks..(r + 1) * blocks];
            for t in 0..n {
                let a = &q.values[t * self.cols..(t + 1) * self.cols];
                let a_scales = &q.scales[t * blocks..(t + 1) * blocks];
                out[t * width + r - rows.start] = portable(a, a_scales, weights, scales);
            }
        }
    }
}

/// Weight rows the AVX2 kernel takes together: each activation block is loaded once for
/// all of them, and their four sums leave in one store.
pub const ROWS: usize = 4;

/// One row's product with one token: `Σ_b d_w[b] · d_a[b] · Σ w·a`.
fn portable(a: &[i8], a_scales: &[f32], weights: &[u8], w_scales: &[f32]) -> f32 {
    a.chunks_exact(QK)
        .zip(weights.chunks_exact(QK))
        .zip(a_scales.iter().zip(w_scales))
        .map(|((a, w), (da, dw))| {
            let dot: i32 = a
                .iter()
                .zip(w)
                .map(|(&x, &w)| i32::from(x) * (i32::from(w) - 8))
                .sum();
            dot as f32 * da * dw
        })
        .sum()
}

/// Activations quantised to int8 per block of 32: values, the blocks' scales, and the
/// blocks' sums (the weights' bytes are w + 8; the AVX2 kernel takes 8 · Σ a back).
pub struct Q8 {
    values: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl Q8 {
    pub fn quantise(x: &[f32]) -> Q8 {
        let mut q = Q8 {
            values: vec![0; x.len()],
            scales: Vec::with_capacity(x.len() / QK),
            sums: Vec::with_capacity(x.len() / QK),
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
            q.sums.push(qs.iter().map(|&v| i32::from(v)).sum());
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

    use super::{Q8, QK, ROWS};

    // The kernel sums exactly four rows' lanes at a time.
    const _: () = assert!(ROWS == 4);

    /// [`super::portable`] for every token of `q` and every row of `weights` (a multiple of
    /// ROWS rows of `blocks` blocks), into `out[t * width + r]`. 32 byte products an
    /// instruction: the weights' bytes (w + 8, unsigned) times the activations (signed), with
    /// the block's Σ a taken from each of the 8 lanes (8 · Σ a in all).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product(
        q: &Q8,
        weights: &[u8],
        w_scales: &[f32],
        blocks: usize,
        out: &mut [f32],
        width: usize,
    ) {
        let cols = blocks * QK;
        let n = q.values.len() / cols.max(1);
        let rows = weights.len() / cols.max(1);
        assert!(rows.is_multiple_of(ROWS) && rows <= width && w_scales.len() == rows * blocks);
        assert!(q.scales.len() == n * blocks && q.sums.len() == n * blocks);
        assert!(n == 0 || out.len() >= (n - 1) * width + rows);
        for g in (0..rows).step_by(ROWS) {
            let mut t = 0;
            while t + 2 <= n {
                // SAFETY: as asserted above.
                unsafe { group::<2>(q, weights, w_scales, blocks, g, t, out, width) };
                t += 2;
            }
            if t < n {
                // SAFETY: as asserted above.
                unsafe { group::<1>(q, weights, w_scales, blocks, g, t, out, width) };
            }
        }
    }

    /// Rows `g..g + ROWS` times tokens `t..t + T`: each weight block is loaded once for
    /// the T tokens.
    ///
    /// # Safety
    /// AVX2 and FMA; the sizes asserted by [`product`].
    // `acc` is indexed by token and row, from both loops.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const T: usize>(
        q: &Q8,
        weights: &[u8],
        w_scales: &[f32],
        blocks: usize,
        g: usize,
        t: usize,
        out: &mut [f32],
        width: usize,
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); ROWS]; T];
        for b in 0..blocks {
            let mut av = [_mm256_setzero_si256(); T];
            let mut sum = [_mm256_setzero_si256(); T];
            let mut da = [0f32; T];
            for k in 0..T {
                let at = (t + k) * blocks + b;
                // SAFETY (every access below): indexes are inside the sizes the caller
                // asserted.
                unsafe {
                    av[k] = _mm256_loadu_si256(q.values.as_ptr().add(at * QK).cast());
                    sum[k] = _mm256_set1_epi32(*q.sums.get_unchecked(at));
                    da[k] = *q.scales.get_unchecked(at);
                }
            }
            for i in 0..ROWS {
                let wb = (g + i) * blocks + b;
                let (wv, dw) = unsafe {
                    (
                        _mm256_loadu_si256(weights.as_ptr().add(wb * QK).cast()),
                        *w_scales.get_unchecked(wb),
                    )
                };
                for k in 0..T {
                    // maddubs multiplies unsigned by signed bytes, pairs summed to i16
                    // without saturation (2 · 15 · 128 < 32767), then to i32.
                    let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av[k]), ones);
                    let dot = _mm256_sub_epi32(dot, sum[k]);
                    let s = _mm256_set1_ps(dw * da[k]);
                    acc[k][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, acc[k][i]);
                }
            }
        }
        for (k, acc) in acc.iter().enumerate() {
            // Four rows' eight lanes summed into one vector of four.
            let s = _mm256_hadd_ps(
                _mm256_hadd_ps(acc[0], acc[1]),
                _mm256_hadd_ps(acc[2], acc[3]),
            );
            let four = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add((t + k) * width + g), four) };
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
        // The portable kernel gives the same, row by row (the product above took four rows
        // through AVX2 where the CPU has it, and the fifth through the portable one).
        let q = Q8::quantise(&x);
        let blocks = cols / QK;
        for t in 0..n {
            for r in 0..rows {
                let slow = portable(
                    &q.values[t * cols..(t + 1) * cols],
                    &q.scales[t * blocks..(t + 1) * blocks],
                    &linear.weights[r * cols..(r + 1) * cols],
                    &linear.scales[r * blocks..(r + 1) * blocks],
                );
                let fast = out[t * rows + r];
                assert!((fast - slow).abs() < 1e-4, "{fast} vs {slow}");
            }
        }
        // A range of rows lands where asked.
        let mut part = vec![0f32; n * 4];
        linear.product_rows(&q, 1..5, &mut part);
        for t in 0..n {
            for (a, b) in part[t * 4..t * 4 + 4].iter().zip(&out[t * rows + 1..]) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_wrong_size_is_refused() {
        assert!(Q4Matrix::new(vec![0; 17], 1, 32).is_err());
        assert!(Q4Matrix::new(vec![0; 18], 1, 33).is_err());
        assert!(Q4Matrix::new(vec![0; 36], 1, 64).is_ok());
    }
}
