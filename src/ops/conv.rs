//! 2-D convolution as matrix products: im2col (or shifted views) and a GEMM kernel.
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
//! - weights: `dW[Cout, K] = Σₙ dy[Cout, P] · colsᵀ[P, K]` (computed as its
//!   transpose `dWᵀ = Σₙ cols · dyᵀ`, see below; the columns are rebuilt)
//! - input: `dcols[K, P] = Wᵀ[K, Cout] · dy[Cout, P]`, then **col2im** adds each
//!   column back onto the pixels it was read from
//! - bias: `db = Σ over n and P of dy`
//!
//! Images are independent, so im2col, the products and col2im run in parallel
//! over the batch with `rayon`, each product single-threaded. The products go
//! through [`matmul`], an AVX-512 kernel (or
//! `matrixmultiply` on other CPUs), which wants the matrix it streams to have
//! contiguous rows: hence `dWᵀ = cols · dyᵀ` with `dy` transposed per image.
//!
//! **Without im2col.** For stride 1 and no padding (the tutorial's layers) the
//! columns are never copied: on an output grid as wide as the input, row
//! `(c, i, j)` of `cols` is the input plane `c` itself, read from offset
//! `i·W + j` (see `Unroll`). The same shifted rows serve the weight gradient,
//! and col2im happens inside the kernel: each row of `Wᵀ·dy` is added onto
//! the input at its shift as it leaves the registers.
//!
//! **Winograd.** A 3x3 stride-1 forward with 16 or more channels both ways
//! (the tutorial's second layers) goes through Winograd's minimal filtering
//! instead, 36 multiplications per 4x4 block of outputs rather than 144: see
//! [`winograd`]. A first layer's forward (1 to 4 input channels, no padding)
//! goes through the 1-D transforms down the columns, 4.5 multiplications per
//! output and input channel rather than 9: see [`winograd_columns`]. The
//! input gradient of a many-channel layer, a padded correlation of `dz` with
//! the filters turned round, goes through the 2-D transforms where the tiles
//! fit its output well enough to pay (CIFAR's second layer, not MNIST's): a
//! few images at a time, whose `dz` the backward leaves side by side.
//!
//! `conv2d_relu` fuses a ReLU: applied as output tiles are stored, and its
//! backward rule ([`ReluRule`]) applied to `dy` image by image inside the
//! convolution's backward.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::pool::{max_2x2_backward, max_2x2_backward_winners, max_2x2_winners, MaxPool2d};
use crate::ops::{winograd, winograd_columns};
use crate::ops::{MaxPool2dSpec, ReluRule};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::kernel::{
    self, matmul, matmul_add_at, matmul_keep, spread_rows, transpose, Epilogue, Gapped, Keep,
    Shifted, Strided,
};
use crate::tensor::{as_slice, shape_error, Pool, Tensor};

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

    /// Whether the output is the "valid" one: no padding on any side (at
    /// stride 1, `Ho = H − kh + 1`).
    fn unpadded(&self) -> bool {
        self.pad_top == 0
            && self.pad_left == 0
            && self.ho + self.kh == self.h + 1
            && self.wo + self.kw == self.w + 1
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
}

impl ConvGeometry {
    /// The output columns `ox` whose kernel column `j` lands inside the image:
    /// `0 ≤ ox·s + j − pad_left < W`, as a range.
    fn valid_cols(&self, j: usize) -> std::ops::Range<usize> {
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

/// How the input is unrolled into the matrix the weights multiply.
///
/// - `Im2col`: copy every receptive field into `cols[K, P]` (any stride or
///   padding).
/// - `Shifted`: for stride 1 without padding, no copy at all. Compute the output
///   on a grid as wide as the input (`W` columns per row instead of `Wo`); then
///   row `(c, i, j)` of the unrolled input is simply image plane `c` read from
///   offset `i·W + j`: a shifted view. The `kw − 1` extra columns per row are
///   computed and dropped (18% more arithmetic for the tutorial's 13-wide second
///   layer), which costs less than writing and reading im2col's copy.
#[derive(Clone, Debug)]
enum Unroll {
    Im2col,
    Shifted {
        /// Offset of row `(c, i, j)` in the image: `c·H·W + i·W + j`.
        offs: Vec<usize>,
        /// Columns of the wide grid up to the last real output: `(Ho − 1)·W + Wo`.
        wide: usize,
        /// Where each real output `(oy, ox)` sits on the wide grid: `oy·W + ox`.
        real: Vec<usize>,
        /// The rows of the unrolled input in the order the input gradient
        /// adds them back, `(i, j, c)`: row `r` here is row `order[r]` of
        /// `offs`. Consecutive rows then lie in different planes; in the
        /// `(c, i, j)` order a tile's rows overlap, one value apart, and
        /// each row's read of what the one before had just added waits for
        /// it (the backward of the 32 → 64 layers 2-5% faster in paired runs).
        order: Vec<usize>,
        /// `offs` in that order.
        offs_dx: Vec<usize>,
    },
}

impl Unroll {
    /// Whether `g` takes the shifted path: stride 1, no padding, and the
    /// AVX-512 kernel (the portable one copies shifted operands out).
    fn shifts(g: &ConvGeometry) -> bool {
        g.stride == 1 && g.unpadded() && crate::tensor::kernel::available()
    }

    fn for_geometry(g: &ConvGeometry) -> Self {
        if Self::shifts(g) {
            let mut offs = Vec::with_capacity(g.k());
            for c in 0..g.cin {
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        offs.push(c * g.h * g.w + i * g.w + j);
                    }
                }
            }
            let order: Vec<usize> = (0..g.kh * g.kw)
                .flat_map(|ij| (0..g.cin).map(move |c| c * g.kh * g.kw + ij))
                .collect();
            Unroll::Shifted {
                offs_dx: order.iter().map(|&r| offs[r]).collect(),
                order,
                offs,
                wide: (g.ho - 1) * g.w + g.wo,
                real: (0..g.ho)
                    .flat_map(|oy| (0..g.wo).map(move |ox| oy * g.w + ox))
                    .collect(),
            }
        } else {
            Unroll::Im2col
        }
    }
}

/// Scratch buffers of one worker thread, sized on first use and kept in its
/// cache from call to call (per thread rather than per task, as a task's
/// scratch would be allocated, and zeroed, each time `rayon` splits the work).
#[derive(Default)]
struct Scratch {
    /// im2col columns, or their gradient (im2col path).
    cols: Vec<f32>,
    /// `dz` on the wide grid, zero in the extra columns, for a set of
    /// images (see `Slot`).
    dy_wide: Vec<f32>,
    /// The layout `dy_wide` was last zeroed for, `[Cout, Ho, Wo, W, images]`:
    /// while it stays the same, the extra columns are still zero.
    dz_layout: Option<[usize; 5]>,
    /// `dyᵀ[P, Cout]`.
    dyt: Vec<f32>,
    /// The gradient before a fused ReLU, `dz = rule(y, dy)` (im2col path),
    /// or `rule(pooled y, pooled dy)` (a pooled gradient).
    dz: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The first `len` values of `v`, grown if need be (every user writes all it
/// reads).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        *v = vec![0.0; len];
    }
    &mut v[..len]
}

/// `y[Cout, P] = W[Cout, K] · unrolled(x)[K, P] + b` for one image.
#[allow(clippy::too_many_arguments)]
fn forward_image(
    g: &ConvGeometry,
    u: &Unroll,
    x: &[f32],
    w: Strided<'_>,
    bs: &[f32],
    relu: bool,
    y: &mut [f32],
    s: &mut Scratch,
) {
    let (k, p) = (g.k(), g.p());
    let ep = Epilogue {
        accumulate: false,
        row_bias: Some(bs),
        relu,
    };
    match u {
        Unroll::Im2col => {
            let cols = sized(&mut s.cols, k * p);
            im2col(g, x, cols);
            // y[Cout, P] = W[Cout, K] · cols[K, P] + b
            matmul(g.cout, p, k, w, rows(cols, p), y, p, ep);
        }
        Unroll::Shifted { offs, wide, .. } => {
            // y[Cout, P] = W[Cout, K] · X[K, wide] + b with row r of X =
            // x[offs[r]..], storing the first Wo of every W columns.
            let xs = Shifted { data: x, offs };
            let keep = Keep {
                row: g.w,
                first: g.wo,
            };
            matmul_keep(g.cout, *wide, k, w, xs, y, p, ep, keep);
        }
    }
}

/// What the backward of one image computes into.
struct ImageGrads<'a> {
    /// `dx` of the image, added to (if wanted here: Winograd's input
    /// gradient is taken afterwards, a set of images at a time).
    dx: Option<&'a mut [f32]>,
    /// The group's `dWᵀ[K, Cout]`, added to (if wanted).
    dwt: Option<&'a mut [f32]>,
    /// The group's `db[Cout]`, added to (if wanted).
    db: Option<&'a mut [f32]>,
}

/// The gradient reaching one image's output.
#[derive(Clone, Copy)]
enum ImageDy<'a> {
    /// `dy[Cout, Ho, Wo]`.
    Full(&'a [f32]),
    /// Through a 2x2 max pooling of the output (see [`GradArgs::pooled`]):
    /// the pooling's output and its gradient, `[Cout, Ho/2, Wo/2]` each, and
    /// its windows' winners if it kept them.
    Pooled {
        y: &'a [f32],
        dy: &'a [f32],
        winners: Option<&'a [u8]>,
    },
}

/// Where one image's `dz` goes on the shifted path: slot `index` of `of`,
/// side by side in the scratch, so that Winograd's input gradient can read a
/// set of images' `dz` at once (a set of one otherwise).
#[derive(Clone, Copy)]
struct Slot {
    index: usize,
    of: usize,
}

/// For one image: first `dz = rule(y, dy)` through the fused ReLU (or
/// `dz = dy`), then `db += Σ dz`, `dWᵀ += unrolled(x) · dzᵀ` and
/// `dx += fold(Wᵀ · dz)`, each if wanted, where fold is col2im or its shifted
/// twin.
#[allow(clippy::too_many_arguments)]
fn backward_image(
    g: &ConvGeometry,
    u: &Unroll,
    x: &[f32],
    ws: &[f32],
    y: &[f32],
    dy: ImageDy<'_>,
    rule: Option<ReluRule>,
    out: ImageGrads<'_>,
    slot: Slot,
    s: &mut Scratch,
) {
    // `ws` is W[Cout, K] with its columns in the order of the input
    // gradient's rows (`order`, on the shifted path).
    let (k, p) = (g.k(), g.p());
    // Wᵀ[K, Cout], read through swapped strides.
    let wt = Strided {
        data: ws,
        rs: 1,
        cs: k,
    };
    match u {
        Unroll::Im2col => {
            let ImageDy::Full(dy) = dy else {
                unreachable!("only the shifted path takes a pooled gradient (takes_pooled)")
            };
            let dz = match rule {
                Some(rule) => {
                    let dz = sized(&mut s.dz, g.cout * p);
                    rule.apply_slice(y, dy, dz);
                    &*dz
                }
                None => dy,
            };
            if let Some(db) = out.db {
                // db[c] += Σ_P dz[c, P]
                for (d, plane) in db.iter_mut().zip(dz.chunks(p)) {
                    *d += lane_sum(plane);
                }
            }
            if let Some(dwt) = out.dwt {
                // dWᵀ[K, Cout] += cols[K, P] · dzᵀ[P, Cout]
                let cols = sized(&mut s.cols, k * p);
                im2col(g, x, cols);
                let dzt = sized(&mut s.dyt, p * g.cout);
                transpose(dz, g.cout, p, p, dzt, g.cout);
                matmul(
                    k,
                    g.cout,
                    p,
                    rows(cols, p),
                    rows(dzt, g.cout),
                    dwt,
                    g.cout,
                    Epilogue::ACCUMULATE,
                );
            }
            if let Some(dx) = out.dx {
                // dcols[K, P] = Wᵀ[K, Cout] · dz[Cout, P], then col2im.
                let dcols = sized(&mut s.cols, k * p);
                matmul(k, p, g.cout, wt, rows(dz, p), dcols, p, Epilogue::STORE);
                col2im(g, dcols, dx);
            }
        }
        Unroll::Shifted {
            offs,
            wide,
            real,
            offs_dx,
            ..
        } => {
            let wide = *wide;
            // dz on the wide grid, in one pass from y and dy: each output row
            // goes through the ReLU rule (if fused) as it is widened. The extra
            // columns stay zero, so they add nothing below.
            let len = g.cout * wide;
            let layout = [g.cout, g.ho, g.wo, g.w, slot.of];
            if s.dz_layout != Some(layout) {
                // Zeros in the extra columns, which nothing else writes.
                s.dy_wide.clear();
                s.dy_wide.resize(slot.of * len, 0.0);
                s.dz_layout = Some(layout);
            }
            let dz = &mut s.dy_wide[slot.index * len..][..len];
            match dy {
                ImageDy::Full(dy) => {
                    for ((d, dy), y) in dz.chunks_mut(wide).zip(dy.chunks(p)).zip(y.chunks(p)) {
                        match rule {
                            // Rows of Wo values, W apart: one call per plane.
                            Some(rule) => rule.apply_rows(y, dy, d, g.wo, g.w),
                            None => spread_rows(dy, g.wo, d, g.w),
                        }
                    }
                }
                ImageDy::Pooled {
                    y: yp,
                    dy: dyp,
                    winners,
                } => {
                    // The pooling's backward, straight onto the wide grid: each
                    // window's winner gets its gradient. The ReLU rule goes first,
                    // on the pooled values: at the winner `y` is the pooled max,
                    // and every rule sends a zero gradient to zero, so this is
                    // `rule(y, unpooled dy)` exactly, at a quarter of the work.
                    let q = (g.ho / 2) * (g.wo / 2);
                    let ruled = sized(&mut s.dz, q);
                    let planes = dz.chunks_mut(wide).zip(y.chunks(p));
                    for (c, ((d, y), (yp, dyp))) in
                        planes.zip(yp.chunks(q).zip(dyp.chunks(q))).enumerate()
                    {
                        let dyp = match rule {
                            Some(rule) => {
                                rule.apply_slice(yp, dyp, ruled);
                                &*ruled
                            }
                            None => dyp,
                        };
                        match winners {
                            // Kept by the forward: `y` is not read at all.
                            Some(w) => {
                                let w = &w[c * q..][..q];
                                max_2x2_backward_winners(w, dyp, g.ho, g.wo, d, g.w, true);
                            }
                            None => max_2x2_backward(y, yp, dyp, g.ho, g.wo, d, g.w, true),
                        }
                    }
                }
            }
            if let Some(db) = out.db {
                // db[c] += Σ dz[c, ·]
                for (d, plane) in db.iter_mut().zip(dz.chunks(wide)) {
                    *d += lane_sum(plane);
                }
            }
            if let Some(dwt) = out.dwt {
                // dWᵀ[K, Cout] += X[K, P] · dzᵀ[P, Cout], where column p of X
                // is column real[p] of the shifted rows: the sum runs over real
                // outputs only, skipping the wide grid's extra columns.
                let dzt = sized(&mut s.dyt, p * g.cout);
                for oy in 0..g.ho {
                    let dst = &mut dzt[oy * g.wo * g.cout..];
                    transpose(&dz[oy * g.w..], g.cout, wide, g.wo, dst, g.cout);
                }
                let xs = Gapped {
                    data: x,
                    offs,
                    cols: real,
                };
                matmul(
                    k,
                    g.cout,
                    p,
                    xs,
                    rows(dzt, g.cout),
                    dwt,
                    g.cout,
                    Epilogue::ACCUMULATE,
                );
            }
            if let Some(dx) = out.dx {
                // dX[K, wide] = Wᵀ[K, Cout] · dz[Cout, wide], and row r goes back
                // onto the input where row r of X was read, x[offs[r]..]:
                // added there as the kernel stores it (col2im, fused).
                matmul_add_at(k, wide, g.cout, wt, rows(dz, wide), dx, offs_dx);
            }
        }
    }
}

/// The forward convolution, `y[Cout, P] = W[Cout, K] · unrolled(x)[K, P] + b`
/// for each image, in parallel over the batch.
///
/// The unrolled input of one image lives in a scratch buffer in the core's
/// cache (or, for stride 1, is never built: see `Unroll`); the backward
/// unrolls again rather than keeping the whole batch's columns (35 MB for the
/// tutorial's second layer), because rebuilding in cache beats reading back
/// from memory.
pub fn conv2d_forward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: Conv2dSpec,
    pool: &mut Pool,
) -> Result<Tensor> {
    conv2d_relu_forward(x, w, b, spec, false, pool)
}

/// [`conv2d_forward`] followed by `max(·, 0)` when `relu`, applied as each
/// output tile is stored rather than in a second pass over memory.
pub fn conv2d_relu_forward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: Conv2dSpec,
    relu: bool,
    pool: &mut Pool,
) -> Result<Tensor> {
    let g = ConvGeometry::new(x.shape(), w.shape(), b.shape(), spec)?;
    Ok(forward(&g, x, w, b, relu, false, pool)?.0)
}

/// A 2x2 max pooling taken by the forward: its output and each window's
/// winner (see [`max_2x2_winners`]).
type PooledForward = (Tensor, Vec<u8>);

/// The forward, through Winograd's transforms where they apply, else the
/// direct products. With `pooled`, also the output's 2x2 max pooling, taken
/// image by image (a few images at a time with Winograd) while each image's
/// output is still in the core's cache.
fn forward(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    pooled: bool,
    pool: &mut Pool,
) -> Result<(Tensor, Option<PooledForward>)> {
    let (xs, ws, bs) = (
        as_slice(x, "conv2d")?,
        as_slice(w, "conv2d")?,
        as_slice(b, "conv2d")?,
    );
    // Images per parallel task: one, or a set of Winograd's tiles.
    let tiling = winograd::Tiling::new(g.pad_top, g.pad_left, g.ho, g.wo);
    let winograd = winograd::applies(g.kh, g.kw, g.stride, g.cin, g.cout)
        && tiling.addressable(g.image_len(), g.cout * g.p());
    let columns =
        !winograd && winograd_columns::applies(g.kh, g.kw, g.stride, !g.unpadded(), g.cin);
    let per = if winograd {
        tiling.images_per_product()
    } else {
        1
    };
    let (il, ol, pl) = (
        g.image_len(),
        g.cout * g.p(),
        g.cout * (g.ho / 2) * (g.wo / 2),
    );
    let mut y = pool.to_overwrite(&[g.n, g.cout, g.ho, g.wo]);
    let mut pooled = pooled.then(|| {
        let yp = pool.to_overwrite(&[g.n, g.cout, g.ho / 2, g.wo / 2]);
        (yp, pool.bytes_to_overwrite(g.n * pl))
    });
    // Each task's share of the pooled outputs, if wanted.
    let pooled_sets: Vec<Option<(&mut [f32], &mut [u8])>> = match pooled.as_mut() {
        Some((yp, winners)) if pl > 0 => {
            let values = yp.as_slice_mut().expect("pooled").chunks_mut(per * pl);
            values.zip(winners.chunks_mut(per * pl)).map(Some).collect()
        }
        _ => (0..g.n.div_ceil(per)).map(|_| None).collect(),
    };
    let tasks = y
        .as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(per * ol)
        .zip(xs.par_chunks(per * il))
        .zip(pooled_sets.into_par_iter());
    // The 2x2 pooling of a task's output planes, as they leave the products.
    let fast = kernel::available();
    let pool_planes = |y: &[f32], out: Option<(&mut [f32], &mut [u8])>| {
        let Some((values, winners)) = out else { return };
        let q = (g.ho / 2) * (g.wo / 2);
        let planes = y
            .chunks(g.p())
            .zip(values.chunks_mut(q).zip(winners.chunks_mut(q)));
        for (y, (values, winners)) in planes {
            max_2x2_winners(y, g.wo, g.wo / 2, values, winners, fast);
        }
    };
    if winograd {
        // The filters transformed once per call, then a few images at a
        // time through the 36 products (see [`winograd`]).
        let mut u = pool.vec_to_overwrite(winograd::POINTS * g.cin * g.cout);
        winograd::filters(ws, g.cout, g.cin, &mut u);
        tasks.for_each(|((y, x), out)| {
            let planes = winograd::Planes::dense(x, g.h, g.w);
            let images = y.len() / ol;
            winograd::conv3x3(planes, images, g.cin, &u, g.cout, tiling, Some(bs), relu, y);
            pool_planes(y, out);
        });
        pool.give_vec(u);
    } else if columns {
        // The first layers' forward down the columns (see
        // [`winograd_columns`]), image by image.
        let mut u = pool.vec_to_overwrite(g.cout * g.cin * 18);
        winograd_columns::filters(ws, g.cout, g.cin, &mut u);
        tasks.for_each(|((y, x), out)| {
            winograd_columns::conv3x3(x, g.cin, g.h, g.w, &u, g.cout, bs, relu, y);
            pool_planes(y, out);
        });
        pool.give_vec(u);
    } else {
        let u = Unroll::for_geometry(g);
        // W[Cout, K] read through Wᵀ[K, Cout], laid out once per call: the
        // tiles broadcast from either as fast, and a narrow last panel of
        // columns wants W's columns contiguous (see `kernel::matmul`).
        let mut wt = pool.vec_to_overwrite(g.k() * g.cout);
        transpose(ws, g.cout, g.k(), g.k(), &mut wt, g.cout);
        let w = Strided {
            data: &wt,
            rs: 1,
            cs: g.cout,
        };
        tasks.for_each(|((y, x), out)| {
            let mut s = SCRATCH.take();
            forward_image(g, &u, x, w, bs, relu, y, &mut s);
            SCRATCH.set(s);
            pool_planes(y, out);
        });
        pool.give_vec(wt);
    }
    Ok((y, pooled))
}

/// A row-major matrix operand.
fn rows(data: &[f32], cols: usize) -> Strided<'_> {
    Strided {
        data,
        rs: cols,
        cs: 1,
    }
}

/// `Σ xs` in 16 interleaved partial sums (a fixed order, so the same bits on
/// every run), which the compiler keeps in one vector register.
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Images per partial sum of the weight gradient: fixed, so the summation order
/// (and hence every bit of the result) does not depend on the thread count.
const GROUP: usize = 16;

/// The backward keeps only the geometry and whether a ReLU was fused in: `x`,
/// `W` and the output are on the tape.
struct Conv2d {
    g: ConvGeometry,
    relu: bool,
}

impl Backward for Conv2d {
    /// A 2x2 pooling, on the shifted path: its backward writes the wide grid
    /// the products read, in place of the widening copy of `dy`.
    fn takes_pooled(&self, spec: MaxPool2dSpec) -> bool {
        spec == MaxPool2dSpec::square(2) && Unroll::shifts(&self.g)
    }

    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let g = &self.g;
        let (k, p, il) = (g.k(), g.p(), g.image_len());
        let u = Unroll::for_geometry(g);
        let xs = a.inputs[0].as_slice().expect("checked in forward");
        let ws = a.inputs[1].as_slice().expect("checked in forward");
        // The input gradient through Winograd's transforms where they apply
        // (see [`winograd`]): the correlation of `dz`, padded by 2, with the
        // filters turned by 180°, a set of images at a time.
        let tiling_dx = winograd::Tiling::new(g.kh - 1, g.kw - 1, g.h, g.w);
        let winograd_dx = match &u {
            Unroll::Shifted { wide, .. } => {
                a.wants[0]
                    && winograd::applies(g.kh, g.kw, g.stride, g.cout, g.cin)
                    && winograd::input_gradient_pays(tiling_dx, *wide)
                    && tiling_dx.addressable(g.cout * wide, il)
            }
            Unroll::Im2col => false,
        };
        let per = if winograd_dx {
            tiling_dx.images_per_product()
        } else {
            1
        };
        let u_dx = winograd_dx.then(|| {
            let mut u = a.pool.vec_to_overwrite(winograd::POINTS * g.cin * g.cout);
            winograd::input_gradient_filters(ws, g.cout, g.cin, &mut u);
            u
        });
        // The direct input gradient's product reads W's columns in `order`.
        let w_dx = match &u {
            Unroll::Shifted { order, .. } if a.wants[0] && !winograd_dx => {
                let mut w = a.pool.vec_to_overwrite(ws.len());
                for (dst, src) in w.chunks_mut(k).zip(ws.chunks(k)) {
                    for (d, &r) in dst.iter_mut().zip(order) {
                        *d = src[r];
                    }
                }
                Some(w)
            }
            _ => None,
        };
        let w_ordered = w_dx.as_deref().unwrap_or(ws);
        let dy = a.dy.as_slice().expect("gradients are contiguous");
        let ys = a.output.as_slice().expect("values are contiguous");
        let (want_dw, want_db, rule) = (a.wants[1], a.wants[2], a.relu);
        // Per image: the pooling's output and gradient, or the gradient.
        let (pooled, dy_len) = match &a.pooled {
            Some(pl) => {
                assert!(self.takes_pooled(pl.spec), "pooling {:?}", pl.spec);
                let yp = pl.output.as_slice().expect("values are contiguous");
                (Some((yp, pl.winners)), g.cout * (g.ho / 2) * (g.wo / 2))
            }
            None => (None, g.cout * p),
        };

        // Each group's part of dWᵀ[K, Cout], side by side, from the pool:
        // kept from call to call rather than allocated each time.
        let part_len = if want_dw { k * g.cout } else { 0 };
        let mut parts = match part_len {
            0 => Vec::new(),
            len => a.pool.vec_to_overwrite(g.n.div_ceil(GROUP).max(1) * len),
        };
        if g.n == 0 {
            // No group to write the first part: dW is zero.
            parts.fill(0.0);
        }
        // Each group clears its own slice of dx, in parallel and in cache.
        let mut dx = a.wants[0].then(|| a.pool.to_overwrite(&[g.n, g.cin, g.h, g.w]));
        let groups = g.n.div_ceil(GROUP);
        let dx_groups: Vec<Option<&mut [f32]>> = match dx.as_mut() {
            Some(t) => t
                .as_slice_mut()
                .expect("pooled")
                .chunks_mut(GROUP * il)
                .map(Some)
                .collect(),
            None => (0..groups).map(|_| None).collect(),
        };
        // One pass over fixed groups of images: each image adds to its group's
        // dWᵀ and writes its own slice of dx.
        let part_groups: Vec<Option<&mut [f32]>> = match part_len {
            0 => (0..groups).map(|_| None).collect(),
            len => parts.chunks_mut(len).map(Some).collect(),
        };
        let partials: Vec<Vec<f32>> = dy
            .par_chunks(GROUP * dy_len)
            .enumerate()
            .zip(ys.par_chunks(GROUP * g.cout * p))
            .zip(xs.par_chunks(GROUP * il))
            .zip(dx_groups.into_par_iter())
            .zip(part_groups.into_par_iter())
            .map(|(((((group, dy), y), x), mut dx), dwt)| {
                let mut scratch = SCRATCH.take();
                let s = &mut scratch;
                if let Some(dx) = dx.as_deref_mut().filter(|_| !winograd_dx) {
                    dx.fill(0.0);
                }
                let dwt = dwt.unwrap_or_default();
                dwt.fill(0.0);
                let mut db = vec![0.0f32; g.cout];
                let count = x.len() / il;
                for first in (0..count).step_by(per) {
                    let set = per.min(count - first);
                    for index in 0..set {
                        let i = first + index;
                        let at = (group * GROUP + i) * dy_len;
                        let dy = &dy[i * dy_len..][..dy_len];
                        let dy = match pooled {
                            Some((yp, winners)) => ImageDy::Pooled {
                                y: &yp[at..][..dy_len],
                                dy,
                                winners: winners.map(|w| &w[at..][..dy_len]),
                            },
                            None => ImageDy::Full(dy),
                        };
                        let out = ImageGrads {
                            dx: dx
                                .as_deref_mut()
                                .filter(|_| !winograd_dx)
                                .map(|d| &mut d[i * il..(i + 1) * il]),
                            dwt: want_dw.then_some(&mut dwt[..]),
                            db: want_db.then_some(&mut db[..]),
                        };
                        let fused = self.relu.then_some(rule);
                        let y = &y[i * g.cout * p..][..g.cout * p];
                        let x = &x[i * il..][..il];
                        let slot = Slot { index, of: per };
                        backward_image(g, &u, x, w_ordered, y, dy, fused, out, slot, s);
                    }
                    // The set's dx from the dz it left side by side.
                    if let (Some(u_dx), Some(dx), Unroll::Shifted { wide, .. }) =
                        (&u_dx, dx.as_deref_mut(), &u)
                    {
                        let planes = winograd::Planes {
                            data: &s.dy_wide,
                            h: g.ho,
                            w: g.wo,
                            row: g.w,
                            plane: *wide,
                        };
                        let dx = &mut dx[first * il..(first + set) * il];
                        winograd::conv3x3(
                            planes, set, g.cout, u_dx, g.cin, tiling_dx, None, false, dx,
                        );
                    }
                }
                SCRATCH.set(scratch);
                db
            })
            .collect();

        if let Some(w) = w_dx {
            a.pool.give_vec(w);
        }
        if let Some(u) = u_dx {
            a.pool.give_vec(u);
        }

        let dw = want_dw.then(|| {
            // The groups' parts summed in order (the same bits whatever the
            // thread count), into the first; then dW[c, r] = dWᵀ[r, c].
            let (sum, rest) = parts.split_at_mut(part_len);
            for part in rest.chunks(part_len) {
                sum.iter_mut().zip(part).for_each(|(s, v)| *s += v);
            }
            let mut dw = a.pool.to_overwrite(&[g.cout, g.cin, g.kh, g.kw]);
            let dws = dw.as_slice_mut().expect("pooled");
            transpose(sum, k, g.cout, g.cout, dws, k);
            dw
        });

        let db = a.wants[2].then(|| {
            let mut db = a.pool.zeros(&[g.cout]);
            for part in &partials {
                db.iter_mut().zip(part).for_each(|(d, v)| *d += v);
            }
            db
        });
        a.pool.give_vec(parts);
        vec![dx, dw, db]
    }
}

impl Tape<'_> {
    /// 2-D convolution (cross-correlation, as every deep-learning library
    /// computes it) of `x: [N, Cin, H, W]` with `w: [Cout, Cin, kh, kw]`, plus
    /// bias `b: [Cout]`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Var, spec: Conv2dSpec) -> Result<Var> {
        self.conv2d_maybe_relu(x, w, b, spec, false)
    }

    /// `relu(conv2d(x, w, b))` as one op: the ReLU is applied as outputs are
    /// stored, and its backward rule (a [`ReluRule`]) is applied
    /// inside the convolution's backward, so the pre-activation is never kept.
    pub fn conv2d_relu(&mut self, x: Var, w: Var, b: Var, spec: Conv2dSpec) -> Result<Var> {
        self.conv2d_maybe_relu(x, w, b, spec, true)
    }

    /// `conv2d` (`conv2d_relu` if `relu`) followed by `max_pool2d(·, pool)`:
    /// both ops are recorded, with the same values and gradients, bit for
    /// bit, as recording them one after the other. A 2x2 pooling is taken
    /// image by image as the convolution's outputs leave the products, while
    /// they are in cache, and its winners are kept, so that its backward never
    /// reads the convolution's output. Returns the convolution's var and the
    /// pooling's.
    pub fn conv2d_max_pool2d(
        &mut self,
        x: Var,
        w: Var,
        b: Var,
        spec: Conv2dSpec,
        relu: bool,
        pool: MaxPool2dSpec,
    ) -> Result<(Var, Var)> {
        if pool != MaxPool2dSpec::square(2) {
            let y = self.conv2d_maybe_relu(x, w, b, spec, relu)?;
            return Ok((y, self.max_pool2d(y, pool)?));
        }
        let (y, pooled, g) = self.compute(&[x, w, b], |v, p| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            pool.output_size(g.ho, g.wo)?;
            let (y, pooled) = forward(&g, v[0], v[1], v[2], relu, true, p)?;
            Ok((y, pooled.expect("asked for the pooling"), g))
        })?;
        let (yp, winners) = pooled;
        let y = self.push(y, &[x, w, b], Box::new(Conv2d { g, relu }));
        let rule = MaxPool2d {
            spec: pool,
            winners: Some(winners),
        };
        Ok((y, self.push(yp, &[y], Box::new(rule))))
    }

    fn conv2d_maybe_relu(
        &mut self,
        x: Var,
        w: Var,
        b: Var,
        spec: Conv2dSpec,
        relu: bool,
    ) -> Result<Var> {
        let (y, g) = self.compute(&[x, w, b], |v, pool| {
            let g = ConvGeometry::new(v[0].shape(), v[1].shape(), v[2].shape(), spec)?;
            Ok((forward(&g, v[0], v[1], v[2], relu, false, pool)?.0, g))
        })?;
        Ok(self.push(y, &[x, w, b], Box::new(Conv2d { g, relu })))
    }
}
