//! 2-D convolution by im2col and sgemm.
//!
//! Shapes: `x: [N, Cin, H, W]`, `W: [Cout, Cin, kh, kw]` (PyTorch's layout),
//! `b: [Cout]`, `y: [N, Cout, Ho, Wo]`.
//!
//! **im2col** unrolls every receptive field of one image into a column:
//! `cols[K, P]` with `K = Cin·kh·kw` rows (one per weight) and `P = Ho·Wo`
//! columns (one per output pixel). Convolution is then one matrix product per
//! image, and its backward is two more:
//!
//! - forward: `y[Cout, P] = W[Cout, K] · cols[K, P] + b`
//! - weights: `dW[Cout, K] = Σₙ dy[Cout, P] · colsᵀ[P, K]` (the columns are saved by forward)
//! - input: `dcols[K, P] = Wᵀ[K, Cout] · dy[Cout, P]`, then **col2im** adds each
//!   column back onto the pixels it was read from
//! - bias: `db = Σ over n and P of dy`
//!
//! Images are independent, so im2col, the products and col2im run in parallel
//! over the batch with `rayon`, each product single-threaded.

use ndarray::Axis;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{as_slice, gemm, shape_error, Mat, MatMut, Pool, Tensor};

/// Padding of a convolution, as Keras names it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: `Ho = ⌊(H − kh) / s⌋ + 1`.
    #[default]
    Valid,
    /// Zero padding so that `Ho = ⌈H / s⌉`. As in TensorFlow, when the padding is
    /// odd the extra row (column) goes at the bottom (right).
    Same,
}

/// Stride and padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// Step between receptive fields, the same along both axes.
    pub stride: usize,
    /// Valid or same.
    pub padding: Padding,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: 1,
            padding: Padding::Valid,
        }
    }
}

/// Every size a convolution needs, worked out once from the shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Output length and leading padding along one axis.
fn out_len(len: usize, k: usize, s: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => (len >= k).then(|| ((len - k) / s + 1, 0)),
        Padding::Same => {
            let out = len.div_ceil(s);
            let total = ((out.max(1) - 1) * s + k).saturating_sub(len);
            (out > 0).then_some((out, total / 2))
        }
    }
}

impl ConvGeometry {
    /// Checks the shapes of input, weight and bias and derives the output size.
    pub fn new(x: &[usize], w: &[usize], b: &[usize], spec: Conv2dSpec) -> Result<Self> {
        let op = "conv2d";
        if x.len() != 4 {
            return Err(Error::invalid(
                op,
                format!("input must be [N, C, H, W], but has shape {x:?}"),
            ));
        }
        if w.len() != 4 {
            return Err(Error::invalid(
                op,
                format!("weight must be [Cout, Cin, kh, kw], but has shape {w:?}"),
            ));
        }
        if x[1] != w[1] {
            return Err(shape_error(
                op,
                "input channels must equal the weight's Cin",
                "input",
                x,
                "weight",
                w,
            ));
        }
        if b != [w[0]] {
            return Err(shape_error(
                op,
                "bias must be [Cout]",
                "weight",
                w,
                "bias",
                b,
            ));
        }
        if spec.stride == 0 {
            return Err(Error::invalid(op, "stride must be at least 1"));
        }
        if w[2] == 0 || w[3] == 0 {
            return Err(Error::invalid(
                op,
                format!("kernel must be at least 1x1, but weight has shape {w:?}"),
            ));
        }
        let (Some((ho, pad_top)), Some((wo, pad_left))) = (
            out_len(x[2], w[2], spec.stride, spec.padding),
            out_len(x[3], w[3], spec.stride, spec.padding),
        ) else {
            return Err(shape_error(
                op,
                "the kernel does not fit in the input with this padding",
                "input",
                x,
                "weight",
                w,
            ));
        };
        Ok(ConvGeometry {
            n: x[0],
            cin: x[1],
            h: x[2],
            w: x[3],
            cout: w[0],
            kh: w[2],
            kw: w[3],
            stride: spec.stride,
            pad_top,
            pad_left,
            ho,
            wo,
        })
    }

    /// Rows of the im2col matrix, `Cin·kh·kw`.
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Columns of the im2col matrix, `Ho·Wo`.
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Values in one input image.
    fn image_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// The input row read by output row `oy` at kernel row `i`, if inside the image.
    #[inline]
    fn src_row(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.stride + i)
            .checked_sub(self.pad_top)
            .filter(|&y| y < self.h)
    }

    /// The input column read by output column `ox` at kernel column `j`.
    #[inline]
    fn src_col(&self, ox: usize, j: usize) -> Option<usize> {
        (ox * self.stride + j)
            .checked_sub(self.pad_left)
            .filter(|&x| x < self.w)
    }
}

/// Unrolls one image `x[Cin, H, W]` into `cols[K, P]`: row `(c, i, j)`, column
/// `(oy, ox)` holds `x[c, oy·s + i − pad_top, ox·s + j − pad_left]`, or 0 in the
/// padding.
pub fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let p = g.p();
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * p..][..p];
                for oy in 0..g.ho {
                    let out = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    match g.src_row(oy, i) {
                        None => out.fill(0.0),
                        Some(y) => {
                            let src = &plane[y * g.w..(y + 1) * g.w];
                            for (ox, o) in out.iter_mut().enumerate() {
                                *o = g.src_col(ox, j).map_or(0.0, |x| src[x]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each entry of `cols[K, P]` onto the pixel of
/// `dx[Cin, H, W]` it was read from (pixels read by several fields sum).
pub fn col2im(g: &ConvGeometry, cols: &[f32], dx: &mut [f32]) {
    let p = g.p();
    for c in 0..g.cin {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * p..][..p];
                for oy in 0..g.ho {
                    let Some(y) = g.src_row(oy, i) else { continue };
                    let dst = &mut plane[y * g.w..(y + 1) * g.w];
                    for (ox, &v) in row[oy * g.wo..(oy + 1) * g.wo].iter().enumerate() {
                        if let Some(x) = g.src_col(ox, j) {
                            dst[x] += v;
                        }
                    }
                }
            }
        }
    }
}

/// The forward convolution. Returns `y` and the im2col columns of the whole
/// batch (`[N, K, P]`), which the weight gradient needs.
pub fn conv2d_forward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: Conv2dSpec,
    pool: &mut Pool,
) -> Result<(Tensor, Tensor)> {
    let g = ConvGeometry::new(x.shape(), w.shape(), b.shape(), spec)?;
    let (xs, ws, bs) = (
        as_slice(x, "conv2d")?,
        as_slice(w, "conv2d")?,
        as_slice(b, "conv2d")?,
    );
    let (k, p) = (g.k(), g.p());
    let mut y = pool.zeros(&[g.n, g.cout, g.ho, g.wo]);
    let mut cols = pool.zeros(&[g.n, k, p]);
    let ys = y.as_slice_mut().expect("pooled");
    let cs = cols.as_slice_mut().expect("pooled");
    ys.par_chunks_mut(g.cout * p)
        .zip(cs.par_chunks_mut(k * p))
        .zip(xs.par_chunks(g.image_len()))
        .for_each(|((y, cols), x)| {
            im2col(&g, x, cols);
            for (row, &bias) in y.chunks_mut(p).zip(bs) {
                row.fill(bias);
            }
            // y[Cout, P] = W[Cout, K] · cols[K, P] + y (the bias)
            gemm(
                1.0,
                Mat::rows(ws, g.cout, k),
                Mat::rows(cols, k, p),
                1.0,
                MatMut::rows(y, g.cout, p),
            );
        });
    Ok((y, cols))
}

/// Images per partial sum of the weight gradient: fixed, so the summation order
/// (and hence every bit of the result) does not depend on the thread count.
const WEIGHT_GRAD_GROUP: usize = 16;

/// What the backward pass keeps from the forward.
struct Conv2d {
    g: ConvGeometry,
    /// `[N, K, P]` im2col columns, saved when the weight needs a gradient.
    cols: Option<Tensor>,
}

impl Backward for Conv2d {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let g = &self.g;
        let (k, p) = (g.k(), g.p());
        let ws = a.inputs[1].as_slice().expect("checked in forward");
        let dy = a.dy.as_slice().expect("gradients are contiguous");

        let dx = a.wants[0].then(|| {
            let mut dx = a.pool.zeros(&[g.n, g.cin, g.h, g.w]);
            let dxs = dx.as_slice_mut().expect("pooled");
            dxs.par_chunks_mut(g.image_len())
                .zip(dy.par_chunks(g.cout * p))
                .for_each_init(
                    || vec![0.0f32; k * p],
                    |dcols, (dx, dy)| {
                        // dcols[K, P] = Wᵀ[K, Cout] · dy[Cout, P]
                        gemm(
                            1.0,
                            Mat::rows(ws, g.cout, k).t(),
                            Mat::rows(dy, g.cout, p),
                            0.0,
                            MatMut::rows(dcols, k, p),
                        );
                        col2im(g, dcols, dx);
                    },
                );
            dx
        });

        let dw = match (a.wants[1], &self.cols) {
            (true, Some(cols)) => {
                let cs = cols.as_slice().expect("pooled");
                // dW[Cout, K] = Σₙ dyₙ[Cout, P] · colsₙᵀ[P, K]. Fixed groups of images
                // are summed in parallel, then the groups in order: the result is
                // the same bits whatever the number of threads or how work is stolen.
                let partials: Vec<Vec<f32>> = dy
                    .par_chunks(WEIGHT_GRAD_GROUP * g.cout * p)
                    .zip(cs.par_chunks(WEIGHT_GRAD_GROUP * k * p))
                    .map(|(dy, cols)| {
                        let mut acc = vec![0.0f32; g.cout * k];
                        for (dy, cols) in dy.chunks(g.cout * p).zip(cols.chunks(k * p)) {
                            gemm(
                                1.0,
                                Mat::rows(dy, g.cout, p),
                                Mat::rows(cols, k, p).t(),
                                1.0,
                                MatMut::rows(&mut acc, g.cout, k),
                            );
                        }
                        acc
                    })
                    .collect();
                let mut sum = vec![0.0f32; g.cout * k];
                for part in &partials {
                    sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
                }
                let mut dw = a.pool.zeros(&[g.cout, g.cin, g.kh, g.kw]);
                dw.as_slice_mut().expect("pooled").copy_from_slice(&sum);
                Some(dw)
            }
            _ => None,
        };

        let db = a.wants[2].then(|| {
            let mut db = a.pool.zeros(&[g.cout]);
            // Sum over the batch, then over each output plane.
            let per_channel = a.dy.sum_axis(Axis(0));
            for (d, plane) in db.iter_mut().zip(per_channel.outer_iter()) {
                *d = plane.sum();
            }
            db
        });
        vec![dx, dw, db]
    }

    fn recycle(self: Box<Self>, pool: &mut Pool) {
        if let Some(cols) = self.cols {
            pool.give(cols);
        }
    }
}

impl Tape<'_> {
    /// 2-D convolution (cross-correlation, as every deep-learning library
    /// computes it) of `x: [N, Cin, H, W]` with `w: [Cout, Cin, kh, kw]`, plus
    /// bias `b: [Cout]`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Var, spec: Conv2dSpec) -> Result<Var> {
        let keep_cols = self.requires_grad(w);
        let (y, cols, g) = self.compute(&[x, w, b], |v, pool| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            let (y, cols) = conv2d_forward(v[0], v[1], v[2], spec, pool)?;
            Ok((y, cols, g))
        })?;
        let cols = if keep_cols {
            Some(cols)
        } else {
            self.give(cols);
            None
        };
        Ok(self.push(y, &[x, w, b], Box::new(Conv2d { g, cols })))
    }
}
