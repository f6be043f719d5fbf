//! Element-wise activations and softmax.
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | ReLU | `y = max(x, 0)` | `dx = 1[x > 0] · dy` (or a [`ReluRule`]) |
//! | identity | `y = x` | `dx = dy` |
//! | softmax | `yᵢ = e^{xᵢ} / Σⱼ e^{xⱼ}` | `dx = y ⊙ (dy − Σⱼ dyⱼ yⱼ)` |
//! | log-softmax | `yᵢ = xᵢ − log Σⱼ e^{xⱼ}` | `dx = dy − softmax(x) · Σⱼ dyⱼ` |

use ndarray::{Axis, Zip};

use crate::error::Result;
use crate::tape::{Backward, GradArgs, Tape, Var};
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
        for (o, (&y, &g)) in out.iter_mut().zip(y.iter().zip(g)) {
            *o = self.apply(y, g);
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

struct LogSoftmax;

impl Backward for LogSoftmax {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        // softmax(x) = e^y, read off the output.
        let mut dx = a.pool.to_overwrite(a.dy.shape());
        for ((mut dx, y), dy) in dx
            .axis_iter_mut(Axis(0))
            .zip(a.output.axis_iter(Axis(0)))
            .zip(a.dy.axis_iter(Axis(0)))
        {
            let total: f32 = dy.sum();
            Zip::from(&mut dx)
                .and(&y)
                .and(&dy)
                .for_each(|d, &y, &g| *d = g - y.exp() * total);
        }
        vec![Some(dx)]
    }
}

/// Row-wise log-softmax of a `[N, K]` tensor, `x − max − log Σ e^{x − max}`:
/// stable for any finite scores.
pub fn log_softmax_rows(x: &Tensor, out: &mut Tensor) {
    for (x, mut y) in x.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        let max = x.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + x.fold(0.0, |s, &v| s + (v - max).exp()).ln();
        Zip::from(&mut y).and(&x).for_each(|y, &x| *y = x - lse);
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

    /// Log-softmax over the last axis of a `[N, K]` tensor.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        let y = self.compute(&[x], |v, pool| {
            expect_rank(v[0], 2, "log_softmax", "input")?;
            let mut y = pool.to_overwrite(v[0].shape());
            log_softmax_rows(v[0], &mut y);
            Ok(y)
        })?;
        Ok(self.push(y, &[x], Box::new(LogSoftmax)))
    }
}
