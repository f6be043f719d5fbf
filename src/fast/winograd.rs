//! Winograd's minimal filtering F(4×4, 3×3): a 3x3 stride-1 convolution with
//! 4 times fewer multiplications (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016). It speeds up the forward (and, where
//! it pays, the input gradient) of the many-channel 3x3 layers, under
//! [`Kernels::Winograd`](crate::tape::Kernels::Winograd) only; what it computes
//! is [`crate::ops::conv`]'s convolution, up to rounding (see below).
//!
//! A 4x4 block of a 3x3 correlation's output reads a 6x6 patch `d` of the
//! input. With the three small matrices below, that block is
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (4x4 = 4x6 · 6x6 · 6x4)
//!
//!      ⎡4   0  −5   0   1   0⎤        ⎡ ¼     0     0 ⎤
//!      ⎢0  −4  −4   1   1   0⎥        ⎢−⅙    −⅙    −⅙ ⎥        ⎡1  1   1  1   1  0⎤
//! Bᵀ = ⎢0   4  −4  −1   1   0⎥    G = ⎢−⅙     ⅙    −⅙ ⎥   Aᵀ = ⎢0  1  −1  2  −2  0⎥
//!      ⎢0  −2  −1   2   1   0⎥        ⎢1/24  1/12   ⅙ ⎥        ⎢0  1   1  4   4  0⎥
//!      ⎢0   2  −1  −2   1   0⎥        ⎢1/24 −1/12   ⅙ ⎥        ⎣0  1  −1  8  −8  1⎦
//!      ⎣0   4   0  −5   0   1⎦        ⎣ 0     0     1 ⎦
//! ```
//!
//! 36 multiplications (the elementwise `⊙`) instead of 4·4·9 = 144. Summed
//! over input channels `i`, the 36 elementwise products of each point `p` of
//! the 6x6 become one matrix product per point, over all tiles `t` at once:
//!
//! ```text
//! M[p][o, t] = Σᵢ U[p][o, i] · V[p][i, t]     U = G g Gᵀ (weights), V = Bᵀ d B (input)
//! ```
//!
//! and the kernel runs those 36 products, each `Cout × Cin × tiles`. For the
//! tutorial's 32 → 64 layers, with the tiles' overhang (a 12x12 block of
//! tiles for MNIST's 11x11 output, 16x16 for CIFAR's 13x13), that is 3.4 and
//! 2.6 times fewer multiply-adds than the direct product, for the price of
//! the two transforms. F(4×4) rather than F(2×2, 3×3) (16 products, 2.25
//! times fewer multiplications): on these layers its larger saving outweighs
//! its costlier transforms. With 1 or 3 input channels the 36 products would
//! be too thin to pay for the 2-D transforms ([`applies`]); the first layers
//! run the 1-D ones down the columns instead
//! ([`winograd_columns`](super::winograd_columns)).
//!
//! The price in accuracy: the transforms' coefficients reach 5 (`Bᵀ`), 8
//! (`Aᵀ`) and ⅙ (`G`, not exact in binary), so an output is the sum of terms
//! up to some hundreds of times larger than the direct sum's, which cancel.
//! Its rounding error is bounded by `(Cin + 20)·2⁻²⁴` of the terms' total
//! size (checked against f64 in the tests below).
//!
//! The input gradient of a valid 3x3 convolution is itself one: a "full"
//! correlation of `dz`, padded by 2, with the filters turned by 180° and
//! their channels swapped ([`input_gradient_filters`]). It runs through the
//! same transforms where that pays ([`input_gradient_pays`]): the padding
//! makes many of its tiles' inputs zeros (MNIST's 11x11 gradient padded to
//! 15x15), and its output rounds up to whole tiles, so of the tutorial's
//! 32 → 64 layers only CIFAR's takes it.
//!
//! The weight gradient stays direct. Through the transforms it would be
//! `dM = A dY Aᵀ` per tile, `dU[p] = Σₜ V[p][·, t] · dM[p][t, ·]` and
//! `dW = Gᵀ dU G`: fewer multiply-adds, but its products sum over only a
//! set's tiles (18 to 64), which keeps them slow, and the input transform runs
//! again for each image, so the transforms cost about what the products save.
//!
//! Tiles past the output's edge (`Ho` or `Wo` not a multiple of 4) read
//! zeros and are dropped when stored. The transforms are written for
//! AVX-512, a lane per tile (16 tiles at once, whichever rows and images
//! they come from); without it the convolution takes the direct path.
//! Where an image is exactly 4x4 tiles (CIFAR's 13x13 output, and the input
//! gradients' 13x13 and 15x15), 16 lanes are one image's tiles: the input
//! transform cuts the patches out of the image's rows, each loaded once, with
//! permutes instead of a gather per value, and the output transform stores
//! whole rows instead of four values per tile.

use crate::fast::kernel::{self, matmul, Epilogue, Strided};

/// Both channel counts at least this: below it the 36 products are too thin
/// to pay for the transforms.
const MIN_CHANNELS: usize = 16;

/// Points of a tile's transform, 6x6: one product each.
pub(crate) const POINTS: usize = 36;

/// The most tiles (columns of the 36 products) transformed at once: few
/// enough that `V` and `M` (36·(Cin + Cout)·tiles values, 884 KB for 64 tiles
/// of the 32 → 64 layer) stay in a core's L2 between the transforms and the
/// products.
const MAX_TILES: usize = 64;

/// Whether a convolution with these sizes runs through Winograd's transforms:
/// a 3x3 kernel at stride 1, many channels both ways, and AVX-512.
pub(crate) fn applies(kh: usize, kw: usize, stride: usize, cin: usize, cout: usize) -> bool {
    (kh, kw, stride) == (3, 3, 1)
        && cin >= MIN_CHANNELS
        && cout >= MIN_CHANNELS
        && kernel::available()
}

/// `G`, which takes a 3-tap filter to its 6 transformed taps: in f64, where
/// ⅙ and 1/24 are much nearer their values than in f32.
pub(crate) const G: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The transformed filters, `U[p][i, o] = (G w[o, i] Gᵀ)[p]`: 36 matrices
/// `[Cin, Cout]` (the layout the kernel broadcasts `U[p][o, ·]` from, as for
/// the direct product's `Wᵀ`), from `w: [cout, cin, 3, 3]`. Summed in f64 and
/// rounded once.
pub(crate) fn filters(w: &[f32], cout: usize, cin: usize, u: &mut [f32]) {
    assert_eq!(w.len(), cout * cin * 9, "weights");
    assert_eq!(u.len(), POINTS * cout * cin, "transformed weights");
    for o in 0..cout {
        for i in 0..cin {
            // f[r][s], the 3x3 filter from input channel i to output channel o.
            let f = |r: usize, s: usize| w[(o * cin + i) * 9 + r * 3 + s] as f64;
            // (G f)[a][s], then (G f Gᵀ)[a][b] = Σₛ (G f)[a][s] · G[b][s].
            let gf: [[f64; 3]; 6] = std::array::from_fn(|a| {
                std::array::from_fn(|s| (0..3).map(|r| G[a][r] * f(r, s)).sum())
            });
            for a in 0..6 {
                for b in 0..6 {
                    let v: f64 = (0..3).map(|s| gf[a][s] * G[b][s]).sum();
                    u[((a * 6 + b) * cin + i) * cout + o] = v as f32;
                }
            }
        }
    }
}

/// Whether a valid 3x3 convolution's input gradient, `dx` in tiles `t` read
/// from `dz` on a wide grid of `wide` columns a plane, is cheaper through the
/// transforms: when their products (36 a tile) are at most 2/5 of the direct
/// product's (9 a column of the wide grid), per pair of channels: between
/// CIFAR's 32 → 64 layer (0.33, where the transforms pay) and MNIST's (0.45,
/// where they do not).
pub(crate) fn input_gradient_pays(t: Tiling, wide: usize) -> bool {
    5 * POINTS * t.th * t.tw <= 2 * 9 * wide
}

/// The transformed filters of a valid convolution's input gradient,
/// `dx[n, i] = Σₒ dz[n, o] ⋆ rot180(w[o, i])` padded by 2 all round: the
/// filters of a convolution from `cout` channels to `cin`, each turned by
/// 180°, through [`filters`].
pub(crate) fn input_gradient_filters(w: &[f32], cout: usize, cin: usize, u: &mut [f32]) {
    assert_eq!(w.len(), cout * cin * 9, "weights");
    let mut turned = vec![0.0; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            let (from, to) = ((o * cin + i) * 9, (i * cout + o) * 9);
            for rs in 0..9 {
                turned[to + 8 - rs] = w[from + rs];
            }
        }
    }
    filters(&turned, cin, cout, u);
}

/// A batch of images, `[images, channels]` planes of `h × w` values, rows
/// `row` values apart and planes `plane` apart (an image is `channels ·
/// plane` values). What lies between a row's `w` values and the next row is
/// never read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes<'a> {
    pub data: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub row: usize,
    pub plane: usize,
}

impl<'a> Planes<'a> {
    /// Planes stored densely, `[images, channels, h, w]` row-major.
    pub fn dense(data: &'a [f32], h: usize, w: usize) -> Self {
        Planes {
            data,
            h,
            w,
            row: w,
            plane: h * w,
        }
    }
}

/// Where the tiles lie: the output is `ho × wo`, read from the input
/// `pad_top` rows and `pad_left` columns before its corner (zeros there),
/// in `th × tw` tiles of 4x4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tiling {
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
    pub th: usize,
    pub tw: usize,
}

impl Tiling {
    pub fn new(pad_top: usize, pad_left: usize, ho: usize, wo: usize) -> Self {
        Tiling {
            pad_top,
            pad_left,
            ho,
            wo,
            th: ho.div_ceil(4),
            tw: wo.div_ceil(4),
        }
    }

    /// Images per set of 36 products: as many as have at most
    /// [`MAX_TILES`] tiles in all, and at least one.
    pub fn images_per_product(&self) -> usize {
        (MAX_TILES / (self.th * self.tw).max(1)).max(1)
    }

    /// Whether a set's input (`image` values an image) and output (`out`
    /// values an image) can be addressed with the transforms' 32-bit offsets:
    /// past a gigabyte or so a set is not, and the convolution goes direct.
    pub fn addressable(&self, image: usize, out: usize) -> bool {
        fits_offsets(self.images_per_product(), image, out)
    }
}

/// Whether `images` images of `image` input and `out` output values each are
/// within reach of the transforms' 32-bit offsets (with room to spare).
fn fits_offsets(images: usize, image: usize, out: usize) -> bool {
    images * image.max(out) < i32::MAX as usize / 2
}

/// Scratch of one worker thread: the transformed input and the products.
/// Kept per thread rather than per task, as a task's scratch would be
/// allocated (and zeroed) each time `rayon` splits the work.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        *v = vec![0.0; len];
    }
    &mut v[..len]
}

/// `out[n, o] = Σᵢ x[n, i] ⋆ f[o, i] (+ bias[o]) (then max(·, 0))` for
/// `images` images: a 3x3 correlation of the (zero-padded) input planes with
/// the filters whose transforms are `u` (from [`filters`]). `out` is dense,
/// `[images, outs, ho, wo]`, and is overwritten.
///
/// # Panics
/// If an operand is too short for the sizes given, or without AVX-512.
#[allow(clippy::too_many_arguments)]
// The transforms exist on x86_64 only (asserted through `kernel::available()`).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn conv3x3(
    x: Planes<'_>,
    images: usize,
    ins: usize,
    u: &[f32],
    outs: usize,
    t: Tiling,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    assert!(kernel::available(), "Winograd's transforms need AVX-512");
    assert!(
        x.w <= x.row && x.h.saturating_sub(1) * x.row + x.w <= x.plane,
        "planes of {}x{} values, rows {} and planes {} apart, overlap",
        x.h,
        x.w,
        x.row,
        x.plane
    );
    assert!(x.data.len() >= images * ins * x.plane, "input too short");
    assert_eq!(u.len(), POINTS * ins * outs, "transformed weights");
    assert!(out.len() >= images * outs * t.ho * t.wo, "output too short");
    assert!(bias.is_none_or(|b| b.len() >= outs), "bias too short");
    assert!(t.th * 4 >= t.ho && t.tw * 4 >= t.wo, "tiling {t:?}");
    // The transforms address a set's values with 32-bit offsets (callers
    // check `Tiling::addressable` first).
    assert!(
        fits_offsets(images, ins * x.plane, outs * t.ho * t.wo),
        "a set of {images} images is too large"
    );
    let tiles = images * t.th * t.tw;
    if tiles == 0 || outs == 0 {
        return;
    }
    SCRATCH.with_borrow_mut(|s| {
        let v = sized(&mut s.v, POINTS * ins * tiles);
        let m = sized(&mut s.m, POINTS * outs * tiles);

        // V[p][i, t] = (Bᵀ d B)[p] for each tile t's 6x6 patch d of plane i.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 is available (asserted); every input value read
        // lies in `x.data` (asserted; lanes outside a plane are masked off),
        // V has room for 36 points × ins channels × tiles, and the offsets
        // fit 32 bits (asserted).
        unsafe {
            avx512::input_tiles(x, images, ins, t, v.as_mut_ptr());
        }
        // M[p] = U[p] · V[p]: [outs, ins] · [ins, tiles], one product per
        // point. V and M keep a channel's 36 points together (`V[i][p][t]`,
        // `M[o][p][t]`), so that the transforms read and write one block per
        // channel; the products step over the other points' rows.
        for p in 0..POINTS {
            let up = Strided {
                data: &u[p * ins * outs..][..ins * outs],
                rs: 1,
                cs: outs,
            };
            let vp = Strided {
                data: &v[p * tiles..],
                rs: POINTS * tiles,
                cs: 1,
            };
            let mp = &mut m[p * tiles..];
            matmul(
                outs,
                tiles,
                ins,
                up,
                vp,
                mp,
                POINTS * tiles,
                Epilogue::STORE,
            );
        }
        // out = Aᵀ M A per tile, plus the bias, ReLU'd.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 is available; M holds 36 points × outs × tiles,
        // `out` the images' outputs, the bias `outs` values (asserted), and
        // the offsets fit 32 bits.
        unsafe {
            avx512::output_tiles(m.as_ptr(), images, outs, t, bias, relu, out);
        }
    });
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Planes, Tiling, POINTS};
    use crate::fast::kernel::lanes;

    /// Where the 16 tiles from `t0` on (of a set of `images` images) lie:
    /// each lane's offset in the set, and which of the 6 (or 4) rows and
    /// columns of its patch fall inside the image.
    struct Group {
        /// Lanes holding a tile.
        tiles: u16,
        /// Offset of the patch's corner (the input) or block's (the output).
        at: [i32; 16],
        /// Bit `l` of `rows[r]`: row `r` of lane `l`'s patch or block is inside.
        rows: [u16; 6],
        cols: [u16; 6],
    }

    impl Group {
        /// Lane `l` takes tile `t0 + l` of the set's `count`, at `4ty − pad`
        /// down and `4tx − pad` across in image `n`, which starts
        /// `n · image` values into the set.
        /// `h × w` is the plane (the input's or the output's), its rows `row`
        /// values apart, and `span` the patch's side (6, or the block's, 4).
        #[allow(clippy::too_many_arguments)]
        fn new(
            t: Tiling,
            t0: usize,
            count: usize,
            image: usize,
            (h, w, row): (usize, usize, usize),
            pad: (usize, usize),
            span: usize,
        ) -> Self {
            let per = t.th * t.tw;
            let mut g = Group {
                tiles: lanes(count.saturating_sub(t0)),
                at: [0; 16],
                rows: [0; 6],
                cols: [0; 6],
            };
            for l in 0..16.min(count.saturating_sub(t0)) {
                let (n, r) = ((t0 + l) / per, (t0 + l) % per);
                let y0 = (4 * (r / t.tw)) as isize - pad.0 as isize;
                let x0 = (4 * (r % t.tw)) as isize - pad.1 as isize;
                g.at[l] = (n * image) as i32 + (y0 * row as isize + x0) as i32;
                for k in 0..span {
                    let inside = |v: isize, len: usize| (0..len as isize).contains(&v);
                    g.rows[k] |= u16::from(inside(y0 + k as isize, h)) << l;
                    g.cols[k] |= u16::from(inside(x0 + k as isize, w)) << l;
                }
            }
            g
        }
    }

    /// `Bᵀ d` for 6 values `d` (a patch's column or row), lane by lane.
    #[inline(always)]
    pub(crate) unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
        let c = _mm512_set1_ps;
        [
            _mm512_fmadd_ps(c(4.0), d[0], _mm512_fmadd_ps(c(-5.0), d[2], d[4])),
            _mm512_fmadd_ps(
                c(-4.0),
                _mm512_add_ps(d[1], d[2]),
                _mm512_add_ps(d[3], d[4]),
            ),
            _mm512_fmadd_ps(c(4.0), _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
            _mm512_fmadd_ps(c(2.0), _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2])),
            _mm512_fmadd_ps(c(2.0), _mm512_sub_ps(d[1], d[3]), _mm512_sub_ps(d[4], d[2])),
            _mm512_fmadd_ps(c(4.0), d[1], _mm512_fmadd_ps(c(-5.0), d[3], d[5])),
        ]
    }

    /// `Aᵀ m` for 6 values `m` (a tile's column or row of points).
    #[inline(always)]
    pub(crate) unsafe fn at(m: [__m512; 6]) -> [__m512; 4] {
        let (s12, d12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (s34, d34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
        ]
    }

    /// Every tile's 36 points, `V[i][p][t] = (Bᵀ d B)[p]` (rows of `tiles`
    /// values), for the `ins` planes of a set of `images` images: 16 tiles
    /// at once, a lane each, their patches gathered value by value (zeros
    /// outside the image), or cut from the image's rows where the 16 are one
    /// image's 4x4, then `Bᵀ d` down the columns and `(Bᵀ d) B` across.
    ///
    /// # Safety
    /// AVX-512F, `x` fits `images` images of `ins` planes, `v` has room for
    /// `36 · ins · tiles` values, and offsets within the set fit 32 bits.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_tiles(x: Planes<'_>, images: usize, ins: usize, t: Tiling, v: *mut f32) {
        let (plane, tiles) = (x.plane, images * t.th * t.tw);
        let pad = (t.pad_top, t.pad_left);
        // Each image one group of 4x4 tiles, and each patch row's values
        // inside the 16 from its first column on: the lanes' patches are cut
        // from the image's rows, loaded once, rather than gathered.
        let rowwise = (t.th, t.tw) == (4, 4) && x.w + t.pad_left <= 16;
        // Lane (ty, tx) takes value 4tx + c of its row, from the first or
        // the second of a pair of rows (ty even or odd); none past the 16th.
        let pairs = _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
        let colmask = lanes(t.pad_left + x.w) & !lanes(t.pad_left);
        for t0 in (0..tiles).step_by(16) {
            let g = Group::new(t, t0, tiles, ins * plane, (x.h, x.w, x.row), pad, 6);
            let corner = _mm512_loadu_si512(g.at.as_ptr().cast());
            for i in 0..ins {
                let base = x.data.as_ptr().add(i * plane);
                let bd = if rowwise {
                    let first = base.add(t0 / 16 * ins * plane);
                    cut_from_rows(x, t, first, pairs, colmask)
                } else {
                    gathered(x, &g, corner, base)
                };
                for (k, row) in bd.into_iter().enumerate() {
                    for (l, val) in bt(row).into_iter().enumerate() {
                        let p = k * 6 + l;
                        _mm512_mask_storeu_ps(v.add((i * POINTS + p) * tiles + t0), g.tiles, val);
                    }
                }
            }
        }
    }

    /// `Bᵀ d` of each lane's patch, column by column (`bd[k][c]`), from the
    /// plane at `base`: the patch gathered value by value, zeros outside the
    /// plane.
    #[inline(always)]
    unsafe fn gathered(
        x: Planes<'_>,
        g: &Group,
        corner: __m512i,
        base: *const f32,
    ) -> [[__m512; 6]; 6] {
        let mut bd = [[_mm512_setzero_ps(); 6]; 6];
        #[allow(clippy::needless_range_loop)] // c picks a column of every row
        for c in 0..6 {
            // Loops rather than closures, here and below: a closure does not
            // take on the caller's target features, so its intrinsics would
            // not be inlined.
            let mut column = [_mm512_setzero_ps(); 6];
            for (r, d) in column.iter_mut().enumerate() {
                let at = _mm512_add_epi32(corner, _mm512_set1_epi32((r * x.row + c) as i32));
                let inside = g.tiles & g.rows[r] & g.cols[c];
                *d = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), inside, at, base.cast());
            }
            for (k, val) in bt(column).into_iter().enumerate() {
                bd[k][c] = val;
            }
        }
        bd
    }

    /// [`gathered`]'s `Bᵀ d` where the 16 lanes are one image's 4x4 tiles
    /// and each patch row lies within the 16 values from its first column
    /// (`first`, the image's plane): the 18 rows the patches span are loaded
    /// once (`colmask` keeps the plane's columns), and lane (ty, tx) takes
    /// value `4tx + c` of row `4ty + r` with permutes over pairs of rows.
    #[inline(always)]
    unsafe fn cut_from_rows(
        x: Planes<'_>,
        t: Tiling,
        first: *const f32,
        pairs: __m512i,
        colmask: u16,
    ) -> [[__m512; 6]; 6] {
        let mut image_rows = [_mm512_setzero_ps(); 18];
        for (k, v) in image_rows.iter_mut().enumerate() {
            let y = k as isize - t.pad_top as isize;
            if (0..x.h as isize).contains(&y) {
                let at = first.wrapping_offset(y * x.row as isize - t.pad_left as isize);
                *v = _mm512_maskz_loadu_ps(colmask, at);
            }
        }
        let mut bd = [[_mm512_setzero_ps(); 6]; 6];
        #[allow(clippy::needless_range_loop)] // c picks a column of every row
        for c in 0..6 {
            let idx = _mm512_add_epi32(pairs, _mm512_set1_epi32(c as i32));
            // Lanes with 4tx + c < 16; the others' values lie past the row.
            let keep = if c < 4 { 0xffff } else { 0x7777 };
            let mut column = [_mm512_setzero_ps(); 6];
            for (r, d) in column.iter_mut().enumerate() {
                let rows = &image_rows[r..];
                let top = _mm512_permutex2var_ps(rows[0], idx, rows[4]);
                let bottom = _mm512_permutex2var_ps(rows[8], idx, rows[12]);
                *d = _mm512_maskz_mov_ps(keep, _mm512_mask_blend_ps(0xff00, top, bottom));
            }
            for (k, val) in bt(column).into_iter().enumerate() {
                bd[k][c] = val;
            }
        }
        bd
    }

    /// The set's outputs `out[n, o, y, x]` from its tiles' points in
    /// `M[o][p][t]` (rows of `tiles` values): `Aᵀ M A` on 16 tiles at once,
    /// plus the bias, then ReLU'd as `max(floor, ·)` (floor 0 with ReLU, −∞
    /// without, so a NaN stays visible). Each of a block's 4 rows leaves as
    /// 16 vectors' lanes regrouped four to a tile (a 4x16 transpose), and is
    /// stored four values at a time, or a whole output row at a time where the
    /// 16 tiles are one image's 4x4; values past `ho` or `wo` are cut.
    ///
    /// # Safety
    /// AVX-512F, `m` holds `36 · outs · tiles` values, `out` the set's
    /// `images · outs · ho · wo`, and offsets within the set fit 32 bits.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output_tiles(
        m: *const f32,
        images: usize,
        outs: usize,
        t: Tiling,
        bias: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let (plane, tiles) = (t.ho * t.wo, images * t.th * t.tw);
        let floor = _mm512_set1_ps(if relu { 0.0 } else { f32::NEG_INFINITY });
        let dst = out.as_mut_ptr();
        // Each image one group of 4x4 tiles: a block row of the 4 tiles
        // across is one output row, stored at once.
        let rowwise = (t.th, t.tw) == (4, 4);
        let row_mask = lanes(t.wo);
        for t0 in (0..tiles).step_by(16) {
            let g = Group::new(t, t0, tiles, outs * plane, (t.ho, t.wo, t.wo), (0, 0), 4);
            // Per lane: where its stores start, reaching back 4j lanes so that
            // lane 4j of a vector lands on the block's first column (j = l/4),
            // and which 4 lanes they write (the block's columns inside the
            // output). Worked out once per group, not per channel and row.
            let mut from = [0isize; 16];
            let mut keep = [0u16; 16];
            for l in 0..16 {
                let j = l / 4;
                from[l] = g.at[l] as isize - 4 * j as isize;
                let cols = (0..4).map(|c| (g.cols[c] >> l & 1) << c).sum::<u16>();
                keep[l] = cols << (4 * j);
            }
            for o in 0..outs {
                let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[o]));
                let mut mp = [_mm512_setzero_ps(); POINTS];
                for (p, v) in mp.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(g.tiles, m.add((o * POINTS + p) * tiles + t0));
                }
                // M A across each row of points, then Aᵀ (M A) down each column.
                let mut ma = [[_mm512_setzero_ps(); 4]; 6];
                for (k, row) in ma.iter_mut().enumerate() {
                    let q = &mp[6 * k..];
                    *row = at([q[0], q[1], q[2], q[3], q[4], q[5]]);
                }
                // y[c][r]: output (r, c) of every tile, biased and floored.
                let mut y = [[_mm512_setzero_ps(); 4]; 4];
                for (c, yc) in y.iter_mut().enumerate() {
                    let col = at([ma[0][c], ma[1][c], ma[2][c], ma[3][c], ma[4][c], ma[5][c]]);
                    for (v, out) in col.into_iter().zip(yc.iter_mut()) {
                        *out = _mm512_max_ps(floor, _mm512_add_ps(v, b));
                    }
                }
                #[allow(clippy::needless_range_loop)] // r picks a row of every column
                for r in 0..4 {
                    // Lanes 4j..4j + 4 of q[k] are row r of tile 4j + k.
                    let (lo01, hi01) = (
                        _mm512_unpacklo_ps(y[0][r], y[1][r]),
                        _mm512_unpackhi_ps(y[0][r], y[1][r]),
                    );
                    let (lo23, hi23) = (
                        _mm512_unpacklo_ps(y[2][r], y[3][r]),
                        _mm512_unpackhi_ps(y[2][r], y[3][r]),
                    );
                    let q = [
                        _mm512_shuffle_ps::<0x44>(lo01, lo23),
                        _mm512_shuffle_ps::<0xEE>(lo01, lo23),
                        _mm512_shuffle_ps::<0x44>(hi01, hi23),
                        _mm512_shuffle_ps::<0xEE>(hi01, hi23),
                    ];
                    if rowwise {
                        // Lane 4ty + tx is tile (ty, tx) of image t0/16, so
                        // block ty of q[tx] is row r of that tile, and output
                        // row 4ty + r is block ty of q[0], q[1], q[2], q[3]:
                        // a 4x4 transposition of 128-bit blocks.
                        let (a, b) = (
                            _mm512_shuffle_f32x4::<0x44>(q[0], q[1]),
                            _mm512_shuffle_f32x4::<0xEE>(q[0], q[1]),
                        );
                        let (c, d) = (
                            _mm512_shuffle_f32x4::<0x44>(q[2], q[3]),
                            _mm512_shuffle_f32x4::<0xEE>(q[2], q[3]),
                        );
                        let rows = [
                            _mm512_shuffle_f32x4::<0x88>(a, c),
                            _mm512_shuffle_f32x4::<0xDD>(a, c),
                            _mm512_shuffle_f32x4::<0x88>(b, d),
                            _mm512_shuffle_f32x4::<0xDD>(b, d),
                        ];
                        let image = dst.wrapping_add((t0 / 16 * outs + o) * plane);
                        for (ty, v) in rows.into_iter().enumerate() {
                            let y = 4 * ty + r;
                            if y < t.ho {
                                _mm512_mask_storeu_ps(image.wrapping_add(y * t.wo), row_mask, v);
                            }
                        }
                        continue;
                    }
                    let row = dst.wrapping_add(o * plane + r * t.wo);
                    let mut lanes = g.tiles & g.rows[r];
                    while lanes != 0 {
                        let l = lanes.trailing_zeros() as usize;
                        lanes &= lanes - 1;
                        _mm512_mask_storeu_ps(row.wrapping_offset(from[l]), keep[l], q[l % 4]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic test values in [−1, 1).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `Bᵀ`, and `Aᵀ`, as the module doc writes them.
    pub(crate) const BT: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    pub(crate) const AT: [[f64; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// `Σ_rs m[a][r] · x[r][s] · m[b][s]` (`m x mᵀ`) at `(a, b)`, in f64.
    fn sandwich<const N: usize, const K: usize>(
        m: &[[f64; K]; N],
        x: &[f64],
        a: usize,
        b: usize,
    ) -> f64 {
        (0..K)
            .flat_map(|r| (0..K).map(move |s| (r, s)))
            .map(|(r, s)| m[a][r] * x[r * K + s] * m[b][s])
            .sum()
    }

    /// The algebra on its own, in f64: for one 6x6 patch and one filter,
    /// `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` is the 4x4 correlation (within f64
    /// rounding of sums of a few hundred terms below 100 in size).
    #[test]
    fn one_tile_is_the_correlation() {
        let d: Vec<f64> = values(36, 1).iter().map(|&v| v as f64).collect();
        let g: Vec<f64> = values(9, 2).iter().map(|&v| v as f64).collect();
        let u: Vec<f64> = (0..36).map(|p| sandwich(&G, &g, p / 6, p % 6)).collect();
        let v: Vec<f64> = (0..36).map(|p| sandwich(&BT, &d, p / 6, p % 6)).collect();
        let uv: Vec<f64> = u.iter().zip(&v).map(|(u, v)| u * v).collect();
        for y in 0..4 {
            for x in 0..4 {
                let fast = sandwich(&AT, &uv, y, x);
                let direct: f64 = (0..3)
                    .flat_map(|r| (0..3).map(move |s| (r, s)))
                    .map(|(r, s)| d[(y + r) * 6 + x + s] * g[r * 3 + s])
                    .sum();
                assert!(
                    (fast - direct).abs() < 1e-12,
                    "({y}, {x}): {fast} vs {direct}"
                );
            }
        }
    }

    /// `G g Gᵀ` by hand for g = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]: the corners
    /// are g's corners scaled by `¼·¼`, `¼` or 1 (`U[0][0] = 1/16`,
    /// `U[0][5] = 3/4`, `U[5][0] = 7/4`, `U[5][5] = 9`), `U[1][1] = Σ g / 36`
    /// and `U[2][2] = (1 − 2 + 3 − 4 + 5 − 6 + 7 − 8 + 9)/36`.
    #[test]
    fn filters_by_hand() {
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut u = vec![0.0; 36];
        filters(&g, 1, 1, &mut u);
        let want = [
            (0, 1.0 / 16.0),
            (5, 0.75),
            (30, 1.75),
            (35, 9.0),
            (7, 45.0 / 36.0),
            (14, 5.0 / 36.0),
        ];
        for (p, v) in want {
            // One rounding to f32 of the f64 sum: within half an ulp.
            assert!(
                (u[p] as f64 - v).abs() <= v.abs() * 6e-8,
                "point {p}: {} vs {v}",
                u[p]
            );
        }
    }

    /// A NaN in the input reaches the outputs that read it, and the tiles
    /// whose patch holds it, and no others: each lane reads its own patch,
    /// and no more (where patches are cut from rows, too: the lanes past a
    /// row's 16th value read zeros, not the next row's first values).
    #[test]
    fn a_nan_stays_in_its_tiles() {
        if !kernel::available() {
            // The transforms are AVX-512 code: without it the convolution
            // never comes here, and there is nothing of theirs to run.
            assert!(!applies(3, 3, 1, 32, 64));
            eprintln!("skipped: Winograd's transforms need AVX-512 (absent or SALIENT_PORTABLE=1)");
            return;
        }
        // (side, pad): rows cut (4x4 tiles) without and with padding, and
        // gathered (3x3 tiles).
        for (side, pad) in [(15, 0), (11, 2), (13, 0), (14, 1)] {
            let (ins, outs) = (2, 2);
            let out_side = side + 2 * pad - 2;
            let t = Tiling::new(pad, pad, out_side, out_side);
            let mut u = vec![0.0; POINTS * ins * outs];
            filters(&values(outs * ins * 9, 3), outs, ins, &mut u);
            for (y0, x0) in (0..side).flat_map(|y| (0..side).map(move |x| (y, x))) {
                let mut x = values(ins * side * side, 4);
                x[side * side + y0 * side + x0] = f32::NAN;
                let mut out = vec![0.0; outs * out_side * out_side];
                let planes = Planes::dense(&x, side, side);
                conv3x3(planes, 1, ins, &u, outs, t, None, false, &mut out);
                // Input (y0, x0) is at (y0 + pad, x0 + pad) of the padded plane.
                let (py, px) = (y0 + pad, x0 + pad);
                for (q, v) in out.iter().enumerate() {
                    let (oy, ox) = (q / out_side % out_side, q % out_side);
                    let reads = (oy..oy + 3).contains(&py) && (ox..ox + 3).contains(&px);
                    let (ty, tx) = (oy / 4 * 4, ox / 4 * 4);
                    let patch = (ty..ty + 6).contains(&py) && (tx..tx + 6).contains(&px);
                    assert!(
                        v.is_nan() == reads || (v.is_nan() && patch),
                        "side {side}, pad {pad}, NaN at ({y0}, {x0}): output {q} is {v}"
                    );
                }
            }
        }
    }

    /// [`conv3x3`] against the direct sums in f64, over the cases its
    /// transforms treat differently: paddings 0, 1 and 2; output sides a
    /// multiple of 4 or not (a last tile cut); sets whose 16-tile groups
    /// span several rows and images; inputs smaller than the kernel.
    #[test]
    fn conv3x3_matches_direct_sums() {
        if !kernel::available() {
            // Without AVX-512 the convolution never comes here.
            assert!(!applies(3, 3, 1, 32, 64));
            eprintln!("skipped: Winograd's transforms need AVX-512 (absent or SALIENT_PORTABLE=1)");
            return;
        }
        let cases = [
            // (images, ins, outs, h, w, pad, relu)
            (1, 1, 1, 3, 3, 0, false),
            (1, 1, 1, 6, 6, 0, false),
            (2, 3, 5, 13, 13, 0, true),
            (3, 4, 2, 15, 15, 0, false),
            (2, 2, 3, 11, 13, 2, false),
            (1, 3, 2, 13, 15, 1, false),
            (2, 2, 2, 7, 16, 1, true),
            (1, 2, 3, 5, 40, 1, false),
            (1, 1, 2, 6, 33, 2, false),
            (5, 2, 2, 4, 17, 0, true),
            (2, 2, 3, 1, 1, 1, false),
            (1, 3, 2, 2, 5, 1, true),
            (7, 17, 3, 9, 10, 0, false),
            (2, 3, 2, 11, 11, 2, true),
        ];
        for (case, &(images, ins, outs, h, w, pad, relu)) in cases.iter().enumerate() {
            let plane = h * w;
            let x = values(images * ins * plane, 10 + case as u64);
            let wt = values(outs * ins * 9, 20 + case as u64);
            let bias = values(outs, 30 + case as u64);
            let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let t = Tiling::new(pad, pad, ho, wo);
            let mut u = vec![0.0; POINTS * ins * outs];
            filters(&wt, outs, ins, &mut u);
            let planes = Planes::dense(&x, h, w);
            let mut out = vec![f32::NAN; images * outs * ho * wo];
            conv3x3(
                planes,
                images,
                ins,
                &u,
                outs,
                t,
                Some(&bias),
                relu,
                &mut out,
            );
            // The same planes with rows and planes further apart (as the
            // input gradient reads `dz` on the wide grid), NaN between them:
            // the same bits out.
            let (row, gap) = (w + 3, h * (w + 3) + 5);
            let mut spaced = vec![f32::NAN; images * ins * gap];
            for (q, plane_values) in x.chunks(plane).enumerate() {
                for (y, values) in plane_values.chunks(w).enumerate() {
                    spaced[q * gap + y * row..][..w].copy_from_slice(values);
                }
            }
            let spaced = Planes {
                data: &spaced,
                h,
                w,
                row,
                plane: gap,
            };
            let mut again = vec![f32::NAN; out.len()];
            let b = Some(&bias[..]);
            conv3x3(spaced, images, ins, &u, outs, t, b, relu, &mut again);
            let same = out
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "case {case}: spaced planes");
            let at = |n: usize, i: usize, y: isize, xx: isize| -> f64 {
                let (y, xx) = (y - pad as isize, xx - pad as isize);
                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                    return 0.0;
                }
                x[n * ins * plane + i * plane + y as usize * w + xx as usize] as f64
            };
            for n in 0..images {
                for o in 0..outs {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let (ty, tx) = (oy / 4, ox / 4);
                            let (a, b) = (oy % 4, ox % 4);
                            // The direct sum, and the size of the transformed
                            // computation's terms: Σₚ |Aᵀ|·|Aᵀ| Σᵢ |U[p]|·|V[p]|,
                            // with |U| = |G| |g| |G|ᵀ and |V| = |Bᵀ| |d| |B|.
                            let mut sum = bias[o] as f64;
                            let mut size = [0.0f64; 36];
                            for i in 0..ins {
                                let g: Vec<f64> =
                                    (0..9).map(|rs| wt[(o * ins + i) * 9 + rs] as f64).collect();
                                for r in 0..3 {
                                    for s in 0..3 {
                                        sum += at(n, i, (oy + r) as isize, (ox + s) as isize)
                                            * g[r * 3 + s];
                                    }
                                }
                                let d: Vec<f64> = (0..36)
                                    .map(|q| {
                                        at(
                                            n,
                                            i,
                                            (4 * ty + q / 6) as isize,
                                            (4 * tx + q % 6) as isize,
                                        )
                                        .abs()
                                    })
                                    .collect();
                                let gabs: Vec<f64> = g.iter().map(|v| v.abs()).collect();
                                let abs = |m: [[f64; 6]; 6]| m.map(|row| row.map(f64::abs));
                                for (p, sz) in size.iter_mut().enumerate() {
                                    let uabs = sandwich(
                                        &G.map(|row| row.map(f64::abs)),
                                        &gabs,
                                        p / 6,
                                        p % 6,
                                    );
                                    let vabs = sandwich(&abs(BT), &d, p / 6, p % 6);
                                    *sz += uabs * vabs;
                                }
                            }
                            let total: f64 = (0..36)
                                .map(|p| AT[a][p / 6].abs() * AT[b][p % 6].abs() * size[p])
                                .sum::<f64>()
                                + (bias[o] as f64).abs();
                            let want = if relu { sum.max(0.0) } else { sum };
                            let got = out[((n * outs + o) * ho + oy) * wo + ox] as f64;
                            // Each term passes through at most ins + 20 f32
                            // roundings (the filter's transform rounds once,
                            // the input's 4 sums of 2-3 terms twice over, the
                            // product `ins`, the output's 4 sums twice over, and
                            // the bias), each off by 2⁻²⁴ of a partial sum no
                            // larger than the terms' total size.
                            let bound = (ins + 20) as f64 * f64::powi(2.0, -24) * total;
                            assert!(
                                (got - want).abs() <= bound,
                                "case {case}: out[{n}, {o}, {oy}, {ox}] = {got}, want {want}, bound {bound:e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
