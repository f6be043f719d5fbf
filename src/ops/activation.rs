//! Element-wise activations and softmax.
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | ReLU | `y = max(x, 0)` | `dx = 1[x > 0] · dy` (or a [`ReluRule`]) |
//! | identity | `y = x` | `dx = dy` |
//! | softmax | `yᵢ = e^{xᵢ} / Σⱼ e^{xⱼ}` | `dx = y ⊙ (dy − Σⱼ dyⱼ yⱼ)` |

use ndarray::{Axis, Zip};

use crate::error::Result;
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::kernel::spread_rows_checked;
use crate::tensor::{as_slice, expect_rank, map_into, slice, slice_mut, zip_map_into, Tensor};

/// How ReLU sends a gradient backward. The three saliency methods of the
/// tutorial differ *only* here; convolution, pooling and dense layers back-
/// propagate as usual in all three.
///
/// With `x` the ReLU's input, `y = max(x, 0)` its output and `g` the incoming
/// gradient:
///
/// | rule | ReLU backward | saliency method |
/// | --- | --- | --- |
/// | `Gradient` | `1[x > 0] · g` | vanilla gradient (Simonyan et al.) |
/// | `Rectified` | `1[g > 0] · g` | deconvnet (Zeiler and Fergus) |
/// | `Guided` | `1[x > 0] · 1[g > 0] · g` | guided backprop (Springenberg et al.) |
///
/// At `x = 0` the derivative of ReLU does not exist; we use the subgradient 0
/// (`1[x > 0]`), as Keras and PyTorch do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReluRule {
    /// The true gradient.
    #[default]
    Gradient,
    /// Deconvnet: pass only positive gradient, ignoring the forward mask.
    Rectified,
    /// Guided backprop: the forward mask and positive gradient both.
    Guided,
}

impl ReluRule {
    /// The backward of one ReLU element: `y` is the forward output (`y > 0`
    /// exactly when `x > 0`) and `g` the incoming gradient.
    #[inline]
    pub fn apply(self, y: f32, g: f32) -> f32 {
        let pass = match self {
            ReluRule::Gradient => y > 0.0,
            ReluRule::Rectified => g > 0.0,
            ReluRule::Guided => y > 0.0 && g > 0.0,
        };
        if pass {
            g
        } else {
            0.0
        }
    }

    /// [`apply`](Self::apply) element by element: `out[i] = rule(y[i], g[i])`.
    ///
    /// # Panics
    /// If the three slices differ in length.
    pub fn apply_slice(self, y: &[f32], g: &[f32], out: &mut [f32]) {
        assert!(
            y.len() == out.len() && g.len() == out.len(),
            "ReluRule::apply_slice: lengths differ"
        );
        self.apply_rows(y, g, out, out.len(), out.len());
    }

    /// [`apply`](Self::apply) on rows of `len` values, packed in `y` and `g`
    /// and `out_stride` apart in `out` (which is left alone between rows):
    /// `out[r·out_stride + i] = rule(y[r·len + i], g[r·len + i])`. This is how
    /// a convolution's backward spreads `dy` over an output grid wider than
    /// the real one (see `ops::conv`), applying a fused ReLU's rule on the way.
    /// With AVX-512, 16 values per step and a masked step for the rest of a
    /// row, which matters for rows 11 or 26 values long.
    ///
    /// # Panics
    /// If `y` and `g` differ in length, it is not a whole number of rows, a
    /// row is longer than `out_stride`, or `out` is too short for the rows.
    pub fn apply_rows(self, y: &[f32], g: &[f32], out: &mut [f32], len: usize, out_stride: usize) {
        assert_eq!(y.len(), g.len(), "ReluRule::apply_rows: y and g differ");
        let what = "ReluRule::apply_rows";
        if spread_rows_checked(what, y.len(), len, out_stride, out.len()) == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::tensor::kernel::available() {
            // SAFETY: AVX-512 is available; the asserts bound every index.
            unsafe { avx512::apply_rows(self, y, g, out, len, out_stride) };
            return;
        }
        for (r, (y, g)) in y.chunks(len).zip(g.chunks(len)).enumerate() {
            let out = &mut out[r * out_stride..][..len];
            for (o, (&y, &g)) in out.iter_mut().zip(y.iter().zip(g)) {
                *o = self.apply(y, g);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::ReluRule;
    use crate::tensor::kernel::lanes;

    /// See [`ReluRule::apply_rows`]. `y > 0` and `g > 0` are ordered
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

/// `max(x, 0)`. NaN stays NaN (`f32::max` would turn it into 0 and hide a
/// diverged network).
#[inline]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

struct Relu;

impl Backward for Relu {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut dx = a.pool.to_overwrite(a.dy.shape());
        let rule = a.relu;
        // The output alone decides the mask, so the input need not be kept.
        zip_map_into(slice_mut(&mut dx), slice(a.output), slice(a.dy), |y, g| {
            rule.apply(y, g)
        });
        vec![Some(dx)]
    }
}

struct Identity;

impl Backward for Identity {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        vec![Some(a.pool.copy_of(a.dy))]
    }
}

struct Softmax;

impl Backward for Softmax {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        // dxᵢ = yᵢ (dyᵢ − Σⱼ dyⱼ yⱼ), row by row.
        let mut dx = a.pool.to_overwrite(a.dy.shape());
        for ((mut dx, y), dy) in dx
            .axis_iter_mut(Axis(0))
            .zip(a.output.axis_iter(Axis(0)))
            .zip(a.dy.axis_iter(Axis(0)))
        {
            let dot: f32 = y.iter().zip(dy.iter()).map(|(y, g)| y * g).sum();
            Zip::from(&mut dx)
                .and(&y)
                .and(&dy)
                .for_each(|d, &y, &g| *d = y * (g - dot));
        }
        vec![Some(dx)]
    }
}

/// Row-wise softmax of a `[N, K]` tensor, stabilised by subtracting each row's
/// maximum (which leaves the result unchanged and keeps `exp` from overflowing).
pub fn softmax_rows(x: &Tensor, out: &mut Tensor) {
    for (x, mut y) in x.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        let max = x.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        Zip::from(&mut y).and(&x).for_each(|y, &x| {
            *y = (x - max).exp();
            sum += *y;
        });
        y.mapv_inplace(|v| v / sum);
    }
}

impl Tape<'_> {
    /// Rectified linear unit, `y = max(x, 0)`. Its backward rule is chosen per
    /// pass with [`ReluRule`].
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let y = self.compute(&[x], |v, pool| {
            let mut y = pool.to_overwrite(v[0].shape());
            map_into(slice_mut(&mut y), as_slice(v[0], "relu")?, relu);
            Ok(y)
        })?;
        Ok(self.push(y, &[x], Box::new(Relu)))
    }

    /// The identity, `y = x`: the "linear" activation. Recorded as its own node so
    /// that a layer's output has its own gradient.
    pub fn identity(&mut self, x: Var) -> Result<Var> {
        let y = self.compute(&[x], |v, pool| Ok(pool.copy_of(v[0])))?;
        Ok(self.push(y, &[x], Box::new(Identity)))
    }

    /// Softmax over the last axis of a `[N, K]` tensor.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        let y = self.compute(&[x], |v, pool| {
            expect_rank(v[0], 2, "softmax", "input")?;
            let mut y = pool.to_overwrite(v[0].shape());
            softmax_rows(v[0], &mut y);
            Ok(y)
        })?;
        Ok(self.push(y, &[x], Box::new(Softmax)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                rule.apply_rows(&y[..m], &g[..m], &mut spread, len, 13);
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
