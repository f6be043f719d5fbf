//! Infidelity and max-sensitivity (Yeh et al. 2019), as Captum defines them.
//!
//! **Infidelity** asks whether the attributions `φ` predict how the class
//! score `f` (linear, as explained) changes under random perturbations `I`:
//!
//! ```text
//! INFD(φ, f, x) = E_I [ (Iᵀφ − (f(x) − f(x − I)))² ]
//! ```
//!
//! With `I ~ N(0, σ²)` per value it is 0 for the gradient of a linear model.
//! Maps differ in scale (a Grad-CAM map is not in score units), so it is also
//! given *normalised* as Captum's `normalize=True` does: `φ` is first scaled by
//! the `β` that minimises the error, `β = E[Iᵀφ · Δf] / E[(Iᵀφ)²]`.
//!
//! **Max-sensitivity** asks how far the attributions move when the input moves
//! a little, relative to their size (Captum's `sensitivity_max`, default
//! radius 0.02 and 10 samples):
//!
//! ```text
//! SENS_MAX(φ, x) = max_{‖δ‖∞ ≤ r} ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖,   δ ~ U(−r, r)ⁿ
//! ```
//!
//! Both are lower-is-better and computed on the raw attributions `[C, H, W]`.

use ndarray::{Axis, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::layers::mix;
use crate::model::Classifier;
use crate::saliency::{check_inputs, Explainer, Method, Options};
use crate::tensor::{Pool, Tensor};

/// Settings of [`infidelity`] and [`max_sensitivity`].
#[derive(Clone, Debug, PartialEq)]
pub struct RobustnessOptions {
    /// Infidelity: perturbations per input (32; Captum's default is 10, and
    /// more samples steady the estimate).
    pub infidelity_samples: usize,
    /// Infidelity: the perturbations' standard deviation (0.1, for inputs in
    /// `[0, 1]`).
    pub infidelity_std: f32,
    /// Max-sensitivity: perturbed inputs per input (10, Captum's default).
    pub sensitivity_samples: usize,
    /// Max-sensitivity: the radius `r` (0.02, Captum's default).
    pub sensitivity_radius: f32,
    /// Seeds the perturbations (0).
    pub seed: u64,
    /// Images per forward pass (250).
    pub batch_size: usize,
}

impl Default for RobustnessOptions {
    fn default() -> Self {
        RobustnessOptions {
            infidelity_samples: 32,
            infidelity_std: 0.1,
            sensitivity_samples: 10,
            sensitivity_radius: 0.02,
            seed: 0,
            batch_size: 250,
        }
    }
}

/// One input's infidelity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Infidelity {
    /// `E[(Iᵀφ − Δf)²]`, in squared score units.
    pub raw: f64,
    /// The same after scaling `φ` by the best `β`.
    pub normalized: f64,
}

/// The infidelity of `attributions: [N, C, H, W]` for `targets` of `model` on
/// `inputs`.
pub fn infidelity(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: &[usize],
    attributions: &Tensor,
    options: &RobustnessOptions,
) -> Result<Vec<Infidelity>> {
    check_inputs(model, inputs, Some(targets))?;
    if attributions.shape() != inputs.shape() {
        return Err(Error::invalid(
            "infidelity",
            format!(
                "attributions {:?} must have the inputs' shape {:?}",
                attributions.shape(),
                inputs.shape()
            ),
        ));
    }
    let samples = options.infidelity_samples;
    if samples == 0 || options.batch_size == 0 || !options.infidelity_std.is_finite() {
        return Err(Error::invalid(
            "infidelity",
            "samples and batch_size must be at least 1, the noise finite",
        ));
    }
    let mut pool = Pool::new();
    let mut out = Vec::with_capacity(targets.len());
    for (i, (x, phi)) in inputs
        .outer_iter()
        .zip(attributions.outer_iter())
        .enumerate()
    {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(options.seed, i as u64));
        // Row 0 is x itself; row s + 1 is x − I_s.
        let mut shape = vec![samples + 1];
        shape.extend_from_slice(x.shape());
        let mut batch = Tensor::zeros(shape);
        batch.index_axis_mut(Axis(0), 0).assign(&x);
        let mut dot = Vec::with_capacity(samples);
        for s in 0..samples {
            let mut row = batch.index_axis_mut(Axis(0), s + 1);
            let mut sum = 0.0f64;
            Zip::from(&mut row)
                .and(&x)
                .and(&phi)
                .for_each(|r, &xv, &p| {
                    let noise = options.infidelity_std * rng.sample::<f32, _>(StandardNormal);
                    *r = xv - noise;
                    sum += f64::from(noise) * f64::from(p);
                });
            dot.push(sum);
        }
        let scores = model.predict_scores(&batch, options.batch_size, &mut pool)?;
        let f = |r: usize| f64::from(scores[[r, targets[i]]]);
        let change: Vec<f64> = (1..=samples).map(|r| f(0) - f(r)).collect();
        out.push(score(&dot, &change));
    }
    Ok(out)
}

/// Infidelity from `a_s = I_sᵀφ` and `b_s = f(x) − f(x − I_s)`.
fn score(a: &[f64], b: &[f64]) -> Infidelity {
    let n = a.len() as f64;
    let raw = a.iter().zip(b).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n;
    let ab = a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>() / n;
    let aa = a.iter().map(|a| a * a).sum::<f64>() / n;
    let beta = if aa > 0.0 { ab / aa } else { 0.0 };
    let normalized = a
        .iter()
        .zip(b)
        .map(|(a, b)| (beta * a - b) * (beta * a - b))
        .sum::<f64>()
        / n;
    Infidelity { raw, normalized }
}

/// The max-sensitivity of `method` for `targets` on `inputs`, whose
/// attributions are `original` (or, if `None`, computed here): the method runs
/// once per sample on perturbed copies, each input keeping its place in the
/// batch (so SmoothGrad's noise stream, seeded per place, is the same and only
/// the input moves).
pub fn max_sensitivity(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    method: Method,
    method_options: &Options,
    original: Option<&Tensor>,
    options: &RobustnessOptions,
) -> Result<Vec<f64>> {
    let r = options.sensitivity_radius;
    if options.sensitivity_samples == 0 || !(r.is_finite() && r >= 0.0) {
        return Err(Error::invalid(
            "max-sensitivity",
            "samples must be at least 1 and the radius finite and not negative",
        ));
    }
    let computed;
    let original = match original {
        Some(raw) if raw.shape() == inputs.shape() => raw,
        Some(raw) => {
            return Err(Error::invalid(
                "max-sensitivity",
                format!(
                    "attributions {:?} must have the inputs' shape {:?}",
                    raw.shape(),
                    inputs.shape()
                ),
            ))
        }
        None => {
            computed = explainer
                .attribute(inputs, Some(targets), method, method_options)?
                .raw;
            &computed
        }
    };
    let norms: Vec<f64> = original.outer_iter().map(|a| norm(a.iter())).collect();
    let mut worst = vec![0.0f64; targets.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(mix(options.seed, 0x5e45));
    for _ in 0..options.sensitivity_samples {
        let perturbed = inputs.mapv(|v| v + rng.random_range(-r..=r));
        let moved = explainer
            .attribute(&perturbed, Some(targets), method, method_options)?
            .raw;
        for (i, (a, b)) in original.outer_iter().zip(moved.outer_iter()).enumerate() {
            let diff = norm(
                a.iter()
                    .zip(b.iter())
                    .map(|(a, b)| a - b)
                    .collect::<Vec<_>>()
                    .iter(),
            );
            // Captum divides by 1 where the original attributions are all zero.
            let denominator = if norms[i] == 0.0 { 1.0 } else { norms[i] };
            worst[i] = worst[i].max(diff / denominator);
        }
    }
    Ok(worst)
}

fn norm<'a>(values: impl Iterator<Item = &'a f32>) -> f64 {
    values
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infidelity_of_exact_and_scaled_predictions() {
        let a = [0.5, -1.0, 2.0];
        // Exact: both 0.
        assert_eq!(
            score(&a, &a),
            Infidelity {
                raw: 0.0,
                normalized: 0.0
            }
        );
        // Twice too large: the raw error is mean((a/2)²), but β = 1/2 removes it.
        let b: Vec<f64> = a.iter().map(|v| v / 2.0).collect();
        let s = score(&a, &b);
        assert!((s.raw - (0.0625 + 0.25 + 1.0) / 3.0).abs() < 1e-12);
        assert!(s.normalized.abs() < 1e-12);
    }
}
