//! The ReLU rules of [`ReluRule`] in vector code, over rows spread out on a
//! wider grid: how a convolution's backward widens `dy` and applies a fused
//! ReLU's rule in one pass. [`ReluRule::apply`], in [`crate::ops`], defines
//! each rule; the tests hold the vector code to its bits.

use crate::fast::kernel::spread_rows_checked;
use crate::ops::ReluRule;

/// [`ReluRule::apply`] on rows of `len` values, packed in `y` and `g`
/// and `out_stride` apart in `out` (which is left alone between rows):
/// `out[r·out_stride + i] = rule(y[r·len + i], g[r·len + i])`. This is how
/// a convolution's backward spreads `dy` over an output grid wider than
/// the real one (see `fast::conv`), applying a fused ReLU's rule on the way.
/// With AVX-512, 16 values per step and a masked step for the rest of a
/// row, which matters for rows 11 or 26 values long.
///
/// # Panics
/// If `y` and `g` differ in length, it is not a whole number of rows, a
/// row is longer than `out_stride`, or `out` is too short for the rows.
pub(crate) fn apply_rows(
    rule: ReluRule,
    y: &[f32],
    g: &[f32],
    out: &mut [f32],
    len: usize,
    out_stride: usize,
) {
    assert_eq!(y.len(), g.len(), "ReluRule::apply_rows: y and g differ");
    let what = "ReluRule::apply_rows";
    if spread_rows_checked(what, y.len(), len, out_stride, out.len()) == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::fast::kernel::available() {
        // SAFETY: AVX-512 is available; the asserts bound every index.
        unsafe { avx512::apply_rows(rule, y, g, out, len, out_stride) };
        return;
    }
    for (r, (y, g)) in y.chunks(len).zip(g.chunks(len)).enumerate() {
        let out = &mut out[r * out_stride..][..len];
        for (o, (&y, &g)) in out.iter_mut().zip(y.iter().zip(g)) {
            *o = rule.apply(y, g);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::fast::kernel::lanes;
    use crate::ops::ReluRule;

    /// See [`super::apply_rows`]. `y > 0` and `g > 0` are ordered
    /// comparisons, false for NaN, as in [`ReluRule::apply`]; lanes that do
    /// not pass become +0.
    ///
    /// # Safety
    /// AVX-512F must be available and the caller's bounds checks hold.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn apply_rows(
        rule: ReluRule,
        y: &[f32],
        g: &[f32],
        out: &mut [f32],
        len: usize,
        out_stride: usize,
    ) {
        let (by_y, by_g) = match rule {
            ReluRule::Gradient => (true, false),
            ReluRule::Rectified => (false, true),
            ReluRule::Guided => (true, true),
        };
        let zero = _mm512_setzero_ps();
        for r in 0..y.len() / len {
            let (yp, gp) = (y.as_ptr().add(r * len), g.as_ptr().add(r * len));
            let op = out.as_mut_ptr().add(r * out_stride);
            for i in (0..len).step_by(16) {
                let m = lanes(len - i);
                let gv = _mm512_maskz_loadu_ps(m, gp.add(i));
                let mut pass = m;
                if by_y {
                    let yv = _mm512_maskz_loadu_ps(m, yp.add(i));
                    pass = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(pass, yv, zero);
                }
                if by_g {
                    pass = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(pass, gv, zero);
                }
                _mm512_mask_storeu_ps(op.add(i), m, _mm512_maskz_mov_ps(pass, gv));
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::ReluRule;

    /// The vector path gives the bits of the scalar rule, on every length up
    /// to 40 (whole vectors and masked tails), with NaN and both zeros among
    /// outputs and gradients, in one run or spread over rows.
    #[test]
    fn apply_slice_and_rows_match_the_scalar_rule() {
        let palette = [0.0, -0.0, 1.5, -2.0, f32::NAN, 3.0, -0.5, 0.25, -f32::NAN];
        for rule in [ReluRule::Gradient, ReluRule::Rectified, ReluRule::Guided] {
            for n in 0..=40 {
                let y: Vec<f32> = (0..n).map(|i| palette[i % 9]).collect();
                let g: Vec<f32> = (0..n).map(|i| palette[(i * 4 + 1) % 9]).collect();
                let mut out = vec![7.0; n];
                rule.apply_slice(&y, &g, &mut out);
                for i in 0..n {
                    let want = rule.apply(y[i], g[i]);
                    assert_eq!(out[i].to_bits(), want.to_bits(), "{rule:?} n {n} at {i}");
                }
                // The same values as rows of 11 (or fewer), 13 apart; the
                // gaps between rows keep what they held.
                let len = n.clamp(1, 11);
                let rows = n / len;
                let mut spread = vec![7.0f32; rows * 13];
                let m = rows * len;
                apply_rows(rule, &y[..m], &g[..m], &mut spread, len, 13);
                for (j, v) in spread.iter().enumerate() {
                    let want = if j % 13 < len {
                        out[j / 13 * len + j % 13]
                    } else {
                        7.0
                    };
                    assert_eq!(v.to_bits(), want.to_bits(), "{rule:?} rows of {len} at {j}");
                }
            }
        }
    }
}
