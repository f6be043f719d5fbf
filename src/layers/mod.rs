//! Layers: an op (or two) with its parameters, named and shaped as in Keras.
//!
//! A layer turns one per-sample shape into another (`[C, H, W]` → `[C', H', W']`,
//! or `[F]` → `[F']`) and records its ops on a tape. Its parameters are stored in
//! PyTorch's layouts (conv `[out, in, kh, kw]`, dense `[out, in]`), which is what
//! checkpoints hold.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops::{Conv2dSpec, MaxPool2dSpec, Padding};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// The activation applied to a layer's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `y = x` (Keras's `linear`).
    #[default]
    Linear,
    /// `y = max(x, 0)`.
    Relu,
    /// Softmax over the features.
    Softmax,
}

/// What a layer is, as its Keras constructor would say it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LayerSpec {
    /// `Conv2D(filters, kernel_size, strides, padding, activation)`.
    Conv2D {
        filters: usize,
        kernel_size: [usize; 2],
        strides: usize,
        padding: Padding,
        activation: Activation,
    },
    /// `MaxPooling2D(pool_size, strides)` with 'valid' padding.
    MaxPooling2D {
        pool_size: [usize; 2],
        strides: [usize; 2],
    },
    /// `Dropout(rate)`: inverted dropout in training, the identity otherwise.
    Dropout { rate: f32 },
    /// `Flatten()`: `[C, H, W]` → `[C·H·W]`, in C, H, W order.
    Flatten,
    /// `Dense(units, activation)`.
    Dense {
        units: usize,
        activation: Activation,
    },
}

impl LayerSpec {
    /// Keras's base name for automatic naming (`conv2d`, `conv2d_1`, ...).
    pub fn base_name(&self) -> &'static str {
        match self {
            LayerSpec::Conv2D { .. } => "conv2d",
            LayerSpec::MaxPooling2D { .. } => "max_pooling2d",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Dense { .. } => "dense",
        }
    }

    /// The layer's activation, if it has one.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            LayerSpec::Conv2D { activation, .. } | LayerSpec::Dense { activation, .. } => {
                Some(*activation)
            }
            _ => None,
        }
    }

    /// The per-sample output shape for a per-sample input shape, or an error
    /// naming the layer.
    pub fn output_shape(&self, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        let op = "layer";
        let need_image = || {
            Error::invalid(
                op,
                format!("{name}: needs an image input [C, H, W], but receives {input:?}"),
            )
        };
        match *self {
            LayerSpec::Conv2D {
                filters,
                kernel_size,
                strides,
                padding,
                ..
            } => {
                let &[c, h, w] = input else {
                    return Err(need_image());
                };
                if filters == 0 {
                    return Err(Error::invalid(
                        op,
                        format!("{name}: filters must be at least 1"),
                    ));
                }
                let geometry = crate::ops::ConvGeometry::new(
                    &[1, c, h, w],
                    &[filters, c, kernel_size[0], kernel_size[1]],
                    &[filters],
                    Conv2dSpec {
                        stride: strides,
                        padding,
                    },
                )
                .map_err(|e| Error::invalid(op, format!("{name}: {e}")))?;
                Ok(vec![filters, geometry.ho, geometry.wo])
            }
            LayerSpec::MaxPooling2D { pool_size, strides } => {
                let &[c, h, w] = input else {
                    return Err(need_image());
                };
                let spec = pool_spec(pool_size, strides);
                let (ho, wo) = spec
                    .output_size(h, w)
                    .map_err(|e| Error::invalid(op, format!("{name}: {e}")))?;
                Ok(vec![c, ho, wo])
            }
            LayerSpec::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::invalid(
                        op,
                        format!("{name}: dropout rate must be in [0, 1), got {rate}"),
                    ));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Flatten => {
                let features = input.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let features = features.ok_or_else(|| {
                    Error::invalid(
                        op,
                        format!("{name}: {input:?} has too many values to flatten"),
                    )
                })?;
                Ok(vec![features])
            }
            LayerSpec::Dense { units, .. } => {
                let &[_features] = input else {
                    return Err(Error::invalid(
                        op,
                        format!("{name}: Dense needs a flat input [features], but receives {input:?} (add a Flatten layer)"),
                    ));
                };
                if units == 0 {
                    return Err(Error::invalid(
                        op,
                        format!("{name}: units must be at least 1"),
                    ));
                }
                Ok(vec![units])
            }
        }
    }

    /// Shapes of the weight and bias for this per-sample input shape, if the
    /// layer has any: conv `[filters, C, kh, kw]` for `[C, H, W]`, dense
    /// `[units, F]` for `[F]`.
    pub fn param_shapes(&self, input: &[usize]) -> Result<Option<(Vec<usize>, Vec<usize>)>> {
        match (self, input) {
            (
                LayerSpec::Conv2D {
                    filters,
                    kernel_size,
                    ..
                },
                &[c, _, _],
            ) => Ok(Some((
                vec![*filters, c, kernel_size[0], kernel_size[1]],
                vec![*filters],
            ))),
            (LayerSpec::Dense { units, .. }, &[features]) => {
                Ok(Some((vec![*units, features], vec![*units])))
            }
            (LayerSpec::Conv2D { .. } | LayerSpec::Dense { .. }, _) => Err(Error::invalid(
                "layer",
                format!(
                    "{} needs an input of {}, not {input:?}",
                    self.base_name(),
                    match self {
                        LayerSpec::Dense { .. } => "[features]",
                        _ => "[C, H, W]",
                    }
                ),
            )),
            _ => Ok(None),
        }
    }
}

fn pool_spec(pool_size: [usize; 2], strides: [usize; 2]) -> MaxPool2dSpec {
    MaxPool2dSpec {
        pool: (pool_size[0], pool_size[1]),
        stride: (strides[0], strides[1]),
    }
}

/// Glorot (Xavier) uniform initialisation, Keras's default for kernels:
/// `U(−l, l)` with `l = √(6 / (fan_in + fan_out))`. For a conv kernel
/// `[out, in, kh, kw]`, `fan_in = in·kh·kw` and `fan_out = out·kh·kw`; for a
/// dense kernel `[out, in]`, `fan_in = in` and `fan_out = out`.
pub fn glorot_uniform(shape: &[usize], rng: &mut impl Rng) -> Result<Tensor> {
    let &[out, inp, ref window @ ..] = shape else {
        return Err(Error::invalid(
            "glorot_uniform",
            format!("a kernel needs at least two dimensions [out, in, ...], not {shape:?}"),
        ));
    };
    let receptive: f64 = window.iter().map(|&d| d as f64).product();
    let (fan_in, fan_out) = (inp as f64 * receptive, out as f64 * receptive);
    if fan_in + fan_out == 0.0 {
        return Err(Error::invalid(
            "glorot_uniform",
            format!("a kernel of shape {shape:?} has no weights"),
        ));
    }
    let limit = (6.0 / (fan_in + fan_out)).sqrt() as f32;
    Ok(Tensor::from_shape_simple_fn(shape.to_vec(), || {
        rng.random_range(-limit..limit)
    }))
}

/// A layer of a model: its spec, its name, its shapes and its parameters.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Unique within the model, e.g. `conv2d_1`.
    pub name: String,
    /// What the layer computes.
    pub spec: LayerSpec,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Kernel and bias, for Conv2D and Dense.
    pub params: Option<(Tensor, Tensor)>,
}

/// How a forward pass treats dropout and parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dropout on (with masks from this seed) and parameter gradients wanted.
    Train { dropout_seed: u64 },
    /// Dropout off; parameters are constants, read in place.
    Infer,
}

impl Layer {
    /// A layer with fresh parameters: Glorot-uniform kernel, zero bias.
    pub fn new(
        name: String,
        spec: LayerSpec,
        input_shape: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let output_shape = spec.output_shape(&name, input_shape)?;
        let params = match spec.param_shapes(input_shape)? {
            Some((w, b)) => Some((glorot_uniform(&w, rng)?, Tensor::zeros(b))),
            None => None,
        };
        Ok(Layer {
            name,
            spec,
            input_shape: input_shape.to_vec(),
            output_shape,
            params,
        })
    }

    /// Records the layer on `tape`: returns the output before and after the
    /// activation (the same var for layers without one) and the parameters'
    /// vars. `activation`
    /// overrides the layer's own (the model uses it to make a softmax head
    /// linear without touching the layer).
    pub fn forward<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
        activation: Option<Activation>,
        layer_index: usize,
    ) -> Result<LayerVars> {
        let mut param_vars = None;
        let mut params = |tape: &mut Tape<'a>| {
            let vars = self.param_vars(tape, mode)?;
            param_vars = Some(vars);
            Ok::<_, Error>(vars)
        };
        let activation = activation.or(self.spec.activation());
        let z = match self.spec {
            LayerSpec::Conv2D {
                strides, padding, ..
            } => {
                let (w, b) = params(tape)?;
                let spec = Conv2dSpec {
                    stride: strides,
                    padding,
                };
                if activation == Some(Activation::Relu) {
                    // Convolution and ReLU run as one op; there is no separate
                    // pre-activation value.
                    let y = tape.conv2d_relu(x, w, b, spec)?;
                    return Ok(LayerVars {
                        pre_activation: None,
                        output: y,
                        params: param_vars,
                    });
                }
                tape.conv2d(x, w, b, spec)?
            }
            LayerSpec::Dense { .. } => {
                let (w, b) = params(tape)?;
                tape.dense(x, w, b)?
            }
            LayerSpec::MaxPooling2D { pool_size, strides } => {
                tape.max_pool2d(x, pool_spec(pool_size, strides))?
            }
            LayerSpec::Dropout { rate } => match mode {
                Mode::Train { dropout_seed } if rate > 0.0 => {
                    tape.dropout(x, rate, mix(dropout_seed, layer_index as u64))?
                }
                _ => x,
            },
            LayerSpec::Flatten => tape.flatten(x)?,
        };
        let y = match activation {
            None | Some(Activation::Linear) => z,
            Some(Activation::Relu) => tape.relu(z)?,
            Some(Activation::Softmax) => tape.softmax(z)?,
        };
        Ok(LayerVars {
            pre_activation: Some(z),
            output: y,
            params: param_vars,
        })
    }

    /// The kernel and bias on `tape`: differentiated in training, constants
    /// read in place otherwise.
    fn param_vars<'a>(&'a self, tape: &mut Tape<'a>, mode: Mode) -> Result<(Var, Var)> {
        let (w, b) = self
            .params
            .as_ref()
            .ok_or_else(|| Error::invalid("layer", format!("{}: parameters missing", self.name)))?;
        Ok(match mode {
            Mode::Train { .. } => (tape.param(w), tape.param(b)),
            Mode::Infer => (tape.constant_ref(w), tape.constant_ref(b)),
        })
    }

    /// This layer and `next` recorded as one op, when this is a Conv2D (with
    /// a ReLU or no activation) and `next` a 2x2 MaxPooling2D with stride 2:
    /// [`Tape::conv2d_max_pool2d`], with the values and gradients of
    /// [`forward`](Layer::forward) on each, but the convolution's output never
    /// on the tape. Returns the kernel's and bias's vars and the pooled
    /// output, or `None` for any other pair.
    pub fn forward_with_pool<'a>(
        &'a self,
        next: &Layer,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
    ) -> Result<Option<((Var, Var), Var)>> {
        let (
            &LayerSpec::Conv2D {
                strides, padding, ..
            },
            &LayerSpec::MaxPooling2D {
                pool_size,
                strides: pool_strides,
            },
        ) = (&self.spec, &next.spec)
        else {
            return Ok(None);
        };
        let pool = pool_spec(pool_size, pool_strides);
        let relu = match self.spec.activation() {
            Some(Activation::Relu) => true,
            None | Some(Activation::Linear) => false,
            Some(Activation::Softmax) => return Ok(None),
        };
        if pool != MaxPool2dSpec::square(2) {
            return Ok(None);
        }
        let (w, b) = self.param_vars(tape, mode)?;
        let spec = Conv2dSpec {
            stride: strides,
            padding,
        };
        let pooled = tape.conv2d_max_pool2d(x, w, b, spec, relu, pool)?;
        Ok(Some(((w, b), pooled)))
    }
}

/// The vars one layer adds to a tape.
#[derive(Clone, Copy, Debug)]
pub struct LayerVars {
    /// Output before the activation; `None` for a Conv2D with ReLU, whose
    /// convolution and ReLU are one fused op.
    pub pre_activation: Option<Var>,
    /// Output after the activation.
    pub output: Var,
    /// Kernel and bias, for layers that have them.
    pub params: Option<(Var, Var)>,
}

/// Mixes two numbers into a seed (SplitMix64's finaliser): nearby inputs give
/// unrelated outputs, so per-step and per-layer seeds never repeat a stream.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
