//! 2-D pooling: max pooling (the reference, and the op on the tape), and
//! average pooling with stride and padding. Max pooling with padding is a
//! [`pad`](crate::Tape::pad) with −∞ before it: a padded position never wins.
//!
//! ```text
//! y[n, c, oy, ox] = max_{i < ph, j < pw} x[n, c, oy·sh + i, ox·sw + j]
//! ```
//!
//! with 'valid' padding (Keras's default): `Ho = ⌊(H − ph) / sh⌋ + 1`.
//!
//! The derivative of a max is 1 at the input that won and 0 elsewhere, so the
//! backward sends each output's gradient to its window's **winner**. Where a
//! window ties, the winner is its **first maximum in row-major order**, as in
//! TensorFlow and PyTorch: `[[1, 1], [1, 1]]` sends the gradient to the top
//! left alone, `[[0, 2], [2, 2]]` to the top right. A NaN beats every number
//! (so NaN propagates, as in PyTorch). When windows overlap (stride < pool
//! size), an input that wins several windows receives the sum.
//!
//! Real images tie often: in a flat background every position of a channel
//! holds `relu(bias)`, and identical patches of a saturated stroke give
//! identical sums. Which tied input wins decides which pixels a saliency map
//! lights up, so the fast paths (`crate::fast::pool`) follow this rule exactly.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::fast;
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
use crate::tensor::{expect_rank, Tensor};

/// Window size and stride of a max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool2dSpec {
    /// Window height and width.
    pub pool: (usize, usize),
    /// Step between windows (Keras: defaults to the pool size).
    pub stride: (usize, usize),
}

impl MaxPool2dSpec {
    /// A `k × k` pooling with stride `k`, as `MaxPooling2D(pool_size=k)`.
    pub fn square(k: usize) -> Self {
        MaxPool2dSpec {
            pool: (k, k),
            stride: (k, k),
        }
    }

    /// Output height and width for an `h × w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (ph, pw) = self.pool;
        let (sh, sw) = self.stride;
        if ph == 0 || pw == 0 || sh == 0 || sw == 0 {
            return Err(Error::invalid(
                "max_pool2d",
                format!(
                    "pool {:?} and stride {:?} must be at least 1",
                    self.pool, self.stride
                ),
            ));
        }
        if h < ph || w < pw {
            return Err(Error::invalid(
                "max_pool2d",
                format!("a {ph}x{pw} window does not fit in a {h}x{w} input"),
            ));
        }
        Ok(((h - ph) / sh + 1, (w - pw) / sw + 1))
    }
}

/// Whether `v` beats the best so far: greater, or a NaN over a number. Equal
/// values never beat it, so the first maximum in row-major order stays.
pub fn beats(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// The reference forward: the pooled values and, for each output, the flat
/// index into `x` of its window's winner.
pub fn max_pool2d_reference(x: &Tensor, spec: MaxPool2dSpec) -> Result<(Tensor, Vec<usize>)> {
    expect_rank(x, 4, "max_pool2d", "input [N, C, H, W]")?;
    let &[n, c, h, w] = x.shape() else {
        unreachable!("rank checked")
    };
    let (ho, wo) = spec.output_size(h, w)?;
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().expect("standard layout");
    let mut y = Tensor::zeros(vec![n, c, ho, wo]);
    let mut winners = Vec::with_capacity(n * c * ho * wo);
    for (plane, out) in y
        .as_slice_mut()
        .expect("fresh")
        .chunks_mut(ho * wo)
        .enumerate()
    {
        let base = plane * h * w;
        for (o, out) in out.iter_mut().enumerate() {
            let (top, left) = (o / wo * spec.stride.0, o % wo * spec.stride.1);
            let mut best = base + top * w + left;
            for i in 0..spec.pool.0 {
                for j in 0..spec.pool.1 {
                    let at = base + (top + i) * w + left + j;
                    if beats(xs[at], xs[best]) {
                        best = at;
                    }
                }
            }
            *out = xs[best];
            winners.push(best);
        }
    }
    Ok((y, winners))
}

/// The reference backward: each output's gradient added at its winner.
pub fn max_pool2d_reference_backward(x_shape: &[usize], winners: &[usize], dy: &Tensor) -> Tensor {
    let mut dx = Tensor::zeros(x_shape);
    let dxs = dx.as_slice_mut().expect("fresh");
    for (&at, &g) in winners.iter().zip(dy.iter()) {
        dxs[at] += g;
    }
    dx
}

/// A max pooling on the tape; the reference keeps its winners.
struct MaxPool2d {
    spec: MaxPool2dSpec,
    winners: Option<Vec<usize>>,
}

impl Backward for MaxPool2d {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let dx = match &self.winners {
            Some(winners) => max_pool2d_reference_backward(a.inputs[0].shape(), winners, a.dy),
            None => fast::pool::backward(self.spec, a.inputs[0], a.output, a.dy, a.pool),
        };
        vec![Some(dx)]
    }
}

impl Tape<'_> {
    /// Max pooling of `x: [N, C, H, W]` with 'valid' padding.
    pub fn max_pool2d(&mut self, x: Var, spec: MaxPool2dSpec) -> Result<Var> {
        let reference = self.kernels() == Kernels::Reference;
        let (y, winners) = self.compute(&[x], |v, pool| match reference {
            true => max_pool2d_reference(v[0], spec).map(|(y, w)| (y, Some(w))),
            false => Ok((fast::pool::forward(v[0], spec, pool)?, None)),
        })?;
        Ok(self.push(y, &[x], Box::new(MaxPool2d { spec, winners })))
    }
}

/// Window, stride and zero padding of an average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AvgPool2dSpec {
    /// Window height and width.
    pub pool: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Rows and columns of padding: `(top, left, bottom, right)`.
    pub pads: (usize, usize, usize, usize),
    /// Whether padded positions count in a window's divisor (PyTorch's
    /// default), or only the input's own values do (TensorFlow's 'same',
    /// ONNX's default).
    pub count_include_pad: bool,
}

impl AvgPool2dSpec {
    /// Output height and width for an `h × w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (ph, pw) = self.pool;
        let (sh, sw) = self.stride;
        let (top, left, bottom, right) = self.pads;
        if ph == 0 || pw == 0 || sh == 0 || sw == 0 {
            return Err(Error::invalid(
                "avg_pool2d",
                format!(
                    "pool {:?} and stride {:?} must be at least 1",
                    self.pool, self.stride
                ),
            ));
        }
        if top >= ph || bottom >= ph || left >= pw || right >= pw {
            return Err(Error::invalid(
                "avg_pool2d",
                format!(
                    "padding {:?} must be smaller than the window {:?}",
                    self.pads, self.pool
                ),
            ));
        }
        let (hp, wp) = (h + top + bottom, w + left + right);
        if hp < ph || wp < pw {
            return Err(Error::invalid(
                "avg_pool2d",
                format!("a {ph}x{pw} window does not fit in a padded {hp}x{wp} input"),
            ));
        }
        Ok(((hp - ph) / sh + 1, (wp - pw) / sw + 1))
    }

    /// For output `(oy, ox)`: the input rows and columns its window covers
    /// (clipped to the input), and its divisor.
    fn window(
        &self,
        oy: usize,
        ox: usize,
        h: usize,
        w: usize,
    ) -> (Range<usize>, Range<usize>, f32) {
        let (top, left, ..) = self.pads;
        let span = |o: usize, s: usize, k: usize, pad: usize, len: usize| {
            let start = o * s;
            start.saturating_sub(pad)..(start + k).saturating_sub(pad).min(len)
        };
        let rows = span(oy, self.stride.0, self.pool.0, top, h);
        let cols = span(ox, self.stride.1, self.pool.1, left, w);
        let count = match self.count_include_pad {
            true => self.pool.0 * self.pool.1,
            false => rows.len() * cols.len(),
        };
        (rows, cols, count as f32)
    }
}

/// The reference forward: each output the mean of its window.
pub fn avg_pool2d_reference(x: &Tensor, spec: AvgPool2dSpec) -> Result<Tensor> {
    expect_rank(x, 4, "avg_pool2d", "input [N, C, H, W]")?;
    let &[n, c, h, w] = x.shape() else {
        unreachable!("rank checked")
    };
    let (ho, wo) = spec.output_size(h, w)?;
    let mut y = Tensor::zeros(vec![n, c, ho, wo]);
    for ((b, ch, oy, ox), out) in y
        .indexed_iter_mut()
        .map(|(ix, v)| ((ix[0], ix[1], ix[2], ix[3]), v))
    {
        let (rows, cols, count) = spec.window(oy, ox, h, w);
        let mut sum = 0.0;
        for i in rows {
            for j in cols.clone() {
                sum += x[[b, ch, i, j]];
            }
        }
        *out = sum / count;
    }
    Ok(y)
}

/// The reference backward: each output's gradient shared evenly (by its
/// divisor) among the inputs of its window.
pub fn avg_pool2d_reference_backward(
    x_shape: &[usize],
    spec: AvgPool2dSpec,
    dy: &Tensor,
) -> Tensor {
    let (h, w) = (x_shape[2], x_shape[3]);
    let mut dx = Tensor::zeros(x_shape);
    for (ix, &g) in dy.indexed_iter() {
        let (rows, cols, count) = spec.window(ix[2], ix[3], h, w);
        for i in rows {
            for j in cols.clone() {
                dx[[ix[0], ix[1], i, j]] += g / count;
            }
        }
    }
    dx
}

struct AvgPool2d(AvgPool2dSpec);

impl Backward for AvgPool2d {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        vec![Some(avg_pool2d_reference_backward(
            a.inputs[0].shape(),
            self.0,
            a.dy,
        ))]
    }
}

impl Tape<'_> {
    /// Average pooling of `x: [N, C, H, W]`.
    pub fn avg_pool2d(&mut self, x: Var, spec: AvgPool2dSpec) -> Result<Var> {
        let y = self.compute(&[x], |v, _| avg_pool2d_reference(v[0], spec))?;
        Ok(self.push(y, &[x], Box::new(AvgPool2d(spec))))
    }

    /// Global average pooling, `[N, C, H, W]` → `[N, C]`: the mean of each channel.
    pub fn global_avg_pool2d(&mut self, x: Var) -> Result<Var> {
        expect_rank(self.value(x)?, 4, "global_avg_pool2d", "input [N, C, H, W]")?;
        self.mean(x, &[2, 3], false)
    }
}
