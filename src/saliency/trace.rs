//! The backward pass, node by node: what a saliency map is made of.
//!
//! A gradient map is the last value of one backward pass. [`trace`] keeps every
//! value before it: it runs one input through the model on a tape of reference
//! ops ([`Kernels::Reference`], so no two layers are fused into one op), seeds
//! the head with a one-hot at the target class, and records for each value on
//! the tape the gradient that arrived there. Where the method acted, it says
//! how:
//!
//! - at a **ReLU** (its own node, or fused into its convolution) the
//!   [`Gate`] of every unit: the pass's [`ReluRule`] let the gradient through,
//!   or closed it because the input was not positive, or because the gradient
//!   was not (the one line in which the vanilla gradient, deconvnet and guided
//!   backprop differ);
//! - at a **max pooling** the winner of every window: the one input that
//!   receives the whole gradient of that window's output.
//!
//! [`Trace::path`] then follows one pixel's gradient back up to the head: at
//! each node, the unit whose term in the chain rule's sum is largest.

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::layers::{LayerSpec, Mode};
use crate::model::{argmax, Head, Sequential};
use crate::ops::{max_pool2d_reference, Conv2dSpec, ConvGeometry, MaxPool2dSpec, ReluRule};
use crate::tape::{Kernels, Tape, Var};
use crate::tensor::Tensor;

use super::check_inputs;

/// What a tape node computes, and from which layer of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeOp {
    /// The input image.
    Input,
    /// A Conv2D layer's convolution, with its ReLU fused in when `relu`.
    Conv2d { layer: usize, relu: bool },
    /// A MaxPooling2D layer.
    MaxPool2d { layer: usize },
    /// A Flatten layer.
    Flatten { layer: usize },
    /// A Dense layer's affine map `x·Wᵀ + b` (before its activation).
    Dense { layer: usize },
    /// A layer's ReLU, recorded as its own node.
    Relu { layer: usize },
    /// Any other op a layer records (dropout in training, softmax).
    Other { layer: usize },
}

impl NodeOp {
    /// A short name for the op, as the tape records it.
    pub fn name(self) -> &'static str {
        match self {
            NodeOp::Input => "input",
            NodeOp::Conv2d { relu: true, .. } => "conv2d + relu",
            NodeOp::Conv2d { relu: false, .. } => "conv2d",
            NodeOp::MaxPool2d { .. } => "max_pool2d",
            NodeOp::Flatten { .. } => "flatten",
            NodeOp::Dense { .. } => "dense",
            NodeOp::Relu { .. } => "relu",
            NodeOp::Other { .. } => "other",
        }
    }

    /// The layer of the model that recorded the node (`None` for the input).
    pub fn layer(self) -> Option<usize> {
        match self {
            NodeOp::Input => None,
            NodeOp::Conv2d { layer, .. }
            | NodeOp::MaxPool2d { layer }
            | NodeOp::Flatten { layer }
            | NodeOp::Dense { layer }
            | NodeOp::Relu { layer }
            | NodeOp::Other { layer } => Some(layer),
        }
    }

    /// Whether the node's backward applies the pass's [`ReluRule`].
    pub fn has_relu(self) -> bool {
        matches!(
            self,
            NodeOp::Relu { .. } | NodeOp::Conv2d { relu: true, .. }
        )
    }
}

/// What a ReLU's backward rule did with one unit's gradient `g`, given its
/// output `y` (`y > 0` exactly where the input `x > 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gate {
    /// The gradient passed.
    Open,
    /// Closed because `x ≤ 0` (the gradient and guided rules look at this).
    InputNotPositive,
    /// Closed because `g ≤ 0` (the deconvnet and guided rules look at this).
    GradientNotPositive,
    /// Closed for both reasons (guided backprop only).
    Both,
}

impl Gate {
    /// The gate `rule` applies to a unit with output `y` and incoming
    /// gradient `g`: open exactly where [`ReluRule::apply`] passes `g`.
    pub fn of(rule: ReluRule, y: f32, g: f32) -> Gate {
        let (x_positive, g_positive) = (y > 0.0, g > 0.0);
        match (rule, x_positive, g_positive) {
            (ReluRule::Gradient, false, _) => Gate::InputNotPositive,
            (ReluRule::Rectified, _, false) => Gate::GradientNotPositive,
            (ReluRule::Guided, false, false) => Gate::Both,
            (ReluRule::Guided, false, true) => Gate::InputNotPositive,
            (ReluRule::Guided, true, false) => Gate::GradientNotPositive,
            _ => Gate::Open,
        }
    }

    /// A small code for JSON and pictures: 0 open, 1 `x ≤ 0`, 2 `g ≤ 0`, 3 both.
    pub fn code(self) -> u8 {
        match self {
            Gate::Open => 0,
            Gate::InputNotPositive => 1,
            Gate::GradientNotPositive => 2,
            Gate::Both => 3,
        }
    }
}

/// One value on the tape, with the gradient that reached it.
#[derive(Clone, Debug)]
pub struct TraceNode {
    /// The layer's name (`conv2d_1`, `dense`), `input`, or the layer's name
    /// with `/relu` for a ReLU recorded on its own.
    pub name: String,
    /// What the node computes.
    pub op: NodeOp,
    /// The node's value for the one input, without the batch axis.
    pub value: Tensor,
    /// `∂y_c/∂value` as it arrived at the node, before the node's own
    /// backward (so before its ReLU rule, where it has one).
    pub gradient: Tensor,
    /// For a node with a ReLU: the gate of every unit.
    pub gates: Option<Vec<Gate>>,
    /// For a max pooling: per output unit, the flat index into the previous
    /// node's value of its window's winner (the first maximum in row-major
    /// order).
    pub winners: Option<Vec<usize>>,
}

impl TraceNode {
    /// The gradient this node sends on to its input's side of the op: its
    /// ReLU rule applied to the incoming gradient, where it has one.
    pub fn ruled_gradient(&self, rule: ReluRule) -> Tensor {
        match self.op.has_relu() {
            true => ndarray::Zip::from(&self.value)
                .and(&self.gradient)
                .map_collect(|&y, &g| rule.apply(y, g)),
            false => self.gradient.clone(),
        }
    }
}

/// One input's backward pass, every value kept: see the [module](self) docs.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Every value on the tape that the gradient reaches, from the input
    /// (first) to the class scores (last), in the order the tape recorded them.
    pub nodes: Vec<TraceNode>,
    /// The linear class scores.
    pub logits: Vec<f32>,
    /// The class whose score was differentiated.
    pub target: usize,
    /// The ReLU rule of the pass.
    pub rule: ReluRule,
}

/// Runs `image` (`[C, H, W]` or `[1, C, H, W]`) through `model` with the head
/// linear, and back from class `target` (`None`: the predicted class) under
/// `rule`, keeping the value and gradient of every node.
///
/// The first node's gradient is the map a gradient method draws: it equals
/// [`class_gradient`](super::gradient::class_gradient) under the reference
/// kernels, bit for bit.
pub fn trace(
    model: &Sequential,
    image: &Tensor,
    target: Option<usize>,
    rule: ReluRule,
) -> Result<Trace> {
    let [c, h, w] = model.input_shape();
    if image.len() != c * h * w || !matches!(image.ndim(), 3 | 4) {
        return Err(Error::invalid(
            "trace",
            format!(
                "expected one image [{c}, {h}, {w}] (or [1, {c}, {h}, {w}]), got shape {:?}",
                image.shape()
            ),
        ));
    }
    let batch = image
        .to_shape(IxDyn(&[1, c, h, w]))
        .map_err(|e| Error::invalid("trace", format!("image: {e}")))?
        .to_owned();
    let targets = target.map(|t| vec![t]);
    check_inputs(model, &batch, targets.as_deref())?;

    let mut tape = Tape::new().with_kernels(Kernels::Reference);
    let x = tape.input(batch);
    let pass = model.forward(&mut tape, x, Mode::Infer, Head::Linear)?;
    let out = pass.last();
    let logits: Vec<f32> = tape.value(out)?.iter().copied().collect();
    let target = target.unwrap_or_else(|| argmax(logits.iter().copied()));
    let mut seed = Tensor::zeros(tape.value(out)?.raw_dim());
    seed[[0, target]] = 1.0;
    let grads = tape.backward(out, &seed, rule)?;

    // Name every value the forward recorded, in tape order.
    let mut order: Vec<(Var, NodeOp, String)> = vec![(x, NodeOp::Input, "input".into())];
    for (l, layer) in model.layers().iter().enumerate() {
        let output = pass.outputs[l].ok_or_else(|| internal("a layer output is missing"))?;
        let pre = pass.pre_activations[l].filter(|&p| p != output);
        let own = match (&layer.spec, pass.pre_activations[l]) {
            (LayerSpec::Conv2D { .. }, None) => NodeOp::Conv2d {
                layer: l,
                relu: true,
            },
            (LayerSpec::Conv2D { .. }, Some(_)) => NodeOp::Conv2d {
                layer: l,
                relu: false,
            },
            (LayerSpec::MaxPooling2D { .. }, _) => NodeOp::MaxPool2d { layer: l },
            (LayerSpec::Flatten, _) => NodeOp::Flatten { layer: l },
            (LayerSpec::Dense { .. }, _) => NodeOp::Dense { layer: l },
            (LayerSpec::Dropout { .. }, _) => NodeOp::Other { layer: l },
        };
        if let Some(pre) = pre {
            order.push((pre, own, layer.name.clone()));
            let activation = match layer.spec.activation() {
                Some(crate::layers::Activation::Relu) => NodeOp::Relu { layer: l },
                _ => NodeOp::Other { layer: l },
            };
            order.push((output, activation, format!("{}/activation", layer.name)));
        } else if order.iter().all(|(v, ..)| *v != output) {
            // Dropout at inference passes its input on: no new value.
            order.push((output, own, layer.name.clone()));
        }
    }
    // Every value the backward pass reached is named once, in tape order.
    let named: Vec<Var> = order.iter().map(|(v, ..)| *v).collect();
    if named != tape.differentiated() {
        return Err(internal("the trace does not name every value on the tape"));
    }

    let mut nodes: Vec<TraceNode> = Vec::with_capacity(order.len());
    for (var, op, name) in order {
        let value = tape.value(var)?;
        let per_sample = IxDyn(&value.shape()[1..]);
        let value = value
            .to_shape(per_sample.clone())
            .map_err(|e| internal(&e.to_string()))?
            .to_owned();
        let gradient = match grads.get(var) {
            Some(g) => g
                .to_shape(per_sample)
                .map_err(|e| internal(&e.to_string()))?
                .to_owned(),
            None => Tensor::zeros(value.raw_dim()),
        };
        let gates = op.has_relu().then(|| {
            value
                .iter()
                .zip(gradient.iter())
                .map(|(&y, &g)| Gate::of(rule, y, g))
                .collect()
        });
        let winners = match (op, nodes.last()) {
            (NodeOp::MaxPool2d { layer }, Some(prev)) => Some(pool_winners(model, layer, prev)?),
            _ => None,
        };
        let name = match op {
            NodeOp::Relu { .. } => name.replace("/activation", "/relu"),
            _ => name,
        };
        nodes.push(TraceNode {
            name,
            op,
            value,
            gradient,
            gates,
            winners,
        });
    }
    Ok(Trace {
        nodes,
        logits,
        target,
        rule,
    })
}

fn internal(what: &str) -> Error {
    Error::invalid("trace", format!("internal: {what}"))
}

/// The winners of a max pooling over the previous node's value, by the
/// reference forward's own rule.
fn pool_winners(model: &Sequential, layer: usize, input: &TraceNode) -> Result<Vec<usize>> {
    let LayerSpec::MaxPooling2D { pool_size, strides } = model.layers()[layer].spec else {
        return Err(internal("not a pooling layer"));
    };
    let spec = MaxPool2dSpec {
        pool: (pool_size[0], pool_size[1]),
        stride: (strides[0], strides[1]),
    };
    let mut shape = vec![1];
    shape.extend_from_slice(input.value.shape());
    let x = input
        .value
        .to_shape(IxDyn(&shape))
        .map_err(|e| internal(&e.to_string()))?
        .to_owned();
    Ok(max_pool2d_reference(&x, spec)?.1)
}

impl Trace {
    /// The units a gradient took to reach input value `unit` (a flat index
    /// into the input `[C, H, W]`): one flat index per node, from the input
    /// up, each the unit of the next node whose term in the chain rule's sum
    /// for the previous unit's gradient is largest in size:
    ///
    /// ```text
    /// ∂y_c/∂a_i = Σ_j (∂y_c/∂b_j) · (∂b_j/∂a_i)   →   pick argmax_j |(∂y_c/∂b_j) · (∂b_j/∂a_i)|
    /// ```
    ///
    /// where `∂y_c/∂b_j` is the gradient after `b`'s ReLU rule. The path
    /// stops early where every term is zero (the gradient never reached the
    /// unit); it is at most one index per node long.
    pub fn path(&self, model: &Sequential, unit: usize) -> Result<Vec<usize>> {
        let mut ruled: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        self.path_with(model, unit, &mut ruled, &mut None)
    }

    /// [`path`](Self::path) from every pixel `(y, x)` of the input, each
    /// starting at the channel where the input gradient is largest in size
    /// (the channel a gradient map's "maximum over channels" keeps): `H·W`
    /// paths in row-major order.
    pub fn pixel_paths(&self, model: &Sequential) -> Result<Vec<Vec<usize>>> {
        let [c, h, w] = model.input_shape();
        let g = self.nodes[0]
            .gradient
            .as_slice()
            .ok_or_else(|| internal("input gradient layout"))?;
        let mut ruled: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        let mut winners_of: Option<Vec<Vec<Vec<usize>>>> = None;
        (0..h * w)
            .map(|p| {
                let channel = (0..c)
                    .max_by(|&a, &b| g[a * h * w + p].abs().total_cmp(&g[b * h * w + p].abs()))
                    .unwrap_or(0);
                self.path_with(model, channel * h * w + p, &mut ruled, &mut winners_of)
            })
            .collect()
    }

    /// [`path`](Self::path), with the ruled gradients and the pools' inverse
    /// winner maps (input unit → the outputs it won) computed once and kept.
    fn path_with(
        &self,
        model: &Sequential,
        unit: usize,
        ruled: &mut [Option<Tensor>],
        winners_of: &mut Option<Vec<Vec<Vec<usize>>>>,
    ) -> Result<Vec<usize>> {
        if unit >= self.nodes[0].value.len() {
            return Err(Error::invalid(
                "trace",
                format!(
                    "unit {unit} is outside the input's {} values",
                    self.nodes[0].value.len()
                ),
            ));
        }
        let inverse = winners_of.get_or_insert_with(|| {
            self.nodes
                .iter()
                .enumerate()
                .map(|(k, node)| match (&node.winners, k.checked_sub(1)) {
                    (Some(won), Some(prev)) => {
                        let mut of = vec![Vec::new(); self.nodes[prev].value.len()];
                        for (o, &i) in won.iter().enumerate() {
                            of[i].push(o);
                        }
                        of
                    }
                    _ => Vec::new(),
                })
                .collect()
        });
        let mut path = vec![unit];
        let mut at = unit;
        for k in 1..self.nodes.len() {
            let node = &self.nodes[k];
            let delta = ruled[k].get_or_insert_with(|| node.ruled_gradient(self.rule));
            let delta = delta
                .as_slice()
                .ok_or_else(|| internal("gradient layout"))?;
            let input = &self.nodes[k - 1];
            // (term, unit of this node) for every unit the previous one feeds.
            let best = match node.op {
                NodeOp::Conv2d { layer, .. } => {
                    conv_best(model, layer, input.value.shape(), at, delta)?
                }
                NodeOp::Dense { layer } => dense_best(model, layer, at, delta)?,
                NodeOp::MaxPool2d { .. } => inverse[k][at]
                    .iter()
                    .map(|&o| (delta[o], o))
                    .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs())),
                // Flatten, ReLU and the rest keep the unit where it is.
                _ => Some((delta[at], at)),
            };
            match best {
                Some((term, next)) if term != 0.0 => {
                    path.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        Ok(path)
    }
}

/// The output unit of convolution `layer` with the largest term
/// `δ[co, oy, ox] · w[co, ci, ky, kx]` for input unit `at = (ci, iy, ix)`.
fn conv_best(
    model: &Sequential,
    layer: usize,
    input_shape: &[usize],
    at: usize,
    delta: &[f32],
) -> Result<Option<(f32, usize)>> {
    let layer = &model.layers()[layer];
    let (
        LayerSpec::Conv2D {
            strides, padding, ..
        },
        Some((w, b)),
    ) = (&layer.spec, &layer.params)
    else {
        return Err(internal("not a convolution"));
    };
    let mut x_shape = vec![1];
    x_shape.extend_from_slice(input_shape);
    let spec = Conv2dSpec {
        stride: *strides,
        padding: *padding,
    };
    let g = ConvGeometry::new(&x_shape, w.shape(), b.shape(), spec)?;
    let ws = w.as_slice().ok_or_else(|| internal("weight layout"))?;
    let (ci, iy, ix) = (at / (g.h * g.w), at / g.w % g.h, at % g.w);
    let mut best: Option<(f32, usize)> = None;
    for co in 0..g.cout {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                // Output (oy, ox) reads input row oy·s + ky − pad_top.
                let (Some(ry), Some(rx)) = (
                    (iy + g.pad_top).checked_sub(ky),
                    (ix + g.pad_left).checked_sub(kx),
                ) else {
                    continue;
                };
                if ry % g.stride != 0 || rx % g.stride != 0 {
                    continue;
                }
                let (oy, ox) = (ry / g.stride, rx / g.stride);
                if oy >= g.ho || ox >= g.wo {
                    continue;
                }
                let o = (co * g.ho + oy) * g.wo + ox;
                let term = delta[o] * ws[((co * g.cin + ci) * g.kh + ky) * g.kw + kx];
                if best.is_none_or(|(t, _)| term.abs() > t.abs()) {
                    best = Some((term, o));
                }
            }
        }
    }
    Ok(best)
}

/// The output unit `j` of dense `layer` with the largest term `δ[j] · W[j, at]`.
fn dense_best(
    model: &Sequential,
    layer: usize,
    at: usize,
    delta: &[f32],
) -> Result<Option<(f32, usize)>> {
    let Some((w, _)) = &model.layers()[layer].params else {
        return Err(internal("a dense layer without weights"));
    };
    let inputs = w.shape()[1];
    let ws = w.as_slice().ok_or_else(|| internal("weight layout"))?;
    Ok(delta
        .iter()
        .enumerate()
        .map(|(j, &d)| (d * ws[j * inputs + at], j))
        .fold(None, |best: Option<(f32, usize)>, (t, j)| match best {
            Some((b, _)) if b.abs() >= t.abs() => best,
            _ => Some((t, j)),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_follow_the_three_rules() {
        use Gate::*;
        // (y, g) = (positive, positive), (0, positive), (positive, negative), (0, negative)
        let cases = [(1.0, 1.0), (0.0, 1.0), (1.0, -1.0), (0.0, -1.0)];
        let expect = |rule, gates: [Gate; 4]| {
            for ((y, g), gate) in cases.into_iter().zip(gates) {
                assert_eq!(Gate::of(rule, y, g), gate, "{rule:?} y={y} g={g}");
                // Open exactly where the rule passes the gradient.
                assert_eq!(gate == Open, rule.apply(y, g) != 0.0);
            }
        };
        expect(
            ReluRule::Gradient,
            [Open, InputNotPositive, Open, InputNotPositive],
        );
        expect(
            ReluRule::Rectified,
            [Open, Open, GradientNotPositive, GradientNotPositive],
        );
        expect(
            ReluRule::Guided,
            [Open, InputNotPositive, GradientNotPositive, Both],
        );
    }
}
