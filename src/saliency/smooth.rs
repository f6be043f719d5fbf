//! SmoothGrad and its two relatives: gradients averaged over noisy copies.
//!
//! For input `x` with pixel range `max − min`, draw `n` copies
//! `x_s = x + ε_s`, `ε_s ~ N(0, σ²)` independently per value, with
//! `σ = noise_level · (max − min)`. Note σ is a **standard deviation**
//! (Smilkov et al. 2017), not a variance. With `g_s = ∂y_c/∂x (x_s)`:
//!
//! | method | attribution |
//! | --- | --- |
//! | `smoothgrad` | `(1/n) Σ_s g_s` |
//! | `smoothgrad-sq` | `(1/n) Σ_s g_s²` |
//! | `vargrad` | `(1/n) Σ_s g_s² − ((1/n) Σ_s g_s)²` (the population variance) |
//!
//! The copies of one input go through the model as one batch (in chunks of
//! `batch_size`), all explaining that input's target class. Sums are kept in
//! `f64`, so with `σ = 0` SmoothGrad returns the vanilla gradient itself (bit for
//! bit, as long as the ops give a row the same result whatever batch it is in).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::layers::mix;
use crate::ops::ReluRule;
use crate::tensor::Tensor;

use super::Explainer;
use super::{check_inputs, chunks, Options};

/// How the gradients of the noisy copies are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// SmoothGrad: the mean.
    Mean,
    /// SmoothGrad-squared: the mean of the squares.
    MeanOfSquares,
    /// VarGrad: the variance.
    Variance,
}

/// SmoothGrad-family attributions `[N, C, H, W]` for `targets`, reading
/// `samples`, `noise_level`, `seed` and `batch_size` from `options`.
///
/// Input `i` of the batch draws its noise from its own ChaCha8 stream, seeded
/// with `(seed, i)`: the same seed repeats a run bit for bit, and an input's
/// noise does not depend on the other inputs.
pub fn smoothgrad(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    options: &Options,
    aggregate: Aggregate,
) -> Result<Tensor> {
    let op = "smoothgrad";
    let model = explainer.model();
    check_inputs(model, inputs, Some(targets))?;
    if options.samples == 0 {
        return Err(Error::invalid(
            op,
            "samples must be at least 1 (50 is the default)",
        ));
    }
    if !options.noise_level.is_finite() || options.noise_level < 0.0 {
        return Err(Error::invalid(
            op,
            format!(
                "noise_level must be a finite standard deviation >= 0 (0.15 is the default), got {}",
                options.noise_level
            ),
        ));
    }
    let n = options.samples;
    let mut out = Tensor::zeros(inputs.raw_dim());
    for (i, (x, mut attribution)) in inputs.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let sigma = options.noise_level * (hi - lo);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(options.seed, i as u64));
        let mut sum = vec![0.0f64; x.len()];
        let mut sum_sq = vec![0.0f64; x.len()];
        for range in chunks(n, options.batch_size) {
            // [m, C, H, W]: m noisy copies of input i.
            let mut shape = vec![range.len()];
            shape.extend_from_slice(x.shape());
            let mut copies = Tensor::zeros(shape);
            for mut copy in copies.outer_iter_mut() {
                copy.assign(&x);
            }
            copies.mapv_inplace(|v| v + sigma * rng.sample::<f32, _>(StandardNormal));
            let targets = vec![targets[i]; range.len()];
            let g = explainer.class_gradient(&copies, Some(&targets), ReluRule::Gradient, None)?;
            for copy in g.input.outer_iter() {
                for ((s, s2), &v) in sum.iter_mut().zip(&mut sum_sq).zip(copy.iter()) {
                    let v = f64::from(v);
                    *s += v;
                    *s2 += v * v;
                }
            }
            explainer.give(g.input);
        }
        let count = n as f64;
        // Logical (row-major) order on both sides, as the sums were taken.
        for (a, (&s, &s2)) in attribution.iter_mut().zip(sum.iter().zip(&sum_sq)) {
            let mean = s / count;
            let mean_sq = s2 / count;
            *a = match aggregate {
                Aggregate::Mean => mean,
                Aggregate::MeanOfSquares => mean_sq,
                // E[g²] − E[g]², clamped at 0 against rounding.
                Aggregate::Variance => (mean_sq - mean * mean).max(0.0),
            } as f32;
        }
    }
    Ok(out)
}
