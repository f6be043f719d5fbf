//! Convolution, its ReLU and a 2x2 max pooling as one op on the tape; and,
//! for the class scores alone, a convolution with its batch normalisation,
//! a residual sum and a ReLU as one op, and a max pooling with its −∞ border
//! as one op.
//!
//! The op computes `max_pool2d(relu(conv2d(x, W, b)))`, exactly as the three
//! ops of [`crate::ops`] recorded one after the other do (the reference twin
//! the tests hold it to), in one pass:
//!
//! - forward: the pooling is taken image by image as the convolution's
//!   outputs leave the products, while they are in cache, and each window's
//!   winner is kept (a byte);
//! - backward: the pooled gradient goes through the ReLU's rule (at a winner
//!   the convolution's output is the pooled value, and every rule sends a zero
//!   gradient to zero, so this is the rule on the full gradient, at a quarter
//!   of the work), then straight to the winners on the grid the convolution's
//!   backward reads: the full-size gradient between the ops is never written.
//!
//! The convolution's own output is not on the tape, so a model uses this op
//! only where nobody asks for that output's gradient (training; saliency
//! methods that read no layer).

use super::conv::{self, After, Dy, Inputs};
use super::kernel::Affine;
use super::pool::{self, backward_from_winners};
use crate::error::Result;
use crate::ops::norm::{inference_affine, AfterConv};
use crate::ops::{Conv2dOptions, Conv2dSpec, ConvGeometry, MaxPool2dSpec};
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
use crate::tensor::{as_slice, Tensor};

struct ConvReluPool {
    g: ConvGeometry,
    relu: bool,
    kernels: Kernels,
    /// Each window's winner: 0 top left, 1 top right, 2 bottom left, 3 bottom
    /// right.
    winners: Vec<u8>,
}

impl Backward for ConvReluPool {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let g = &self.g;
        let inputs = Inputs {
            x: a.inputs[0],
            w: a.inputs[1],
            y: None,
        };
        let rule = self.relu.then_some(a.relu);
        if conv::takes_pooled(g) {
            let dy = Dy::Pooled {
                y: a.output,
                dy: a.dy,
                winners: &self.winners,
            };
            return conv::backward(g, inputs, dy, rule, &a.wants, self.kernels, a.pool).to_vec();
        }
        // Other paths: the rule on the pooled values, then the pooling's
        // backward to a full-size gradient, then the convolution's.
        let ruled = rule.map(|rule| {
            let mut ruled = a.pool.to_overwrite(a.dy.shape());
            let ys = a.output.as_slice().expect("values are contiguous");
            let gs = a.dy.as_slice().expect("gradients are contiguous");
            rule.apply_slice(ys, gs, ruled.as_slice_mut().expect("pooled"));
            ruled
        });
        let shape = [g.n, g.cout, g.ho, g.wo];
        let dy = ruled.as_ref().unwrap_or(a.dy);
        let dz = backward_from_winners(&shape, &self.winners, dy, a.pool);
        if let Some(ruled) = ruled {
            a.pool.give(ruled);
        }
        let grads = conv::backward(
            g,
            inputs,
            Dy::Full(&dz),
            None,
            &a.wants,
            self.kernels,
            a.pool,
        );
        a.pool.give(dz);
        grads.to_vec()
    }

    fn recycle(self: Box<Self>, pool: &mut crate::tensor::Pool) {
        pool.give_bytes(self.winners);
    }
}

impl Tape<'_> {
    /// `max_pool2d(relu(conv2d(x, w, b)), 2x2)` (without the ReLU if `!relu`)
    /// as one op: see `fast::fused`. On a tape with
    /// [`Kernels::Reference`], or for a pooling other than 2x2 with stride 2,
    /// the ops are recorded one after the other instead.
    pub fn conv2d_max_pool2d(
        &mut self,
        x: Var,
        w: Var,
        b: Var,
        spec: Conv2dSpec,
        relu: bool,
        pool: MaxPool2dSpec,
    ) -> Result<Var> {
        let kernels = self.kernels();
        if kernels == Kernels::Reference || pool != MaxPool2dSpec::square(2) {
            let y = match relu {
                true => self.conv2d_relu(x, w, b, spec)?,
                false => self.conv2d(x, w, b, spec)?,
            };
            return self.max_pool2d(y, pool);
        }
        let (pooled, g, winners) = self.compute(&[x, w, b], |v, p| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            pool.output_size(g.ho, g.wo)?;
            let (y, pooled, winners) =
                conv::forward_pooled(&g, v[0], v[1], v[2], relu, kernels, p)?;
            p.give(y);
            Ok((pooled, g, winners))
        })?;
        let rule = ConvReluPool {
            g,
            relu,
            kernels,
            winners,
        };
        Ok(self.push(pooled, &[x, w, b], Box::new(rule)))
    }
}

/// The rule of an op recorded only on tapes that keep no rules.
struct NotRecorded;

impl Backward for NotRecorded {
    fn backward(&self, _: GradArgs<'_>) -> Vec<Option<Tensor>> {
        unreachable!("recorded only on a tape that records no backward rules")
    }
}

impl Tape<'_> {
    /// Whether the ops for the class scores alone run as one: on a tape that
    /// records nothing, with [`Kernels::Fast`].
    fn scores_only(&self) -> bool {
        !self.is_recording() && self.kernels() == Kernels::Fast
    }

    /// `relu(batch_norm(conv2d_with(x, w, b, options)) + residual)`, with
    /// each of the three only if `after` asks for it, for the class scores
    /// alone: one op whose normalisation, residual and ReLU are taken as the
    /// convolution's outputs leave the products (the kernel's epilogue), with
    /// the same bits as the ops one after the other, and without writing and
    /// reading the convolution's output between them.
    ///
    /// Only on a tape that records nothing (a gradient would need the
    /// convolution's own output) and with [`Kernels::Fast`]; otherwise, and
    /// for convolutions `conv2d_with` runs on its general loops or a
    /// residual not of the output's shape, the ops are recorded one after
    /// the other.
    ///
    /// ```
    /// use salient::ops::norm::{AfterConv, BatchNormVars};
    /// use salient::ops::Conv2dOptions;
    /// use salient::{Tape, Tensor};
    ///
    /// let mut tape = Tape::inference();
    /// let x = tape.constant(Tensor::from_elem(vec![1, 2, 5, 5], 0.5));
    /// let w = tape.constant(Tensor::from_elem(vec![3, 2, 3, 3], 0.1));
    /// let b = tape.constant(Tensor::zeros(vec![3]));
    /// let identity = tape.constant(Tensor::from_elem(vec![1, 3, 5, 5], -0.25));
    /// let [gamma, beta, mean, var] =
    ///     [1.0, 0.0, 0.5, 1.0].map(|v| tape.constant(Tensor::from_elem(vec![3], v)));
    /// let norm = BatchNormVars { gamma, beta, mean, var, eps: 1e-5 };
    /// let same = Conv2dOptions { pads: (1, 1, 1, 1), ..Conv2dOptions::default() };
    /// let after = AfterConv { norm: Some(norm), residual: Some(identity), relu: true };
    /// let y = tape.conv2d_inference((x, w, b), same, after)?;
    ///
    /// // The same bits as the four ops one after the other.
    /// let z = tape.conv2d_with(x, w, b, same)?;
    /// let z = tape.batch_norm(z, gamma, beta, mean, var, 1e-5)?;
    /// let z = tape.add(z, identity)?;
    /// let z = tape.relu(z)?;
    /// assert_eq!(tape.value(y)?, tape.value(z)?);
    /// # Ok::<(), salient::Error>(())
    /// ```
    pub fn conv2d_inference(
        &mut self,
        (x, w, b): (Var, Var, Var),
        options: Conv2dOptions,
        after: AfterConv,
    ) -> Result<Var> {
        let route = match self.scores_only() {
            true => self.conv2d_route(x, w, options)?,
            false => None,
        };
        let geometry = match route {
            Some((xr, spec)) => {
                let shape = |v: Var| self.value(v).map(|t| t.shape().to_vec());
                let g = ConvGeometry::new(&shape(xr)?, &shape(w)?, &shape(b)?, spec)?;
                let out = [g.n, g.cout, g.ho, g.wo];
                match after.residual {
                    Some(r) if shape(r)? != out => None,
                    _ => Some((xr, spec)),
                }
            }
            None => None,
        };
        let Some((x, spec)) = geometry else {
            let mut y = self.conv2d_with(x, w, b, options)?;
            if let Some(n) = after.norm {
                y = self.batch_norm(y, n.gamma, n.beta, n.mean, n.var, n.eps)?;
            }
            if let Some(r) = after.residual {
                y = self.add(y, r)?;
            }
            return if after.relu { self.relu(y) } else { Ok(y) };
        };
        let AfterConv {
            norm,
            residual,
            relu,
        } = after;
        if norm.is_none() && residual.is_none() {
            return match relu {
                true => self.conv2d_relu(x, w, b, spec),
                false => self.conv2d(x, w, b, spec),
            };
        }
        let mut inputs = vec![x, w, b];
        inputs.extend(
            norm.map(|n| [n.gamma, n.beta, n.mean, n.var])
                .into_iter()
                .flatten(),
        );
        inputs.extend(residual);
        let y = self.compute(&inputs, |v, pool| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            let tables = match norm {
                Some(n) => Some(inference_affine(g.cout, [v[3], v[4], v[5], v[6]], n.eps)?),
                None => None,
            };
            let norm = tables
                .as_ref()
                .map(|[mean, scale, shift]| Affine { mean, scale, shift });
            let residual = match residual {
                Some(_) => Some(as_slice(v[v.len() - 1], "conv2d_inference")?),
                None => None,
            };
            let after = After {
                norm,
                residual,
                relu,
            };
            conv::forward_then(&g, v[0], v[1], v[2], after, pool)
        })?;
        Ok(self.push(y, &inputs, Box::new(NotRecorded)))
    }

    /// `max_pool2d(pad(x, pads, −∞), spec)` for the class scores alone: one op
    /// that pads each plane in the core's cache rather than writing the
    /// padded tensor, with the same bits as the two ops.
    ///
    /// Only on a tape that records nothing and with [`Kernels::Fast`];
    /// otherwise the two ops are recorded one after the other (the `pad`
    /// only if there is a border).
    pub fn max_pool2d_inference(
        &mut self,
        x: Var,
        spec: MaxPool2dSpec,
        pads: (usize, usize, usize, usize),
    ) -> Result<Var> {
        if !self.scores_only() {
            let padded = match pads {
                (0, 0, 0, 0) => x,
                (top, left, bottom, right) => {
                    let border = [(0, 0), (0, 0), (top, bottom), (left, right)];
                    self.pad(x, &border, f32::NEG_INFINITY)?
                }
            };
            return self.max_pool2d(padded, spec);
        }
        let y = self.compute(&[x], |v, p| pool::forward_padded(v[0], spec, pads, p))?;
        Ok(self.push(y, &[x], Box::new(NotRecorded)))
    }
}
