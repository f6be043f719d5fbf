//! Fast convolution: products over shifted rows (or im2col columns) on the
//! AVX-512 kernel, Winograd's transforms for 3x3 layers, and a ReLU and a 2x2
//! max pooling folded in. What it computes is defined by
//! [`crate::ops::conv`]'s reference, which the tests hold it to.
//!
//! **Without im2col.** For stride 1 and no padding (the tutorial's layers) the
//! columns are never copied: on an output grid as wide as the input, row
//! `(c, i, j)` of `cols` is the input plane `c` itself, read from offset
//! `i·W + j` (see `Unroll`). The same shifted rows serve the weight gradient,
//! and col2im happens inside the kernel: each row of `Wᵀ·dy` is added onto
//! the input at its shift as it leaves the registers.
//!
//! **Stride 2 in phases.** The forward of a stride-2 layer splits the padded
//! image into its four phases (even or odd rows × even or odd columns); each
//! tap then reads one phase at a shift, and the product runs on shifted rows
//! again (see `Unroll::Phases`). A padded stride-1 forward reads its one
//! phase, the padded image. Their backward unrolls with im2col.
//!
//! **Winograd** (only with [`Kernels::Winograd`]). A 3x3 stride-1 forward
//! with 16 or more channels both ways goes through Winograd's minimal
//! filtering, 36 multiplications per 4x4 block of outputs rather than 144: see
//! [`winograd`]. A first layer's forward (1 to 4 input channels, no padding)
//! goes through the 1-D transforms down the columns: see [`winograd_columns`].
//! The input gradient of a many-channel layer goes through the 2-D transforms
//! where the tiles fit its output well enough to pay. Winograd's rounding
//! depends on where an output sits in its tile, so two identical receptive
//! fields may give values a few ulps apart; [`Kernels::Fast`] never uses it,
//! and every output is then the same chain of products wherever it sits.
//!
//! A fused ReLU is applied as output tiles are stored, and its backward rule
//! ([`ReluRule`]) applied to `dy` image by image inside the backward. For the
//! class scores alone, an inference batch normalisation is applied there too,
//! before the ReLU (see `fast::fused`).

use rayon::prelude::*;

use super::kernel::{
    self, matmul, matmul_add_at, matmul_keep, spread_rows, transpose, Affine, Epilogue, Gapped,
    Keep, Shifted, Strided,
};
use super::pool::{max_2x2_backward_winners, max_2x2_winners};
use super::relu::apply_rows;
use super::{winograd, winograd_columns, Pool};
use crate::error::Result;
use crate::ops::{col2im, im2col, ConvGeometry, ReluRule};
use crate::tape::Kernels;
use crate::tensor::{as_slice, Tensor};

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
/// - `Phases`: for stride 2, and for stride 1 with padding, the forward
///   alone. The padded image is split into its four phases (even or odd
///   rows × even or odd columns), and then every tap `(i, j)` reads phase
///   `(i mod 2, j mod 2)` at a shift of `(⌊i/2⌋, ⌊j/2⌋)`: shifted rows
///   again, on a grid one phase wide. The split copies the image once, where
///   im2col copies each value about `kh·kw/4` times. With a stride of 1 the
///   one phase is the padded image, copied in the core's cache rather than
///   written whole by a `pad` first. (The backward unrolls with im2col.)
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
        /// each row's read of what the one before has just added waits for
        /// that store to land.
        order: Vec<usize>,
        /// `offs` in that order.
        offs_dx: Vec<usize>,
    },
    Phases {
        /// Where row `(c, i, j)` reads the phases: phase `(c, i mod s,
        /// j mod s)` from row `⌊i/s⌋` and column `⌊j/s⌋` on, for stride `s`.
        offs: Vec<usize>,
        /// The phases' rows and columns: `(Ho + ⌊(kh − 1)/s⌋, Wo + ⌊(kw − 1)/s⌋)`.
        size: (usize, usize),
        /// Columns of the grid up to the last real output: `(Ho − 1)·Wq + Wo`.
        wide: usize,
    },
}

impl Unroll {
    /// The columns of the forward's product: the wide grid's, or one per
    /// output.
    fn columns(&self, g: &ConvGeometry) -> usize {
        match self {
            Unroll::Shifted { wide, .. } | Unroll::Phases { wide, .. } => *wide,
            Unroll::Im2col => g.p(),
        }
    }

    /// Whether `g` takes the shifted path: stride 1, no padding, and the
    /// AVX-512 kernel (the portable one copies shifted operands out).
    fn shifts(g: &ConvGeometry) -> bool {
        g.stride == 1 && g.unpadded() && kernel::available()
    }

    /// How the forward unrolls: as the backward does ([`Unroll::for_geometry`]),
    /// but on the AVX-512 kernel a stride of 2 in phases, and a padded
    /// stride of 1 on its one phase (the padded image, copied in cache).
    fn for_forward(g: &ConvGeometry) -> Self {
        let s = g.stride;
        if !kernel::available() || s > 2 || (s == 1 && g.unpadded()) {
            return Self::for_geometry(g);
        }
        let (hq, wq) = (g.ho + (g.kh - 1) / s, g.wo + (g.kw - 1) / s);
        let (pa, pb) = phases(g);
        let mut offs = Vec::with_capacity(g.k());
        for c in 0..g.cin {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let phase = (c * pa + i % s) * pb + j % s;
                    offs.push(phase * hq * wq + i / s * wq + j / s);
                }
            }
        }
        Unroll::Phases {
            offs,
            size: (hq, wq),
            wide: (g.ho - 1) * wq + g.wo,
        }
    }

    /// Values of the phases of one image ([`Unroll::Phases`]), else 0.
    fn phases_len(&self, g: &ConvGeometry) -> usize {
        match self {
            Unroll::Phases { size, .. } => g.cin * phases(g).0 * phases(g).1 * size.0 * size.1,
            _ => 0,
        }
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
    /// This thread's share of the weights, when one image's channels are
    /// shared between the threads.
    w_share: Vec<f32>,
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

/// `y[Cout, P] = W[Cout, K] · unrolled(x)[K, P] + b`, then `ep`'s
/// epilogue, for one image; on the im2col path from `cols` if the image was
/// unrolled already.
fn forward_image(
    g: &ConvGeometry,
    u: &Unroll,
    (x, cols): (&[f32], Option<&[f32]>),
    w: Strided<'_>,
    ep: Epilogue<'_>,
    y: &mut [f32],
    s: &mut Scratch,
) {
    // The output channels computed: all, or a share of them (the bias's).
    let (k, p, m) = (g.k(), g.p(), ep.row_bias.map_or(g.cout, <[f32]>::len));
    match u {
        // y[Cout, P] = W[Cout, K] · cols[K, P] + b
        Unroll::Im2col => match cols {
            Some(cols) => matmul(m, p, k, w, rows(cols, p), y, p, ep),
            // A band of output pixels at a time, so that the band's columns
            // are read back from the core's cache rather than from memory.
            None => {
                let band = band_len(m, k, p);
                for q0 in (0..p).step_by(band) {
                    let len = band.min(p - q0);
                    let cols = sized(&mut s.cols, k * len);
                    im2col_band(g, x, q0, cols);
                    let ep = Epilogue {
                        residual: ep.residual.map(|r| &r[q0..]),
                        ..ep
                    };
                    matmul(m, len, k, w, rows(cols, len), &mut y[q0..], p, ep);
                }
            }
        },
        Unroll::Shifted { offs, wide, .. } => {
            // y[Cout, P] = W[Cout, K] · X[K, wide] + b with row r of X =
            // x[offs[r]..], storing the first Wo of every W columns.
            let xs = Shifted { data: x, offs };
            let keep = Keep {
                row: g.w,
                first: g.wo,
            };
            matmul_keep(m, *wide, k, w, xs, y, p, ep, keep);
        }
        Unroll::Phases { offs, size, wide } => {
            // The same on the phases, split here unless given.
            let planes = match cols {
                Some(planes) => planes,
                None => {
                    let planes = sized(&mut s.cols, u.phases_len(g));
                    split_phases(g, *size, x, planes);
                    planes
                }
            };
            let xs = Shifted { data: planes, offs };
            let keep = Keep {
                row: size.1,
                first: g.wo,
            };
            matmul_keep(m, *wide, k, w, xs, y, p, ep, keep);
        }
    }
}

/// The phases per axis of a forward in [`Unroll::Phases`]: `min(k, s)`
/// (one, the padded image itself, for a stride of 1).
fn phases(g: &ConvGeometry) -> (usize, usize) {
    (g.kh.min(g.stride), g.kw.min(g.stride))
}

/// The phases of one zero-padded image for [`Unroll::Phases`]: plane
/// `(c, a, b)` (`a`, `b` below [`phases`]) holds the padded image's values
/// at rows `s·r + a` and columns `s·q + b`, `size` of them.
fn split_phases(g: &ConvGeometry, (hq, wq): (usize, usize), x: &[f32], planes: &mut [f32]) {
    let ((na, nb), s) = (phases(g), g.stride);
    for (q, plane) in planes.chunks_exact_mut(hq * wq).enumerate() {
        let (c, a, b) = (q / (na * nb), q / nb % na, q % nb);
        let image = &x[c * g.h * g.w..][..g.h * g.w];
        // Columns s·q + b − pad_left inside the image: q in lo..hi.
        let lo = g.pad_left.saturating_sub(b).div_ceil(s).min(wq);
        let hi = (g.w + g.pad_left - b).div_ceil(s).clamp(lo, wq);
        for (r, row) in plane.chunks_exact_mut(wq).enumerate() {
            let Some(y) = (s * r + a).checked_sub(g.pad_top).filter(|&y| y < g.h) else {
                row.fill(0.0);
                continue;
            };
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
            if lo == hi {
                continue;
            }
            let src = &image[y * g.w + s * lo + b - g.pad_left..];
            match s {
                1 => row[lo..hi].copy_from_slice(&src[..hi - lo]),
                _ => {
                    for (o, v) in row[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                        *o = *v;
                    }
                }
            }
        }
    }
}

/// Values of im2col's columns per band (256 KB): a band written by
/// [`im2col_band`] is still in the core's L2 cache when the product reads it.
const BAND_VALUES: usize = 1 << 16;

/// Output pixels per band for a product `W[m, k] · cols[k, p]`: whole
/// 48-column panels of the kernel's tile, at least one. Each band reads all of
/// `W` again, so only weights that stay in cache beside a band (a first
/// layer's) are banded; larger ones take all `p` columns in one band.
fn band_len(m: usize, k: usize, p: usize) -> usize {
    if m * k > BAND_VALUES {
        return p;
    }
    (BAND_VALUES / k.max(1) / 48 * 48).max(48).min(p)
}

/// Columns `q0 .. q0 + len` of [`im2col`]'s `cols[K, P]` (output pixels in
/// row-major order), into `cols[K, len]`.
fn im2col_band(g: &ConvGeometry, x: &[f32], q0: usize, cols: &mut [f32]) {
    let len = cols.len() / g.k().max(1);
    let plane_len = g.h * g.w;
    for (r, row) in cols.chunks_exact_mut(len).enumerate() {
        let (c, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &x[c * plane_len..][..plane_len];
        let valid = g.valid_cols(j);
        // One output row's share of the band at a time.
        let mut q = q0;
        for out in split_at_rows(row, q0, g.wo) {
            let (oy, ox0) = (q / g.wo, q % g.wo);
            q += out.len();
            let Some(y) = g.src_row(oy, i) else {
                out.fill(0.0);
                continue;
            };
            let src = &plane[y * g.w..][..g.w];
            // The columns of this piece whose field lands in the image.
            let lo = valid.start.clamp(ox0, ox0 + out.len());
            let hi = valid.end.clamp(lo, ox0 + out.len());
            out[..lo - ox0].fill(0.0);
            out[hi - ox0..].fill(0.0);
            if lo == hi {
                continue;
            }
            // First input column read: ox·s + j − pad_left at ox = lo.
            let x0 = lo * g.stride + j - g.pad_left;
            let inside = &mut out[lo - ox0..hi - ox0];
            let src = &src[x0..];
            if g.stride == 1 {
                inside.copy_from_slice(&src[..inside.len()]);
            } else {
                // Every stride-th value: the first of each whole group of
                // `stride` (a form the compiler vectorises), and the last
                // alone, since its group may run past the row's end.
                let (head, last) = inside.split_at_mut(inside.len() - 1);
                for (o, group) in head.iter_mut().zip(src.chunks_exact(g.stride)) {
                    *o = group[0];
                }
                last[0] = src[head.len() * g.stride];
            }
        }
    }
}

/// `row` (pixels `q0 ..` of a grid `wo` wide) cut where the grid's rows end.
fn split_at_rows(row: &mut [f32], q0: usize, wo: usize) -> impl Iterator<Item = &mut [f32]> {
    let first = (wo - q0 % wo).min(row.len());
    let (head, rest) = row.split_at_mut(first);
    std::iter::once(head).chain(rest.chunks_mut(wo))
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
    /// Through a 2x2 max pooling of the output (see [`Dy::Pooled`]): the
    /// pooling's output, its gradient and its windows' winners,
    /// `[Cout, Ho/2, Wo/2]` each.
    Pooled {
        y: &'a [f32],
        dy: &'a [f32],
        winners: &'a [u8],
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
                            Some(rule) => apply_rows(rule, y, dy, d, g.wo, g.w),
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
                    let planes = dz.chunks_mut(wide).zip(winners.chunks(q));
                    for ((d, w), (yp, dyp)) in planes.zip(yp.chunks(q).zip(dyp.chunks(q))) {
                        let dyp = match rule {
                            Some(rule) => {
                                rule.apply_slice(yp, dyp, ruled);
                                &*ruled
                            }
                            None => dyp,
                        };
                        // The winners kept by the forward: `y` is not read.
                        max_2x2_backward_winners(w, dyp, g.ho, g.wo, d, g.w, true);
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
        Unroll::Phases { .. } => unreachable!("the backward unrolls with im2col (for_geometry)"),
    }
}

/// The forward convolution, `y[Cout, P] = W[Cout, K] · unrolled(x)[K, P] + b`
/// for each image, in parallel over the batch, then `max(·, 0)` if `relu`
/// (applied as each output tile is stored). Winograd's transforms only with
/// [`Kernels::Winograd`].
///
/// The unrolled input of one image lives in a scratch buffer in the core's
/// cache (or, for stride 1, is never built: see `Unroll`); the backward
/// unrolls again rather than keeping the whole batch's columns, because
/// rebuilding in cache beats reading back from memory.
pub(crate) fn forward(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    kernels: Kernels,
    pool: &mut Pool,
) -> Result<Tensor> {
    let after = After {
        relu,
        ..After::default()
    };
    Ok(forward_on(g, x, w, b, after, false, kernels, pool)?.0)
}

/// What a forward takes as its outputs leave the products, after the bias and
/// in this order: a batch normalisation at inference, a residual connection's
/// other input (added), a ReLU.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct After<'a> {
    pub norm: Option<Affine<'a>>,
    /// Of the output's shape.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> After<'a> {
    /// The kernel's epilogue for a product whose rows are output channels
    /// `c0..` of `bs` and whose output starts at `at` in the whole output.
    fn epilogue(self, bs: &'a [f32], c0: usize, at: usize) -> Epilogue<'a> {
        Epilogue {
            accumulate: false,
            row_bias: Some(&bs[c0..]),
            affine: self.norm.map(|a| a.from(c0)),
            residual: self.residual.map(|r| &r[at..]),
            relu: self.relu,
        }
    }
}

/// [`forward`] followed by `after`: the bits of the ops one after the other,
/// without writing and reading the output between them. Never through
/// Winograd's transforms.
pub(crate) fn forward_then(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    after: After<'_>,
    pool: &mut Pool,
) -> Result<Tensor> {
    if let Some(r) = after.residual {
        assert_eq!(r.len(), g.n * g.cout * g.p(), "the residual's length");
    }
    Ok(forward_on(g, x, w, b, after, false, Kernels::Fast, pool)?.0)
}

/// Whether a zero-padded convolution of this `(kh, kw, stride, cin, cout)`
/// runs faster as an explicit `pad` followed by the unpadded one: with
/// stride 1, when its backward will run (on a `recording` tape), as the
/// unpadded backward reads shifted rows of the image where the padded one
/// copies every receptive field (im2col). The padded forward alone reads
/// the image padded in the core's cache (`Unroll::Phases`). Winograd's
/// transforms take their padding themselves.
pub(crate) fn pads_first(
    kernels: Kernels,
    recording: bool,
    (kh, kw, stride, cin, cout): Shape5,
) -> bool {
    // The shifted path's own conditions, but for the padding (see `Unroll`).
    kernels != Kernels::Reference
        && recording
        && stride == 1
        && kernel::available()
        && !(kernels == Kernels::Winograd && winograd::applies(kh, kw, stride, cin, cout))
}

/// `(kh, kw, stride, cin, cout)`.
type Shape5 = (usize, usize, usize, usize, usize);

/// [`forward`] and the output's 2x2 max pooling, taken image by image (a few
/// images at a time with Winograd) while each image's output is in the core's
/// cache: the convolution's output, the pooled output, and each window's
/// winner (see [`max_2x2_winners`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pooled(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    kernels: Kernels,
    pool: &mut Pool,
) -> Result<(Tensor, Tensor, Vec<u8>)> {
    let after = After {
        relu,
        ..After::default()
    };
    let (y, pooled) = forward_on(g, x, w, b, after, true, kernels, pool)?;
    let (yp, winners) = pooled.expect("asked for the pooling");
    Ok((y, yp, winners))
}

/// A 2x2 max pooling taken by the forward: its output and each window's
/// winner (see [`max_2x2_winners`]).
type PooledForward = (Tensor, Vec<u8>);

/// The forward, through Winograd's transforms where they apply, else the
/// direct products, then `after` (with a normalisation or a residual, never
/// Winograd). With `pooled`, also the output's 2x2 max pooling,
/// taken image by image (a few images at a time with Winograd) while each
/// image's output is still in the core's cache.
#[allow(clippy::too_many_arguments)]
fn forward_on(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    after: After<'_>,
    pooled: bool,
    kernels: Kernels,
    pool: &mut Pool,
) -> Result<(Tensor, Option<PooledForward>)> {
    let relu = after.relu;
    let (xs, ws, bs) = (
        as_slice(x, "conv2d")?,
        as_slice(w, "conv2d")?,
        as_slice(b, "conv2d")?,
    );
    // Images per parallel task: one, or a set of Winograd's tiles.
    let tiling = winograd::Tiling::new(g.pad_top, g.pad_left, g.ho, g.wo);
    let transforms =
        kernels == Kernels::Winograd && after.norm.is_none() && after.residual.is_none();
    let winograd = transforms
        && winograd::applies(g.kh, g.kw, g.stride, g.cin, g.cout)
        && tiling.addressable(g.image_len(), g.cout * g.p());
    let columns = transforms
        && !winograd
        && winograd_columns::applies(g.kh, g.kw, g.stride, !g.unpadded(), g.cin);
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
    let threads = rayon::current_num_threads();
    if !winograd && !columns && !pooled && g.n < threads && g.cout >= 2 * threads {
        forward_split_channels(g, xs, ws, bs, after, &mut y, pool);
        return Ok((y, None));
    }
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
        let u = Unroll::for_forward(g);
        let wt = kernel::reads_columns_of_a(u.columns(g)).then(|| transposed_weights(g, ws, pool));
        let w = match &wt {
            Some(wt) => rows_of_wt(g, wt),
            None => rows(ws, g.k()),
        };
        tasks.enumerate().for_each(|(i, ((y, x), out))| {
            let mut s = SCRATCH.take();
            let ep = after.epilogue(bs, 0, i * ol);
            forward_image(g, &u, (x, None), w, ep, y, &mut s);
            SCRATCH.set(s);
            pool_planes(y, out);
        });
        if let Some(wt) = wt {
            pool.give_vec(wt);
        }
    }
    Ok((y, pooled))
}

/// The direct forward for fewer images than threads (one image, a saliency
/// map of a large model): each image's output channels shared between the
/// threads. Every output is the same dot product as in [`forward_on`]'s
/// path, only on another thread.
#[allow(clippy::too_many_arguments)]
fn forward_split_channels(
    g: &ConvGeometry,
    xs: &[f32],
    ws: &[f32],
    bs: &[f32],
    after: After<'_>,
    y: &mut Tensor,
    pool: &mut Pool,
) {
    let u = Unroll::for_forward(g);
    let by_columns = kernel::reads_columns_of_a(u.columns(g));
    let threads = rayon::current_num_threads();
    let share = g.cout.div_ceil(threads);
    let (il, ol, p, k) = (g.image_len(), g.cout * g.p(), g.p(), g.k());
    // On the im2col and phases paths the image is unrolled once, its
    // channels shared between the threads, and every thread's product reads
    // the columns (or phases).
    let mut cols = match u {
        Unroll::Im2col => pool.vec_to_overwrite(k * p),
        Unroll::Phases { .. } => pool.vec_to_overwrite(u.phases_len(g)),
        Unroll::Shifted { .. } => Vec::new(),
    };
    let ys = y.as_slice_mut().expect("a fresh tensor");
    for (n, (y, x)) in ys.chunks_mut(ol).zip(xs.chunks(il)).enumerate() {
        // The image unrolled (im2col) or split into phases once, each thread
        // taking a share of the input channels.
        if !cols.is_empty() {
            let (plane, per) = (g.h * g.w, cols.len() / g.cin);
            let share_in = g.cin.div_ceil(threads);
            cols.par_chunks_mut(share_in * per)
                .enumerate()
                .for_each(|(t, cols)| {
                    let (c0, m) = (t * share_in, cols.len() / per);
                    let part = ConvGeometry { n: 1, cin: m, ..*g };
                    let x = &x[c0 * plane..][..m * plane];
                    match u {
                        Unroll::Im2col => im2col(&part, x, cols),
                        Unroll::Phases { size, .. } => split_phases(&part, size, x, cols),
                        Unroll::Shifted { .. } => unreachable!("shifted rows are not copied"),
                    }
                });
        }
        let unrolled = (!cols.is_empty()).then_some(&cols[..]);
        y.par_chunks_mut(share * p).enumerate().for_each(|(i, y)| {
            let (c0, m) = (i * share, y.len() / p);
            let mut s = SCRATCH.take();
            // Rows c0.. of W, as Wᵀ[K, m] if the product reads its columns,
            // transposed by the thread that reads them.
            let mut wt = std::mem::take(&mut s.w_share);
            let w = match by_columns {
                true => {
                    let wt_share = sized(&mut wt, k * m);
                    transpose(&ws[c0 * k..], m, k, k, wt_share, m);
                    Strided {
                        data: wt_share,
                        rs: 1,
                        cs: m,
                    }
                }
                false => rows(&ws[c0 * k..], k),
            };
            let ep = after.epilogue(&bs[..c0 + m], c0, n * ol + c0 * p);
            forward_image(g, &u, (x, unrolled), w, ep, y, &mut s);
            s.w_share = wt;
            SCRATCH.set(s);
        });
    }
    pool.give_vec(cols);
}

/// The input gradient alone for fewer images than threads (a saliency map of
/// one image): each image's input channels shared between the threads. The
/// rows of `Wᵀ·dz` for channel `c` fold back onto plane `c` of `dx` alone,
/// so each thread runs the backward of the convolution of its own planes,
/// with its own columns of W; every value is the same chain of products and
/// sums as in the unshared backward.
fn input_gradient_split_channels(
    g: &ConvGeometry,
    ws: &[f32],
    ys: Option<&[f32]>,
    dys: &[f32],
    rule: Option<ReluRule>,
    pool: &mut Pool,
) -> Tensor {
    assert!(
        ys.is_some() || rule.is_none(),
        "a fused ReLU's rule reads the output"
    );
    let (il, ol, plane, taps) = (g.image_len(), g.cout * g.p(), g.h * g.w, g.kh * g.kw);
    let share = g.cin.div_ceil(rayon::current_num_threads());
    let mut dx = pool.to_overwrite(&[g.n, g.cin, g.h, g.w]);
    let dxs = dx.as_slice_mut().expect("pooled");
    for (i, dx) in dxs.chunks_mut(il).enumerate() {
        let dy = ImageDy::Full(&dys[i * ol..][..ol]);
        let y = ys.map_or(&[][..], |ys| &ys[i * ol..][..ol]);
        dx.par_chunks_mut(share * plane)
            .enumerate()
            .for_each(|(t, dx)| {
                let (c0, m) = (t * share, dx.len() / plane);
                let part = ConvGeometry { n: 1, cin: m, ..*g };
                let u = Unroll::for_geometry(&part);
                let mut s = SCRATCH.take();
                // W[:, c0..c0 + m] with its columns in the order the
                // backward reads them (see `backward_image`).
                let mut w = std::mem::take(&mut s.w_share);
                let k = part.k();
                let w_part = sized(&mut w, g.cout * k);
                for (dst, src) in w_part.chunks_mut(k).zip(ws.chunks(g.k())) {
                    let src = &src[c0 * taps..][..k];
                    match &u {
                        Unroll::Shifted { order, .. } => {
                            for (d, &r) in dst.iter_mut().zip(order) {
                                *d = src[r];
                            }
                        }
                        Unroll::Im2col => dst.copy_from_slice(src),
                        Unroll::Phases { .. } => {
                            unreachable!("the backward unrolls with for_geometry")
                        }
                    }
                }
                dx.fill(0.0);
                let out = ImageGrads {
                    dx: Some(dx),
                    dwt: None,
                    db: None,
                };
                let slot = Slot { index: 0, of: 1 };
                backward_image(&part, &u, &[], w_part, y, dy, rule, out, slot, &mut s);
                s.w_share = w;
                SCRATCH.set(s);
            });
    }
    dx
}

/// W[Cout, K] as Wᵀ[K, Cout], laid out once per call, for a product whose
/// narrow last panel of columns reads W's columns (see
/// `kernel::reads_columns_of_a`). Give it back to `pool` when done.
fn transposed_weights(g: &ConvGeometry, ws: &[f32], pool: &mut Pool) -> Vec<f32> {
    let mut wt = pool.vec_to_overwrite(g.k() * g.cout);
    transpose(ws, g.cout, g.k(), g.k(), &mut wt, g.cout);
    wt
}

/// W, read through [`transposed_weights`]' Wᵀ.
fn rows_of_wt<'a>(g: &ConvGeometry, wt: &'a [f32]) -> Strided<'a> {
    Strided {
        data: wt,
        rs: 1,
        cs: g.cout,
    }
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

/// The values the backward reads: the op's input, weight and output.
pub(crate) struct Inputs<'a> {
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    /// The output, read only by a fused ReLU's rule on a [`Dy::Full`].
    pub y: Option<&'a Tensor>,
}

/// The gradient reaching the convolution's output.
pub(crate) enum Dy<'a> {
    /// `∂L/∂y`, of the output's shape.
    Full(&'a Tensor),
    /// Through a 2x2 max pooling of the output, folded into this backward
    /// (see `fast::fused`): the pooling's output and gradient, and its
    /// windows' winners.
    Pooled {
        y: &'a Tensor,
        dy: &'a Tensor,
        winners: &'a [u8],
    },
}

/// Whether [`backward`] can take a [`Dy::Pooled`] for geometry `g`: the
/// shifted path only.
pub(crate) fn takes_pooled(g: &ConvGeometry) -> bool {
    Unroll::shifts(g)
}

/// The backward: `[dx, dW, db]`, each only if `wants` it. `fused` is the ReLU
/// rule of a fused ReLU, applied to `dy` first. The input gradient goes
/// through Winograd's transforms only with [`Kernels::Winograd`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    g: &ConvGeometry,
    v: Inputs<'_>,
    dy: Dy<'_>,
    fused: Option<ReluRule>,
    wants: &[bool],
    kernels: Kernels,
    pool: &mut Pool,
) -> [Option<Tensor>; 3] {
    let (k, p, il) = (g.k(), g.p(), g.image_len());
    let u = Unroll::for_geometry(g);
    let xs = v.x.as_slice().expect("checked in forward");
    let ws = v.w.as_slice().expect("checked in forward");
    // The input gradient through Winograd's transforms where they apply
    // (see [`winograd`]): the correlation of `dz`, padded by 2, with the
    // filters turned by 180°, a set of images at a time.
    let tiling_dx = winograd::Tiling::new(g.kh - 1, g.kw - 1, g.h, g.w);
    let winograd_dx = match &u {
        Unroll::Shifted { wide, .. } => {
            wants[0]
                && kernels == Kernels::Winograd
                && winograd::applies(g.kh, g.kw, g.stride, g.cout, g.cin)
                && winograd::input_gradient_pays(tiling_dx, *wide)
                && tiling_dx.addressable(g.cout * wide, il)
        }
        Unroll::Im2col => false,
        Unroll::Phases { .. } => unreachable!("the backward unrolls with for_geometry"),
    };
    if let Dy::Full(dy) = &dy {
        let threads = rayon::current_num_threads();
        if wants == [true, false, false] && !winograd_dx && g.n < threads && g.cin >= 2 * threads {
            let ys = v.y.map(|y| y.as_slice().expect("values are contiguous"));
            let dy = dy.as_slice().expect("gradients are contiguous");
            let dx = input_gradient_split_channels(g, ws, ys, dy, fused, pool);
            return [Some(dx), None, None];
        }
    }
    let per = if winograd_dx {
        tiling_dx.images_per_product()
    } else {
        1
    };
    let u_dx = winograd_dx.then(|| {
        let mut u = pool.vec_to_overwrite(winograd::POINTS * g.cin * g.cout);
        winograd::input_gradient_filters(ws, g.cout, g.cin, &mut u);
        u
    });
    // The direct input gradient's product reads W's columns in `order`.
    let w_dx = match &u {
        Unroll::Shifted { order, .. } if wants[0] && !winograd_dx => {
            let mut w = pool.vec_to_overwrite(ws.len());
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
    let ys = v.y.map(|y| y.as_slice().expect("values are contiguous"));
    assert!(
        ys.is_some() || fused.is_none() || matches!(dy, Dy::Pooled { .. }),
        "a fused ReLU's rule reads the output"
    );
    let (want_dw, want_db) = (wants[1], wants[2]);
    // Per image: the pooling's output and gradient, or the gradient.
    let (dy, pooled, dy_len) = match dy {
        Dy::Full(dy) => (dy, None, g.cout * p),
        Dy::Pooled { y, dy, winners } => {
            assert!(takes_pooled(g), "a pooled gradient on the im2col path");
            let yp = y.as_slice().expect("values are contiguous");
            (dy, Some((yp, winners)), g.cout * (g.ho / 2) * (g.wo / 2))
        }
    };
    let dy = dy.as_slice().expect("gradients are contiguous");

    // Images per task: fixed groups when their weight or bias gradients are
    // summed (see `GROUP`); one image each when only dx is wanted, since
    // each image's dx is its own.
    let group_len = if want_dw || want_db { GROUP } else { 1 };
    // Each group's part of dWᵀ[K, Cout], side by side, from the pool:
    // kept from call to call rather than allocated each time.
    let part_len = if want_dw { k * g.cout } else { 0 };
    let mut parts = match part_len {
        0 => Vec::new(),
        len => pool.vec_to_overwrite(g.n.div_ceil(group_len).max(1) * len),
    };
    if g.n == 0 {
        // No group to write the first part: dW is zero.
        parts.fill(0.0);
    }
    // Each group clears its own slice of dx, in parallel and in cache.
    let mut dx = wants[0].then(|| pool.to_overwrite(&[g.n, g.cin, g.h, g.w]));
    let groups = g.n.div_ceil(group_len);
    let dx_groups: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(t) => t
            .as_slice_mut()
            .expect("pooled")
            .chunks_mut(group_len * il)
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
        .par_chunks(group_len * dy_len)
        .enumerate()
        .zip(xs.par_chunks(group_len * il))
        .zip(dx_groups.into_par_iter())
        .zip(part_groups.into_par_iter())
        .map(|((((group, dy), x), mut dx), dwt)| {
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
                    let at = (group * group_len + i) * dy_len;
                    let dy = &dy[i * dy_len..][..dy_len];
                    let dy = match pooled {
                        Some((yp, winners)) => ImageDy::Pooled {
                            y: &yp[at..][..dy_len],
                            dy,
                            winners: &winners[at..][..dy_len],
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
                    let at_y = (group * group_len + i) * g.cout * p;
                    let y = ys.map_or(&[][..], |ys| &ys[at_y..][..g.cout * p]);
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
                    winograd::conv3x3(planes, set, g.cout, u_dx, g.cin, tiling_dx, None, false, dx);
                }
            }
            SCRATCH.set(scratch);
            db
        })
        .collect();

    if let Some(w) = w_dx {
        pool.give_vec(w);
    }
    if let Some(u) = u_dx {
        pool.give_vec(u);
    }

    let dw = want_dw.then(|| {
        // The groups' parts summed in order (the same bits whatever the
        // thread count), into the first; then dW[c, r] = dWᵀ[r, c].
        let (sum, rest) = parts.split_at_mut(part_len);
        for part in rest.chunks(part_len) {
            sum.iter_mut().zip(part).for_each(|(s, v)| *s += v);
        }
        let mut dw = pool.to_overwrite(&[g.cout, g.cin, g.kh, g.kw]);
        let dws = dw.as_slice_mut().expect("pooled");
        transpose(sum, k, g.cout, g.cout, dws, k);
        dw
    });

    let db = wants[2].then(|| {
        let mut db = pool.zeros(&[g.cout]);
        for part in &partials {
            db.iter_mut().zip(part).for_each(|(d, v)| *d += v);
        }
        db
    });
    pool.give_vec(parts);
    [dx, dw, db]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Conv2dSpec, Padding};

    /// A two-channel `h × w` image of distinct values, its geometry under
    /// `spec` with a `kh × kw` kernel, and the reference's im2col columns of it.
    fn image_and_columns(
        h: usize,
        w: usize,
        (kh, kw): (usize, usize),
        spec: Conv2dSpec,
    ) -> (ConvGeometry, Vec<f32>, Vec<f32>) {
        let cin = 2;
        let g = ConvGeometry::new(&[1, cin, h, w], &[1, cin, kh, kw], &[1], spec).unwrap();
        let x: Vec<f32> = (0..cin * h * w).map(|v| v as f32 + 1.0).collect();
        let mut whole = vec![f32::NAN; g.k() * g.p()];
        im2col(&g, &x, &mut whole);
        (g, x, whole)
    }

    /// Every real output's value in every shifted row of the phases is the
    /// reference's im2col column: strides of 2, 'valid' and 'same' padding
    /// (odd padding too), and padded strides of 1 (one phase, the padded
    /// image); kernels 1x1 to 7x7 and 2x2, odd and even sizes.
    #[test]
    fn phases_read_the_reference_columns() {
        for (h, w, kh, kw, stride, padding) in [
            (7, 9, 3, 3, 2, Padding::Same),
            (8, 8, 3, 3, 2, Padding::Same),
            (11, 8, 7, 7, 2, Padding::Same),
            (10, 10, 3, 3, 2, Padding::Valid),
            (9, 13, 1, 1, 2, Padding::Valid),
            (6, 5, 2, 2, 2, Padding::Same),
            (6, 7, 2, 3, 2, Padding::Valid),
            (4, 3, 5, 5, 2, Padding::Same),
            (7, 9, 3, 3, 1, Padding::Same),
            (6, 5, 2, 2, 1, Padding::Same),
            (5, 8, 2, 3, 1, Padding::Same),
            (4, 3, 5, 5, 1, Padding::Same),
        ] {
            let spec = Conv2dSpec { stride, padding };
            let (g, x, whole) = image_and_columns(h, w, (kh, kw), spec);
            let p = g.p();
            let u = Unroll::for_forward(&g);
            let Unroll::Phases { offs, size, wide } = &u else {
                assert!(
                    !kernel::available(),
                    "padded or strided forwards go in phases on the kernel"
                );
                continue;
            };
            let (size, wide) = (*size, *wide);
            let mut planes = vec![f32::NAN; u.phases_len(&g)];
            split_phases(&g, size, &x, &mut planes);
            for (r, &o) in offs.iter().enumerate() {
                // The product reads `wide` values from each row's offset.
                assert!(o + wide <= planes.len(), "row {r} runs past the phases");
                for (oy, ox) in (0..g.ho).flat_map(|oy| (0..g.wo).map(move |ox| (oy, ox))) {
                    assert_eq!(
                        planes[o + oy * size.1 + ox],
                        whole[r * p + oy * g.wo + ox],
                        "{h}x{w}, {kh}x{kw}/{stride}, {padding:?}, row {r}, output ({oy}, {ox})"
                    );
                }
            }
        }
    }

    /// Every band of every length is the same columns as the reference's
    /// whole im2col, for strides 1 to 3, 'valid' and 'same' padding, and
    /// kernels from 1x1 to 7x7 (wider than the image in one case).
    #[test]
    fn im2col_bands_are_the_reference_columns() {
        for (h, w, k, stride, padding) in [
            (7, 9, 3, 1, Padding::Same),
            (11, 8, 7, 2, Padding::Same),
            (10, 10, 3, 2, Padding::Valid),
            (9, 13, 1, 2, Padding::Valid),
            (6, 5, 5, 3, Padding::Same),
            (4, 3, 5, 1, Padding::Same),
        ] {
            let spec = Conv2dSpec { stride, padding };
            let (g, x, whole) = image_and_columns(h, w, (k, k), spec);
            let (kk, p) = (g.k(), g.p());
            for len in 1..=p {
                for q0 in 0..=p - len {
                    let mut band = vec![f32::NAN; kk * len];
                    im2col_band(&g, &x, q0, &mut band);
                    for r in 0..kk {
                        assert_eq!(
                            band[r * len..][..len],
                            whole[r * p + q0..][..len],
                            "{h}x{w}, {k}x{k}, stride {stride}, row {r}, columns {q0} + {len}"
                        );
                    }
                }
            }
        }
    }
}
