//! The core of every gradient method: one forward pass and ONE backward pass
//! give `∂y_c/∂x` for a whole batch.
//!
//! The backward is seeded with a one-hot over the linear class scores, one `1`
//! per row at that row's target: it computes the gradient of `Σ_n y_{n, c_n}`.
//! Rows of a batch never mix (dropout is off, and no layer normalises over the
//! batch), so row `n` of the input gradient is `∂y_{n, c_n}/∂x_n` alone.
//!
//! The ReLU backward rule of the pass picks the method:
//!
//! | method | [`ReluRule`] | ReLU backward, `g` incoming, `x` ReLU input |
//! | --- | --- | --- |
//! | `vanilla` | `Gradient` | `1[x > 0]·g` |
//! | `rectified` (deconvnet) | `Rectified` | `1[g > 0]·g` |
//! | `guided` (guided backprop) | `Guided` | `1[x > 0]·1[g > 0]·g` |
//!
//! and `gradient-x-input` multiplies the vanilla gradient by the input.
//!
//! Because the tape keeps the gradient of any recorded value asked for, the
//! same pass also yields `∂y_c/∂A` for any layer output `A` (recorded on its
//! own, see [`Classifier::record_scores`]), which is all Grad-CAM needs: no
//! hooks.

use ndarray::{Axis, IxDyn, Slice};

use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::ops::ReluRule;
use crate::tape::Tape;
use crate::tensor::Tensor;

use super::{check_inputs, chunks, pick, predicted, rows, Explainer};

/// What one forward and one backward pass over a batch give.
#[derive(Clone, Debug)]
pub struct ClassGradient {
    /// `∂y_c/∂x` for each input, `[N, C, H, W]`.
    pub input: Tensor,
    /// The linear class scores, `[N, K]`.
    pub logits: Tensor,
    /// The class whose score was differentiated, per input.
    pub targets: Vec<usize>,
    /// If a layer was asked for: its (post-activation) output `A` and `∂y_c/∂A`,
    /// both `[N, ...layer's output shape]`.
    pub layer: Option<(Tensor, Tensor)>,
}

/// One forward and one backward pass over `inputs: [N, C, H, W]` (no chunking:
/// the whole batch is on one tape): [`Explainer::class_gradient`] once.
pub fn class_gradient(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<ClassGradient> {
    Explainer::new(model).class_gradient(inputs, targets, rule, layer)
}

impl Explainer<'_> {
    /// One forward and one backward pass over `inputs: [N, C, H, W]` (no
    /// chunking: the whole batch is on one tape).
    ///
    /// `targets` gives the class per input; `None` differentiates each
    /// input's predicted class, read off this same pass. `layer`, an index
    /// into [`Classifier::layer_shapes`], also returns that layer's output and its
    /// gradient. Buffers come from the explainer's workspace and go back
    /// there, so a second pass of the same size allocates nothing.
    pub fn class_gradient(
        &mut self,
        inputs: &Tensor,
        targets: Option<&[usize]>,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<ClassGradient> {
        let model = self.model;
        check_inputs(model, inputs, targets)?;
        let input = self.workspace.copy_of(inputs);
        let pool = std::mem::take(&mut self.workspace);
        let mut tape = Tape::with_pool(pool).with_kernels(self.kernels);
        let result = class_gradient_on(&mut tape, model, input, targets, rule, layer);
        self.workspace = tape.into_pool();
        let (x_grad, logits, targets, layer) = result?;
        Ok(ClassGradient {
            input: x_grad,
            logits,
            targets,
            layer,
        })
    }

    /// [`class_gradient`](Self::class_gradient) over `inputs`, `batch_size`
    /// inputs per pass, so memory stays bounded for any `N`; every batch after
    /// the first reuses the first one's buffers.
    pub fn input_gradients(
        &mut self,
        inputs: &Tensor,
        targets: Option<&[usize]>,
        rule: ReluRule,
        batch_size: usize,
    ) -> Result<InputGradients> {
        let n = inputs.shape().first().copied().unwrap_or(0);
        let mut gradient = Tensor::zeros(inputs.raw_dim());
        let mut all_targets = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        for range in chunks(n, batch_size) {
            let given = targets.map(|t| &t[range.clone()]);
            let pass = self.class_gradient(&rows(inputs, range.clone()), given, rule, None)?;
            gradient
                .slice_axis_mut(Axis(0), Slice::from(range))
                .assign(&pass.input);
            self.workspace.give(pass.input);
            scores.extend(pick(&pass.logits, &pass.targets));
            all_targets.extend(pass.targets);
        }
        Ok(InputGradients {
            gradient,
            targets: all_targets,
            scores,
        })
    }
}

/// Gradient, class scores, targets and the layer's value and gradient.
type Pass = (Tensor, Tensor, Vec<usize>, Option<(Tensor, Tensor)>);

/// The pass itself, on a tape whose pool the caller takes back.
fn class_gradient_on<'m>(
    tape: &mut Tape<'m>,
    model: &'m dyn Classifier,
    input: Tensor,
    targets: Option<&[usize]>,
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<Pass> {
    let n = input.shape()[0];
    let k = model.num_classes();
    let x = tape.input(input);
    // The weights enter as constants read in place; the head is linear for this
    // pass only; the layer asked for stays on the tape (not fused into the
    // pooling after it).
    let (out, kept) = model.record_scores(tape, x, layer)?;
    let out_shape = tape.value(out)?.shape().to_vec();
    let logits = tape
        .value(out)?
        .to_shape(IxDyn(&[n, k]))
        .map_err(|e| Error::invalid("saliency", format!("class scores: {e}")))?
        .to_owned();
    let targets = match targets {
        Some(t) => t.to_vec(),
        None => predicted(&logits),
    };

    // Seed: 1 at (row n, class c_n), 0 elsewhere, in the output's own shape.
    let mut seed = Tensor::zeros(IxDyn(&[n, k]));
    for (row, &c) in targets.iter().enumerate() {
        seed[[row, c]] = 1.0;
    }
    let seed = seed
        .into_shape_with_order(IxDyn(&out_shape))
        .map_err(|e| Error::invalid("saliency", format!("seed: {e}")))?;
    // Only the input's gradient and the layer's are read.
    let layer_var = layer
        .map(|l| kept.ok_or_else(|| Error::invalid("saliency", format!("no layer {l}"))))
        .transpose()?;
    let keep: Vec<_> = std::iter::once(x).chain(layer_var).collect();
    let mut grads = tape.backward_to(out, &seed, rule, &keep)?;

    let missing = |what: &str| {
        Error::invalid(
            "saliency",
            format!("no gradient reached {what}: does the model's output depend on it?"),
        )
    };
    let input = grads.take(x).ok_or_else(|| missing("the input"))?;
    let layer = match layer.zip(layer_var) {
        Some((l, v)) => {
            let name = model
                .layer_shapes()
                .get(l)
                .map_or_else(|| l.to_string(), |(name, _)| name.clone());
            let grad = grads
                .take(v)
                .ok_or_else(|| missing(&format!("layer {name}")))?;
            Some((tape.value(v)?.clone(), grad))
        }
        None => None,
    };
    tape.recycle(grads);
    Ok((input, logits, targets, layer))
}

/// Input gradients of a whole batch, with targets and scores.
#[derive(Clone, Debug)]
pub struct InputGradients {
    /// `∂y_c/∂x` under the pass's ReLU rule, `[N, C, H, W]`.
    pub gradient: Tensor,
    /// The class explained per input.
    pub targets: Vec<usize>,
    /// The linear score `y_c` per input.
    pub scores: Vec<f32>,
}

/// [`Explainer::input_gradients`] once.
pub fn input_gradients(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    rule: ReluRule,
    batch_size: usize,
) -> Result<InputGradients> {
    Explainer::new(model).input_gradients(inputs, targets, rule, batch_size)
}
