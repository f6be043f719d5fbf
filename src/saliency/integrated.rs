//! Integrated gradients (Sundararajan et al. 2017), with its completeness check.
//!
//! The attribution of input `x` against a baseline `x′` (black by default) is
//!
//! ```text
//! IG(x) = (x − x′) ⊙ ∫₀¹ ∂y_c/∂x (x′ + α (x − x′)) dα
//! ```
//!
//! and by the fundamental theorem of calculus along the straight path it is
//! *complete*: `Σ IG(x) = y_c(x) − y_c(x′)`.
//!
//! # Quadrature
//!
//! The integral is the **Riemann midpoint rule** with `m = steps` points:
//!
//! ```text
//! ∫₀¹ g(α) dα ≈ (1/m) Σ_{k=0}^{m−1} g((k + ½) / m)
//! ```
//!
//! For a smooth `g` its error falls as `1/m²`. A ReLU network is piecewise
//! linear, so along the path `g` is piecewise constant; each jump the path
//! crosses adds at most `jump · 1/(2m)`, so the error falls as `1/m`. The
//! completeness gap measures exactly this error, and is reported per input.
//!
//! # Steps that pass the check
//!
//! The paper suggests 20 to 300 steps; which suffices depends on the input.
//! With a tolerance (1% by default, [`Options::tolerance`](super::Options)),
//! each input starts at `steps` and doubles them until its relative
//! completeness error is within the tolerance or the next doubling would pass
//! `max_steps` (1600). The steps used, and any input that still misses the
//! tolerance, are reported.
//!
//! The `m` path points of one input go through the model as one batch (in
//! chunks of `batch_size`).

use ndarray::{ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::ops::ReluRule;
use crate::tensor::{shape_error, Tensor};

use super::Explainer;
use super::{check_inputs, chunks, pick};

/// The reference input `x′` integrated gradients starts from.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Baseline {
    /// All zeros: a black image for inputs scaled to `[0, 1]` (the paper's choice).
    #[default]
    Black,
    /// Every value equal to this constant (e.g. 0.5, mid grey).
    Constant(f32),
    /// One image `[C, H, W]` for every input, or one per input `[N, C, H, W]`.
    Image(Tensor),
}

impl Baseline {
    /// The baseline of each input, `[N, C, H, W]` like `inputs`.
    pub fn for_inputs(&self, inputs: &Tensor) -> Result<Tensor> {
        match self {
            Baseline::Black => Ok(Tensor::zeros(inputs.raw_dim())),
            Baseline::Constant(v) => {
                if !v.is_finite() {
                    return Err(Error::invalid(
                        "integrated-gradients",
                        format!("the baseline value must be finite, got {v}"),
                    ));
                }
                Ok(Tensor::from_elem(inputs.raw_dim(), *v))
            }
            Baseline::Image(image) => {
                let per_input = &inputs.shape()[1..];
                let batch = if image.shape() == inputs.shape() {
                    image.clone()
                } else if image.shape() == per_input {
                    image
                        .broadcast(inputs.raw_dim())
                        .map(|b| b.to_owned())
                        .ok_or_else(|| Error::invalid("integrated-gradients", "baseline"))?
                } else {
                    return Err(shape_error(
                        "integrated-gradients",
                        "the baseline must be [C, H, W] or [N, C, H, W] like the inputs",
                        "baseline",
                        image.shape(),
                        "inputs",
                        inputs.shape(),
                    ));
                };
                if let Some(v) = batch.iter().find(|v| !v.is_finite()) {
                    return Err(Error::invalid(
                        "integrated-gradients",
                        format!("the baseline holds the value {v}; it must be finite"),
                    ));
                }
                Ok(batch)
            }
        }
    }
}

/// How close one input's attributions come to the completeness identity
/// `Σ IG(x) = y_c(x) − y_c(x′)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Completeness {
    /// `Σ IG(x)` over all values of the input (summed in `f64`).
    pub attribution_sum: f64,
    /// `y_c(x)`, the linear class score of the input.
    pub score: f32,
    /// `y_c(x′)`, the same score at the baseline.
    pub baseline_score: f32,
    /// `|Σ IG(x) − (y_c(x) − y_c(x′))|`.
    pub abs_error: f64,
    /// `abs_error / |y_c(x) − y_c(x′)|`: infinite if the scores are equal but
    /// the sum is not 0, 0 if both are 0.
    pub rel_error: f64,
    /// The midpoint steps these attributions used.
    pub steps: usize,
}

impl Completeness {
    /// Compares a sum of attributions, made with `steps` steps, with the score
    /// difference it should equal.
    pub fn new(attribution_sum: f64, score: f32, baseline_score: f32, steps: usize) -> Self {
        let expected = f64::from(score) - f64::from(baseline_score);
        let abs_error = (attribution_sum - expected).abs();
        let rel_error = if abs_error == 0.0 {
            0.0
        } else {
            abs_error / expected.abs()
        };
        Completeness {
            attribution_sum,
            score,
            baseline_score,
            abs_error,
            rel_error,
            steps,
        }
    }
}

impl Completeness {
    /// Whether the relative error is within `tolerance` (false if it is NaN).
    pub fn within(&self, tolerance: f64) -> bool {
        self.rel_error <= tolerance
    }
}

/// How many steps integrated gradients takes per input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRule {
    /// The steps every input starts with.
    pub steps: usize,
    /// The relative completeness error to reach by doubling the steps; `None`
    /// keeps `steps`.
    pub tolerance: Option<f64>,
    /// No input takes more steps than this.
    pub max_steps: usize,
}

/// Integrated gradients `[N, C, H, W]` for `targets`, with as many midpoint
/// points per input as `rule` says, and the completeness of each input's
/// attributions.
pub fn integrated_gradients(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    baseline: &Baseline,
    rule: StepRule,
    batch_size: usize,
) -> Result<(Tensor, Vec<Completeness>)> {
    let model = explainer.model();
    if rule.steps == 0 {
        return Err(Error::invalid(
            "integrated-gradients",
            "steps must be at least 1 (50 is the default; raise it if the completeness error is large)",
        ));
    }
    check_inputs(model, inputs, Some(targets))?;
    let baselines = baseline.for_inputs(inputs)?;
    let mut pool = crate::tensor::Pool::new();
    let scores = pick(
        &model.predict_scores(inputs, batch_size, &mut pool)?,
        targets,
    );
    let baseline_scores = pick(
        &model.predict_scores(&baselines, batch_size, &mut pool)?,
        targets,
    );

    let mut out = Tensor::zeros(inputs.raw_dim());
    let mut report = Vec::with_capacity(targets.len());
    for (i, ((x, x0), mut attribution)) in inputs
        .outer_iter()
        .zip(baselines.outer_iter())
        .zip(out.outer_iter_mut())
        .enumerate()
    {
        let delta = &x - &x0;
        let mut steps = rule.steps;
        loop {
            let (values, total) = path_integral(
                explainer,
                x.view(),
                &delta,
                &x0,
                targets[i],
                steps,
                batch_size,
            )?;
            let c = Completeness::new(total, scores[i], baseline_scores[i], steps);
            let more = rule
                .tolerance
                .is_some_and(|tol| !c.within(tol) && steps * 2 <= rule.max_steps);
            if !more {
                attribution.assign(&values);
                report.push(c);
                break;
            }
            steps *= 2;
        }
    }
    Ok((out, report))
}

/// One input's IG with `steps` midpoint points: `(x − x′) ⊙ mean gradient`
/// over the path, `[C, H, W]`, and the sum of its values.
fn path_integral(
    explainer: &mut Explainer<'_>,
    x: ArrayViewD<f32>,
    delta: &Tensor,
    x0: &ArrayViewD<f32>,
    target: usize,
    steps: usize,
    batch_size: usize,
) -> Result<(Tensor, f64)> {
    let mut sum = vec![0.0f64; x.len()];
    for range in chunks(steps, batch_size) {
        // [m, C, H, W]: x′ + α_k (x − x′) at α_k = (k + ½) / steps.
        let mut shape = vec![range.len()];
        shape.extend_from_slice(x.shape());
        let mut points = Tensor::zeros(shape);
        for (k, mut point) in range.clone().zip(points.outer_iter_mut()) {
            let alpha = (k as f32 + 0.5) / steps as f32;
            point.assign(&(x0 + &(delta * alpha)));
        }
        let targets = vec![target; range.len()];
        let g = explainer.class_gradient(&points, Some(&targets), ReluRule::Gradient, None)?;
        for point in g.input.axis_iter(Axis(0)) {
            for (s, &v) in sum.iter_mut().zip(point.iter()) {
                *s += f64::from(v);
            }
        }
        explainer.give(g.input);
    }
    // IG = (x − x′) ⊙ mean gradient, in logical order as summed.
    let mut out = Tensor::zeros(x.raw_dim());
    let mut total = 0.0f64;
    for ((a, &s), &d) in out.iter_mut().zip(&sum).zip(delta.iter()) {
        *a = (f64::from(d) * s / steps as f64) as f32;
        total += f64::from(*a);
    }
    Ok((out, total))
}

/// One line per input on completeness, and advice when it is poor.
pub fn completeness_notes(report: &[Completeness], rule: StepRule) -> Vec<String> {
    let mut notes: Vec<String> = report
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "input {i}: sum of attributions {:.4} vs f(x) - f(baseline) = {:.4} - {:.4}: error {:.2e} ({:.2}%) with {} steps",
                c.attribution_sum,
                c.score,
                c.baseline_score,
                c.abs_error,
                100.0 * c.rel_error,
                c.steps
            )
        })
        .collect();
    match rule.tolerance {
        Some(tol) => {
            let missed: Vec<String> = report
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.within(tol))
                .map(|(i, c)| format!("input {i} ({:.2}%)", 100.0 * c.rel_error))
                .collect();
            if !missed.is_empty() {
                notes.push(format!(
                    "integrated-gradients: {} of {} inputs miss the {}% completeness tolerance at the cap of {} steps: {}",
                    missed.len(),
                    report.len(),
                    100.0 * tol,
                    rule.max_steps,
                    missed.join(", ")
                ));
            }
        }
        None => {
            let worst = report.iter().map(|c| c.rel_error).fold(0.0, f64::max);
            if worst > 0.05 {
                notes.push(format!(
                    "integrated-gradients: completeness is off by up to {:.1}% with {} steps; set a tolerance to add steps where needed",
                    100.0 * worst,
                    rule.steps
                ));
            }
        }
    }
    notes
}
