//! The model-randomisation sanity check of Adebayo et al. (2018), cascading.
//!
//! A saliency method that explains the *model* should change when the model's
//! weights are destroyed. On a clone of the model, re-initialise the layers'
//! weights from the top (output) layer down, one more layer each step, and
//! compare each step's maps with the original ones by Spearman rank
//! correlation. Gradient and Grad-CAM maps decorrelate quickly; guided backprop
//! and guided Grad-CAM barely change (the paper's finding).
//!
//! A layer is re-initialised as at build time: Glorot-uniform kernel, zero bias.
//! Maps are compared after [`saliency_maps`]'s
//! absolute value and maximum over channels (the normalisation does not change
//! ranks). The classes explained stay those of the original model.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::images::{saliency_maps, Normalize};
use crate::layers::{glorot_uniform, mix};
use crate::model::Sequential;
use crate::tensor::Tensor;

use super::{attribute, Method, Options};

/// How the maps changed once the layers down to `layer` were randomised.
#[derive(Clone, Debug, PartialEq)]
pub struct Randomized {
    /// The lowest layer randomised at this step (all layers above it are too).
    pub layer: String,
    /// Spearman's rank correlation with the original map, per input (NaN if
    /// either map is constant).
    pub spearman: Vec<f64>,
}

impl Randomized {
    /// The mean correlation over inputs, leaving out NaNs.
    pub fn mean(&self) -> f64 {
        let finite: Vec<f64> = self
            .spearman
            .iter()
            .copied()
            .filter(|r| r.is_finite())
            .collect();
        finite.iter().sum::<f64>() / finite.len().max(1) as f64
    }
}

/// Runs the cascading randomisation for `method`: one entry per layer with
/// weights, from the top down. The model itself is not changed.
pub fn cascading_randomization(
    model: &Sequential,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    method: Method,
    options: &Options,
    seed: u64,
) -> Result<Vec<Randomized>> {
    let original = attribute(model, inputs, targets, method, options)?;
    let reference = saliency_maps(&original.raw, Normalize::PerInput)?;
    let mut randomized = model.clone();
    let mut steps = Vec::new();
    for l in (0..randomized.layers().len()).rev() {
        let layer = &mut randomized.layers_mut()[l];
        let Some((w, b)) = layer.params.as_mut() else {
            continue;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, l as u64));
        *w = glorot_uniform(w.shape(), &mut rng)?;
        b.fill(0.0);
        let name = layer.name.clone();
        let after = attribute(
            &randomized,
            inputs,
            Some(&original.targets),
            method,
            options,
        )?;
        let maps = saliency_maps(&after.raw, Normalize::PerInput)?;
        let spearman = reference
            .outer_iter()
            .zip(maps.outer_iter())
            .map(|(a, b)| {
                let a: Vec<f32> = a.iter().copied().collect();
                let b: Vec<f32> = b.iter().copied().collect();
                spearman(&a, &b)
            })
            .collect();
        steps.push(Randomized {
            layer: name,
            spearman,
        });
    }
    Ok(steps)
}

/// Spearman's rank correlation: the Pearson correlation of the ranks, tied
/// values sharing their mean rank. NaN if either side is constant or the
/// lengths differ.
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        return f64::NAN;
    }
    cov / (va * vb).sqrt()
}

/// 1-based ranks, ties given the mean of the ranks they span.
fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) are ranks start+1..=end: mean (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            ranks[k] = rank;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn spearman_of_monotone_maps() {
        let a = [0.1f32, 0.5, 0.2, 0.9];
        let b: Vec<f32> = a.iter().map(|v| v * v * 10.0).collect();
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        let c: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0; 4]).is_nan());
    }
}
