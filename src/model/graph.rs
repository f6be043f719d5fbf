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

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::layers::{glorot_uniform, mix, Mode};
use crate::model::Head;
use crate::ops::{AvgPool2dSpec, Conv2dOptions, MaxPool2dSpec};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// An activation, as a node of its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Relu,
    Relu6,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Gelu,
    Softmax,
}

/// What a node computes.
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// Batch normalisation over channels: `γ`, `β`, running mean and variance.
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
    /// The sum of its inputs, which must have one shape.
    Add,
    /// Its inputs side by side along axis `axis` of the per-sample shape.
    Concat {
        axis: usize,
    },
    Activation(Act),
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
    /// norm `[γ, β, running mean, running variance]`.
    pub params: Vec<Tensor>,
}

/// A model as a graph of named nodes; the last node added is the output.
#[derive(Clone, Debug)]
pub struct Graph {
    input_shape: [usize; 3],
    nodes: Vec<Node>,
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

    /// The index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::invalid("graph", format!("no node is called {name:?}")))
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        match name {
            "input" => Ok(self.input_shape.to_vec()),
            _ => Ok(self.nodes[self.node_index(name)?].output_shape.clone()),
        }
    }

    /// Adds node `name` computing `op` from `inputs` (earlier nodes, or
    /// `input`), with zero parameters of the right shapes ([`init`](Self::init)
    /// fills them). Fails on a repeated name, an unknown input, or shapes the
    /// op cannot take.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[&str]) -> Result<&mut Node> {
        let bad = |what: String| Error::invalid("graph", format!("node {name:?}: {what}"));
        if name == "input" || self.nodes.iter().any(|n| n.name == name) {
            return Err(bad("the name is taken".into()));
        }
        let shapes: Vec<Vec<usize>> = inputs
            .iter()
            .map(|i| self.shape_of(i))
            .collect::<Result<_>>()?;
        let arity = match op {
            Op::Add | Op::Concat { .. } => inputs.len() >= 2,
            _ => inputs.len() == 1,
        };
        if !arity {
            return Err(bad(format!("{} inputs do not suit {op:?}", inputs.len())));
        }
        let x = &shapes[0];
        let chw = || match x[..] {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(bad(format!("needs a [C, H, W] input, got {x:?}"))),
        };
        let (output_shape, params) = match op {
            Op::Conv2D {
                filters,
                kernel: (kh, kw),
                options,
            } => {
                let (c, h, w) = chw()?;
                let weight = [filters, c / options.groups.max(1), kh, kw];
                let [_, _, ho, wo] = options
                    .output_shape(&[1, c, h, w], &weight)
                    .map_err(|e| bad(e.to_string()))?;
                let shape = vec![filters, ho, wo];
                let params = vec![Tensor::zeros(weight.to_vec()), Tensor::zeros(vec![filters])];
                (shape, params)
            }
            Op::Dense { units } => match x[..] {
                [f] => (
                    vec![units],
                    vec![Tensor::zeros(vec![units, f]), Tensor::zeros(vec![units])],
                ),
                _ => return Err(bad(format!("needs a flat [F] input, got {x:?}"))),
            },
            Op::BatchNorm { .. } => {
                let c = *x
                    .first()
                    .ok_or_else(|| bad("needs a channel axis".into()))?;
                let ones = Tensor::ones(vec![c]);
                let zeros = Tensor::zeros(vec![c]);
                (x.clone(), vec![ones.clone(), zeros.clone(), zeros, ones])
            }
            Op::MaxPool2D { pool, stride, pads } => {
                let (c, h, w) = chw()?;
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
            Op::Add => {
                if let Some(other) = shapes.iter().find(|s| *s != x) {
                    return Err(bad(format!("adds inputs of shapes {x:?} and {other:?}")));
                }
                (x.clone(), vec![])
            }
            Op::Concat { axis } => {
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
            Op::Dropout { .. } | Op::Activation(_) => (x.clone(), vec![]),
        };
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output_shape,
            params,
        });
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    /// Fresh parameters from `seed`: Glorot-uniform weights and zero biases
    /// for convolutions and dense layers (Keras's defaults); `γ = 1`, `β = 0`
    /// and running statistics 0 and 1 for batch normalisation.
    pub fn init(&mut self, seed: u64) -> Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if matches!(node.op, Op::Conv2D { .. } | Op::Dense { .. }) {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64));
                let shape = node.params[0].shape().to_vec();
                node.params[0] = glorot_uniform(&shape, &mut rng)?;
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
        let train = matches!(mode, Mode::Train { .. });
        let mut outputs: Vec<Var> = Vec::with_capacity(self.nodes.len());
        let last = self.nodes.len().saturating_sub(1);
        for (i, node) in self.nodes.iter().enumerate() {
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
            let h = ins[0];
            let y = match node.op {
                Op::Conv2D { options, .. } => tape.conv2d_with(h, param(0)?, param(1)?, options)?,
                Op::Dense { .. } => tape.dense(h, param(0)?, param(1)?)?,
                Op::BatchNorm { eps } => {
                    let (gamma, beta) = (param(0)?, param(1)?);
                    match train {
                        true => tape.batch_norm_train(h, gamma, beta, eps)?,
                        false => tape.batch_norm(h, gamma, beta, param(2)?, param(3)?, eps)?,
                    }
                }
                Op::MaxPool2D { pool, stride, pads } => {
                    let padded = match pads {
                        (0, 0, 0, 0) => h,
                        (t, l, b, r) => {
                            tape.pad(h, &[(0, 0), (0, 0), (t, b), (l, r)], f32::NEG_INFINITY)?
                        }
                    };
                    tape.max_pool2d(padded, MaxPool2dSpec { pool, stride })?
                }
                Op::AvgPool2D(spec) => tape.avg_pool2d(h, spec)?,
                Op::GlobalAvgPool2D => tape.global_avg_pool2d(h)?,
                Op::Dropout { rate } => match mode {
                    Mode::Train { dropout_seed } if rate > 0.0 => {
                        tape.dropout(h, rate, mix(dropout_seed, i as u64))?
                    }
                    _ => h,
                },
                Op::Flatten => tape.flatten(h)?,
                Op::Add => {
                    let mut sum = h;
                    for &other in &ins[1..] {
                        sum = tape.add(sum, other)?;
                    }
                    sum
                }
                Op::Concat { axis } => tape.concat(&ins, axis + 1)?,
                Op::Activation(act) => match act {
                    Act::Softmax if i == last && head == Head::Linear => h,
                    Act::Softmax => tape.softmax(h)?,
                    Act::Relu => tape.relu(h)?,
                    Act::Relu6 => tape.relu6(h)?,
                    Act::LeakyRelu(alpha) => tape.leaky_relu(h, alpha)?,
                    Act::Sigmoid => tape.sigmoid(h)?,
                    Act::Tanh => tape.tanh(h)?,
                    Act::Gelu => tape.gelu(h)?,
                },
            };
            outputs.push(y);
        }
        Ok(GraphForward { input: x, outputs })
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

    /// The last node with a spatial output `[K, h, w]` (in a ResNet, the last
    /// block's output before the global pooling).
    fn default_cam_layer(&self) -> Option<usize> {
        self.nodes.iter().rposition(|n| n.output_shape.len() == 3)
    }

    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)> {
        let pass = self.forward(tape, x, Mode::Infer, Head::Linear)?;
        let kept = keep.and_then(|i| pass.outputs.get(i).copied());
        Ok((pass.last(), kept))
    }
}
