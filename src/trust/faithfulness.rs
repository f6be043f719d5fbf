//! Every faithfulness score of one method, on one batch, in one call.

use ndarray::Axis;

use crate::error::Result;
use crate::saliency::{Explainer, Method, Options};
use crate::tensor::Tensor;

use super::perturbation::{deletion_insertion, road, CurveOptions, Curves, Road, RoadOptions};
use super::robustness::{infidelity, max_sensitivity, Infidelity, RobustnessOptions};
use super::{drawn_maps, Spread};

/// The settings of every faithfulness score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaithfulnessOptions {
    /// Deletion and insertion.
    pub curves: CurveOptions,
    /// ROAD.
    pub road: RoadOptions,
    /// Infidelity and max-sensitivity; `sensitivity_samples = 0` skips
    /// max-sensitivity (it runs the method once per sample).
    pub robustness: RobustnessOptions,
}

/// What one method scored on a batch.
#[derive(Clone, Debug)]
pub struct Faithfulness {
    /// The method; `None` for the random-order baseline.
    pub method: Option<Method>,
    /// Deletion and insertion curves.
    pub curves: Curves,
    /// ROAD curves.
    pub road: Road,
    /// Per input; empty for the baseline.
    pub infidelity: Vec<Infidelity>,
    /// Per input; empty if skipped or for the baseline.
    pub sensitivity: Vec<f64>,
}

impl Faithfulness {
    /// The scores' means and spreads over inputs, in the order of
    /// [`Faithfulness::SCORES`].
    pub fn summary(&self) -> Vec<Spread> {
        vec![
            Spread::of(self.curves.deletion_auc()),
            Spread::of(self.curves.insertion_auc()),
            Spread::of(self.road.morf_mean()),
            Spread::of(self.road.lerf_mean()),
            Spread::of(self.infidelity.iter().map(|i| i.normalized)),
            Spread::of(self.sensitivity.iter().copied()),
        ]
    }

    /// The names of the scores of [`summary`](Self::summary), and whether
    /// higher is better.
    pub const SCORES: [(&'static str, bool); 6] = [
        ("deletion AUC", false),
        ("insertion AUC", true),
        ("ROAD MoRF", false),
        ("ROAD LeRF", true),
        ("infidelity", false),
        ("max-sensitivity", false),
    ];
}

/// Runs `method` on `inputs` for `targets` and scores its maps.
pub fn faithfulness(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    method: Method,
    method_options: &Options,
    options: &FaithfulnessOptions,
) -> Result<(Faithfulness, Tensor)> {
    let model = explainer.model();
    let raw = explainer
        .attribute(inputs, Some(targets), method, method_options)?
        .raw;
    let maps = drawn_maps(method, &raw)?;
    let curves = deletion_insertion(model, inputs, targets, &maps, &options.curves)?;
    let road = road(model, inputs, targets, &maps, &options.road)?;
    let infidelity = infidelity(model, inputs, targets, &raw, &options.robustness)?;
    let sensitivity = if options.robustness.sensitivity_samples > 0 {
        max_sensitivity(
            explainer,
            inputs,
            targets,
            method,
            method_options,
            Some(&raw),
            &options.robustness,
        )?
    } else {
        Vec::new()
    };
    Ok((
        Faithfulness {
            method: Some(method),
            curves,
            road,
            infidelity,
            sensitivity,
        },
        maps,
    ))
}

/// The random-order baseline: deletion, insertion and ROAD with every pixel
/// tied, so that they go in a random order (seeded as the methods' ties are).
pub fn random_baseline(
    explainer: &Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    options: &FaithfulnessOptions,
) -> Result<Faithfulness> {
    let model = explainer.model();
    let flat = Tensor::zeros(inputs.raw_dim())
        .index_axis(Axis(1), 0)
        .to_owned();
    Ok(Faithfulness {
        method: None,
        curves: deletion_insertion(model, inputs, targets, &flat, &options.curves)?,
        road: road(model, inputs, targets, &flat, &options.road)?,
        infidelity: Vec::new(),
        sensitivity: Vec::new(),
    })
}
