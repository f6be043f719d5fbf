//! Batch normalisation over the channel axis (axis 1 of `[N, C, ...]`).
//!
//! Per channel `c`, with `x̂ = (x − μ_c) / √(σ²_c + ε)`: `y = γ_c·x̂ + β_c`.
//!
//! - **Inference** reads `μ` and `σ²` from the running statistics (inputs of
//!   the op, like `γ` and `β`).
//! - **Training** takes them from the batch: the mean and the *biased*
//!   variance of the channel's `m = N·H·W` values, as PyTorch and Keras
//!   normalise (the running variance they keep is the unbiased one;
//!   [`batch_statistics`] gives both).
//!
//! | | backward, with `g = ∂L/∂y` and sums over the channel's values |
//! | --- | --- |
//! | inference | `dx = γ·g / √(σ² + ε)`, `dγ = Σ g·x̂`, `dβ = Σ g`, `dμ = −Σ dx`, `dσ² = −½ Σ dx·(x − μ) / (σ² + ε)` |
//! | training | `dx = γ / (m·√(σ² + ε)) · (m·g − Σ g − x̂·Σ g·x̂)`, `dγ = Σ g·x̂`, `dβ = Σ g` |
//!
//! In training `μ` and `σ²` depend on `x`, which is where the two sums of the
//! training `dx` come from.

use ndarray::{Axis, Ix3, IxDyn, Zip};

use crate::error::{Error, Result};
use crate::fast;
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
use crate::tensor::Tensor;

/// `x: [N, C, ...]` as `[N, C, S]`, with `S` the product of the rest.
fn as_ncs(x: &Tensor) -> Result<ndarray::ArrayView3<'_, f32>> {
    if x.ndim() < 2 {
        return Err(Error::invalid(
            "batch_norm",
            format!("input must be [N, C, ...], got shape {:?}", x.shape()),
        ));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s = x.shape()[2..].iter().product();
    x.view()
        .into_shape_with_order(IxDyn(&[n, c, s]))
        .and_then(|v| v.into_dimensionality::<Ix3>())
        .map_err(|e| Error::invalid("batch_norm", e.to_string()))
}

/// Checks that each per-channel parameter holds `c` values.
fn check_params(c: usize, params: &[(&str, &Tensor)]) -> Result<()> {
    for (name, p) in params {
        if p.shape() != [c] {
            return Err(Error::invalid(
                "batch_norm",
                format!(
                    "{name} must be [{c}] (one per channel), got shape {:?}",
                    p.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// Batch normalisation at inference, as [`Tape::batch_norm`] takes it: `γ`,
/// `β`, the running mean and variance, and `ε`.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormVars {
    pub gamma: Var,
    pub beta: Var,
    pub mean: Var,
    pub var: Var,
    pub eps: f32,
}

/// What [`Tape::conv2d_inference`] takes after its convolution, in this
/// order: a batch normalisation at inference, a residual connection's other
/// input (added; of the output's shape), a ReLU. ResNet's basic block ends
/// `relu(bn(conv(x)) + identity)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AfterConv {
    pub norm: Option<BatchNormVars>,
    pub residual: Option<Var>,
    pub relu: bool,
}

/// Inference's parameters for `c` channels, checked one per channel, from
/// `[γ, β, μ, σ²]`: `[μ, scale, β]` with `scale = γ / √(σ² + ε)`, what
/// [`fast::norm::forward`] and a convolution's normalised forward take.
pub(crate) fn inference_affine(c: usize, v: [&Tensor; 4], eps: f32) -> Result<[Vec<f32>; 3]> {
    check_params(
        c,
        &[
            ("gamma", v[0]),
            ("beta", v[1]),
            ("mean", v[2]),
            ("var", v[3]),
        ],
    )?;
    let vec = |t: &Tensor| t.iter().copied().collect::<Vec<f32>>();
    let (gamma, var) = (vec(v[0]), vec(v[3]));
    Ok([vec(v[2]), scales(&gamma, &var, eps), vec(v[1])])
}

/// Per channel: the batch mean, the biased variance (what training
/// normalises with) and the unbiased one (what a running average keeps).
pub fn batch_statistics(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let v = as_ncs(x)?;
    let m = v.shape()[0] * v.shape()[2];
    if m == 0 {
        return Err(Error::invalid(
            "batch_norm",
            "no values to take statistics of",
        ));
    }
    let mut means = Vec::new();
    let mut biased = Vec::new();
    let mut unbiased = Vec::new();
    for ch in v.axis_iter(Axis(1)) {
        let mean = ch.sum() / m as f32;
        let squares: f32 = ch.iter().map(|&x| (x - mean) * (x - mean)).sum();
        means.push(mean);
        biased.push(squares / m as f32);
        unbiased.push(if m > 1 { squares / (m - 1) as f32 } else { 0.0 });
    }
    Ok((means, biased, unbiased))
}

/// The reference forward: `γ·(x − μ)/√(σ² + ε) + β` per channel.
pub fn batch_norm_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> Result<Tensor> {
    let mut y = Tensor::zeros(x.raw_dim());
    normalise_into(&mut y, x, mean, &scales(gamma, var, eps), beta)?;
    Ok(y)
}

/// `γ_c / √(σ²_c + ε)` per channel: what the inference forward multiplies by.
fn scales(gamma: &[f32], var: &[f32], eps: f32) -> Vec<f32> {
    gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect()
}

/// `y = (x − μ_c)·scale_c + β_c` into `y`, of `x`'s shape: the reference
/// forward with its scales worked out.
fn normalise_into(
    y: &mut Tensor,
    x: &Tensor,
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
) -> Result<()> {
    let v = as_ncs(x)?;
    let mut out = y
        .view_mut()
        .into_shape_with_order(v.dim())
        .map_err(|e| Error::invalid("batch_norm", e.to_string()))?;
    Zip::indexed(&mut out)
        .and(&v)
        .for_each(|(_, c, _), y, &x| *y = (x - mean[c]) * scale[c] + beta[c]);
    Ok(())
}

struct BatchNorm {
    eps: f32,
    /// Which implementation the backward runs.
    kernels: Kernels,
    /// Training: the batch's mean and biased variance, which depend on `x`.
    batch: Option<(Vec<f32>, Vec<f32>)>,
}

impl Backward for BatchNorm {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let x = as_ncs(a.inputs[0]).expect("checked by the forward");
        let g = as_ncs(a.dy).expect("the output's shape");
        let (n, c, s) = x.dim();
        let gamma = a.inputs[1].as_slice().expect("a parameter vector");
        let (mean, var): (Vec<f32>, Vec<f32>) = match &self.batch {
            Some((m, v)) => (m.clone(), v.clone()),
            None => (
                a.inputs[3].iter().copied().collect(),
                a.inputs[4].iter().copied().collect(),
            ),
        };
        if self.batch.is_none() && !a.wants[1..].iter().any(|&w| w) {
            // Only the input's gradient at inference (a saliency map):
            // dx = γ / √(var + ε) · dy, into a buffer the tape reuses.
            let scale = scales(gamma, &var, self.eps);
            let mut dx = a.pool.to_overwrite(a.dy.shape());
            if let (true, Some(dys)) = (self.kernels != Kernels::Reference, a.dy.as_slice()) {
                let dxs = dx.as_slice_mut().expect("pooled");
                fast::norm::input_gradient(dys, s, &scale, dxs);
                return vec![Some(dx), None, None, None, None];
            }
            let mut out = dx
                .view_mut()
                .into_shape_with_order((n, c, s))
                .expect("the input's size");
            Zip::indexed(&mut out)
                .and(&g)
                .for_each(|(_, ch, _), d, &g| *d = scale[ch] * g);
            return vec![Some(dx), None, None, None, None];
        }
        let m = (n * s) as f32;
        let mut dx = ndarray::Array3::<f32>::zeros((n, c, s));
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        let (mut dmean, mut dvar) = (vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let inv = 1.0 / (var[ch] + self.eps).sqrt();
            let xs = x.index_axis(Axis(1), ch);
            let gs = g.index_axis(Axis(1), ch);
            let xhat = xs.mapv(|v| (v - mean[ch]) * inv);
            let sum_g = gs.sum();
            let sum_gx: f32 = gs.iter().zip(xhat.iter()).map(|(g, h)| g * h).sum();
            dgamma[ch] = sum_gx;
            dbeta[ch] = sum_g;
            let mut out = dx.index_axis_mut(Axis(1), ch);
            match self.batch {
                Some(_) => {
                    ndarray::Zip::from(&mut out)
                        .and(&gs)
                        .and(&xhat)
                        .for_each(|d, &g, &h| {
                            *d = gamma[ch] * inv / m * (m * g - sum_g - h * sum_gx);
                        })
                }
                None => {
                    ndarray::Zip::from(&mut out)
                        .and(&gs)
                        .for_each(|d, &g| *d = gamma[ch] * inv * g);
                    let sum_dx = out.sum();
                    let sum_dx_centred: f32 = out
                        .iter()
                        .zip(xs.iter())
                        .map(|(d, &x)| d * (x - mean[ch]))
                        .sum();
                    dmean[ch] = -sum_dx;
                    dvar[ch] = -0.5 * sum_dx_centred * inv * inv;
                }
            }
        }
        let dx = dx
            .into_dyn()
            .into_shape_with_order(IxDyn(a.inputs[0].shape()))
            .expect("same size");
        let vector = |v: Vec<f32>| Tensor::from_shape_vec(IxDyn(&[c]), v).expect("c values");
        let mut grads = vec![
            a.wants[0].then_some(dx),
            a.wants[1].then(|| vector(dgamma)),
            a.wants[2].then(|| vector(dbeta)),
        ];
        if self.batch.is_none() {
            grads.push(a.wants[3].then(|| vector(dmean)));
            grads.push(a.wants[4].then(|| vector(dvar)));
        }
        grads
    }
}

impl Tape<'_> {
    /// Batch normalisation at inference: `γ·(x − μ)/√(σ² + ε) + β` per channel
    /// of `x: [N, C, ...]`, with `μ` and `σ²` the running statistics `[C]`.
    pub fn batch_norm(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Var,
        var: Var,
        eps: f32,
    ) -> Result<Var> {
        let kernels = self.kernels();
        let y = self.compute(&[x, gamma, beta, mean, var], |v, pool| {
            let (_, c, s) = as_ncs(v[0])?.dim();
            let [mean, scale, beta] = inference_affine(c, [v[1], v[2], v[3], v[4]], eps)?;
            let mut y = pool.to_overwrite(v[0].shape());
            match (kernels, v[0].as_slice(), y.as_slice_mut()) {
                (k, Some(xs), Some(ys)) if k != Kernels::Reference => {
                    fast::norm::forward(xs, s, &mean, &scale, &beta, ys);
                }
                _ => normalise_into(&mut y, v[0], &mean, &scale, &beta)?,
            }
            Ok(y)
        })?;
        let rule = BatchNorm {
            eps,
            batch: None,
            kernels,
        };
        Ok(self.push(y, &[x, gamma, beta, mean, var], Box::new(rule)))
    }

    /// Batch normalisation in training: normalised by the batch's own mean
    /// and biased variance per channel (see [`batch_statistics`] for the
    /// values a running average is updated with).
    pub fn batch_norm_train(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<Var> {
        let (y, stats) = self.compute(&[x, gamma, beta], |v, _| {
            let c = as_ncs(v[0])?.shape()[1];
            check_params(c, &[("gamma", v[1]), ("beta", v[2])])?;
            let (mean, var, _) = batch_statistics(v[0])?;
            let vec = |t: &Tensor| t.iter().copied().collect::<Vec<f32>>();
            let y = batch_norm_forward(v[0], &vec(v[1]), &vec(v[2]), &mean, &var, eps)?;
            Ok((y, (mean, var)))
        })?;
        let rule = BatchNorm {
            eps,
            batch: Some(stats),
            kernels: self.kernels(),
        };
        Ok(self.push(y, &[x, gamma, beta], Box::new(rule)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn statistics_and_normalisation_by_hand() {
        // One channel holding 1, 2, 3, 6: mean 3, biased variance (4+1+0+9)/4 = 3.5,
        // unbiased 14/3.
        let x = array![[[1.0f32, 2.0]], [[3.0, 6.0]]].into_dyn();
        let (mean, biased, unbiased) = batch_statistics(&x).unwrap();
        assert_eq!((mean[0], biased[0]), (3.0, 3.5));
        assert!((unbiased[0] - 14.0 / 3.0).abs() < 1e-6);
        // γ = 2, β = 1, σ² = 4 − ε: y = 2·(x − 3)/2 + 1 = x − 2.
        let eps = 1e-3;
        let y = batch_norm_forward(&x, &[2.0], &[1.0], &[3.0], &[4.0 - eps], eps).unwrap();
        assert_eq!(y, array![[[-1.0f32, 0.0]], [[1.0, 4.0]]].into_dyn());
    }
}
