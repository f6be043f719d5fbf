//! Class activation maps: which regions of a convolutional layer's output `A`
//! (`K` channels of `h × w`) speak for class `c`.
//!
//! All three maps have the same form, and differ in the channel weights `w_k`:
//!
//! ```text
//! L = ReLU(Σ_k w_k A^k)        (the sum starts from zeros; ReLU keeps positive evidence)
//! ```
//!
//! then `L` is upsampled bilinearly to the input's `H × W`
//! ([`resize_bilinear`]). With `g = ∂y_c/∂A` (the linear class score's
//! gradient, from the same tape's [`Gradients`](crate::Gradients)):
//!
//! | method | `w_k` |
//! | --- | --- |
//! | Grad-CAM (Selvaraju et al.) | `α_k = (1/hw) Σ_ij g_kij` |
//! | Grad-CAM++ (Chattopadhyay et al., eq. 19) | `Σ_ij a_kij ReLU(g_kij)`, `a_kij = g² / (2g² + (Σ_ab A^k_ab) g³)` |
//! | Score-CAM (Wang et al. 2020) | `softmax_k y_c(x ⊙ M^k)`, `M^k` = `up(A^k)` min-max scaled to `[0, 1]` |
//!
//! Grad-CAM++'s `a_kij` is taken as 0 where its denominator is 0 (there `g = 0`
//! or `g < 0`, so the term `a·ReLU(g)` is 0 either way).
//!
//! Score-CAM leaves out a channel whose upsampled map is constant (often all
//! zero after ReLU): it cannot be scaled to `[0, 1]`, and masks nothing. The
//! official code skips such channels too. Its weights are the softmax over the
//! remaining channels of the masked inputs' *linear* scores, so they sum to 1
//! (the official code instead weights by each masked input's softmax
//! probability of `c`, which need not).
//!
//! **Guided Grad-CAM** is, as the paper defines it, guided backprop multiplied
//! element-wise by the upsampled Grad-CAM map (keras-vis's variant differs).
//!
//! The default layer is the last Conv2D layer, its output taken after its
//! activation (a Keras layer's output; ReLU for the tutorial's model).

use ndarray::{Array2, ArrayView2, ArrayView3, Axis, Ix4};

use crate::data::resize_bilinear;
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::ops::ReluRule;
use crate::tape::Tape;
use crate::tensor::{Pool, Tensor};

use super::Explainer;
use super::{check_inputs, chunks, rows, Method};

/// A class activation map for each input of a batch.
#[derive(Clone, Debug)]
pub struct Cam {
    /// The layer whose output was explained.
    pub layer: String,
    /// `ReLU(Σ_k w_k A^k)` at the layer's resolution, `[N, h, w]`.
    pub maps: Tensor,
    /// The maps upsampled bilinearly to the input, `[N, H, W]`.
    pub upsampled: Tensor,
    /// The channel weights `w_k`, `[N, K]`.
    pub weights: Tensor,
    /// Score-CAM: the channels left out of each input's softmax (constant maps).
    pub skipped: Vec<Vec<usize>>,
}

impl Cam {
    /// Remarks for the user: the layer used, and maps that came out empty.
    pub fn notes(&self, method: Method) -> Vec<String> {
        let (k, h, w) = (
            self.weights.shape()[1],
            self.maps.shape()[1],
            self.maps.shape()[2],
        );
        let (big_h, big_w) = (self.upsampled.shape()[1], self.upsampled.shape()[2]);
        let mut notes = vec![format!(
            "{method}: layer {} ({k} channels of {h}x{w}), upsampled bilinearly to {big_w}x{big_h}",
            self.layer
        )];
        for (i, map) in self.maps.outer_iter().enumerate() {
            if map.iter().all(|&v| v == 0.0) {
                notes.push(format!(
                    "input {i}: the map is zero everywhere (no positive evidence for the class at {})",
                    self.layer
                ));
            }
        }
        for (i, skipped) in self.skipped.iter().enumerate() {
            if !skipped.is_empty() {
                notes.push(format!(
                    "input {i}: {} of {k} channels are constant at {} and were left out",
                    skipped.len(),
                    self.layer
                ));
            }
        }
        notes
    }
}

/// The index of the layer a CAM explains: `name`, or the last Conv2D layer.
///
/// The layer must have a spatial output `[K, h, w]`; the error lists the layers
/// that do.
pub fn cam_layer(model: &dyn Classifier, name: Option<&str>) -> Result<usize> {
    let layers = model.layer_shapes();
    let spatial: Vec<&str> = layers
        .iter()
        .filter(|(_, shape)| shape.len() == 3)
        .map(|(name, _)| name.as_str())
        .collect();
    let usable = || {
        if spatial.is_empty() {
            "this model has none".to_string()
        } else {
            spatial.join(", ")
        }
    };
    match name {
        None => model.default_cam_layer().ok_or_else(|| {
            Error::invalid(
                "cam",
                format!(
                    "the model has no Conv2D layer to explain; name a layer with a spatial output [K, h, w] ({})",
                    usable()
                ),
            )
        }),
        Some(name) => {
            let Some(i) = layers.iter().position(|(n, _)| n == name) else {
                return Err(Error::invalid(
                    "cam",
                    format!(
                        "no layer named '{name}'; layers with a spatial output [K, h, w]: {}",
                        usable()
                    ),
                ));
            };
            if layers[i].1.len() != 3 {
                return Err(Error::invalid(
                    "cam",
                    format!(
                        "layer '{name}' has output shape {:?}, not a spatial [K, h, w]; layers with one: {}",
                        layers[i].1,
                        usable()
                    ),
                ));
            }
            Ok(i)
        }
    }
}

/// Grad-CAM: `w_k = α_k = (1/hw) Σ_ij ∂y_c/∂A^k_ij`.
pub fn grad_cam(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    layer: Option<&str>,
    batch_size: usize,
) -> Result<Cam> {
    gradient_cam(
        explainer,
        inputs,
        targets,
        layer,
        batch_size,
        grad_cam_weights,
    )
}

/// Grad-CAM++: `w_k = Σ_ij a_kij ReLU(g_kij)`, eq. 19 of the paper.
pub fn grad_cam_plus_plus(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    layer: Option<&str>,
    batch_size: usize,
) -> Result<Cam> {
    gradient_cam(
        explainer,
        inputs,
        targets,
        layer,
        batch_size,
        grad_cam_pp_weights,
    )
}

/// `α_k`: the spatial mean of each channel's gradient. `g: [K, h, w]`.
fn grad_cam_weights(_a: ArrayView3<f32>, g: ArrayView3<f32>) -> Vec<f32> {
    g.outer_iter().map(|gk| gk.mean().unwrap_or(0.0)).collect()
}

/// Grad-CAM++'s weights from activations `a` and gradients `g`, both `[K, h, w]`.
fn grad_cam_pp_weights(a: ArrayView3<f32>, g: ArrayView3<f32>) -> Vec<f32> {
    a.outer_iter()
        .zip(g.outer_iter())
        .map(|(ak, gk)| {
            let total = ak.sum(); // Σ_ab A^k_ab
            gk.iter()
                .map(|&g| {
                    let (g2, g3) = (g * g, g * g * g);
                    let denominator = 2.0 * g2 + total * g3;
                    let alpha = if denominator != 0.0 {
                        g2 / denominator
                    } else {
                        0.0
                    };
                    alpha * g.max(0.0)
                })
                .sum()
        })
        .collect()
}

/// The gradient CAMs: one forward and backward pass per chunk of inputs, the
/// weights from each input's `A` and `∂y_c/∂A`.
fn gradient_cam(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    layer: Option<&str>,
    batch_size: usize,
    weigh: fn(ArrayView3<f32>, ArrayView3<f32>) -> Vec<f32>,
) -> Result<Cam> {
    let model = explainer.model();
    check_inputs(model, inputs, Some(targets))?;
    let l = cam_layer(model, layer)?;
    let mut cam = Cam::empty(model, inputs, l);
    for range in chunks(inputs.shape()[0], batch_size) {
        let given = &targets[range.clone()];
        let chunk = rows(inputs, range.clone());
        let pass = explainer.class_gradient(&chunk, Some(given), ReluRule::Gradient, Some(l))?;
        let (a, g) = pass
            .layer
            .ok_or_else(|| Error::invalid("cam", "layer missing"))?;
        let (a, g) = (as4(&a)?, as4(&g)?);
        for (j, i) in range.enumerate() {
            let weights = weigh(a.index_axis(Axis(0), j), g.index_axis(Axis(0), j));
            cam.set(i, a.index_axis(Axis(0), j), &weights)?;
        }
    }
    Ok(cam)
}

/// Score-CAM: each channel's upsampled, `[0, 1]`-scaled map masks the input;
/// the weights are the softmax over channels of the masked inputs' class
/// scores. The masked copies of an input are scored `batch_size` at a time.
pub fn score_cam(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: &[usize],
    layer: Option<&str>,
    batch_size: usize,
) -> Result<Cam> {
    check_inputs(model, inputs, Some(targets))?;
    let l = cam_layer(model, layer)?;
    let (big_h, big_w) = (inputs.shape()[2], inputs.shape()[3]);
    let mut cam = Cam::empty(model, inputs, l);
    for range in chunks(inputs.shape()[0], batch_size) {
        let activations = layer_output(model, &rows(inputs, range.clone()), l)?;
        let activations = as4(&activations)?;
        for (j, i) in range.enumerate() {
            let a = activations.index_axis(Axis(0), j); // [K, h, w]
            let x = inputs.index_axis(Axis(0), i); // [C, H, W]
            let k = a.shape()[0];
            let mut scores = vec![f32::NEG_INFINITY; k];
            let mut skipped = Vec::new();
            for channels in chunks(k, batch_size) {
                // Masked copies x ⊙ M^k of the channels in this chunk whose map
                // is not constant.
                let mut masked = Vec::with_capacity(channels.len());
                let mut kept = Vec::with_capacity(channels.len());
                for ch in channels {
                    let up = upsample(a.index_axis(Axis(0), ch), big_h, big_w)?;
                    let (lo, hi) = min_max(up.iter().copied());
                    if hi <= lo {
                        skipped.push(ch);
                        continue;
                    }
                    let mask = up.mapv(|v| (v - lo) / (hi - lo)); // [H, W] in [0, 1]
                    masked.push(&x * &mask);
                    kept.push(ch);
                }
                if kept.is_empty() {
                    continue;
                }
                let views: Vec<_> = masked.iter().map(|m| m.view()).collect();
                let batch = ndarray::stack(Axis(0), &views)
                    .map_err(|e| Error::invalid("score-cam", e.to_string()))?
                    .into_dyn();
                let logits = model.predict_scores(&batch, batch_size, &mut Pool::new())?;
                for (row, ch) in kept.into_iter().enumerate() {
                    scores[ch] = logits[[row, targets[i]]];
                }
            }
            let weights = softmax_skipping(&scores);
            cam.set(i, a, &weights)?;
            cam.skipped[i] = skipped;
        }
    }
    Ok(cam)
}

/// Softmax of the finite entries (the max subtracted first, for stability);
/// `−∞` entries get weight 0. All `−∞` gives all zeros.
fn softmax_skipping(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; scores.len()];
    }
    let exps: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / total) as f32).collect()
}

/// Guided Grad-CAM: guided backprop `[N, C, H, W]` times the upsampled
/// Grad-CAM map, broadcast over channels. Returns the product and the CAM.
pub fn guided_grad_cam(
    explainer: &mut Explainer<'_>,
    inputs: &Tensor,
    targets: &[usize],
    layer: Option<&str>,
    batch_size: usize,
) -> Result<(Tensor, Cam)> {
    let cam = grad_cam(explainer, inputs, targets, layer, batch_size)?;
    let guided = explainer.input_gradients(inputs, Some(targets), ReluRule::Guided, batch_size)?;
    let mut out = guided.gradient;
    for (mut g, map) in out.outer_iter_mut().zip(cam.upsampled.outer_iter()) {
        for mut channel in g.outer_iter_mut() {
            channel *= &map;
        }
    }
    Ok((out, cam))
}

impl Cam {
    /// Zeros, shaped for `inputs` and layer `l`.
    fn empty(model: &dyn Classifier, inputs: &Tensor, l: usize) -> Cam {
        let (name, shape) = model.layer_shapes().swap_remove(l);
        let [k, h, w] = [shape[0], shape[1], shape[2]];
        let s = inputs.shape();
        Cam {
            layer: name,
            maps: Tensor::zeros(vec![s[0], h, w]),
            upsampled: Tensor::zeros(vec![s[0], s[2], s[3]]),
            weights: Tensor::zeros(vec![s[0], k]),
            skipped: vec![Vec::new(); s[0]],
        }
    }

    /// Input `i`'s map `ReLU(Σ_k w_k A^k)` and its upsampled copy.
    fn set(&mut self, i: usize, a: ArrayView3<f32>, weights: &[f32]) -> Result<()> {
        let (big_h, big_w) = (self.upsampled.shape()[1], self.upsampled.shape()[2]);
        let mut map = Array2::<f32>::zeros((a.shape()[1], a.shape()[2]));
        for (ak, &wk) in a.outer_iter().zip(weights) {
            map.scaled_add(wk, &ak);
        }
        map.mapv_inplace(|v| if v < 0.0 { 0.0 } else { v });
        let up = upsample(map.view(), big_h, big_w)?;
        self.maps.index_axis_mut(Axis(0), i).assign(&map);
        self.upsampled.index_axis_mut(Axis(0), i).assign(&up);
        self.weights
            .index_axis_mut(Axis(0), i)
            .assign(&ndarray::ArrayView1::from(weights));
        Ok(())
    }
}

/// One `[h, w]` map resized bilinearly to `[H, W]`.
fn upsample(map: ArrayView2<f32>, height: usize, width: usize) -> Result<Array2<f32>> {
    let one_channel = map.insert_axis(Axis(0)).to_owned().into_dyn();
    let up = resize_bilinear(&one_channel, height, width)?;
    up.index_axis_move(Axis(0), 0)
        .into_dimensionality()
        .map_err(|e| Error::invalid("cam", e.to_string()))
}

/// Layer `l`'s output for a batch, from an inference pass.
fn layer_output(model: &dyn Classifier, inputs: &Tensor, l: usize) -> Result<Tensor> {
    let mut tape = Tape::inference();
    let x = tape.constant(inputs.clone());
    let (_, kept) = model.record_scores(&mut tape, x, Some(l))?;
    let a = kept.ok_or_else(|| Error::invalid("cam", "layer output not recorded"))?;
    Ok(tape.value(a)?.clone())
}

fn as4(t: &Tensor) -> Result<ndarray::ArrayView4<'_, f32>> {
    t.view().into_dimensionality::<Ix4>().map_err(|_| {
        Error::invalid(
            "cam",
            format!("expected a layer output [N, K, h, w], got {:?}", t.shape()),
        )
    })
}

fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn grad_cam_pp_weights_by_hand() {
        // One channel, 1x2: A = [1, 3] (Σ A = 4), g = [0.5, -1].
        // a₀ = 0.25 / (2·0.25 + 4·0.125) = 0.25 / 1 = 0.25; term 0.25·0.5 = 0.125.
        // g₁ < 0: ReLU(g) = 0, no term. w = 0.125.
        let a = array![[[1.0f32, 3.0]]];
        let g = array![[[0.5f32, -1.0]]];
        let w = grad_cam_pp_weights(a.view(), g.view());
        assert!((w[0] - 0.125).abs() < 1e-7, "{w:?}");
        assert_eq!(grad_cam_weights(a.view(), g.view()), [-0.25]);
    }

    #[test]
    fn softmax_skipping_leaves_out_minus_infinity() {
        let w = softmax_skipping(&[0.0, f32::NEG_INFINITY, 0.0]);
        assert_eq!(w, [0.5, 0.0, 0.5]);
        assert_eq!(softmax_skipping(&[f32::NEG_INFINITY; 2]), [0.0, 0.0]);
    }

    #[test]
    fn weighted_sum_starts_from_zero_then_relu() {
        // Two channels 1x2; weights [1, -2]: [1, 2] - 2·[1, 0] = [-1, 2] → [0, 2].
        let a = array![[[1.0f32, 2.0]], [[1.0, 0.0]]];
        let mut cam = Cam {
            layer: "x".into(),
            maps: Tensor::zeros(vec![1, 1, 2]),
            upsampled: Tensor::zeros(vec![1, 1, 2]),
            weights: Tensor::zeros(vec![1, 2]),
            skipped: vec![vec![]],
        };
        cam.set(0, a.view(), &[1.0, -2.0]).unwrap();
        assert_eq!(cam.maps.iter().copied().collect::<Vec<_>>(), [0.0, 2.0]);
    }
}
