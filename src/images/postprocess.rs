//! From raw attributions to maps that can be drawn: keras-vis's post-processing.
//!
//! A saliency method returns one number per input value, `[N, C, H, W]`, of any sign
//! and scale. To draw it, keras-vis (`visualize_saliency`) does three things:
//!
//! 1. absolute value: `|g|` (its default `grad_modifier='absolute'`);
//! 2. maximum over the channel axis, so an RGB input gives one map `[H, W]`;
//! 3. min-max normalisation: `(a - min) / (max - min + 1e-7)`, so the map lies in
//!    `[0, 1]` and a colour map can be applied.
//!
//! keras-vis takes min and max over the whole batch ([`Normalize::Batch`]); its successor
//! tf-keras-vis takes them per input ([`Normalize::PerInput`], our default), so that one
//! input with large gradients does not wash out the others.
//!
//! Class activation maps (Grad-CAM and friends) are already one channel and
//! non-negative, so [`normalize_maps`] does only step 3.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array3, ArrayViewMut3, Axis, Ix3, Ix4};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The `1e-7` keras-vis adds to `max - min`, so that a constant map becomes all zeros
/// instead of a division by zero.
pub const NORMALIZE_EPS: f32 = 1e-7;

/// Over which values min and max are taken in the min-max normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalize {
    /// Each input's map on its own: every map spans `[0, 1]` (tf-keras-vis).
    #[default]
    PerInput,
    /// One min and max over the whole batch, as the original keras-vis does: maps stay
    /// comparable across inputs, but a weak map may come out nearly black.
    Batch,
}

impl Normalize {
    /// A one-line description of the whole post-processing, for report headers.
    pub fn describe(&self) -> &'static str {
        match self {
            Normalize::PerInput => {
                "absolute value, maximum over colour channels, min-max normalisation per input"
            }
            Normalize::Batch => {
                "absolute value, maximum over colour channels, min-max normalisation over the batch"
            }
        }
    }
}

impl fmt::Display for Normalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Normalize::PerInput => "per-input",
            Normalize::Batch => "batch",
        })
    }
}

impl FromStr for Normalize {
    type Err = Error;

    /// Parses `per-input` or `batch`, the names [`fmt::Display`] prints.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "per-input" | "per_input" | "input" => Ok(Normalize::PerInput),
            "batch" => Ok(Normalize::Batch),
            _ => Err(Error::invalid(
                "normalize",
                format!("unknown normalisation {s:?}; expected per-input or batch"),
            )),
        }
    }
}

/// Turns raw attributions `[N, C, H, W]` into maps `[N, H, W]` in `[0, 1]`: absolute
/// value, maximum over channels, then [`normalize_maps`].
///
/// Fails if the input is not rank 4, has no channel, or holds a NaN or infinity (a
/// gradient that overflowed upstream should be noticed, not drawn).
///
/// ```
/// use ndarray::{array, IxDyn};
/// use salient::images::{saliency_maps, Normalize};
/// // One input, two channels, 1x2 pixels.
/// let raw = array![[[[-4.0f32, 1.0]], [[2.0, 0.0]]]].into_dyn();
/// let maps = saliency_maps(&raw, Normalize::PerInput).unwrap();
/// // max(|-4|, |2|) = 4 and max(|1|, |0|) = 1, then (a - 1) / (4 - 1).
/// assert_eq!(maps.shape(), &[1, 1, 2]);
/// assert!((maps[IxDyn(&[0, 0, 0])] - 1.0).abs() < 1e-6);
/// assert_eq!(maps[IxDyn(&[0, 0, 1])], 0.0);
/// ```
pub fn saliency_maps(raw: &Tensor, normalize: Normalize) -> Result<Tensor> {
    let raw = raw.view().into_dimensionality::<Ix4>().map_err(|_| {
        Error::invalid(
            "saliency_maps",
            format!(
                "expected attributions [N, C, H, W], got shape {:?}",
                raw.shape()
            ),
        )
    })?;
    let (n, c, h, w) = raw.dim();
    if c == 0 {
        return Err(Error::invalid(
            "saliency_maps",
            "attributions have no channel to take the maximum over",
        ));
    }
    check_finite("saliency_maps", raw)?;

    // [N, C, H, W] -> [N, H, W]: max over C of |g|. |g| >= 0, so 0 is a safe start.
    let mut maps = Array3::<f32>::zeros((n, h, w));
    for (mut map, input) in maps.outer_iter_mut().zip(raw.outer_iter()) {
        for channel in input.outer_iter() {
            map.zip_mut_with(&channel, |m, &g| *m = m.max(g.abs()));
        }
    }
    normalize_in_place(maps.view_mut(), normalize);
    Ok(maps.into_dyn())
}

/// Min-max normalises maps `[N, H, W]` that are already one channel, such as
/// Grad-CAM's, without taking absolute values: `(a - min) / (max - min + 1e-7)`.
///
/// Fails if the input is not rank 3 or holds a NaN or infinity.
pub fn normalize_maps(maps: &Tensor, normalize: Normalize) -> Result<Tensor> {
    let maps = maps.view().into_dimensionality::<Ix3>().map_err(|_| {
        Error::invalid(
            "normalize_maps",
            format!("expected maps [N, H, W], got shape {:?}", maps.shape()),
        )
    })?;
    check_finite("normalize_maps", maps)?;
    let mut out = maps.to_owned();
    normalize_in_place(out.view_mut(), normalize);
    Ok(out.into_dyn())
}

/// Applies `(a - min) / (max - min + eps)` with min and max per map or over all maps.
fn normalize_in_place(mut maps: ArrayViewMut3<f32>, normalize: Normalize) {
    match normalize {
        Normalize::PerInput => {
            for map in maps.axis_iter_mut(Axis(0)) {
                let (lo, hi) = min_max(map.view());
                map.into_iter()
                    .for_each(|a| *a = (*a - lo) / (hi - lo + NORMALIZE_EPS));
            }
        }
        Normalize::Batch => {
            let (lo, hi) = min_max(maps.view());
            maps.map_inplace(|a| *a = (*a - lo) / (hi - lo + NORMALIZE_EPS));
        }
    }
}

/// Smallest and largest value; `(0, 0)` for an empty array (nothing to scale then).
fn min_max<D: ndarray::Dimension>(a: ndarray::ArrayView<f32, D>) -> (f32, f32) {
    if a.is_empty() {
        return (0.0, 0.0);
    }
    a.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Fails on the first NaN or infinity, naming the input (index along axis 0) that has it.
fn check_finite<D: ndarray::RemoveAxis>(
    op: &'static str,
    a: ndarray::ArrayView<f32, D>,
) -> Result<()> {
    for (i, input) in a.outer_iter().enumerate() {
        if let Some(v) = input.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                op,
                format!("input {i} holds the value {v}; values must be finite"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array4};
    use proptest::prelude::*;

    fn assert_close(got: &Tensor, want: &[f32]) {
        let got: Vec<f32> = got.iter().copied().collect();
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
    }

    /// Two inputs, two channels, 1x3 pixels.
    ///   input 0: |ch0| = [1, 2, 0.5], |ch1| = [0.5, 3, 0] -> max [1, 3, 0.5]
    ///   input 1: |ch0| = [10, 0, 5],  |ch1| = [0, 0, 0]   -> max [10, 0, 5]
    fn two_inputs() -> Tensor {
        array![
            [[[-1.0f32, 2.0, 0.5]], [[0.5, -3.0, 0.0]]],
            [[[10.0, 0.0, -5.0]], [[0.0, 0.0, 0.0]]],
        ]
        .into_dyn()
    }

    #[test]
    fn per_input_takes_abs_then_channel_max_then_own_min_max() {
        let maps = saliency_maps(&two_inputs(), Normalize::PerInput).unwrap();
        assert_eq!(maps.shape(), &[2, 1, 3]);
        // input 0: min 0.5, max 3 -> (a - 0.5) / 2.5; input 1: min 0, max 10 -> a / 10.
        assert_close(&maps, &[0.2, 1.0, 0.0, 1.0, 0.0, 0.5]);
    }

    #[test]
    fn batch_uses_one_min_max_for_all_inputs() {
        let maps = saliency_maps(&two_inputs(), Normalize::Batch).unwrap();
        // min 0 and max 10 over both inputs -> a / 10.
        assert_close(&maps, &[0.1, 0.3, 0.05, 1.0, 0.0, 0.5]);
    }

    #[test]
    fn constant_map_becomes_zeros_thanks_to_eps() {
        let raw = Array4::<f32>::from_elem((1, 3, 2, 2), -0.25).into_dyn();
        let maps = saliency_maps(&raw, Normalize::PerInput).unwrap();
        assert_close(&maps, &[0.0; 4]);
    }

    #[test]
    fn eps_keeps_the_maximum_just_below_one() {
        // 1 / (1 + 1e-7) in f32 is the float just below 1.
        let maps = saliency_maps(&array![[[[0.0f32, 1.0]]]].into_dyn(), Normalize::Batch).unwrap();
        assert!(maps[[0, 0, 1]] < 1.0 && maps[[0, 0, 1]] > 0.999_999);
    }

    #[test]
    fn normalize_maps_keeps_sign_order() {
        // No absolute value: -2 stays the minimum.
        let maps = normalize_maps(
            &array![[[-2.0f32, 0.0, 2.0]]].into_dyn(),
            Normalize::PerInput,
        )
        .unwrap();
        assert_close(&maps, &[0.0, 0.5, 1.0]);
    }

    #[test]
    fn empty_batch_gives_empty_maps() {
        let raw = Array4::<f32>::zeros((0, 1, 4, 4)).into_dyn();
        let maps = saliency_maps(&raw, Normalize::Batch).unwrap();
        assert_eq!(maps.shape(), &[0, 4, 4]);
    }

    #[test]
    fn wrong_rank_no_channel_and_nan_are_errors() {
        let err = saliency_maps(&array![[1.0f32]].into_dyn(), Normalize::PerInput).unwrap_err();
        assert!(err.to_string().contains("[N, C, H, W]"), "{err}");
        let err = saliency_maps(
            &Array4::<f32>::zeros((1, 0, 2, 2)).into_dyn(),
            Normalize::PerInput,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no channel"), "{err}");
        let mut raw = Array4::<f32>::zeros((3, 1, 2, 2));
        raw[[2, 0, 1, 1]] = f32::NAN;
        let err = saliency_maps(&raw.into_dyn(), Normalize::PerInput).unwrap_err();
        assert!(err.to_string().contains("input 2"), "{err}");
        let err = normalize_maps(&array![[1.0f32]].into_dyn(), Normalize::PerInput).unwrap_err();
        assert!(err.to_string().contains("[N, H, W]"), "{err}");
    }

    #[test]
    fn normalize_parses_what_it_prints() {
        for n in [Normalize::PerInput, Normalize::Batch] {
            assert_eq!(n.to_string().parse::<Normalize>().unwrap(), n);
        }
        assert!("global".parse::<Normalize>().is_err());
    }

    proptest! {
        /// Per input, the smallest value maps to 0 and everything stays in [0, 1]
        /// (the eps keeps the top just below 1 only while max - min is small).
        #[test]
        fn per_input_maps_start_at_zero_and_stay_in_unit_range(
            values in proptest::collection::vec(-1e3f32..1e3, 2 * 3 * 2 * 2)
        ) {
            let raw = Array4::from_shape_vec((2, 3, 2, 2), values).unwrap().into_dyn();
            let maps = saliency_maps(&raw, Normalize::PerInput).unwrap();
            for map in maps.outer_iter() {
                let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
                prop_assert_eq!(lo, 0.0);
                prop_assert!(map.iter().all(|&a| (0.0..=1.0).contains(&a)));
            }
        }
    }
}
