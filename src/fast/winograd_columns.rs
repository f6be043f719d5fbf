//! Winograd's F(4, 3) down the columns: the forward of a first layer (1 to 4
//! input channels) with half the multiplications, under
//! [`Kernels::Winograd`](crate::tape::Kernels::Winograd) only. What it
//! computes is [`crate::ops::conv`]'s convolution, up to rounding (see below).
//!
//! Four outputs down one column, `y[c] = Σᵣ g[r] · d[c + r]` for `c < 4`, read
//! 6 inputs `d` and a 3-tap filter `g` (a column of the 3x3 kernel). With the
//! same `Bᵀ`, `G` and `Aᵀ` as the 2-D transforms ([`winograd`]), they are
//!
//! ```text
//! y = Aᵀ [ (G g) ⊙ (Bᵀ d) ]        (4 = 4x6 · 6)
//! ```
//!
//! 6 multiplications instead of 12. A 3x3 correlation is three such columns
//! side by side (`s = 0, 1, 2`) for each input channel `i`, so with `k = (i, s)`
//! the 6 points of a block of 4 outputs of channel `o` are
//!
//! ```text
//! M[p] = Σₖ U[o][k][p] · V[k][p]      U = G g (weights), V = Bᵀ d (input)
//! ```
//!
//! and the block is `Aᵀ M` plus the bias. Each lane holds a column: 16
//! neighbouring columns at once, so `V` is 6 rows of the input loaded as
//! they lie (shifted by `s`), and the 4 outputs are 4 output rows, stored as
//! they lie. Nothing is gathered or transposed, which is what lets so thin a
//! product (`3·Cin` terms a point) pay: the direct kernel's `9·Cin`
//! multiply-adds an output become `4.5·Cin`, for transforms that cost a few
//! operations per output.
//!
//! A block of 4 output rows by 32 columns is worked out for two output
//! channels at a time: 24 sums in registers (2 channels × 2 groups of 16
//! columns × 6 points), every `V` vector read by two multiply-adds and every
//! broadcast weight by two. Rows and columns past the output's edge read
//! zeros and are not stored.
//!
//! The price in accuracy is the 2-D transforms' (coefficients up to 5 and
//! 8): an output's rounding error is bounded by `(3·Cin + 8)·2⁻²⁴` of its
//! terms' total size (checked against f64 in the tests below), two to three
//! times the direct kernel's error on the tutorial's first layers.
//!
//! The bias joins `M[1]` before `Aᵀ`: column 1 of `Aᵀ` is all ones, so every
//! output gets it exactly once, for one addition instead of four.
//!
//! [`winograd`]: super::winograd

use super::winograd::G;
use crate::fast::kernel;

/// Input channels this path takes: the first layers', up to 4 (the most
/// whose `V` is kept on the stack; with more, the 2-D transforms or the
/// direct products take over).
const CHANNELS: std::ops::RangeInclusive<usize> = 1..=4;

/// Whether a convolution with these sizes runs down the columns: a 3x3 kernel
/// at stride 1 without padding, 1 to 4 input channels, and AVX-512.
pub(crate) fn applies(kh: usize, kw: usize, stride: usize, padded: bool, cin: usize) -> bool {
    (kh, kw, stride) == (3, 3, 1) && !padded && CHANNELS.contains(&cin) && kernel::available()
}

/// The transformed filters, `U[o][k][p] = Σᵣ G[p][r] · w[o, i, r, s]` with
/// `k = 3i + s`, from `w: [cout, cin, 3, 3]`: summed in f64, rounded once.
pub(crate) fn filters(w: &[f32], cout: usize, cin: usize, u: &mut [f32]) {
    assert_eq!(w.len(), cout * cin * 9, "weights");
    assert_eq!(u.len(), cout * cin * 3 * 6, "transformed weights");
    for o in 0..cout {
        for i in 0..cin {
            for s in 0..3 {
                let k = 3 * i + s;
                for (p, gp) in G.iter().enumerate() {
                    let v: f64 = (0..3)
                        .map(|r| gp[r] * w[(o * cin + i) * 9 + r * 3 + s] as f64)
                        .sum();
                    u[((o * cin * 3) + k) * 6 + p] = v as f32;
                }
            }
        }
    }
}

/// `out[o] = b[o] + Σᵢ x[i] ⋆ w[o, i]` (then `max(·, 0)` with `relu`) for one
/// image `x: [cin, h, w]`, with the filters transformed by [`filters`];
/// `out: [cout, h − 2, w − 2]` is overwritten.
///
/// # Panics
/// If an operand's length does not match, if `cin` is not 1 to 4, or
/// without AVX-512.
#[allow(clippy::too_many_arguments)]
// The transforms exist on x86_64 only (the caller checks `kernel::available()`).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn conv3x3(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    u: &[f32],
    cout: usize,
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    assert!(kernel::available(), "the transforms need AVX-512");
    assert!(CHANNELS.contains(&cin), "{cin} input channels");
    assert!(
        h >= 3 && w >= 3,
        "a {h}x{w} input is smaller than the kernel"
    );
    assert_eq!(x.len(), cin * h * w, "input");
    assert_eq!(u.len(), cout * cin * 3 * 6, "transformed weights");
    assert_eq!(bias.len(), cout, "bias");
    assert_eq!(out.len(), cout * (h - 2) * (w - 2), "output");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 is available and the lengths are as asserted.
    unsafe {
        avx512::image(x, cin, h, w, u, cout, bias, relu, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::CHANNELS;
    use crate::fast::kernel::lanes;
    use crate::fast::winograd::avx512::{at, bt};

    /// [`super::conv3x3`], block by block of 4 output rows and 32 columns.
    ///
    /// # Safety
    /// AVX-512F, `cin ≤ 4`, `h, w ≥ 3`, and the lengths as `conv3x3` asserts.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn image(
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        u: &[f32],
        cout: usize,
        bias: &[f32],
        relu: bool,
        out: &mut [f32],
    ) {
        let (ho, wo, ks) = (h - 2, w - 2, 3 * cin);
        let floor = _mm512_set1_ps(if relu { 0.0 } else { f32::NEG_INFINITY });
        let (x, u, dst) = (x.as_ptr(), u.as_ptr(), out.as_mut_ptr());
        // V[k][group][p] of the block: 6 points of 16 columns.
        let mut v = [[[_mm512_setzero_ps(); 6]; 2]; 3 * *CHANNELS.end()];
        for y in (0..ho).step_by(4) {
            for q in (0..wo).step_by(32) {
                // The columns of each group inside the output (and so their
                // inputs, up to 2 further on, inside the row).
                let cols = [lanes(wo - q), lanes(wo.saturating_sub(q + 16))];
                // V = Bᵀ d down each column: rows y..y + 6 (zeros past h),
                // shifted by s.
                for (k, vk) in v.iter_mut().enumerate().take(ks) {
                    let (i, s) = (k / 3, k % 3);
                    for (group, vg) in vk.iter_mut().enumerate() {
                        let mut d = [_mm512_setzero_ps(); 6];
                        for (r, dr) in d.iter_mut().enumerate() {
                            if y + r < h && cols[group] != 0 {
                                let at = (i * h + y + r) * w + q + 16 * group + s;
                                *dr = _mm512_maskz_loadu_ps(cols[group], x.add(at));
                            }
                        }
                        *vg = bt(d);
                    }
                }
                for o in (0..cout).step_by(2) {
                    // Two channels (the second once more if cout is odd).
                    let pair = [o, (o + 1).min(cout - 1)];
                    let mut m = [[[_mm512_setzero_ps(); 6]; 2]; 2];
                    for (k, vk) in v.iter().enumerate().take(ks) {
                        for p in 0..6 {
                            for (mc, &c) in m.iter_mut().zip(&pair) {
                                let uk = _mm512_set1_ps(*u.add((c * ks + k) * 6 + p));
                                for (mg, vg) in mc.iter_mut().zip(vk) {
                                    mg[p] = _mm512_fmadd_ps(uk, vg[p], mg[p]);
                                }
                            }
                        }
                    }
                    for (mc, &c) in m.iter().zip(&pair).take(cout - o) {
                        let b = _mm512_set1_ps(bias[c]);
                        for (group, mg) in mc.iter().enumerate() {
                            if cols[group] == 0 {
                                continue;
                            }
                            let mut mp = *mg;
                            mp[1] = _mm512_add_ps(mp[1], b);
                            for (r, row) in at(mp).into_iter().enumerate() {
                                if y + r < ho {
                                    let at = (c * ho + y + r) * wo + q + 16 * group;
                                    let val = _mm512_max_ps(floor, row);
                                    _mm512_mask_storeu_ps(dst.add(at), cols[group], val);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The transforms' matrices, as the 2-D module's doc writes them.
    use crate::fast::winograd::tests::{values, AT, BT};

    /// `U` by hand for the filter `w[r][s] = 3r + s + 1`: its column `s = 0`
    /// is (1, 4, 7), so `U[0] = ¼`, `U[5] = 7`, `U[1] = −(1 + 4 + 7)/6 = −2`
    /// and `U[3] = 1/24 + 4/12 + 7/6`; its column `s = 2`, (3, 6, 9), has
    /// `U[5] = 9`.
    #[test]
    fn filters_by_hand() {
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut u = vec![0.0; 18];
        filters(&g, 1, 1, &mut u);
        let want = [
            (0, 0.25),
            (5, 7.0),
            (1, -2.0),
            (3, 1.0 / 24.0 + 4.0 / 12.0 + 7.0 / 6.0),
        ];
        for (p, v) in want {
            // One rounding to f32 of the f64 sum: within half an ulp.
            assert!(
                (u[p] as f64 - v).abs() <= v.abs() * 6e-8,
                "point {p}: {}",
                u[p]
            );
        }
        assert_eq!(u[2 * 6 + 5], 9.0);
    }

    /// [`conv3x3`] against the direct sums in f64: 1 to 4 channels, output
    /// rows a multiple of 4 or not, output columns fewer than 16, between 16
    /// and 32 and past 32 (a second block across), an odd number of output
    /// channels, with and without the ReLU.
    #[test]
    fn conv3x3_matches_direct_sums() {
        if !kernel::available() {
            // Without AVX-512 the convolution never comes here.
            assert!(!applies(3, 3, 1, false, 3));
            eprintln!("skipped: the column transforms need AVX-512 (absent or SALIENT_PORTABLE=1)");
            return;
        }
        let cases = [
            // (cin, cout, h, w, relu)
            (1, 1, 3, 3, false),
            (3, 32, 32, 32, true),
            (1, 2, 28, 28, false),
            (4, 3, 7, 19, false),
            (2, 5, 6, 40, true),
            (3, 2, 10, 34, false),
            (3, 1, 5, 17, true),
        ];
        for (case, &(cin, cout, h, w, relu)) in cases.iter().enumerate() {
            let (ho, wo) = (h - 2, w - 2);
            let x = values(cin * h * w, 40 + case as u64);
            let wt = values(cout * cin * 9, 50 + case as u64);
            let bias = values(cout, 60 + case as u64);
            let mut u = vec![0.0; cout * cin * 18];
            filters(&wt, cout, cin, &mut u);
            let mut out = vec![f32::NAN; cout * ho * wo];
            conv3x3(&x, cin, h, w, &u, cout, &bias, relu, &mut out);
            let at = |i: usize, y: usize, xx: usize| -> f64 {
                if y < h && xx < w {
                    x[(i * h + y) * w + xx] as f64
                } else {
                    0.0
                }
            };
            for o in 0..cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let (y0, c) = (oy / 4 * 4, oy % 4);
                        let mut sum = bias[o] as f64;
                        // The size of the transformed computation's terms,
                        // Σₚ |Aᵀ[c][p]| Σₖ |U[p]|·|V[p]|.
                        let mut size = (bias[o] as f64).abs();
                        for i in 0..cin {
                            for s in 0..3 {
                                let g: Vec<f64> = (0..3)
                                    .map(|r| wt[(o * cin + i) * 9 + r * 3 + s] as f64)
                                    .collect();
                                for (r, gr) in g.iter().enumerate() {
                                    sum += at(i, oy + r, ox + s) * gr;
                                }
                                for p in 0..6 {
                                    let ug: f64 = (0..3).map(|r| (G[p][r] * g[r]).abs()).sum();
                                    let vd: f64 = (0..6)
                                        .map(|r| (BT[p][r] * at(i, y0 + r, ox + s)).abs())
                                        .sum();
                                    size += AT[c][p].abs() * ug * vd;
                                }
                            }
                        }
                        let want = if relu { sum.max(0.0) } else { sum };
                        let got = out[(o * ho + oy) * wo + ox] as f64;
                        // Each term passes through at most 3·cin + 8 f32
                        // roundings (the filter's transform once, the input's
                        // sum of up to 3 terms twice, the products 3·cin, the
                        // bias once, `Aᵀ`'s sums of up to 5 terms 3 times),
                        // each off by 2⁻²⁴ of a partial sum no larger than
                        // the terms' total size.
                        let bound = (3 * cin + 8) as f64 * f64::powi(2.0, -24) * size;
                        assert!(
                            (got - want).abs() <= bound,
                            "case {case}: out[{o}, {oy}, {ox}] = {got}, want {want}, bound {bound:e}"
                        );
                    }
                }
            }
        }
    }
}
