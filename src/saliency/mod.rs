//! Saliency methods: which input pixels a model's class score depends on.
//!
//! Every method takes a model (any [`Classifier`]: a [`Sequential`](crate::model::Sequential),
//! a [`Graph`](crate::model::graph::Graph), or a model of your own), a batch of inputs `[N, C, H, W]` and one target
//! class per input, and returns raw, signed attributions of the input's shape
//! `[N, C, H, W]` (class activation maps, which are spatial, are copied to each
//! of the C channels). Drawing them is [`crate::images::saliency_maps`]'s job.
//!
//! | method | file | attribution of input `x` for class `c` |
//! | --- | --- | --- |
//! | `vanilla` | `gradient.rs` | `∂y_c/∂x` (Simonyan et al.) |
//! | `rectified` | `gradient.rs` | the same backward with ReLU passing `1[g > 0]·g` (deconvnet) |
//! | `guided` | `gradient.rs` | ReLU passing `1[x > 0]·1[g > 0]·g` (guided backprop) |
//! | `gradient-x-input` | `gradient.rs` | `x ⊙ ∂y_c/∂x` |
//! | `smoothgrad` | `smooth.rs` | `mean_s ∂y_c/∂x (x + ε_s)`, `ε_s ~ N(0, σ²)` |
//! | `smoothgrad-sq` | `smooth.rs` | `mean_s (∂y_c/∂x (x + ε_s))²` |
//! | `vargrad` | `smooth.rs` | `var_s ∂y_c/∂x (x + ε_s)` |
//! | `integrated-gradients` | `integrated.rs` | `(x − x′) ⊙ ∫₀¹ ∂y_c/∂x (x′ + α(x − x′)) dα` |
//! | `grad-cam` | `cam.rs` | `ReLU(Σ_k α_k A^k)`, `α_k = mean_ij ∂y_c/∂A^k_ij`, upsampled |
//! | `grad-cam++` | `cam.rs` | the same with `w_k = Σ_ij α_kij ReLU(∂y_c/∂A^k_ij)` |
//! | `score-cam` | `cam.rs` | the same with `w = softmax_k y_c(x ⊙ norm(up(A^k)))` |
//! | `guided-grad-cam` | `cam.rs` | guided backprop ⊙ upsampled Grad-CAM |
//! | `occlusion` | `occlusion.rs` | mean over patches covering a pixel of `y_c(x) − y_c(x occluded)` |
//!
//! [`trace`] runs one input's backward pass on the reference ops and keeps the
//! gradient at every node of the tape, with the ReLU gates and pooling winners
//! the pass applied: what `salient explore` draws layer by layer.
//!
//! `y_c` is always the *linear* class score: a softmax head is made linear for the
//! pass with [`Head::Linear`](crate::model::Head::Linear), without touching the
//! model (whose weights the tape reads in place). Dropout is off.
//!
//! ```
//! use salient::model::Sequential;
//! use salient::saliency::{attribute, Method, Options};
//! use salient::Tensor;
//!
//! let model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
//! let digits = Tensor::zeros(vec![2, 1, 28, 28]);
//! let out = attribute(&model, &digits, Some(&[3, 7]), Method::Vanilla, &Options::default()).unwrap();
//! assert_eq!(out.raw.shape(), &[2, 1, 28, 28]);
//! assert_eq!(out.targets, [3, 7]);
//! ```

pub mod cam;
pub mod gradient;
pub mod integrated;
pub mod occlusion;
pub mod smooth;
pub mod trace;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use ndarray::{Axis, Ix3, Slice};

use crate::error::{Error, Result};
use crate::images::{normalize_maps, saliency_maps, Normalize};
use crate::model::{argmax, Classifier};
use crate::ops::ReluRule;
use crate::tape::Kernels;
use crate::tensor::{Pool, Tensor};

pub use cam::Cam;
pub use integrated::{Baseline, Completeness, StepRule};
pub use smooth::Aggregate;

/// A saliency method, by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `∂y_c/∂x`.
    Vanilla,
    /// Deconvnet: ReLU backward passes positive gradient only.
    Rectified,
    /// Guided backprop: ReLU backward needs a positive input and gradient.
    Guided,
    /// `x ⊙ ∂y_c/∂x`.
    GradientXInput,
    /// Mean gradient over noisy copies.
    SmoothGrad,
    /// Mean squared gradient over noisy copies.
    SmoothGradSq,
    /// Variance of the gradient over noisy copies.
    VarGrad,
    /// Integrated gradients from a baseline.
    IntegratedGradients,
    /// Grad-CAM.
    GradCam,
    /// Grad-CAM++.
    GradCamPlusPlus,
    /// Score-CAM.
    ScoreCam,
    /// Guided backprop ⊙ Grad-CAM.
    GuidedGradCam,
    /// Sliding-patch occlusion.
    Occlusion,
}

impl Method {
    /// Every method, in the order of the table above.
    pub const ALL: [Method; 13] = [
        Method::Vanilla,
        Method::Rectified,
        Method::Guided,
        Method::GradientXInput,
        Method::SmoothGrad,
        Method::SmoothGradSq,
        Method::VarGrad,
        Method::IntegratedGradients,
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::ScoreCam,
        Method::GuidedGradCam,
        Method::Occlusion,
    ];

    /// The command-line name, e.g. `grad-cam++`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Vanilla => "vanilla",
            Method::Rectified => "rectified",
            Method::Guided => "guided",
            Method::GradientXInput => "gradient-x-input",
            Method::SmoothGrad => "smoothgrad",
            Method::SmoothGradSq => "smoothgrad-sq",
            Method::VarGrad => "vargrad",
            Method::IntegratedGradients => "integrated-gradients",
            Method::GradCam => "grad-cam",
            Method::GradCamPlusPlus => "grad-cam++",
            Method::ScoreCam => "score-cam",
            Method::GuidedGradCam => "guided-grad-cam",
            Method::Occlusion => "occlusion",
        }
    }

    /// The name people write in prose, e.g. `Guided backprop`, for headings.
    pub fn title(self) -> &'static str {
        match self {
            Method::Vanilla => "Gradient",
            Method::Rectified => "Deconvnet",
            Method::Guided => "Guided backprop",
            Method::GradientXInput => "Gradient × input",
            Method::SmoothGrad => "SmoothGrad",
            Method::SmoothGradSq => "SmoothGrad²",
            Method::VarGrad => "VarGrad",
            Method::IntegratedGradients => "Integrated gradients",
            Method::GradCam => "Grad-CAM",
            Method::GradCamPlusPlus => "Grad-CAM++",
            Method::ScoreCam => "Score-CAM",
            Method::GuidedGradCam => "Guided Grad-CAM",
            Method::Occlusion => "Occlusion",
        }
    }

    /// Whether the method explains a layer's activations ([`Options::layer`]).
    pub fn uses_layer(self) -> bool {
        matches!(
            self,
            Method::GradCam | Method::GradCamPlusPlus | Method::ScoreCam | Method::GuidedGradCam
        )
    }

    /// Whether the attribution is one map per input, the same in every channel.
    pub fn is_spatial(self) -> bool {
        matches!(
            self,
            Method::GradCam | Method::GradCamPlusPlus | Method::ScoreCam | Method::Occlusion
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parses a [`Method::name`], ignoring case and accepting `_` for `-`.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Method::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                Error::invalid(
                    "saliency",
                    format!("unknown method {s:?}; expected one of {}", names.join(", ")),
                )
            })
    }
}

/// Settings of the methods; each field says which methods read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Images per forward pass, for inputs and for the noisy, path, masked or
    /// occluded copies made from them: bounds memory (250, the tutorial's batch).
    pub batch_size: usize,
    /// SmoothGrad family: noisy copies per input (50, as in the paper).
    pub samples: usize,
    /// SmoothGrad family: the noise's *standard deviation* as a fraction of each
    /// input's `max − min` (0.15; the paper recommends 0.1 to 0.2).
    pub noise_level: f32,
    /// SmoothGrad family: seed of the noise (0). Input `i` of the batch draws
    /// from its own stream, seeded with `(seed, i)`.
    pub seed: u64,
    /// Integrated gradients: points on the path from the baseline that every
    /// input starts with (50).
    pub steps: usize,
    /// Integrated gradients: the relative completeness error each input must
    /// reach, by doubling its steps up to `max_steps` (1%); `None` keeps
    /// `steps` for every input.
    pub tolerance: Option<f64>,
    /// Integrated gradients: the most steps an input may take (1600).
    pub max_steps: usize,
    /// Integrated gradients: the baseline `x′` (black, all zeros).
    pub baseline: Baseline,
    /// CAM methods: the layer whose output `A` is explained; `None` is the last
    /// Conv2D layer (its post-activation output, as Keras's layer output).
    pub layer: Option<String>,
    /// Occlusion: side of the square patch in pixels; `None` is
    /// `max(1, round(min(H, W) / 7))`, 4 for MNIST.
    pub patch: Option<usize>,
    /// Occlusion: pixels between patch positions; `None` is `max(1, patch / 2)`.
    pub stride: Option<usize>,
    /// Occlusion: the value written into the patch (0, black).
    pub fill: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 250,
            samples: 50,
            noise_level: 0.15,
            seed: 0,
            steps: 50,
            tolerance: Some(0.01),
            max_steps: 1600,
            baseline: Baseline::Black,
            layer: None,
            patch: None,
            stride: None,
            fill: 0.0,
        }
    }
}

impl Options {
    /// Integrated gradients' steps per input, from `steps`, `tolerance` and
    /// `max_steps`.
    pub fn step_rule(&self) -> StepRule {
        StepRule {
            steps: self.steps,
            tolerance: self.tolerance,
            max_steps: self.max_steps,
        }
    }
}

/// What a method found for a batch.
#[derive(Clone, Debug)]
pub struct Attribution {
    /// Raw, signed attributions `[N, C, H, W]`, before any post-processing.
    pub raw: Tensor,
    /// The class explained for each input.
    pub targets: Vec<usize>,
    /// The linear class score `y_c` of each input for its target.
    pub scores: Vec<f32>,
    /// Remarks for the user: the layer a CAM used, IG's completeness, maps that
    /// came out all zero, ...
    pub notes: Vec<String>,
    /// Integrated gradients only: how far each input's attributions are from
    /// summing to `f(x) − f(x′)`.
    pub completeness: Option<Vec<Completeness>>,
}

/// Explains `targets` (one class per input; `None`: the predicted classes) of
/// `model` on `inputs: [N, C, H, W]` with `method`: [`Explainer::attribute`]
/// once.
///
/// Fails with a typed error on an input of the wrong shape or holding NaN, a
/// target out of range, an unknown or non-spatial layer, or an option out of
/// range (`steps = 0`, ...). Never changes the model.
pub fn attribute(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    method: Method,
    options: &Options,
) -> Result<Attribution> {
    Explainer::new(model).attribute(inputs, targets, method, options)
}

/// Explains a model's decisions, again and again: it owns the buffers its
/// passes use, so calling it again with inputs of the same size allocates
/// nothing.
///
/// Its passes run [`Kernels::Fast`] by default: at a max-pooling window whose
/// inputs tie, the gradient goes to the first maximum in row-major order, as
/// in TensorFlow and PyTorch. [`with_kernels`](Explainer::with_kernels)
/// picks [`Kernels::Reference`] to compute the same maps through the
/// reference ops.
///
/// ```
/// use salient::model::Sequential;
/// use salient::saliency::{Explainer, Method, Options};
/// use salient::Tensor;
///
/// let model = Sequential::tutorial([1, 28, 28], 10, 0)?;
/// let mut explainer = Explainer::new(&model);
/// for batch in 0..2 {
///     let images = Tensor::from_elem(vec![4, 1, 28, 28], 0.1 * batch as f32);
///     let a = explainer.attribute(&images, None, Method::Vanilla, &Options::default())?;
///     assert_eq!(a.raw.shape(), &[4, 1, 28, 28]);
/// }
/// # Ok::<(), salient::Error>(())
/// ```
pub struct Explainer<'m> {
    model: &'m dyn Classifier,
    kernels: Kernels,
    workspace: Pool,
}

impl<'m> Explainer<'m> {
    /// An explainer of `model`, with [`Kernels::Fast`] and an empty workspace.
    pub fn new(model: &'m dyn Classifier) -> Self {
        Explainer {
            model,
            kernels: Kernels::Fast,
            workspace: Pool::new(),
        }
    }

    /// This explainer with its passes run by `kernels`.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The model explained.
    pub fn model(&self) -> &'m dyn Classifier {
        self.model
    }

    /// The kernels its passes run.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Buffers it had to allocate so far (none on a repeat call of the same
    /// size).
    pub fn fresh_allocations(&self) -> usize {
        self.workspace.fresh_allocations()
    }

    /// Hands a buffer back to the workspace.
    pub(crate) fn give(&mut self, t: Tensor) {
        self.workspace.give(t);
    }

    /// Explains `targets` (one class per input; `None`: the predicted classes)
    /// on `inputs: [N, C, H, W]` with `method`. See [`attribute`].
    pub fn attribute(
        &mut self,
        inputs: &Tensor,
        targets: Option<&[usize]>,
        method: Method,
        options: &Options,
    ) -> Result<Attribution> {
        let model = self.model;
        check_inputs(model, inputs, targets)?;
        check_batch_size(options.batch_size)?;
        let n = inputs.shape()[0];
        let bs = options.batch_size;
        let mut notes = Vec::new();
        if self.kernels == Kernels::Reference {
            notes.push(format!(
                "{method}: computed through the reference ops (plain loops and one matrix product per image)"
            ));
        }
        if n == 0 {
            return Ok(Attribution {
                raw: inputs.clone(),
                targets: Vec::new(),
                scores: Vec::new(),
                notes,
                completeness: None,
            });
        }

        // The gradient methods find the predicted class in their own forward pass;
        // the others ask for the scores first.
        let resolve = || targets_and_scores(model, inputs, targets, bs);
        let layer = options.layer.as_deref();
        let mut completeness = None;
        let (raw, targets, scores) = match method {
            Method::Vanilla | Method::Rectified | Method::Guided | Method::GradientXInput => {
                let rule = match method {
                    Method::Rectified => ReluRule::Rectified,
                    Method::Guided => ReluRule::Guided,
                    _ => ReluRule::Gradient,
                };
                let g = self.input_gradients(inputs, targets, rule, bs)?;
                let raw = if method == Method::GradientXInput {
                    g.gradient * inputs
                } else {
                    g.gradient
                };
                (raw, g.targets, g.scores)
            }
            Method::SmoothGrad | Method::SmoothGradSq | Method::VarGrad => {
                let (targets, scores) = resolve()?;
                let aggregate = match method {
                    Method::SmoothGrad => Aggregate::Mean,
                    Method::SmoothGradSq => Aggregate::MeanOfSquares,
                    _ => Aggregate::Variance,
                };
                let raw = smooth::smoothgrad(self, inputs, &targets, options, aggregate)?;
                notes.push(format!(
                "{method}: {} noisy copies per input, noise std-dev {} x (max - min) of each input, seed {}",
                options.samples, options.noise_level, options.seed
            ));
                (raw, targets, scores)
            }
            Method::IntegratedGradients => {
                let (targets, scores) = resolve()?;
                let rule = options.step_rule();
                let (raw, report) = integrated::integrated_gradients(
                    self,
                    inputs,
                    &targets,
                    &options.baseline,
                    rule,
                    bs,
                )?;
                notes.extend(integrated::completeness_notes(&report, rule));
                completeness = Some(report);
                (raw, targets, scores)
            }
            Method::GradCam | Method::GradCamPlusPlus | Method::ScoreCam => {
                let (targets, scores) = resolve()?;
                let cam = match method {
                    Method::GradCam => cam::grad_cam(self, inputs, &targets, layer, bs)?,
                    Method::GradCamPlusPlus => {
                        cam::grad_cam_plus_plus(self, inputs, &targets, layer, bs)?
                    }
                    _ => cam::score_cam(model, inputs, &targets, layer, bs)?,
                };
                notes.extend(cam.notes(method));
                let raw = replicate_channels(&cam.upsampled, inputs.shape()[1])?;
                (raw, targets, scores)
            }
            Method::GuidedGradCam => {
                let (targets, scores) = resolve()?;
                let (raw, cam) = cam::guided_grad_cam(self, inputs, &targets, layer, bs)?;
                notes.extend(cam.notes(method));
                (raw, targets, scores)
            }
            Method::Occlusion => {
                let (targets, scores) = resolve()?;
                let occ = occlusion::occlusion(
                    model,
                    inputs,
                    &targets,
                    options.patch,
                    options.stride,
                    options.fill,
                    bs,
                )?;
                notes.push(occ.describe());
                let raw = replicate_channels(&occ.maps, inputs.shape()[1])?;
                (raw, targets, scores)
            }
        };
        Ok(Attribution {
            raw,
            targets,
            scores,
            notes,
            completeness,
        })
    }
}

/// The maps `[N, H, W]` in `[0, 1]` to draw for a method's raw attributions
/// `[N, C, H, W]`.
///
/// Signed, per-channel methods get keras-vis's post-processing
/// ([`saliency_maps`]): absolute value, maximum over channels, min-max
/// normalisation. Spatial methods ([`Method::is_spatial`]) already give one map
/// per input, copied to every channel, so only its first channel is min-max
/// normalised ([`normalize_maps`]): class activation maps are non-negative
/// anyway, and occlusion keeps its sign, so that a patch whose hiding *raised*
/// the score is drawn darker than one that changed nothing.
pub fn maps(method: Method, raw: &Tensor, normalize: Normalize) -> Result<Tensor> {
    if !method.is_spatial() {
        return saliency_maps(raw, normalize);
    }
    if raw.ndim() != 4 || raw.shape()[1] == 0 {
        return Err(Error::invalid(
            "saliency",
            format!(
                "expected attributions [N, C, H, W] with C >= 1, got shape {:?}",
                raw.shape()
            ),
        ));
    }
    normalize_maps(&raw.index_axis(Axis(1), 0).to_owned(), normalize)
}

/// One line saying how [`maps`] post-processes `method`'s attributions.
pub fn describe_maps(method: Method, normalize: Normalize) -> String {
    let per = match normalize {
        Normalize::PerInput => "per input",
        Normalize::Batch => "over the batch",
    };
    match method {
        Method::Occlusion => format!("signed score drop, min-max normalisation {per}"),
        m if m.is_spatial() => {
            format!("one non-negative channel already: min-max normalisation {per}")
        }
        _ => normalize.describe().to_string(),
    }
}

/// Checks a request: `inputs` fits the model, holds only finite values, and
/// `targets`, if given, has one class in range per input.
pub fn check_inputs(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: Option<&[usize]>,
) -> Result<()> {
    model.check_input(inputs)?;
    let n = inputs.shape()[0];
    for (i, input) in inputs.outer_iter().enumerate() {
        if let Some(v) = input.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "saliency",
                format!("input {i} holds the value {v}; inputs must be finite"),
            ));
        }
    }
    if let Some(targets) = targets {
        if targets.len() != n {
            return Err(Error::invalid(
                "saliency",
                format!(
                    "{} targets for {n} inputs; give one class per input",
                    targets.len()
                ),
            ));
        }
        let k = model.num_classes();
        if let Some((i, c)) = targets.iter().enumerate().find(|(_, &c)| c >= k) {
            return Err(Error::invalid(
                "saliency",
                format!(
                    "target class {c} of input {i} is out of range: the model has {k} classes (0 to {})",
                    k.saturating_sub(1)
                ),
            ));
        }
    }
    Ok(())
}

fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::invalid(
            "saliency",
            "batch_size must be at least 1 (250 is the default)",
        ));
    }
    Ok(())
}

/// The class to explain for each input (the given targets, or the predicted
/// ones) and its linear score, from one inference pass.
pub fn targets_and_scores(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    batch_size: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let logits = model.predict_scores(inputs, batch_size, &mut Pool::new())?;
    let targets = match targets {
        Some(t) => t.to_vec(),
        None => predicted(&logits),
    };
    let scores = pick(&logits, &targets);
    Ok((targets, scores))
}

/// The predicted class of each row of `[N, K]` scores.
pub(crate) fn predicted(logits: &Tensor) -> Vec<usize> {
    logits
        .outer_iter()
        .map(|row| argmax(row.iter().copied()))
        .collect()
}

/// `logits[i, targets[i]]` for each row `i` of `[N, K]` scores.
pub(crate) fn pick(logits: &Tensor, targets: &[usize]) -> Vec<f32> {
    logits
        .outer_iter()
        .zip(targets)
        .map(|(row, &c)| row[c])
        .collect()
}

/// `0..count` cut into consecutive ranges of at most `size` (at least 1).
pub(crate) fn chunks(count: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = size.max(1);
    (0..count)
        .step_by(size)
        .map(move |start| start..(start + size).min(count))
}

/// Rows `range` of a batch, as an owned batch.
pub(crate) fn rows(batch: &Tensor, range: Range<usize>) -> Tensor {
    batch.slice_axis(Axis(0), Slice::from(range)).to_owned()
}

/// Spatial maps `[N, H, W]` copied to each of `c` channels: `[N, c, H, W]`.
pub fn replicate_channels(maps: &Tensor, c: usize) -> Result<Tensor> {
    let maps = maps.view().into_dimensionality::<Ix3>().map_err(|_| {
        Error::invalid(
            "saliency",
            format!("expected maps [N, H, W], got shape {:?}", maps.shape()),
        )
    })?;
    let (n, h, w) = maps.dim();
    let stacked = maps
        .insert_axis(Axis(1))
        .broadcast((n, c, h, w))
        .map(|b| b.to_owned().into_dyn())
        .ok_or_else(|| Error::invalid("saliency", "cannot broadcast maps over channels"))?;
    Ok(stacked)
}
