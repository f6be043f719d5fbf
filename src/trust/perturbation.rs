//! Perturbation scores: remove the pixels a map ranks first, and watch the
//! class probability.
//!
//! **Deletion and insertion** (Petsiuk et al. 2018, RISE). Rank the pixels by
//! the drawn map, most relevant first. *Deletion* sets the first `k` pixels
//! (all their channels) to a fill value (0, black) for `k = 0, HW/S, 2HW/S,
//! …, HW`; *insertion* starts from a blurred copy of the input and puts the
//! first `k` pixels back. The class probability `p_c` (softmax of the linear
//! scores) against the fraction changed is the curve; its trapezoid area is
//! the score:
//!
//! ```text
//! deletion AUC  = ∫₀¹ p_c(x with the top-f pixels removed)  df   (lower is better)
//! insertion AUC = ∫₀¹ p_c(blur(x) with the top-f put back) df   (higher is better)
//! ```
//!
//! Pixels that the map ties are taken in a random order, seeded per input, so
//! that a constant map *is* the random-order baseline (a zero map gives it).
//!
//! **ROAD** (Rong et al. 2022). A removed pixel set to 0 leaves a pattern the
//! model can read; ROAD fills the removed pixels by noisy linear imputation
//! ([`super::imputation`]) instead, and removes a fixed share of pixels: the
//! most relevant first (MoRF, lower `p_c` is better) or the least relevant
//! first (LeRF, higher is better).

use ndarray::{ArrayView2, Axis, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::layers::mix;
use crate::model::Classifier;
use crate::saliency::check_inputs;
use crate::tensor::{Pool, Tensor};

use super::{area_under, imputation};

/// Settings of [`deletion_insertion`].
#[derive(Clone, Debug, PartialEq)]
pub struct CurveOptions {
    /// Points on the curve after the first: the pixels change in `steps`
    /// equal shares (32).
    pub steps: usize,
    /// The value deleted pixels take (0, black).
    pub fill: f32,
    /// Standard deviation of the Gaussian blur insertion starts from, in
    /// pixels; `None` is `max(1, min(H, W) / 20)`: 1.4 px on MNIST, 11 px at
    /// 224x224, a blur that hides strokes and texture but keeps the layout.
    pub blur_sigma: Option<f32>,
    /// Seeds the order of tied pixels (0).
    pub seed: u64,
    /// Images per forward pass (250).
    pub batch_size: usize,
}

impl Default for CurveOptions {
    fn default() -> Self {
        CurveOptions {
            steps: 32,
            fill: 0.0,
            blur_sigma: None,
            seed: 0,
            batch_size: 250,
        }
    }
}

/// Deletion and insertion curves of each input.
#[derive(Clone, Debug, PartialEq)]
pub struct Curves {
    /// The fractions of pixels changed, `0, 1/S, …, 1`.
    pub fractions: Vec<f64>,
    /// Per input, the class probability after each deletion step.
    pub deletion: Vec<Vec<f64>>,
    /// Per input, the class probability after each insertion step.
    pub insertion: Vec<Vec<f64>>,
}

impl Curves {
    /// The area under each input's deletion curve.
    pub fn deletion_auc(&self) -> Vec<f64> {
        self.deletion
            .iter()
            .map(|c| area_under(&self.fractions, c))
            .collect()
    }

    /// The area under each input's insertion curve.
    pub fn insertion_auc(&self) -> Vec<f64> {
        self.insertion
            .iter()
            .map(|c| area_under(&self.fractions, c))
            .collect()
    }
}

/// The pixels of `map` ranked most relevant first; ties in a random order
/// drawn from `seed`.
pub fn ranking(map: ArrayView2<f32>, seed: u64) -> Vec<usize> {
    let values: Vec<f32> = map.iter().copied().collect();
    let mut tie_break: Vec<u32> = (0..values.len() as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..tie_break.len()).rev() {
        tie_break.swap(i, rng.random_range(0..=i));
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        values[b]
            .total_cmp(&values[a])
            .then(tie_break[a].cmp(&tie_break[b]))
    });
    order
}

/// The deletion and insertion curves of `maps: [N, H, W]` (larger is more
/// relevant), for `targets` of `model` on `inputs: [N, C, H, W]`.
pub fn deletion_insertion(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: &[usize],
    maps: &Tensor,
    options: &CurveOptions,
) -> Result<Curves> {
    check(model, inputs, targets, maps)?;
    if options.steps == 0 || options.batch_size == 0 {
        return Err(Error::invalid(
            "deletion",
            "steps and batch_size must be at least 1",
        ));
    }
    let (c, h, w) = (inputs.shape()[1], inputs.shape()[2], inputs.shape()[3]);
    let hw = h * w;
    let steps = options.steps;
    let sigma = options
        .blur_sigma
        .unwrap_or_else(|| (h.min(w) as f32 / 20.0).max(1.0));
    let fractions: Vec<f64> = (0..=steps).map(|s| s as f64 / steps as f64).collect();
    let mut pool = Pool::new();
    let (mut deletion, mut insertion) = (Vec::new(), Vec::new());
    for (i, x) in inputs.outer_iter().enumerate() {
        let order = ranking(map(maps, i)?, mix(options.seed, i as u64));
        let blurred = gaussian_blur(&x.to_owned(), sigma);
        // [2(S+1), C, H, W]: the deletion images, then the insertion images.
        let mut batch = Tensor::zeros(vec![2 * (steps + 1), c, h, w]);
        let (mut del, mut ins) = (x.to_owned(), blurred);
        let mut done = 0;
        for s in 0..=steps {
            let k = (s * hw).div_ceil(steps).min(hw);
            for &p in &order[done..k] {
                let (py, px) = (p / w, p % w);
                for ch in 0..c {
                    del[[ch, py, px]] = options.fill;
                    ins[[ch, py, px]] = x[[ch, py, px]];
                }
            }
            done = k;
            batch.index_axis_mut(Axis(0), s).assign(&del);
            batch.index_axis_mut(Axis(0), steps + 1 + s).assign(&ins);
        }
        let p = class_probabilities(model, &batch, targets[i], options.batch_size, &mut pool)?;
        deletion.push(p[..=steps].to_vec());
        insertion.push(p[steps + 1..].to_vec());
    }
    Ok(Curves {
        fractions,
        deletion,
        insertion,
    })
}

/// Settings of [`road`].
#[derive(Clone, Debug, PartialEq)]
pub struct RoadOptions {
    /// The shares of pixels removed (10%, 20%, …, 90%, as in the paper).
    pub fractions: Vec<f64>,
    /// Standard deviation of the noise added to imputed values (0.01, the
    /// authors' default for inputs in `[0, 1]`).
    pub noise_std: f32,
    /// Seeds the tie order and the noise (0).
    pub seed: u64,
    /// Images per forward pass (250).
    pub batch_size: usize,
}

impl Default for RoadOptions {
    fn default() -> Self {
        RoadOptions {
            fractions: (1..=9).map(|k| k as f64 / 10.0).collect(),
            noise_std: 0.01,
            seed: 0,
            batch_size: 250,
        }
    }
}

/// ROAD curves of each input: the class probability with a share of pixels
/// imputed.
#[derive(Clone, Debug, PartialEq)]
pub struct Road {
    /// The shares of pixels removed.
    pub fractions: Vec<f64>,
    /// Per input, most relevant removed first (lower is better).
    pub morf: Vec<Vec<f64>>,
    /// Per input, least relevant removed first (higher is better).
    pub lerf: Vec<Vec<f64>>,
}

impl Road {
    /// Per input, the mean probability over the MoRF curve.
    pub fn morf_mean(&self) -> Vec<f64> {
        self.morf.iter().map(|c| mean(c)).collect()
    }

    /// Per input, the mean probability over the LeRF curve.
    pub fn lerf_mean(&self) -> Vec<f64> {
        self.lerf.iter().map(|c| mean(c)).collect()
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// ROAD, most- and least-relevant first, for `maps: [N, H, W]`.
pub fn road(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: &[usize],
    maps: &Tensor,
    options: &RoadOptions,
) -> Result<Road> {
    check(model, inputs, targets, maps)?;
    if options.batch_size == 0 || options.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
        return Err(Error::invalid(
            "road",
            "fractions must lie in [0, 1] and batch_size be at least 1",
        ));
    }
    let (c, h, w) = (inputs.shape()[1], inputs.shape()[2], inputs.shape()[3]);
    let hw = h * w;
    let m = options.fractions.len();
    let mut pool = Pool::new();
    let (mut morf, mut lerf) = (Vec::new(), Vec::new());
    for (i, x) in inputs.outer_iter().enumerate() {
        let seed = mix(options.seed, i as u64);
        let order = ranking(map(maps, i)?, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0x20ad));
        let mut normal = || rng.sample::<f32, _>(StandardNormal);
        // [2m, C, H, W]: MoRF images, then LeRF images.
        let mut batch = Tensor::zeros(vec![2 * m, c, h, w]);
        for (j, &f) in options.fractions.iter().enumerate() {
            let k = ((f * hw as f64).round() as usize).min(hw);
            for (slot, removed) in [(j, &order[..k]), (m + j, &order[hw - k..])] {
                let mut mask = vec![false; hw];
                for &p in removed {
                    mask[p] = true;
                }
                let mut image = x.to_owned();
                let pixels = image
                    .as_slice_mut()
                    .ok_or_else(|| Error::invalid("road", "input not contiguous"))?;
                imputation::impute(pixels, c, h, w, &mask, options.noise_std, &mut normal)
                    .map_err(|e| Error::invalid("road", e))?;
                batch.index_axis_mut(Axis(0), slot).assign(&image);
            }
        }
        let p = class_probabilities(model, &batch, targets[i], options.batch_size, &mut pool)?;
        morf.push(p[..m].to_vec());
        lerf.push(p[m..].to_vec());
    }
    Ok(Road {
        fractions: options.fractions.clone(),
        morf,
        lerf,
    })
}

fn check(model: &dyn Classifier, inputs: &Tensor, targets: &[usize], maps: &Tensor) -> Result<()> {
    check_inputs(model, inputs, Some(targets))?;
    let want = [inputs.shape()[0], inputs.shape()[2], inputs.shape()[3]];
    if maps.shape() != want {
        return Err(Error::invalid(
            "trust",
            format!(
                "expected one map [N, H, W] = {want:?} per input, got {:?}",
                maps.shape()
            ),
        ));
    }
    if maps.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("trust", "the maps hold a NaN or infinity"));
    }
    Ok(())
}

/// Input `i`'s map `[H, W]` of maps `[N, H, W]`.
pub(crate) fn map(maps: &Tensor, i: usize) -> Result<ArrayView2<'_, f32>> {
    maps.index_axis(Axis(0), i)
        .into_dimensionality::<Ix2>()
        .map_err(|_| {
            Error::invalid(
                "trust",
                format!("expected maps [N, H, W], got {:?}", maps.shape()),
            )
        })
}

/// The softmax probability of class `target` for each image of `batch`,
/// from the linear scores (so that it holds for any head).
pub fn class_probabilities(
    model: &dyn Classifier,
    batch: &Tensor,
    target: usize,
    batch_size: usize,
    pool: &mut Pool,
) -> Result<Vec<f64>> {
    let logits = model.predict_scores(batch, batch_size, pool)?;
    Ok(logits
        .outer_iter()
        .map(|row| {
            let max = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let total: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            (f64::from(row[target]) - max).exp() / total
        })
        .collect())
}

/// A separable Gaussian blur of `[C, H, W]` with standard deviation `sigma`
/// pixels, the kernel cut at 3σ and renormalised at the borders.
pub fn gaussian_blur(image: &Tensor, sigma: f32) -> Tensor {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let blur_axis = |src: &Tensor, axis: usize| -> Tensor {
        let mut out = Tensor::zeros(src.raw_dim());
        let len = src.shape()[axis] as isize;
        for (mut o, s) in out
            .lanes_mut(Axis(axis))
            .into_iter()
            .zip(src.lanes(Axis(axis)))
        {
            for i in 0..len {
                let (mut sum, mut weight) = (0.0, 0.0);
                for (k, &g) in kernel.iter().enumerate() {
                    let j = i + k as isize - radius;
                    if (0..len).contains(&j) {
                        sum += g * s[j as usize];
                        weight += g;
                    }
                }
                o[i as usize] = sum / weight;
            }
        }
        out
    };
    blur_axis(&blur_axis(image, 1), 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn ranking_puts_the_largest_first_and_shuffles_ties() {
        let map = Array2::from_shape_vec((1, 5), vec![0.1, 0.9, 0.5, 0.5, 0.0]).unwrap();
        let order = ranking(map.view(), 3);
        assert_eq!(order[0], 1);
        assert!(order[1..3].contains(&2) && order[1..3].contains(&3));
        assert_eq!(&order[3..], &[0, 4]);
        // A constant map is a random order: different seeds, different orders.
        let flat = Array2::<f32>::zeros((4, 4));
        assert_ne!(ranking(flat.view(), 1), ranking(flat.view(), 2));
    }

    #[test]
    fn blur_keeps_a_constant_image_and_spreads_a_dot() {
        let flat = Tensor::from_elem(vec![1, 5, 5], 0.7);
        let b = gaussian_blur(&flat, 1.0);
        assert!(b.iter().all(|v| (v - 0.7).abs() < 1e-6));
        // On 15x15 every pixel the dot reaches (within 3σ) has its whole
        // window inside the image: the kernel sums to 1 and the mass is kept.
        let mut dot = Tensor::zeros(vec![1, 15, 15]);
        dot[[0, 7, 7]] = 1.0;
        let b = gaussian_blur(&dot, 1.0);
        assert!((b.sum() - 1.0).abs() < 1e-5, "{}", b.sum());
        assert!(b[[0, 7, 7]] < 1.0 && b[[0, 7, 8]] > 0.0);
        assert_eq!(b[[0, 7, 8]], b[[0, 8, 7]]);
    }
}
