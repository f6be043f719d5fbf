//! 2-D convolution: the reference, and the op on the tape.
//!
//! Shapes: `x: [N, Cin, H, W]`, `W: [Cout, Cin, kh, kw]` (PyTorch's layout),
//! `b: [Cout]`, `y: [N, Cout, Ho, Wo]`. Like every deep-learning library we
//! compute a cross-correlation:
//!
//! ```text
//! y[n, o, oy, ox] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x[n, c, oy·s + i − pt, ox·s + j − pl]
//! ```
//!
//! (`s` the stride, `pt`, `pl` the padding above and to the left; pixels
//! outside the image read 0). Its backward, from `dy = ∂L/∂y`, sends each
//! output's gradient back along the same products:
//!
//! ```text
//! db[o]             += dy[n, o, oy, ox]
//! dW[o, c, i, j]    += dy[n, o, oy, ox] · x[n, c, oy·s + i − pt, ox·s + j − pl]
//! dx[n, c, iy, ix]  += dy[n, o, oy, ox] · W[o, c, i, j]       (iy, ix as above)
//! ```
//!
//! Two reference implementations say this, and are tested equal:
//!
//! - [`conv2d_direct`] and [`conv2d_direct_backward`]: the loops above, as
//!   written.
//! - [`conv2d_reference`] and [`conv2d_reference_backward`]: **im2col**
//!   unrolls every receptive field of an image into a column of
//!   `cols[K, P]` (`K = Cin·kh·kw` rows, one per weight; `P = Ho·Wo` columns,
//!   one per output pixel), and the convolution becomes one matrix product
//!   per image: `y = W·cols + b`, `dW = Σₙ dy·colsᵀ`, `dcols = Wᵀ·dy` then
//!   **col2im** adds each column back onto the pixels it was read from.
//!   Every output is the same dot product in the same order wherever it
//!   sits, so identical receptive fields give identical outputs (and a max
//!   pooling after them sees an exact tie). A tape with
//!   [`Kernels::Reference`] runs these.
//!
//! The fast paths (products over shifted rows, Winograd's transforms, a
//! pooling folded in) are in `crate::fast::conv`.

use ndarray::{Array2, ArrayView2, Axis, Ix4};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fast;
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
use crate::tensor::{as_slice, shape_error, Tensor};

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
            let span = (out.max(1) - 1).saturating_mul(s).saturating_add(k);
            let total = span.saturating_sub(len);
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

    /// Whether the output is the "valid" one: no padding on any side (at
    /// stride 1, `Ho = H − kh + 1`).
    pub(crate) fn unpadded(&self) -> bool {
        self.pad_top == 0
            && self.pad_left == 0
            && self.ho + self.kh == self.h + 1
            && self.wo + self.kw == self.w + 1
    }

    /// Values in one input image.
    pub(crate) fn image_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// The input row read by output row `oy` at kernel row `i`, if inside the image.
    #[inline]
    pub(crate) fn src_row(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.stride + i)
            .checked_sub(self.pad_top)
            .filter(|&y| y < self.h)
    }
}

impl ConvGeometry {
    /// The output columns `ox` whose kernel column `j` lands inside the image:
    /// `0 ≤ ox·s + j − pad_left < W`, as a range.
    pub(crate) fn valid_cols(&self, j: usize) -> std::ops::Range<usize> {
        let s = self.stride;
        let lo = self.pad_left.saturating_sub(j).div_ceil(s);
        let hi = (self.w + self.pad_left)
            .saturating_sub(j)
            .div_ceil(s)
            .min(self.wo);
        lo..hi.max(lo)
    }
}

/// Unrolls one image `x[Cin, H, W]` into `cols[K, P]`: row `(c, i, j)`, column
/// `(oy, ox)` holds `x[c, oy·s + i − pad_top, ox·s + j − pad_left]`, or 0 in the
/// padding. With stride 1 each output row is one contiguous copy.
pub fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let p = g.p();
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * p..][..p];
                let valid = g.valid_cols(j);
                for oy in 0..g.ho {
                    let out = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    let Some(y) = g.src_row(oy, i) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[y * g.w..(y + 1) * g.w];
                    // (Guarded: an empty fill still costs a call to memset.)
                    if valid.start > 0 {
                        out[..valid.start].fill(0.0);
                    }
                    if valid.end < g.wo {
                        out[valid.end..].fill(0.0);
                    }
                    // First input column read: ox·s + j − pad_left at ox = valid.start.
                    let x0 = valid.start * g.stride + j - g.pad_left;
                    if g.stride == 1 {
                        out[valid.clone()].copy_from_slice(&src[x0..x0 + valid.len()]);
                    } else {
                        for (o, xi) in out[valid.clone()].iter_mut().zip((x0..).step_by(g.stride)) {
                            *o = src[xi];
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
                let valid = g.valid_cols(j);
                for oy in 0..g.ho {
                    let Some(y) = g.src_row(oy, i) else { continue };
                    let dst = &mut plane[y * g.w..(y + 1) * g.w];
                    let x0 = valid.start * g.stride + j - g.pad_left;
                    let src = &row[oy * g.wo + valid.start..oy * g.wo + valid.end];
                    for (&v, xi) in src.iter().zip((x0..).step_by(g.stride)) {
                        dst[xi] += v;
                    }
                }
            }
        }
    }
}

/// The direct loops: `y[n, o, oy, ox] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x[…]`.
pub fn conv2d_direct(x: &Tensor, w: &Tensor, b: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let g = ConvGeometry::new(x.shape(), w.shape(), b.shape(), spec)?;
    let (x, w) = (as4(x)?, as4(w)?);
    let mut y = Tensor::zeros(vec![g.n, g.cout, g.ho, g.wo]);
    for n in 0..g.n {
        for o in 0..g.cout {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let mut sum = 0.0;
                    for c in 0..g.cin {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some((iy, ix)) = g.source(oy, ox, i, j) {
                                    sum += w[[o, c, i, j]] * x[[n, c, iy, ix]];
                                }
                            }
                        }
                    }
                    y[[n, o, oy, ox]] = sum + b[o];
                }
            }
        }
    }
    Ok(y)
}

/// The backward of [`conv2d_direct`], loop for loop: `(dx, dW, db)`.
pub fn conv2d_direct_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = backward_geometry(x, w, dy, spec)?;
    let (x4, w4, dy4) = (as4(x)?, as4(w)?, as4(dy)?);
    let mut dx = Tensor::zeros(x.raw_dim());
    let mut dw = Tensor::zeros(w.raw_dim());
    let mut db = Tensor::zeros(vec![g.cout]);
    for n in 0..g.n {
        for o in 0..g.cout {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let d = dy4[[n, o, oy, ox]];
                    db[o] += d;
                    for c in 0..g.cin {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some((iy, ix)) = g.source(oy, ox, i, j) {
                                    dw[[o, c, i, j]] += d * x4[[n, c, iy, ix]];
                                    dx[[n, c, iy, ix]] += d * w4[[o, c, i, j]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((dx, dw, db))
}

/// The reference convolution: per image, `y = W[Cout, K] · cols[K, P] + b`
/// with `cols` from [`im2col`]. Images in parallel.
pub fn conv2d_reference(x: &Tensor, w: &Tensor, b: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let g = ConvGeometry::new(x.shape(), w.shape(), b.shape(), spec)?;
    let (xs, w2) = (as_slice(x, "conv2d")?, weight_matrix(&g, w)?);
    let mut y = Tensor::zeros(vec![g.n, g.cout, g.ho, g.wo]);
    let out = y.as_slice_mut().expect("fresh tensors are contiguous");
    let images = xs
        .par_chunks(g.image_len().max(1))
        .zip(out.par_chunks_mut(g.cout * g.p()));
    images.for_each(|(x, y)| {
        let mut product = w2.dot(&columns(&g, x));
        for (mut row, &b) in product.axis_iter_mut(Axis(0)).zip(b.iter()) {
            row += b;
        }
        y.copy_from_slice(product.as_slice().expect("a fresh product is contiguous"));
    });
    Ok(y)
}

/// The backward of [`conv2d_reference`]: per image `n`, with `cols` rebuilt,
/// `db += Σ_P dy`, `dW += dy[Cout, P] · colsᵀ[P, K]` and
/// `dx = col2im(Wᵀ[K, Cout] · dy[Cout, P])`. Returns `(dx, dW, db)`.
pub fn conv2d_reference_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = backward_geometry(x, w, dy, spec)?;
    let (xs, w2) = (as_slice(x, "conv2d")?, weight_matrix(&g, w)?);
    let dys = as_slice(dy, "conv2d backward")?;
    let mut dx = Tensor::zeros(x.raw_dim());
    let dxs = dx.as_slice_mut().expect("fresh tensors are contiguous");
    // dx image by image, in parallel; dW and db summed over images in order.
    let images = dys
        .par_chunks(g.cout * g.p())
        .zip(dxs.par_chunks_mut(g.image_len().max(1)));
    images.for_each(|(dy, dx)| {
        let dy = ArrayView2::from_shape((g.cout, g.p()), dy).expect("sized by the geometry");
        let dcols = w2.t().dot(&dy);
        col2im(
            &g,
            dcols.as_slice().expect("a fresh product is contiguous"),
            dx,
        );
    });
    let mut dw = Array2::<f32>::zeros((g.cout, g.k()));
    let mut db = Tensor::zeros(vec![g.cout]);
    for (x, dy) in xs
        .chunks(g.image_len().max(1))
        .zip(dys.chunks(g.cout * g.p()))
        .take(g.n)
    {
        let dy = ArrayView2::from_shape((g.cout, g.p()), dy).expect("sized by the geometry");
        dw += &dy.dot(&columns(&g, x).t());
        db += &dy.sum_axis(Axis(1));
    }
    let dw = dw.into_shape_with_order(w.raw_dim()).expect("W's own size");
    Ok((dx, dw, db))
}

/// `W[Cout, Cin, kh, kw]` viewed as the matrix `W[Cout, K]`.
fn weight_matrix<'w>(g: &ConvGeometry, w: &'w Tensor) -> Result<ArrayView2<'w, f32>> {
    let data = as_slice(w, "conv2d")?;
    Ok(ArrayView2::from_shape((g.cout, g.k()), data).expect("checked by the geometry"))
}

/// One image's [`im2col`] columns as a matrix `[K, P]`.
fn columns(g: &ConvGeometry, x: &[f32]) -> Array2<f32> {
    let mut cols = Array2::zeros((g.k(), g.p()));
    im2col(
        g,
        x,
        cols.as_slice_mut().expect("fresh arrays are contiguous"),
    );
    cols
}

fn as4(t: &Tensor) -> Result<ndarray::ArrayView4<'_, f32>> {
    t.view().into_dimensionality::<Ix4>().map_err(|_| {
        Error::invalid(
            "conv2d",
            format!("expected rank 4, got shape {:?}", t.shape()),
        )
    })
}

/// The geometry of a backward: `x` and `W` checked as the forward checks
/// them, and `dy` against the output's shape.
fn backward_geometry(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
) -> Result<ConvGeometry> {
    let cout = w.shape().first().copied().unwrap_or(0);
    let g = ConvGeometry::new(x.shape(), w.shape(), &[cout], spec)?;
    let want = [g.n, g.cout, g.ho, g.wo];
    if dy.shape() != want {
        return Err(shape_error(
            "conv2d backward",
            "dy must have the output's shape",
            "dy",
            dy.shape(),
            "output",
            &want,
        ));
    }
    Ok(g)
}

impl ConvGeometry {
    /// The input pixel `(iy, ix)` that kernel tap `(i, j)` of output
    /// `(oy, ox)` reads, or `None` in the padding.
    pub fn source(&self, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + i).checked_sub(self.pad_top)?;
        let ix = (ox * self.stride + j).checked_sub(self.pad_left)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// A convolution on the tape, with its ReLU if fused: what the backward needs
/// besides the values on the tape.
struct Conv2d {
    g: ConvGeometry,
    spec: Conv2dSpec,
    relu: bool,
    kernels: Kernels,
}

impl Backward for Conv2d {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        if self.kernels != Kernels::Reference {
            let inputs = fast::conv::Inputs {
                x: a.inputs[0],
                w: a.inputs[1],
                y: Some(a.output),
            };
            let fused = self.relu.then_some(a.relu);
            let dy = fast::conv::Dy::Full(a.dy);
            return fast::conv::backward(
                &self.g,
                inputs,
                dy,
                fused,
                &a.wants,
                self.kernels,
                a.pool,
            )
            .to_vec();
        }
        // The ReLU's rule first (if fused), then the convolution's backward.
        let ruled = self.relu.then(|| {
            ndarray::Zip::from(a.output)
                .and(a.dy)
                .map_collect(|&y, &g| a.relu.apply(y, g))
        });
        let dz = ruled.as_ref().unwrap_or(a.dy);
        let (dx, dw, db) = conv2d_reference_backward(a.inputs[0], a.inputs[1], dz, self.spec)
            .expect("shapes checked by the forward");
        let wants = a.wants;
        vec![
            wants[0].then_some(dx),
            wants[1].then_some(dw),
            wants[2].then_some(db),
        ]
    }
}

impl Tape<'_> {
    /// 2-D convolution (cross-correlation, as every deep-learning library
    /// computes it) of `x: [N, Cin, H, W]` with `w: [Cout, Cin, kh, kw]`, plus
    /// bias `b: [Cout]`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Var, spec: Conv2dSpec) -> Result<Var> {
        self.conv2d_maybe_relu(x, w, b, spec, false)
    }

    /// `relu(conv2d(x, w, b))` as one op, so the pre-activation is never kept:
    /// the backward applies the pass's [`ReluRule`](crate::ReluRule) to `dy` (it needs only
    /// the output, `y > 0` exactly where the pre-activation is), then the
    /// convolution's backward.
    pub fn conv2d_relu(&mut self, x: Var, w: Var, b: Var, spec: Conv2dSpec) -> Result<Var> {
        self.conv2d_maybe_relu(x, w, b, spec, true)
    }

    fn conv2d_maybe_relu(
        &mut self,
        x: Var,
        w: Var,
        b: Var,
        spec: Conv2dSpec,
        relu: bool,
    ) -> Result<Var> {
        let kernels = self.kernels();
        let (y, g) = self.compute(&[x, w, b], |v, pool| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            let y = match kernels {
                Kernels::Reference => {
                    let mut y = conv2d_reference(v[0], v[1], v[2], spec)?;
                    if relu {
                        y.mapv_inplace(super::relu);
                    }
                    y
                }
                _ => fast::conv::forward(&g, v[0], v[1], v[2], relu, kernels, pool)?,
            };
            Ok((y, g))
        })?;
        let rule = Conv2d {
            g,
            spec,
            relu,
            kernels,
        };
        Ok(self.push(y, &[x, w, b], Box::new(rule)))
    }
}

/// Convenience for callers outside a tape: the fast forward, as a training
/// step runs it (Winograd's transforms where they pay).
pub fn conv2d_forward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: Conv2dSpec,
    pool: &mut crate::tensor::Pool,
) -> Result<Tensor> {
    let g = ConvGeometry::new(x.shape(), w.shape(), b.shape(), spec)?;
    fast::conv::forward(&g, x, w, b, false, Kernels::Winograd, pool)
}

// ---------------------------------------------------------------------------
// The general convolution: any stride, dilation, padding and grouping.
// ---------------------------------------------------------------------------

/// Everything a convolution can be asked for, as ONNX's `Conv` and PyTorch's
/// `Conv2d` say it. With groups `g`, `W` is `[Cout, Cin/g, kh, kw]` and output
/// channel `o` reads only the input channels of its group
/// `⌊o / (Cout/g)⌋`; dilation `d` spaces a kernel's taps `d` pixels apart:
///
/// ```text
/// y[n, o, oy, ox] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x[n, G·Cin/g + c, oy·sh + i·dh − pt, ox·sw + j·dw − pl]
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Conv2dOptions {
    /// Steps between receptive fields, `(rows, columns)`.
    pub stride: (usize, usize),
    /// Spacing between a kernel's taps, `(rows, columns)`; 1 is a plain kernel.
    pub dilation: (usize, usize),
    /// Zero padding `(top, left, bottom, right)`.
    pub pads: (usize, usize, usize, usize),
    /// Groups of channels convolved apart (`Cin` for a depthwise convolution).
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: (1, 1),
            dilation: (1, 1),
            pads: (0, 0, 0, 0),
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    /// The padding TensorFlow's 'same' gives an `h × w` input and a `kh × kw`
    /// kernel with these strides and dilations: `Ho = ⌈h / sh⌉`, the odd
    /// row (column) at the bottom (right).
    pub fn same_pads(
        &self,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
    ) -> (usize, usize, usize, usize) {
        let total = |len: usize, k: usize, s: usize, d: usize| {
            let span = (k - 1) * d + 1;
            ((len.div_ceil(s).max(1) - 1) * s + span).saturating_sub(len)
        };
        let th = total(h, kh.max(1), self.stride.0.max(1), self.dilation.0.max(1));
        let tw = total(w, kw.max(1), self.stride.1.max(1), self.dilation.1.max(1));
        (th / 2, tw / 2, th - th / 2, tw - tw / 2)
    }

    /// The sizes a convolution of `x: [N, Cin, H, W]` by `w: [Cout, Cin/g, kh, kw]`
    /// with bias `b: [Cout]` works with: `(n, cin, h, w, cout, kh, kw, ho, wo)`.
    fn geometry(&self, x: &[usize], w: &[usize], b: &[usize]) -> Result<[usize; 9]> {
        let op = "conv2d";
        let (&[n, cin, h, wd], &[cout, cin_g, kh, kw]) = (x, w) else {
            return Err(Error::invalid(
                op,
                format!("input must be [N, C, H, W] and weight [Cout, Cin/groups, kh, kw], got {x:?} and {w:?}"),
            ));
        };
        let g = self.groups;
        let (sh, sw) = self.stride;
        let (dh, dw) = self.dilation;
        if g == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
            return Err(Error::invalid(
                op,
                format!("groups, strides, dilations and kernel sizes must be at least 1: {self:?}, weight {w:?}"),
            ));
        }
        if cin % g != 0 || cout % g != 0 || cin / g != cin_g {
            return Err(shape_error(
                op,
                format!("with {g} groups the weight must be [Cout, Cin/{g}, kh, kw], Cin and Cout divisible by {g}"),
                "input",
                x,
                "weight",
                w,
            ));
        }
        if b != [cout] {
            return Err(shape_error(
                op,
                "bias must be [Cout]",
                "weight",
                w,
                "bias",
                b,
            ));
        }
        let (top, left, bottom, right) = self.pads;
        let (hp, wp) = (h + top + bottom, wd + left + right);
        let (span_h, span_w) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        if hp < span_h || wp < span_w {
            return Err(Error::invalid(
                op,
                format!("a kernel spanning {span_h}x{span_w} does not fit in the padded {hp}x{wp} input"),
            ));
        }
        Ok([
            n,
            cin,
            h,
            wd,
            cout,
            kh,
            kw,
            (hp - span_h) / sh + 1,
            (wp - span_w) / sw + 1,
        ])
    }

    /// The output shape `[N, Cout, Ho, Wo]` of a convolution of `x: [N, Cin, H, W]`
    /// by `w: [Cout, Cin/groups, kh, kw]`, or an error saying what does not fit.
    pub fn output_shape(&self, x: &[usize], w: &[usize]) -> Result<[usize; 4]> {
        let cout = w.first().copied().unwrap_or(0);
        let [n, _, _, _, cout, _, _, ho, wo] = self.geometry(x, w, &[cout])?;
        Ok([n, cout, ho, wo])
    }

    /// Whether [`Tape::conv2d`]'s spec computes the same (square stride, no
    /// dilation, one group, and 'valid' or TensorFlow's 'same' padding): its
    /// fast paths then apply.
    fn as_spec(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<Conv2dSpec> {
        let plain = self.stride.0 == self.stride.1 && self.dilation == (1, 1) && self.groups == 1;
        let stride = self.stride.0;
        let padding = if self.pads == (0, 0, 0, 0) {
            Padding::Valid
        } else if self.pads == self.same_pads(h, w, kh, kw) {
            Padding::Same
        } else {
            return None;
        };
        plain.then_some(Conv2dSpec { stride, padding })
    }
}

/// For output `(oy, ox)` and tap `(i, j)`: the input pixel it reads, if inside.
#[inline]
fn tap(
    o: &Conv2dOptions,
    oy: usize,
    ox: usize,
    i: usize,
    j: usize,
    h: usize,
    w: usize,
) -> Option<(usize, usize)> {
    let y = (oy * o.stride.0 + i * o.dilation.0).checked_sub(o.pads.0)?;
    let x = (ox * o.stride.1 + j * o.dilation.1).checked_sub(o.pads.1)?;
    (y < h && x < w).then_some((y, x))
}

/// The reference forward of the general convolution: the loops of
/// [`Conv2dOptions`]'s formula, as written.
pub fn conv2d_general_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    o: Conv2dOptions,
) -> Result<Tensor> {
    let [n, cin, h, wd, cout, kh, kw, ho, wo] = o.geometry(x.shape(), w.shape(), b.shape())?;
    let (x4, w4) = (as4(x)?, as4(w)?);
    let (cin_g, cout_g) = (cin / o.groups, cout / o.groups);
    let mut y = Tensor::zeros(vec![n, cout, ho, wo]);
    for ((img, co, oy, ox), out) in y
        .indexed_iter_mut()
        .map(|(ix, v)| ((ix[0], ix[1], ix[2], ix[3]), v))
    {
        let first = co / cout_g * cin_g;
        let mut sum = b[[co]];
        for c in 0..cin_g {
            for i in 0..kh {
                for j in 0..kw {
                    if let Some((iy, ix)) = tap(&o, oy, ox, i, j, h, wd) {
                        sum += w4[[co, c, i, j]] * x4[[img, first + c, iy, ix]];
                    }
                }
            }
        }
        *out = sum;
    }
    Ok(y)
}

/// The reference backward of the general convolution: `(dx, dW, db)`, each
/// output's gradient sent back along the products that made it.
pub fn conv2d_general_reference_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    o: Conv2dOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    let b_shape = [w.shape().first().copied().unwrap_or(0)];
    let [_, cin, h, wd, cout, kh, kw, ..] = o.geometry(x.shape(), w.shape(), &b_shape)?;
    let (x4, w4) = (as4(x)?, as4(w)?);
    let (cin_g, cout_g) = (cin / o.groups, cout / o.groups);
    let mut dx = Tensor::zeros(x.raw_dim());
    let mut dw = Tensor::zeros(w.raw_dim());
    let mut db = Tensor::zeros(vec![cout]);
    for (ix, &g) in dy.indexed_iter() {
        let (img, co, oy, ox) = (ix[0], ix[1], ix[2], ix[3]);
        let first = co / cout_g * cin_g;
        db[[co]] += g;
        for c in 0..cin_g {
            for i in 0..kh {
                for j in 0..kw {
                    if let Some((iy, ixx)) = tap(&o, oy, ox, i, j, h, wd) {
                        dw[[co, c, i, j]] += g * x4[[img, first + c, iy, ixx]];
                        dx[[img, first + c, iy, ixx]] += g * w4[[co, c, i, j]];
                    }
                }
            }
        }
    }
    Ok((dx, dw, db))
}

struct Conv2dGeneral(Conv2dOptions);

impl Backward for Conv2dGeneral {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (dx, dw, db) =
            conv2d_general_reference_backward(a.inputs[0], a.inputs[1], a.dy, self.0)
                .expect("shapes checked by the forward");
        vec![
            a.wants[0].then_some(dx),
            a.wants[1].then_some(dw),
            a.wants[2].then_some(db),
        ]
    }
}

impl Tape<'_> {
    /// A convolution with any stride, dilation, padding and groups
    /// ([`Conv2dOptions`]). With a square stride, no dilation and one group it
    /// runs [`conv2d`](Tape::conv2d), fast paths included ('valid' or 'same'
    /// padding directly, other padding after a [`pad`](Tape::pad));
    /// otherwise the reference loops.
    pub fn conv2d_with(&mut self, x: Var, w: Var, b: Var, options: Conv2dOptions) -> Result<Var> {
        if let Some((x, spec)) = self.conv2d_route(x, w, options)? {
            return self.conv2d(x, w, b, spec);
        }
        let y = self.compute(&[x, w, b], |v, _| {
            conv2d_general_reference(v[0], v[1], v[2], options)
        })?;
        Ok(self.push(y, &[x, w, b], Box::new(Conv2dGeneral(options))))
    }

    /// How [`conv2d_with`](Tape::conv2d_with) runs a convolution on
    /// [`conv2d`](Tape::conv2d): the input that reads (`x`, or `x` after a
    /// recorded [`pad`](Tape::pad)) and its spec; `None` for the general
    /// reference loops (a non-square stride, dilation, groups).
    pub(crate) fn conv2d_route(
        &mut self,
        x: Var,
        w: Var,
        options: Conv2dOptions,
    ) -> Result<Option<(Var, Conv2dSpec)>> {
        let (xs, ws) = (
            self.value(x)?.shape().to_vec(),
            self.value(w)?.shape().to_vec(),
        );
        let (&[_, cin, h, wd], &[cout, _, kh, kw]) = (&xs[..], &ws[..]) else {
            return Ok(None);
        };
        if let Some(spec) = options.as_spec(h, wd, kh, kw) {
            let geometry = (kh, kw, spec.stride, cin, cout);
            let pads_first = fast::conv::pads_first(self.kernels(), self.is_recording(), geometry);
            if spec.padding == Padding::Valid || !pads_first {
                return Ok(Some((x, spec)));
            }
        }
        // Any other zero padding: pad, then the 'valid' convolution, whose
        // windows are then those of the padded definition.
        let (t, l, bottom, r) = options.pads;
        let valid = Conv2dOptions {
            pads: (0, 0, 0, 0),
            ..options
        };
        match valid.as_spec(h + t + bottom, wd + l + r, kh, kw) {
            Some(spec) => {
                let padded = self.pad(x, &[(0, 0), (0, 0), (t, bottom), (l, r)], 0.0)?;
                Ok(Some((padded, spec)))
            }
            None => Ok(None),
        }
    }
}
