//! Trust: the evidence for or against a saliency map.
//!
//! A map helps only if it is faithful to the model. The scores here test that
//! from three sides, each defined in its own file:
//!
//! | score | file | question | better |
//! | --- | --- | --- | --- |
//! | cascading / independent / label randomisation | `sanity.rs` | does the map change when the model is destroyed? (Adebayo et al. 2018) | low similarity |
//! | deletion, insertion | `perturbation.rs` | does removing the top pixels first kill the class probability fastest? (Petsiuk et al. 2018) | deletion low, insertion high |
//! | ROAD, most- and least-relevant first | `perturbation.rs` | the same, with removed pixels imputed from their neighbours (Rong et al. 2022) | MoRF low, LeRF high |
//! | infidelity | `robustness.rs` | does `Iᵀφ` predict the score change `f(x) − f(x − I)`? (Yeh et al. 2019) | low |
//! | max-sensitivity | `robustness.rs` | how far does the map move when the input moves by 0.02? | low |
//! | pointing game, energy share | `masks.rs` | does the map fall on the object? | high |
//!
//! [`shortcut`] builds the data for a model that has learnt a spurious cue,
//! where the right answer is known: the map should fall on the cue.
//!
//! ```
//! use salient::model::Sequential;
//! use salient::saliency::{Explainer, Method, Options};
//! use salient::trust::{faithfulness, FaithfulnessOptions};
//! use salient::Tensor;
//!
//! let model = Sequential::tutorial([1, 28, 28], 10, 0)?;
//! let images = Tensor::from_elem(vec![2, 1, 28, 28], 0.5);
//! let mut explainer = Explainer::new(&model);
//! let (scores, _maps) = faithfulness(&mut explainer, &images, &[3, 7], Method::Guided,
//!                                    &Options::default(), &FaithfulnessOptions::default())?;
//! println!("deletion AUC {:.3}", scores.summary()[0]); // mean ± std over the inputs
//! # Ok::<(), salient::Error>(())
//! ```
//!
//! The scores read a map `[H, W]` per input, made from a method's raw
//! attributions `[N, C, H, W]` by [`drawn_maps`] (what is drawn, before
//! normalisation) or [`signed_maps`].

pub mod faithfulness;
pub mod imputation;
pub mod masks;
pub mod perturbation;
pub mod robustness;
pub mod sanity;
pub mod shortcut;
pub mod similarity;

use std::fmt;

use ndarray::{Array3, Axis, Ix4};

use crate::error::{Error, Result};
use crate::saliency::Method;
use crate::tensor::Tensor;

pub use faithfulness::{faithfulness, random_baseline, Faithfulness, FaithfulnessOptions};
pub use masks::{pointing, read_mask, Pointing};
pub use perturbation::{deletion_insertion, road, CurveOptions, Curves, Road, RoadOptions};
pub use robustness::{infidelity, max_sensitivity, Infidelity, RobustnessOptions};
pub use sanity::{
    cascading_randomization, sanity_check, spearman, Randomized, Sanity, SanityOptions, Similarity,
    Stage, StageKind, StageResult,
};

/// The map a method's attributions `[N, C, H, W]` draw, before normalisation:
/// `max_c |a|` for per-channel methods (keras-vis's post-processing), the one
/// spatial channel for CAMs and occlusion (non-negative for CAMs, the signed
/// score drop for occlusion). `[N, H, W]`. Larger is more relevant.
pub fn drawn_maps(method: Method, raw: &Tensor) -> Result<Tensor> {
    reduce_channels(method, raw, |acc, v| acc.max(v.abs()))
}

/// The signed map of a method's attributions: `Σ_c a` for per-channel
/// methods, the spatial channel for the others. `[N, H, W]`.
pub fn signed_maps(method: Method, raw: &Tensor) -> Result<Tensor> {
    reduce_channels(method, raw, |acc, v| acc + v)
}

fn reduce_channels(method: Method, raw: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
    let raw = raw.view().into_dimensionality::<Ix4>().map_err(|_| {
        Error::invalid(
            "trust",
            format!(
                "expected attributions [N, C, H, W], got shape {:?}",
                raw.shape()
            ),
        )
    })?;
    let (n, c, h, w) = raw.dim();
    if c == 0 {
        return Err(Error::invalid("trust", "attributions have no channel"));
    }
    if method.is_spatial() {
        return Ok(raw.index_axis(Axis(1), 0).to_owned().into_dyn());
    }
    let mut maps = Array3::<f32>::zeros((n, h, w));
    for (mut map, input) in maps.outer_iter_mut().zip(raw.outer_iter()) {
        for channel in input.outer_iter() {
            map.zip_mut_with(&channel, |m, &v| *m = f(*m, v));
        }
    }
    Ok(maps.into_dyn())
}

/// The mean and spread of a score over inputs; NaNs (undefined scores, such as
/// a correlation with a constant map) are left out and counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The mean of the finite values (NaN if there are none).
    pub mean: f64,
    /// Their sample standard deviation (0 for one value).
    pub std: f64,
    /// How many finite values there were.
    pub n: usize,
    /// How many values were NaN or infinite.
    pub undefined: usize,
}

impl Spread {
    /// The spread of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let (mut finite, mut undefined) = (Vec::new(), 0);
        for v in values {
            if v.is_finite() {
                finite.push(v);
            } else {
                undefined += 1;
            }
        }
        let n = finite.len();
        if n == 0 {
            return Spread {
                mean: f64::NAN,
                std: f64::NAN,
                n,
                undefined,
            };
        }
        let mean = finite.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Spread {
            mean,
            std: var.sqrt(),
            n,
            undefined,
        }
    }

    /// The standard error of the mean, `std / √n`.
    pub fn sem(&self) -> f64 {
        self.std / (self.n.max(1) as f64).sqrt()
    }
}

impl fmt::Display for Spread {
    /// `0.412 ± 0.051` (mean ± standard deviation), with `precision` digits
    /// (3 by default).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(3);
        if self.n == 0 {
            return f.write_str("n/a");
        }
        write!(f, "{:.p$} ± {:.p$}", self.mean, self.std)
    }
}

/// The trapezoid area under `y` sampled at `x` (increasing).
pub fn area_under(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_leaves_out_nans() {
        let s = Spread::of([1.0, 3.0, f64::NAN]);
        assert_eq!((s.mean, s.n, s.undefined), (2.0, 2, 1));
        // Sample standard deviation of {1, 3}: sqrt(((1-2)² + (3-2)²) / 1) = sqrt(2).
        assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(format!("{s:.2}"), "2.00 ± 1.41");
        assert!(Spread::of([]).mean.is_nan());
    }

    #[test]
    fn area_of_a_line() {
        // y = x on [0, 1]: area 1/2; a constant 0.3: area 0.3.
        let x = [0.0, 0.25, 0.5, 1.0];
        assert!((area_under(&x, &x) - 0.5).abs() < 1e-12);
        assert!((area_under(&x, &[0.3; 4]) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn maps_reduce_channels_by_magnitude_or_sum() {
        // One input, two channels of 1x2: [[1, -3]] and [[-2, 1]].
        let raw = Tensor::from_shape_vec(vec![1, 2, 1, 2], vec![1.0, -3.0, -2.0, 1.0]).unwrap();
        let m = drawn_maps(Method::Vanilla, &raw).unwrap();
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), [2.0, 3.0]);
        let s = signed_maps(Method::Vanilla, &raw).unwrap();
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [-1.0, -2.0]);
        // A spatial method's map is its first channel, sign kept.
        let o = drawn_maps(Method::Occlusion, &raw).unwrap();
        assert_eq!(o.iter().copied().collect::<Vec<_>>(), [1.0, -3.0]);
    }
}
