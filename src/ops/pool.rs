//! 2-D max pooling.
//!
//! `y[n, c, oy, ox] = max over the window of x[n, c, oy·sh + i, ox·sw + j]`,
//! with `0 ≤ i < ph`, `0 ≤ j < pw` and 'valid' padding (Keras's default):
//! `Ho = ⌊(H − ph) / sh⌋ + 1`.
//!
//! The derivative of a max is 1 at the winning input and 0 elsewhere, so the
//! backward sends each output's gradient to the one input that won, which the
//! forward records (the argmax). **Ties** go to the first maximum in row-major
//! order within the window (PyTorch does the same). When windows overlap
//! (stride < pool size), an input that wins several windows receives the sum.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{as_slice, expect_rank, Pool, Tensor};

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

/// Max-pools `x: [N, C, H, W]`. Returns `y: [N, C, Ho, Wo]` and, for each output,
/// the position of its winner within its input plane.
pub fn max_pool2d_forward(
    x: &Tensor,
    spec: MaxPool2dSpec,
    pool: &mut Pool,
) -> Result<(Tensor, Vec<u32>)> {
    expect_rank(x, 4, "max_pool2d", "input [N, C, H, W]")?;
    let &[n, c, h, w] = x.shape() else {
        unreachable!("rank checked")
    };
    let (ho, wo) = spec.output_size(h, w)?;
    let xs = as_slice(x, "max_pool2d")?;
    let mut y = pool.to_overwrite(&[n, c, ho, wo]);
    let mut argmax = vec![0u32; n * c * ho * wo];
    let ((ph, pw), (sh, sw)) = (spec.pool, spec.stride);
    y.as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(ho * wo)
        .zip(argmax.par_chunks_mut(ho * wo))
        .zip(xs.par_chunks(h * w))
        .for_each(|((y, arg), x)| {
            if spec == MaxPool2dSpec::square(2) {
                pool_2x2(x, w, wo, y, arg);
                return;
            }
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = oy * sh * w + ox * sw;
                    for i in 0..ph {
                        for j in 0..pw {
                            let at = (oy * sh + i) * w + ox * sw + j;
                            if wins(x[at], x[best]) {
                                best = at;
                            }
                        }
                    }
                    y[oy * wo + ox] = x[best];
                    arg[oy * wo + ox] = best as u32;
                }
            }
        });
    Ok((y, argmax))
}

/// Whether `v` takes a window from the current winner `best`: strictly greater
/// (so the first maximum keeps the win), or a NaN (so that NaN propagates).
#[inline(always)]
fn wins(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// The common 2x2, stride-2 case for one plane, two input rows at a time.
fn pool_2x2(x: &[f32], w: usize, wo: usize, y: &mut [f32], arg: &mut [u32]) {
    for (oy, (y, arg)) in y.chunks_mut(wo).zip(arg.chunks_mut(wo)).enumerate() {
        let top = 2 * oy * w;
        let (r0, r1) = (&x[top..top + 2 * wo], &x[top + w..top + w + 2 * wo]);
        for (ox, ((y, arg), (a, b))) in y
            .iter_mut()
            .zip(arg.iter_mut())
            .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)))
            .enumerate()
        {
            // Candidates in row-major order: a[0], a[1], b[0], b[1].
            let (mut v, mut at) = (a[0], top + 2 * ox);
            if wins(a[1], v) {
                (v, at) = (a[1], top + 2 * ox + 1);
            }
            if wins(b[0], v) {
                (v, at) = (b[0], top + w + 2 * ox);
            }
            if wins(b[1], v) {
                (v, at) = (b[1], top + w + 2 * ox + 1);
            }
            *y = v;
            *arg = at as u32;
        }
    }
}

struct MaxPool2d {
    /// Winner of each output, as a position within its `H × W` input plane.
    argmax: Vec<u32>,
}

impl Backward for MaxPool2d {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let x_shape = a.inputs[0].shape();
        let plane_in = x_shape[2] * x_shape[3];
        let plane_out = a.dy.shape()[2] * a.dy.shape()[3];
        // Each plane is cleared and filled by one task while it sits in cache.
        let mut dx = a.pool.to_overwrite(x_shape);
        dx.as_slice_mut()
            .expect("pooled")
            .par_chunks_mut(plane_in)
            .zip(a.dy.as_slice().expect("contiguous").par_chunks(plane_out))
            .zip(self.argmax.par_chunks(plane_out))
            .for_each(|((dx, dy), arg)| {
                dx.fill(0.0);
                for (&g, &at) in dy.iter().zip(arg) {
                    dx[at as usize] += g;
                }
            });
        vec![Some(dx)]
    }
}

impl Tape<'_> {
    /// Max pooling of `x: [N, C, H, W]` with 'valid' padding.
    pub fn max_pool2d(&mut self, x: Var, spec: MaxPool2dSpec) -> Result<Var> {
        let (y, argmax) = self.compute(&[x], |v, pool| max_pool2d_forward(v[0], spec, pool))?;
        Ok(self.push(y, &[x], Box::new(MaxPool2d { argmax })))
    }
}
