//! Graph models: a directed acyclic graph of named layers, for networks that
//! are not a plain stack (residual connections, concatenations, batch
//! normalisation, strided and dilated convolutions).
//!
//! Nodes are added in an order where every input comes first, so the list of
//! nodes is already a topological order, as the tape is: the forward pass
//! walks it once. Each node names its inputs; `input` is the image.
//!
//! ```
//! use salient::model::graph::{Graph, Op, Act};
//! use salient::ops::Conv2dOptions;
//!
//! // A residual block: y = relu(x + conv(relu(conv(x)))).
//! let mut g = Graph::new([4, 8, 8]);
//! let same = Conv2dOptions { pads: (1, 1, 1, 1), ..Conv2dOptions::default() };
//! g.add("conv1", Op::Conv2D { filters: 4, kernel: (3, 3), options: same }, &["input"])?;
//! g.add("relu1", Op::Activation(Act::Relu), &["conv1"])?;
//! g.add("conv2", Op::Conv2D { filters: 4, kernel: (3, 3), options: same }, &["relu1"])?;
//! g.add("sum", Op::Add, &["input", "conv2"])?;
//! g.add("relu2", Op::Activation(Act::Relu), &["sum"])?;
//! g.add("pool", Op::GlobalAvgPool2D, &["relu2"])?;
//! g.add("logits", Op::Dense { units: 3 }, &["pool"])?;
//! g.init(7)?;
//! assert_eq!(g.output_shape(), &[3]);
//! # Ok::<(), salient::Error>(())
//! ```

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{glorot_uniform, mix, Activation, LayerSpec, Mode};
use crate::limits::{product, thousands, Limits, MAX_PARAMS_FLAG};
use crate::model::{check_values, Head, Sequential};
use crate::ops::norm::{AfterConv, BatchNormVars};
use crate::ops::{broadcast_shape, AvgPool2dSpec, Conv2dOptions, MaxPool2dSpec, Padding};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// An activation, as a node of its own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Act {
    Relu,
    Relu6,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Gelu,
    /// Softmax over a flat `[K]` input.
    Softmax,
    /// `min(max(x, lo), hi)`; a missing bound does not clip.
    Clip(Option<f32>, Option<f32>),
}

/// What a node computes. Shapes are per sample: the batch axis is implied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A convolution with bias: weight `[filters, Cin/groups, kh, kw]`.
    Conv2D {
        filters: usize,
        kernel: (usize, usize),
        options: Conv2dOptions,
    },
    /// `x·Wᵀ + b` on `[F]` inputs: weight `[units, F]`.
    Dense {
        units: usize,
    },
    /// Batch normalisation over channels (axis 0 of the sample): `γ`, `β`,
    /// running mean and variance.
    BatchNorm {
        eps: f32,
    },
    /// Max pooling; padding reads −∞, so a padded position never wins.
    MaxPool2D {
        pool: (usize, usize),
        stride: (usize, usize),
        pads: (usize, usize, usize, usize),
    },
    AvgPool2D(AvgPool2dSpec),
    /// `[C, H, W]` → `[C]`.
    GlobalAvgPool2D,
    /// Inverted dropout in training, the identity otherwise.
    Dropout {
        rate: f32,
    },
    /// `[C, H, W]` → `[C·H·W]`.
    Flatten,
    /// The same values in a new shape, in row-major order.
    Reshape {
        shape: Vec<usize>,
    },
    /// Axes reordered: output axis `i` is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Constant padding: `(before, after)` for each axis.
    Pad {
        pads: Vec<(usize, usize)>,
        value: f32,
    },
    /// A stored tensor, the same for every sample: its one parameter. It can
    /// only feed the arithmetic nodes, which broadcast it as NumPy does.
    Constant {
        shape: Vec<usize>,
    },
    /// The sum of its inputs (NumPy broadcasting).
    Add,
    /// `a − b` (NumPy broadcasting).
    Sub,
    /// `a · b` (NumPy broadcasting).
    Mul,
    /// `a / b` (NumPy broadcasting).
    Div,
    /// Its inputs side by side along axis `axis` of the per-sample shape.
    Concat {
        axis: usize,
    },
    Activation(Act),
}

impl Op {
    /// A `k x k` convolution to `filters` channels with stride `stride` and
    /// `pad` zeros on every side (PyTorch's `nn.Conv2d(_, filters, k, stride, pad)`).
    pub fn conv2d(filters: usize, k: usize, stride: usize, pad: usize) -> Op {
        Op::Conv2D {
            filters,
            kernel: (k, k),
            options: Conv2dOptions {
                stride: (stride, stride),
                pads: (pad, pad, pad, pad),
                ..Conv2dOptions::default()
            },
        }
    }

    /// The node's kind by Keras's layer names (`Conv2D`, `Add`, ...; an
    /// activation by its function: `Relu`, `Softmax`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2D { .. } => "Conv2D",
            Op::Dense { .. } => "Dense",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::MaxPool2D { .. } => "MaxPooling2D",
            Op::AvgPool2D(_) => "AveragePooling2D",
            Op::GlobalAvgPool2D => "GlobalAveragePooling2D",
            Op::Dropout { .. } => "Dropout",
            Op::Flatten => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Permute",
            Op::Pad { .. } => "ZeroPadding2D",
            Op::Constant { .. } => "Constant",
            Op::Add => "Add",
            Op::Sub => "Subtract",
            Op::Mul => "Multiply",
            Op::Div => "Divide",
            Op::Concat { .. } => "Concatenate",
            Op::Activation(act) => match act {
                Act::Relu => "Relu",
                Act::Relu6 => "Relu6",
                Act::LeakyRelu(_) => "LeakyRelu",
                Act::Sigmoid => "Sigmoid",
                Act::Tanh => "Tanh",
                Act::Gelu => "Gelu",
                Act::Softmax => "Softmax",
                Act::Clip(..) => "Clip",
            },
        }
    }

    /// The suffixes of the node's parameter tensors in a checkpoint, in the
    /// order of [`Node::params`] (PyTorch's names).
    pub fn param_names(&self) -> &'static [&'static str] {
        match self {
            Op::Conv2D { .. } | Op::Dense { .. } => &["weight", "bias"],
            Op::BatchNorm { .. } => &["weight", "bias", "running_mean", "running_var"],
            Op::Constant { .. } => &["value"],
            _ => &[],
        }
    }

    fn is_arithmetic(&self) -> bool {
        matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div)
    }
}

/// One named node: its op, its inputs and its parameters.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Names of the nodes (or `input`) it reads, in order.
    pub inputs: Vec<String>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Parameters in PyTorch's layouts: conv and dense `[weight, bias]`, batch
    /// norm `[γ, β, running mean, running variance]`, a constant `[value]`.
    pub params: Vec<Tensor>,
}

/// A model as a graph of named nodes; the last node added is the output.
#[derive(Clone, Debug)]
pub struct Graph {
    input_shape: [usize; 3],
    nodes: Vec<Node>,
    class_names: Vec<String>,
    /// Parameters so far, against [`Limits::max_params`].
    total_params: u64,
}

/// The vars of one forward pass, one per node, in node order.
#[derive(Clone, Debug)]
pub struct GraphForward {
    pub input: Var,
    pub outputs: Vec<Var>,
}

impl GraphForward {
    /// The output node's var.
    pub fn last(&self) -> Var {
        self.outputs.last().copied().unwrap_or(self.input)
    }
}

impl Graph {
    /// An empty graph for `[C, H, W]` inputs, which its nodes read as `input`.
    pub fn new(input_shape: [usize; 3]) -> Self {
        Graph {
            input_shape,
            nodes: Vec::new(),
            class_names: Vec::new(),
            total_params: 0,
        }
    }

    /// The nodes, in the order they run.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Mutable access to the nodes (to load parameters).
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// Per-sample input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// The output node's per-sample shape.
    pub fn output_shape(&self) -> &[usize] {
        self.nodes
            .last()
            .map_or(&self.input_shape[..], |n| &n.output_shape)
    }

    /// Names of the classes, in label order (empty if unknown).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Names the classes; there must be one name per output.
    pub fn set_class_names(&mut self, names: Vec<String>) -> Result<()> {
        let classes: usize = self.output_shape().iter().product();
        if names.len() != classes {
            return Err(Error::invalid(
                "graph",
                format!("{} class names for {classes} outputs", names.len()),
            ));
        }
        self.class_names = names;
        Ok(())
    }

    /// Weights, biases, batch-norm statistics and constants.
    pub fn num_params(&self) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| &n.params)
            .map(|p| p.len())
            .sum()
    }

    /// The index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::invalid("graph", format!("no node is called {name:?}")))
    }

    /// The per-sample output shape of node `name` (or of `input`).
    pub fn shape_of(&self, name: &str) -> Result<&[usize]> {
        Ok(match self.node_of(name)? {
            Some(node) => &node.output_shape,
            None => &self.input_shape,
        })
    }

    fn node_of(&self, name: &str) -> Result<Option<&Node>> {
        match name {
            "input" => Ok(None),
            _ => Ok(Some(&self.nodes[self.node_index(name)?])),
        }
    }

    /// Checks node `name` before it exists: its name, its inputs' shapes, the
    /// [`Limits`] in force. Returns its output shape and its parameters'
    /// shapes; nothing is allocated for either.
    pub fn plan(
        &self,
        name: &str,
        op: &Op,
        inputs: &[&str],
    ) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
        let bad = |what: String| Error::invalid("graph", format!("node {name:?}: {what}"));
        if name == "input" || self.nodes.iter().any(|n| n.name == name) {
            return Err(bad("the name is taken".into()));
        }
        let limits = Limits::current();
        if self.nodes.len() >= limits.max_layers {
            return Err(Error::TooLarge {
                subject: "graph".into(),
                what: format!("more than {} nodes", thousands(limits.max_layers as u64)),
                limit: format!("{} nodes", thousands(limits.max_layers as u64)),
                raise: None,
            });
        }
        let sources: Vec<Option<&Node>> = inputs
            .iter()
            .map(|i| self.node_of(i))
            .collect::<Result<_>>()?;
        let shapes: Vec<Vec<usize>> = sources
            .iter()
            .map(|n| n.map_or(self.input_shape.to_vec(), |n| n.output_shape.clone()))
            .collect();
        let is_constant =
            |n: &Option<&Node>| n.is_some_and(|n| matches!(n.op, Op::Constant { .. }));
        let arity = match op {
            Op::Constant { .. } => inputs.is_empty(),
            Op::Add | Op::Concat { .. } => inputs.len() >= 2,
            Op::Sub | Op::Mul | Op::Div => inputs.len() == 2,
            _ => inputs.len() == 1,
        };
        if !arity {
            return Err(bad(format!("{} inputs do not suit {op:?}", inputs.len())));
        }
        if !op.is_arithmetic() {
            if let Some(i) = sources.iter().position(is_constant) {
                return Err(bad(format!(
                    "constant {:?} can only feed Add, Sub, Mul or Div",
                    inputs[i]
                )));
            }
        }
        let empty = Vec::new();
        let x = shapes.first().unwrap_or(&empty);
        let chw = || match x[..] {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(bad(format!("needs a [C, H, W] input, got {x:?}"))),
        };
        let (output_shape, params): (Vec<usize>, Vec<Vec<usize>>) = match op {
            &Op::Conv2D {
                filters,
                kernel: (kh, kw),
                options,
            } => {
                let (c, h, w) = chw()?;
                let weight = [filters, c / options.groups.max(1), kh, kw];
                let [_, _, ho, wo] = options
                    .output_shape(&[1, c, h, w], &weight)
                    .map_err(|e| bad(e.to_string()))?;
                (vec![filters, ho, wo], vec![weight.to_vec(), vec![filters]])
            }
            &Op::Dense { units } => match x[..] {
                [f] => (vec![units], vec![vec![units, f], vec![units]]),
                _ => return Err(bad(format!("needs a flat [F] input, got {x:?}"))),
            },
            Op::BatchNorm { .. } => {
                let c = *x
                    .first()
                    .ok_or_else(|| bad("needs a channel axis".into()))?;
                (x.clone(), vec![vec![c]; 4])
            }
            &Op::MaxPool2D { pool, stride, pads } => {
                let (c, h, w) = chw()?;
                if pads.0 >= pool.0 || pads.2 >= pool.0 || pads.1 >= pool.1 || pads.3 >= pool.1 {
                    return Err(bad(format!(
                        "padding {pads:?} must be smaller than the window {pool:?}"
                    )));
                }
                let spec = MaxPool2dSpec { pool, stride };
                let (ho, wo) = spec
                    .output_size(h + pads.0 + pads.2, w + pads.1 + pads.3)
                    .map_err(|e| bad(e.to_string()))?;
                (vec![c, ho, wo], vec![])
            }
            Op::AvgPool2D(spec) => {
                let (c, h, w) = chw()?;
                let (ho, wo) = spec.output_size(h, w).map_err(|e| bad(e.to_string()))?;
                (vec![c, ho, wo], vec![])
            }
            Op::GlobalAvgPool2D => (vec![chw()?.0], vec![]),
            Op::Flatten => (vec![x.iter().product()], vec![]),
            Op::Reshape { shape } => {
                if product(shape) != product(x) {
                    return Err(bad(format!("cannot reshape {x:?} to {shape:?}")));
                }
                (shape.clone(), vec![])
            }
            Op::Transpose { perm } => {
                let mut seen = vec![false; x.len()];
                let valid = perm.len() == x.len()
                    && perm
                        .iter()
                        .all(|&a| a < x.len() && !std::mem::replace(&mut seen[a], true));
                if !valid {
                    return Err(bad(format!(
                        "{perm:?} is not a permutation of {x:?}'s axes"
                    )));
                }
                (perm.iter().map(|&a| x[a]).collect(), vec![])
            }
            Op::Pad { pads, value } => {
                if pads.len() != x.len() || !value.is_finite() {
                    return Err(bad(format!(
                        "pads {pads:?} and value {value} do not suit a {x:?} input"
                    )));
                }
                let shape = x
                    .iter()
                    .zip(pads)
                    .map(|(&d, &(a, b))| d.checked_add(a)?.checked_add(b))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| bad(format!("pads {pads:?} overflow")))?;
                (shape, vec![])
            }
            Op::Constant { shape } => (shape.clone(), vec![shape.clone()]),
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let computed: Vec<&Vec<usize>> = shapes
                    .iter()
                    .zip(&sources)
                    .filter(|(_, n)| !is_constant(n))
                    .map(|(s, _)| s)
                    .collect();
                let Some(&first) = computed.first() else {
                    return Err(bad("needs at least one input that is not a constant".into()));
                };
                let mut shape = first.clone();
                for s in &shapes[..] {
                    shape = broadcast_shape("graph", &shape, s).map_err(|e| bad(e.to_string()))?;
                }
                // Every computed input keeps the output's rank, so its batch
                // axis lines up with the others' on the tape.
                if let Some(s) = computed.iter().find(|s| s.len() != shape.len()) {
                    return Err(bad(format!(
                        "input of shape {s:?} has a different rank from the output {shape:?}"
                    )));
                }
                (shape, vec![])
            }
            &Op::Concat { axis } => {
                let same = shapes
                    .iter()
                    .all(|s| s.len() == x.len() && (0..x.len()).all(|a| a == axis || s[a] == x[a]));
                if axis >= x.len() || !same {
                    return Err(bad(format!(
                        "cannot concatenate {shapes:?} along axis {axis}"
                    )));
                }
                let mut shape = x.clone();
                shape[axis] = shapes.iter().map(|s| s[axis]).sum();
                (shape, vec![])
            }
            Op::Activation(Act::Softmax) if x.len() != 1 => {
                return Err(bad(format!("softmax needs a flat [K] input, got {x:?}")));
            }
            Op::Dropout { .. } | Op::Activation(_) => (x.clone(), vec![]),
        };
        let count = params
            .iter()
            .map(|s| product(s).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add);
        let total = self.total_params.saturating_add(count);
        if total > limits.max_params {
            return Err(Error::TooLarge {
                subject: format!("node {name}"),
                what: format!(
                    "{} parameters (shapes {params:?}) bring the model to {}",
                    thousands(count),
                    thousands(total)
                ),
                limit: format!("{} parameters", thousands(limits.max_params)),
                raise: Some(MAX_PARAMS_FLAG),
            });
        }
        check_values(&format!("node {name}"), &output_shape, &limits)?;
        Ok((output_shape, params))
    }

    /// Adds node `name` computing `op` from `inputs` (earlier nodes, or
    /// `input`), with zero parameters of the right shapes ([`init`](Self::init)
    /// fills them). Fails on a repeated name, an unknown input, or shapes the
    /// op cannot take.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[&str]) -> Result<&mut Node> {
        let (output_shape, shapes) = self.plan(name, &op, inputs)?;
        let mut params: Vec<Tensor> = shapes.into_iter().map(Tensor::zeros).collect();
        if let Op::BatchNorm { .. } = op {
            // γ = 1 and running variance 1: the identity until loaded.
            params[0].fill(1.0);
            params[3].fill(1.0);
        }
        Ok(self.push(name, op, inputs, output_shape, params))
    }

    /// [`add`](Self::add) with the node's parameters, which must have the
    /// shapes [`plan`](Self::plan) gives.
    pub fn add_with_params(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[&str],
        params: Vec<Tensor>,
    ) -> Result<&mut Node> {
        let (output_shape, shapes) = self.plan(name, &op, inputs)?;
        let given: Vec<&[usize]> = params.iter().map(|p| p.shape()).collect();
        if given.len() != shapes.len() || given.iter().zip(&shapes).any(|(g, s)| g != s) {
            return Err(Error::invalid(
                "graph",
                format!("node {name:?}: parameters of shapes {given:?}, expected {shapes:?}"),
            ));
        }
        Ok(self.push(name, op, inputs, output_shape, params))
    }

    /// Appends a node [`plan`](Self::plan) accepted, with `output_shape` and
    /// parameters of the shapes it gave.
    pub(crate) fn push(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[&str],
        output_shape: Vec<usize>,
        params: Vec<Tensor>,
    ) -> &mut Node {
        // The kernels read parameters in row-major order.
        let params: Vec<Tensor> = params
            .into_iter()
            .map(|p| match p.is_standard_layout() {
                true => p,
                false => p.as_standard_layout().into_owned(),
            })
            .collect();
        self.total_params += params.iter().map(|p| p.len() as u64).sum::<u64>();
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output_shape,
            params,
        });
        self.nodes.last_mut().expect("just pushed")
    }

    /// Fresh parameters from `seed`: Glorot-uniform weights and zero biases
    /// for convolutions and dense layers (Keras's defaults); `γ = 1`, `β = 0`
    /// and running statistics 0 and 1 for batch normalisation.
    pub fn init(&mut self, seed: u64) -> Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            match node.op {
                Op::Conv2D { .. } | Op::Dense { .. } => {
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64));
                    let shape = node.params[0].shape().to_vec();
                    node.params[0] = glorot_uniform(&shape, &mut rng)?;
                    node.params[1].fill(0.0);
                }
                Op::BatchNorm { .. } => {
                    for (p, v) in node.params.iter_mut().zip([1.0, 0.0, 0.0, 1.0]) {
                        p.fill(v);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the graph on `tape` for the batch `x: [N, C, H, W]`. With
    /// [`Head::Linear`] an output softmax is left out, so the output is the
    /// class scores. In training, parameters are differentiated, dropout is
    /// on and batch normalisation uses the batch's statistics.
    pub fn forward<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
        head: Head,
    ) -> Result<GraphForward> {
        self.run(tape, x, mode, head, false)
    }

    /// [`forward`](Graph::forward); with `fuse`, for the class scores alone
    /// on a tape that records nothing, a convolution followed by batch
    /// normalisation, a residual `Add` and/or a ReLU (each reading the node
    /// before it, and read by nothing else) runs as one op
    /// ([`Tape::conv2d_inference`]): the same bits, in one pass. The nodes
    /// folded into it get its output as theirs.
    fn run<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
        head: Head,
        fuse: bool,
    ) -> Result<GraphForward> {
        let train = matches!(mode, Mode::Train { .. });
        let mut outputs: Vec<Var> = Vec::with_capacity(self.nodes.len());
        let last = self.nodes.len().saturating_sub(1);
        let fuse = fuse && !train && !tape.is_recording();
        let readers = if fuse { self.readers() } else { HashMap::new() };
        // Nodes still to skip, folded into the convolution before them.
        let mut folded = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if folded > 0 {
                folded -= 1;
                outputs.push(*outputs.last().expect("the fused convolution's"));
                continue;
            }
            let ins: Vec<Var> = node
                .inputs
                .iter()
                .map(|name| match name.as_str() {
                    "input" => Ok(x),
                    other => Ok(outputs[self.node_index(other)?]),
                })
                .collect::<Result<_>>()?;
            let params: Vec<Var> = node
                .params
                .iter()
                .map(|p| match train {
                    true => tape.param(p),
                    false => tape.constant_ref(p),
                })
                .collect();
            let missing =
                || Error::invalid("graph", format!("node {:?}: parameters missing", node.name));
            let param = |k: usize| params.get(k).copied().ok_or_else(missing);
            let batch = |shape: &[usize]| -> Vec<usize> {
                let mut full = Vec::with_capacity(shape.len() + 1);
                full.push(0);
                full.extend_from_slice(shape);
                full
            };
            let y = match &node.op {
                Op::Constant { .. } => param(0)?,
                _ if ins.is_empty() => return Err(missing()),
                &Op::Conv2D { options, .. } if fuse => {
                    let folds = self.folds_after(i, &readers);
                    let after = AfterConv {
                        norm: match folds.norm {
                            Some(j) => Some(self.batch_norm_vars(tape, j)?),
                            None => None,
                        },
                        residual: match folds.residual {
                            Some("input") => Some(x),
                            Some(name) => Some(outputs[self.node_index(name)?]),
                            None => None,
                        },
                        relu: folds.relu,
                    };
                    folded = folds.nodes;
                    let conv = (ins[0], param(0)?, param(1)?);
                    tape.conv2d_inference(conv, options, after)?
                }
                &Op::Conv2D { options, .. } => {
                    tape.conv2d_with(ins[0], param(0)?, param(1)?, options)?
                }
                Op::Dense { .. } => tape.dense(ins[0], param(0)?, param(1)?)?,
                &Op::BatchNorm { eps } => {
                    let (gamma, beta) = (param(0)?, param(1)?);
                    match train {
                        true => tape.batch_norm_train(ins[0], gamma, beta, eps)?,
                        false => tape.batch_norm(ins[0], gamma, beta, param(2)?, param(3)?, eps)?,
                    }
                }
                // One op for the scores alone (any tape: it records the
                // `pad` and the pooling where a gradient may be asked for).
                &Op::MaxPool2D { pool, stride, pads } => {
                    tape.max_pool2d_inference(ins[0], MaxPool2dSpec { pool, stride }, pads)?
                }
                &Op::AvgPool2D(spec) => tape.avg_pool2d(ins[0], spec)?,
                Op::GlobalAvgPool2D => tape.global_avg_pool2d(ins[0])?,
                &Op::Dropout { rate } => match mode {
                    Mode::Train { dropout_seed } if rate > 0.0 => {
                        tape.dropout(ins[0], rate, mix(dropout_seed, i as u64))?
                    }
                    _ => ins[0],
                },
                Op::Flatten => tape.flatten(ins[0])?,
                Op::Reshape { shape } => {
                    let mut full = batch(shape);
                    full[0] = tape.value(ins[0])?.shape()[0];
                    tape.reshape(ins[0], &full)?
                }
                Op::Transpose { perm } => {
                    let mut axes = batch(perm);
                    axes[1..].iter_mut().for_each(|a| *a += 1);
                    tape.permute(ins[0], &axes)?
                }
                &Op::Pad { ref pads, value } => {
                    let mut all = vec![(0, 0)];
                    all.extend_from_slice(pads);
                    tape.pad(ins[0], &all, value)?
                }
                Op::Add | Op::Sub | Op::Mul | Op::Div => {
                    let mut acc = ins[0];
                    for &other in &ins[1..] {
                        acc = match node.op {
                            Op::Sub => tape.sub(acc, other)?,
                            Op::Mul => tape.mul(acc, other)?,
                            Op::Div => tape.div(acc, other)?,
                            _ => tape.add(acc, other)?,
                        };
                    }
                    acc
                }
                &Op::Concat { axis } => tape.concat(&ins, axis + 1)?,
                &Op::Activation(act) => {
                    let h = ins[0];
                    match act {
                        Act::Softmax if i == last && head == Head::Linear => h,
                        Act::Softmax => tape.softmax(h)?,
                        Act::Relu => tape.relu(h)?,
                        Act::Relu6 => tape.relu6(h)?,
                        Act::LeakyRelu(alpha) => tape.leaky_relu(h, alpha)?,
                        Act::Sigmoid => tape.sigmoid(h)?,
                        Act::Tanh => tape.tanh(h)?,
                        Act::Gelu => tape.gelu(h)?,
                        Act::Clip(lo, hi) => tape.clip(
                            h,
                            lo.unwrap_or(f32::NEG_INFINITY),
                            hi.unwrap_or(f32::INFINITY),
                        )?,
                    }
                }
            };
            outputs.push(y);
        }
        Ok(GraphForward { input: x, outputs })
    }
}

/// The nodes a convolution takes into itself for the scores alone (see
/// `Graph::folds_after`).
struct Folds<'g> {
    /// The batch normalisation's index.
    norm: Option<usize>,
    /// The residual's name.
    residual: Option<&'g str>,
    relu: bool,
    /// How many nodes after the convolution these are.
    nodes: usize,
}

impl Graph {
    /// How many times each node's output is read (by name; the input as
    /// `input`).
    fn readers(&self) -> HashMap<&str, usize> {
        let mut readers = HashMap::new();
        for name in self.nodes.iter().flat_map(|n| &n.inputs) {
            *readers.entry(name.as_str()).or_insert(0) += 1;
        }
        readers
    }

    /// What node `i` (a convolution) can take into itself on the way to the
    /// scores, in this order, each reading the node before it and read by
    /// nothing else: the batch normalisation right after it, an `Add` of it
    /// and one other input computed before node `i` (a residual connection),
    /// a ReLU.
    fn folds_after<'g>(&'g self, i: usize, readers: &HashMap<&str, usize>) -> Folds<'g> {
        let only_reader = |j: usize, of: usize| {
            let of = self.nodes[of].name.as_str();
            readers.get(of) == Some(&1)
                && self
                    .nodes
                    .get(j)
                    .is_some_and(|n| n.inputs.iter().any(|r| r == of))
        };
        let alone = |j: usize| self.nodes[j].inputs.len() == 1;
        let norm = (only_reader(i + 1, i)
            && alone(i + 1)
            && matches!(self.nodes[i + 1].op, Op::BatchNorm { .. }))
        .then_some(i + 1);
        let mut last = norm.unwrap_or(i);
        // The Add's other input, computed before node i.
        let earlier = |name: &str| name == "input" || self.node_index(name).is_ok_and(|k| k < i);
        let residual = match self.nodes.get(last + 1) {
            Some(add)
                if matches!(add.op, Op::Add)
                    && add.inputs.len() == 2
                    && only_reader(last + 1, last) =>
            {
                let me = self.nodes[last].name.as_str();
                let other = add.inputs.iter().find(|r| r.as_str() != me);
                other.filter(|o| earlier(o)).map(String::as_str)
            }
            _ => None,
        };
        if residual.is_some() {
            last += 1;
        }
        let relu = only_reader(last + 1, last)
            && alone(last + 1)
            && matches!(self.nodes[last + 1].op, Op::Activation(Act::Relu));
        Folds {
            norm,
            residual,
            relu,
            nodes: last + usize::from(relu) - i,
        }
    }

    /// Batch normalisation node `j`'s parameters as constants on `tape`.
    fn batch_norm_vars<'a>(&'a self, tape: &mut Tape<'a>, j: usize) -> Result<BatchNormVars> {
        let node = &self.nodes[j];
        match (&node.op, &node.params[..]) {
            (&Op::BatchNorm { eps }, [gamma, beta, mean, var, ..]) => Ok(BatchNormVars {
                gamma: tape.constant_ref(gamma),
                beta: tape.constant_ref(beta),
                mean: tape.constant_ref(mean),
                var: tape.constant_ref(var),
                eps,
            }),
            _ => Err(Error::invalid(
                "graph",
                format!("node {:?}: parameters missing", node.name),
            )),
        }
    }
}

impl Graph {
    /// torchvision's ResNet-18 for `[C, H, W]` inputs and `classes` outputs,
    /// with fresh weights from `seed`: a 7x7 stride-2 stem, batch
    /// normalisation, 3x3 max pooling, four stages of two basic blocks
    /// (64, 128, 256, 512 channels; stride 2 and a 1x1 projection where a
    /// stage starts smaller), global average pooling and a dense head. Node
    /// names follow torchvision's modules (`layer2.0.conv1`, ...).
    pub fn resnet18(input_shape: [usize; 3], classes: usize, seed: u64) -> Result<Graph> {
        let mut g = Graph::new(input_shape);
        let conv = Op::conv2d;
        let bn = Op::BatchNorm { eps: 1e-5 };
        let relu = Op::Activation(Act::Relu);
        g.add("conv1", conv(64, 7, 2, 3), &["input"])?;
        g.add("bn1", bn.clone(), &["conv1"])?;
        g.add("relu", relu.clone(), &["bn1"])?;
        let pool = Op::MaxPool2D {
            pool: (3, 3),
            stride: (2, 2),
            pads: (1, 1, 1, 1),
        };
        g.add("maxpool", pool, &["relu"])?;
        let mut last = "maxpool".to_string();
        let mut channels = 64;
        for (stage, width) in [64, 128, 256, 512].into_iter().enumerate() {
            for block in 0..2 {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let p = format!("layer{}.{block}", stage + 1);
                let name = |s: &str| format!("{p}.{s}");
                g.add(&name("conv1"), conv(width, 3, stride, 1), &[&last])?;
                g.add(&name("bn1"), bn.clone(), &[&name("conv1")])?;
                g.add(&name("relu1"), relu.clone(), &[&name("bn1")])?;
                g.add(&name("conv2"), conv(width, 3, 1, 1), &[&name("relu1")])?;
                g.add(&name("bn2"), bn.clone(), &[&name("conv2")])?;
                let shortcut = match stride != 1 || channels != width {
                    true => {
                        g.add(&name("downsample.0"), conv(width, 1, stride, 0), &[&last])?;
                        g.add(&name("downsample.1"), bn.clone(), &[&name("downsample.0")])?;
                        name("downsample.1")
                    }
                    false => last.clone(),
                };
                g.add(&name("add"), Op::Add, &[&name("bn2"), &shortcut])?;
                g.add(&name("relu2"), relu.clone(), &[&name("add")])?;
                last = name("relu2");
                channels = width;
            }
        }
        g.add("avgpool", Op::GlobalAvgPool2D, &[&last])?;
        g.add("fc", Op::Dense { units: classes }, &["avgpool"])?;
        g.init(seed)?;
        Ok(g)
    }
}

impl Sequential {
    /// The same model as a [`Graph`], sharing no storage: each layer a node of
    /// its name, each activation a node `<layer>/relu` or `<layer>/softmax`
    /// after it. The graph computes what the stack does (through the
    /// reference-shaped ops rather than the fused fast path).
    pub fn to_graph(&self) -> Result<Graph> {
        let mut g = Graph::new(self.input_shape());
        let mut last = "input".to_string();
        for layer in self.layers() {
            let op = match layer.spec {
                LayerSpec::Conv2D {
                    filters,
                    kernel_size: [kh, kw],
                    strides,
                    padding,
                    ..
                } => {
                    let mut options = Conv2dOptions {
                        stride: (strides, strides),
                        ..Conv2dOptions::default()
                    };
                    if padding == Padding::Same {
                        let (h, w) = (layer.input_shape[1], layer.input_shape[2]);
                        options.pads = options.same_pads(h, w, kh, kw);
                    }
                    Op::Conv2D {
                        filters,
                        kernel: (kh, kw),
                        options,
                    }
                }
                LayerSpec::MaxPooling2D { pool_size, strides } => Op::MaxPool2D {
                    pool: (pool_size[0], pool_size[1]),
                    stride: (strides[0], strides[1]),
                    pads: (0, 0, 0, 0),
                },
                LayerSpec::Dropout { rate } => Op::Dropout { rate },
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Dense { units, .. } => Op::Dense { units },
            };
            let params = match &layer.params {
                Some((w, b)) => vec![w.clone(), b.clone()],
                None => vec![],
            };
            g.add_with_params(&layer.name, op, &[&last], params)?;
            last = layer.name.clone();
            let act = match layer.spec.activation() {
                Some(Activation::Relu) => Some((Act::Relu, "relu")),
                Some(Activation::Softmax) => Some((Act::Softmax, "softmax")),
                _ => None,
            };
            if let Some((act, suffix)) = act {
                let name = format!("{}/{suffix}", layer.name);
                g.add(&name, Op::Activation(act), &[&last])?;
                last = name;
            }
        }
        if !self.class_names().is_empty() {
            g.set_class_names(self.class_names().to_vec())?;
        }
        Ok(g)
    }
}

impl crate::model::Classifier for Graph {
    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn num_classes(&self) -> usize {
        self.output_shape().iter().product()
    }

    fn layer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.output_shape.clone()))
            .collect()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn num_params(&self) -> usize {
        Graph::num_params(self)
    }

    /// The last node with a spatial output `[K, h, w]` larger than 1x1 (in a
    /// ResNet, the last block's output before the global pooling).
    fn default_cam_layer(&self) -> Option<usize> {
        self.nodes.iter().rposition(|n| {
            !matches!(n.op, Op::Constant { .. })
                && matches!(n.output_shape[..], [_, h, w] if h * w > 1)
        })
    }

    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)> {
        // Only the scores are read when no layer is kept: layers may fuse.
        let pass = self.run(tape, x, Mode::Infer, Head::Linear, keep.is_none())?;
        let kept = keep.and_then(|i| pass.outputs.get(i).copied());
        Ok((pass.last(), kept))
    }
}
