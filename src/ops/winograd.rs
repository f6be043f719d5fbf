//! Winograd's minimal filtering F(2×2, 3×3): a 3x3 stride-1 convolution with
//! 2.25 times fewer multiplications (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! A 2x2 block of a 3x3 correlation's output reads a 4x4 patch `d` of the
//! input. With the three small matrices below, that block is
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (2x2 = 2x4 · 4x4 · 4x2)
//!
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢ ½    ½    ½ ⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢ ½   −½    ½ ⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! 16 multiplications (the elementwise `⊙`) instead of 2·2·9 = 36. The
//! transforms only add and subtract. Summed over input channels `i`, the 16
//! elementwise products of each point `p` of the 4x4 become one matrix
//! product per point, over all tiles `t` at once:
//!
//! ```text
//! M[p][o, t] = Σᵢ U[p][o, i] · V[p][i, t]     U = G g Gᵀ (weights), V = Bᵀ d B (input)
//! ```
//!
//! and the kernel runs those 16 products, each `Cout × Cin × tiles`. For the
//! tutorial's 32 → 64 layers, with the tiles' overhang (144 outputs computed
//! for MNIST's 121), that is 1.9x fewer multiply-adds than the direct product
//! (2.2x fewer than its wide grid), for the price of the two transforms,
//! which read and write each value a few times. With 1 or 3
//! input channels the products would be too thin to pay for them, so the
//! first layers stay direct ([`applies`]).
//!
//! Outputs are rounded differently from the direct sum's, within f32
//! rounding of the same terms (the transforms' coefficients are 0, ±½, ±1).
//!
//! Only the forward runs this way. The input gradient of a valid 3x3
//! convolution is itself one (a "full" correlation of `dy`, padded by 2, with
//! the weights rotated by 180° and their channels swapped), but measured
//! 5-8% slower through these transforms than the direct product: the padding
//! makes nearly half of its tiles' inputs zeros (MNIST's 11x11 gradient
//! padded to 15x15), and `V` and `M`, 4 values per output and channel, are
//! traffic through L2 that the direct product, reading its operands in
//! place, does not have.
//!
//! The weight gradient stays direct too. Through the same transforms it is
//! `dM = A dY Aᵀ` per tile, `dU[p] = Σₜ V[p][·, t] · dM[p][t, ·]` (16 products
//! summing over the tiles of a few images) and `dW = Gᵀ dU G`: about half
//! the multiply-adds. Written that way and checked against the direct sums,
//! it was not clearly faster. Forward + weight gradient, in blocks of 30 calls
//! alternating with the direct product: MNIST's 32 → 64 layer from 4% faster
//! to 4% slower, CIFAR's 4-13% faster, and other set sizes (1, 2 or 8 images)
//! no better; alternating call by call, it was slower on both. The input
//! transform must run again for each image, `dM` is 16 rows per tile stored
//! to L2, and the two transforms together took about a quarter of the direct
//! product's time; the 16 products ran at about 100 GFLOP/s a core.
//!
//! Tiles past the output's edge (an odd `Ho` or `Wo`) read zeros and are
//! dropped when stored. The transforms are written for AVX-512, a lane per
//! tile (the tiles of one or two rows at once); without it the convolution
//! takes the direct path.

use crate::tensor::kernel::{self, matmul, Epilogue, Strided};

/// Both channel counts at least this: below it the 16 products are too thin
/// to pay for the transforms.
const MIN_CHANNELS: usize = 16;

/// The most tiles (columns of the 16 products) transformed at once: enough
/// for a few of the kernel's 48-wide panels, few enough that `V` and `M`
/// (16·(Cin + Cout)·tiles values, 885 KB for the 144 tiles of four images
/// in the 32 → 64 layer) stay in a core's L2 between the transforms and the
/// products. (Sets of 64 to 196 tiles measured within a few percent of each
/// other; one image at a time, 10-20% slower.)
const MAX_TILES: usize = 160;

/// Whether a convolution with these sizes runs through Winograd's transforms:
/// a 3x3 kernel at stride 1, many channels both ways, and AVX-512.
pub(crate) fn applies(kh: usize, kw: usize, stride: usize, cin: usize, cout: usize) -> bool {
    (kh, kw, stride) == (3, 3, 1)
        && cin >= MIN_CHANNELS
        && cout >= MIN_CHANNELS
        && kernel::available()
}

/// `G`, which takes a 3-tap filter to its 4 transformed taps.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The transformed filters, `U[p][i, o] = (G w[o, i] Gᵀ)[p]`: 16 matrices
/// `[Cin, Cout]` (the layout the kernel broadcasts `U[p][o, ·]` from, as for
/// the direct product's `Wᵀ`), from `w: [cout, cin, 3, 3]`.
pub(crate) fn filters(w: &[f32], cout: usize, cin: usize, u: &mut [f32]) {
    assert_eq!(w.len(), cout * cin * 9, "weights");
    assert_eq!(u.len(), 16 * cout * cin, "transformed weights");
    for o in 0..cout {
        for i in 0..cin {
            // f[r][s], the 3x3 filter from input channel i to output channel o.
            let f = |r: usize, s: usize| w[(o * cin + i) * 9 + r * 3 + s];
            // (G f)[a][s], then (G f Gᵀ)[a][b] = Σₛ (G f)[a][s] · G[b][s].
            let gf: [[f32; 3]; 4] = std::array::from_fn(|a| {
                std::array::from_fn(|s| (0..3).map(|r| G[a][r] * f(r, s)).sum())
            });
            for a in 0..4 {
                for b in 0..4 {
                    let v: f32 = (0..3).map(|s| gf[a][s] * G[b][s]).sum();
                    u[((a * 4 + b) * cin + i) * cout + o] = v;
                }
            }
        }
    }
}

/// A batch of images, `[images, channels, h, w]`, row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes<'a> {
    pub data: &'a [f32],
    pub h: usize,
    pub w: usize,
}

/// Where the tiles lie: the output is `ho × wo`, read from the input
/// `pad_top` rows and `pad_left` columns before its corner (zeros there),
/// in `th × tw` tiles of 2x2.
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
            th: ho.div_ceil(2),
            tw: wo.div_ceil(2),
        }
    }

    /// Images per set of 16 products: as many as have at most
    /// [`MAX_TILES`] tiles in all, and at least one.
    pub fn images_per_product(&self) -> usize {
        (MAX_TILES / (self.th * self.tw).max(1)).max(1)
    }
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
    assert!(x.data.len() >= images * ins * x.h * x.w, "input too short");
    assert_eq!(u.len(), 16 * ins * outs, "transformed weights");
    assert!(out.len() >= images * outs * t.ho * t.wo, "output too short");
    assert!(bias.is_none_or(|b| b.len() >= outs), "bias too short");
    assert!(t.th * 2 >= t.ho && t.tw * 2 >= t.wo, "tiling {t:?}");
    let per_image = t.th * t.tw;
    let tiles = images * per_image;
    if tiles == 0 || outs == 0 {
        return;
    }
    SCRATCH.with_borrow_mut(|s| {
        let v = sized(&mut s.v, 16 * ins * tiles);
        let m = sized(&mut s.m, 16 * outs * tiles);

        // V[p][i, t] = (Bᵀ d B)[p] for each tile t's 4x4 patch d of plane i.
        for n in 0..images {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is available (asserted); every input row read
            // lies in `x.data` (asserted; lanes outside a row are masked off),
            // and V has room for 16 points × ins channels × tiles.
            unsafe {
                avx512::input_tiles(x, n, ins, t, v.as_mut_ptr(), tiles, n * per_image);
            }
        }
        // M[p] = U[p] · V[p]: [outs, ins] · [ins, tiles], one product per
        // point. V and M keep a channel's 16 points together (`V[i][p][t]`,
        // `M[o][p][t]`), so that the transforms read and write one block per
        // channel; the products step over the other points' rows.
        for p in 0..16 {
            let up = Strided {
                data: &u[p * ins * outs..][..ins * outs],
                rs: 1,
                cs: outs,
            };
            let vp = Strided {
                data: &v[p * tiles..],
                rs: 16 * tiles,
                cs: 1,
            };
            let mp = &mut m[p * tiles..];
            matmul(outs, tiles, ins, up, vp, mp, 16 * tiles, Epilogue::STORE);
        }
        // out = Aᵀ M A per tile, plus the bias, ReLU'd.
        for n in 0..images {
            let dst = &mut out[n * outs * t.ho * t.wo..][..outs * t.ho * t.wo];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is available; M holds 16 points × outs × tiles,
            // `dst` one image's outputs, and the bias `outs` values (asserted).
            unsafe {
                avx512::output_tiles(m.as_ptr(), tiles, n * per_image, outs, t, bias, relu, dst);
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Planes, Tiling};
    use crate::tensor::kernel::lanes;

    /// Tiles of a row transformed at once when a row's patches are wider than
    /// one vector: 15, whose patches span 32 columns.
    const ROW_TILES: usize = 15;

    /// Point `p` of tile `t0 + ty·tw + tx` of each of the `ins` planes of
    /// image `n`, into `V[i][p][t]` (rows of `tiles` values).
    ///
    /// The patches of a row of tiles are loaded as 4 rows of a pair of
    /// vectors `(lo, hi)` (zeros outside the image), `Bᵀ d` is taken down
    /// the rows, and `(Bᵀ d) B` across them: tile `tx` reads columns
    /// `2tx..2tx + 4`, so picking the even and odd columns (and those one
    /// further on) lines up each of the 4 outputs of every tile in a vector.
    /// When a row's patches fit one vector (`tw ≤ 7`), `hi` holds the next
    /// row of tiles and the picks take both rows' tiles; otherwise `hi` holds
    /// the 16 columns after `lo`'s, for 15 tiles of one row.
    ///
    /// # Safety
    /// AVX-512F, `x` fits `n + 1` images of `ins` planes, and `v` has room for
    /// `16 · ins · tiles` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_tiles(
        x: Planes<'_>,
        n: usize,
        ins: usize,
        t: Tiling,
        v: *mut f32,
        tiles: usize,
        t0: usize,
    ) {
        let paired = 2 * t.tw + 2 <= 16;
        // Rows of tiles per step, hi's offset from lo in rows and columns,
        // and tiles of a row per step.
        let (row_step, hi_rows, hi_cols, row_tiles) = match paired {
            true => (2, 2, 0, t.tw),
            false => (1, 0, 16, ROW_TILES),
        };
        // Lane l's first column (of 32: lo's 16, then hi's 16).
        let first: [i32; 16] = std::array::from_fn(|l| match paired {
            true if l >= t.tw => (16 + 2 * (l - t.tw)) as i32,
            _ => 2 * l as i32,
        });
        let first = _mm512_loadu_si512(first.as_ptr().cast());
        let pick = |shift: i32| {
            _mm512_min_epi32(
                _mm512_add_epi32(first, _mm512_set1_epi32(shift)),
                _mm512_set1_epi32(31),
            )
        };
        let (c0, c1, c2, c3) = (pick(0), pick(1), pick(2), pick(3));
        let image = x.data.as_ptr().add(n * ins * x.h * x.w);
        for i in 0..ins {
            let plane = image.add(i * x.h * x.w);
            for ty in (0..t.th).step_by(row_step) {
                for tx0 in (0..t.tw).step_by(row_tiles) {
                    // Lane l of lo holds input column col0 + l.
                    let col0 = (2 * tx0) as isize - t.pad_left as isize;
                    let inside = |from: isize| {
                        let lo = (-from).clamp(0, 16) as u32;
                        let hi = (x.w as isize - from).clamp(0, 16) as u32;
                        (lanes(hi as usize) & !lanes(lo as usize)) as __mmask16
                    };
                    let (mlo, mhi) = (inside(col0), inside(col0 + hi_cols as isize));
                    // Row `row` of the padded plane from column `col` on.
                    macro_rules! load {
                        ($row:expr, $col:expr, $mask:expr) => {{
                            let y = $row - t.pad_top as isize;
                            if y < 0 || y >= x.h as isize {
                                _mm512_setzero_ps()
                            } else {
                                let p = plane.wrapping_offset(y * x.w as isize + $col);
                                _mm512_maskz_loadu_ps($mask, p)
                            }
                        }};
                    }
                    // d[r]: patch row r as (lo, hi).
                    let mut d = [(_mm512_setzero_ps(), _mm512_setzero_ps()); 4];
                    for (r, dr) in d.iter_mut().enumerate() {
                        let row = (2 * ty + r) as isize;
                        *dr = (
                            load!(row, col0, mlo),
                            load!(row + hi_rows, col0 + hi_cols as isize, mhi),
                        );
                    }
                    let sub = |a: (__m512, __m512), b: (__m512, __m512)| {
                        (_mm512_sub_ps(a.0, b.0), _mm512_sub_ps(a.1, b.1))
                    };
                    let add = |a: (__m512, __m512), b: (__m512, __m512)| {
                        (_mm512_add_ps(a.0, b.0), _mm512_add_ps(a.1, b.1))
                    };
                    // Bᵀ d, row by row.
                    let bd = [
                        sub(d[0], d[2]),
                        add(d[1], d[2]),
                        sub(d[2], d[1]),
                        sub(d[1], d[3]),
                    ];
                    let count = match paired {
                        true => t.tw * (t.th - ty).min(2),
                        false => (t.tw - tx0).min(ROW_TILES),
                    };
                    let mask = lanes(count);
                    let at = t0 + ty * t.tw + tx0;
                    for (r, &(lo, hi)) in bd.iter().enumerate() {
                        // Columns 2tx, 2tx + 1, 2tx + 2, 2tx + 3 of each tile.
                        let e0 = _mm512_permutex2var_ps(lo, c0, hi);
                        let e1 = _mm512_permutex2var_ps(lo, c1, hi);
                        let e2 = _mm512_permutex2var_ps(lo, c2, hi);
                        let e3 = _mm512_permutex2var_ps(lo, c3, hi);
                        // (Bᵀ d) B: the same combinations, across.
                        let row = [
                            _mm512_sub_ps(e0, e2),
                            _mm512_add_ps(e1, e2),
                            _mm512_sub_ps(e2, e1),
                            _mm512_sub_ps(e1, e3),
                        ];
                        for (c, val) in row.into_iter().enumerate() {
                            let p = r * 4 + c;
                            _mm512_mask_storeu_ps(v.add((i * 16 + p) * tiles + at), mask, val);
                        }
                    }
                }
            }
        }
    }

    /// Tiles of a row finished at once when two rows do not fit a vector:
    /// 8, whose outputs fill 16 lanes.
    const OUT_TILES: usize = 8;

    /// One image's `out[o, y, x]` from its tiles `t0 + ty·tw + tx` in
    /// `M[o][p][t]` (rows of `tiles` values): `Aᵀ M A` on up to 16 tiles at
    /// once (a lane per tile: two rows of tiles when `tw ≤ 8`), plus the bias, then ReLU'd as `max(floor, ·)` (floor 0 with
    /// ReLU, −∞ without, so a NaN stays visible). A row of tiles' two output
    /// columns are interleaved into adjacent columns as they are stored; a
    /// tile past `ho` or `wo` is cut.
    ///
    /// # Safety
    /// AVX-512F, `m` holds `16 · outs · tiles` values and `out`
    /// `outs · ho · wo`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output_tiles(
        m: *const f32,
        tiles: usize,
        t0: usize,
        outs: usize,
        t: Tiling,
        bias: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let paired = t.tw <= 8;
        let (row_step, row_tiles) = match paired {
            true => (2, t.tw),
            false => (1, OUT_TILES),
        };
        // Lanes 2l and 2l + 1 take tile `from + l`'s two columns.
        let weave = |from: usize| {
            let idx: [i32; 16] =
                std::array::from_fn(|l| (from + l / 2 + 16 * (l % 2)).min(31) as i32);
            _mm512_loadu_si512(idx.as_ptr().cast())
        };
        // The first row of tiles in a step, and the second (if paired).
        let weaves = [weave(0), weave(t.tw)];
        let floor = _mm512_set1_ps(if relu { 0.0 } else { f32::NEG_INFINITY });
        let dst = out.as_mut_ptr();
        for o in 0..outs {
            let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[o]));
            for ty in (0..t.th).step_by(row_step) {
                for tx0 in (0..t.tw).step_by(row_tiles) {
                    let count = match paired {
                        true => t.tw * (t.th - ty).min(2),
                        false => (t.tw - tx0).min(OUT_TILES),
                    };
                    let mask = lanes(count);
                    let at = t0 + ty * t.tw + tx0;
                    let mp: [__m512; 16] = std::array::from_fn(|p| {
                        _mm512_maskz_loadu_ps(mask, m.add((o * 16 + p) * tiles + at))
                    });
                    // M A, row by row: s[r] = (m₀ + m₁ + m₂, m₁ − m₂ − m₃).
                    let s: [(__m512, __m512); 4] = std::array::from_fn(|r| {
                        let [m0, m1, m2, m3] =
                            [mp[4 * r], mp[4 * r + 1], mp[4 * r + 2], mp[4 * r + 3]];
                        (
                            _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
                            _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
                        )
                    });
                    // Aᵀ (M A): the same down the rows; then bias and floor.
                    let fin = |v: __m512| _mm512_max_ps(floor, _mm512_add_ps(v, b));
                    let y0 = (
                        fin(_mm512_add_ps(_mm512_add_ps(s[0].0, s[1].0), s[2].0)),
                        fin(_mm512_add_ps(_mm512_add_ps(s[0].1, s[1].1), s[2].1)),
                    );
                    let y1 = (
                        fin(_mm512_sub_ps(_mm512_sub_ps(s[1].0, s[2].0), s[3].0)),
                        fin(_mm512_sub_ps(_mm512_sub_ps(s[1].1, s[2].1), s[3].1)),
                    );
                    let x0 = 2 * tx0;
                    let keep = lanes(t.wo - x0);
                    let rows = if paired { (t.th - ty).min(2) } else { 1 };
                    for (k, &weave) in weaves[..rows].iter().enumerate() {
                        for (dy, (left, right)) in [y0, y1].into_iter().enumerate() {
                            let y = 2 * (ty + k) + dy;
                            if y < t.ho {
                                let row = _mm512_permutex2var_ps(left, weave, right);
                                let p = dst.add((o * t.ho + y) * t.wo + x0);
                                _mm512_mask_storeu_ps(p, keep, row);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test values in [−1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
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

    /// The algebra on its own, in f64: for one 4x4 patch and one filter,
    /// `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` is the 2x2 correlation.
    #[test]
    fn one_tile_is_the_correlation() {
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let d: Vec<f64> = values(16, 1).iter().map(|&v| v as f64).collect();
        let g: Vec<f64> = values(9, 2).iter().map(|&v| v as f64).collect();
        let gm = |a: usize, r: usize| G[a][r] as f64;
        // U = G g Gᵀ and V = Bᵀ d B.
        let u = |a: usize, b: usize| -> f64 {
            (0..3)
                .flat_map(|r| (0..3).map(move |s| (r, s)))
                .map(|(r, s)| gm(a, r) * g[r * 3 + s] * gm(b, s))
                .sum()
        };
        let v = |a: usize, b: usize| -> f64 {
            (0..4)
                .flat_map(|r| (0..4).map(move |s| (r, s)))
                .map(|(r, s)| bt[a][r] * d[r * 4 + s] * bt[b][s])
                .sum()
        };
        for y in 0..2 {
            for x in 0..2 {
                let fast: f64 = (0..4)
                    .flat_map(|a| (0..4).map(move |b| (a, b)))
                    .map(|(a, b)| at[y][a] * u(a, b) * v(a, b) * at[x][b])
                    .sum();
                let direct: f64 = (0..3)
                    .flat_map(|r| (0..3).map(move |s| (r, s)))
                    .map(|(r, s)| d[(y + r) * 4 + x + s] * g[r * 3 + s])
                    .sum();
                assert!(
                    (fast - direct).abs() < 1e-12,
                    "({y}, {x}): {fast} vs {direct}"
                );
            }
        }
    }

    /// `G g Gᵀ` by hand for g = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]: the corners
    /// are g's corners, `U[0][1] = (1 + 2 + 3)/2`, `U[1][0] = (1 + 4 + 7)/2`,
    /// `U[1][1] = Σ g / 4` and `U[2][2] = (1 − 2 + 3 − 4 + 5 − 6 + 7 − 8 + 9)/4`.
    #[test]
    fn filters_by_hand() {
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut u = vec![0.0; 16];
        filters(&g, 1, 1, &mut u);
        let want = [
            (0, 1.0),
            (3, 3.0),
            (12, 7.0),
            (15, 9.0),
            (1, 3.0),
            (4, 6.0),
            (5, 11.25),
            (10, 1.25),
        ];
        for (p, v) in want {
            assert_eq!(u[p], v, "point {p}");
        }
    }

    /// [`conv3x3`] against the direct sums in f64, over the cases its
    /// transforms treat differently: paddings 0, 1 and 2; odd and even output
    /// sides (a last tile cut); rows of tiles that share a vector (`tw ≤ 7`),
    /// that fill one (`tw = 8`), and that take two or more (`tw` up to 20);
    /// inputs smaller than the kernel; several images.
    #[test]
    fn conv3x3_matches_direct_sums() {
        if !kernel::available() {
            // Without AVX-512 the convolution never comes here.
            assert!(!applies(3, 3, 1, 32, 64));
            return;
        }
        let cases = [
            // (images, ins, outs, h, w, pad, relu)
            (1, 1, 1, 3, 3, 0, false),
            (2, 3, 5, 13, 13, 0, true),
            (3, 4, 2, 15, 15, 0, false),
            (2, 2, 3, 11, 13, 2, false),
            (1, 3, 2, 13, 15, 1, false),
            (2, 2, 2, 7, 16, 1, true),
            (1, 2, 3, 5, 40, 1, false),
            (1, 1, 2, 6, 33, 2, false),
            (3, 2, 2, 4, 17, 0, true),
            (2, 2, 3, 1, 1, 1, false),
            (1, 3, 2, 2, 5, 1, true),
        ];
        for (case, &(images, ins, outs, h, w, pad, relu)) in cases.iter().enumerate() {
            let plane = h * w;
            let x = values(images * ins * plane, 10 + case as u64);
            let wt = values(outs * ins * 9, 20 + case as u64);
            let bias = values(outs, 30 + case as u64);
            let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let t = Tiling::new(pad, pad, ho, wo);
            let mut u = vec![0.0; 16 * ins * outs];
            filters(&wt, outs, ins, &mut u);
            let planes = Planes { data: &x, h, w };
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
            for n in 0..images {
                for o in 0..outs {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            // The direct sum and the sum of its terms' sizes.
                            let (mut sum, mut size) = (bias[o] as f64, bias[o].abs() as f64);
                            for i in 0..ins {
                                for r in 0..3 {
                                    for s in 0..3 {
                                        let (y, xx) = (
                                            (oy + r) as isize - pad as isize,
                                            (ox + s) as isize - pad as isize,
                                        );
                                        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                            continue;
                                        }
                                        let xv = x[n * ins * plane
                                            + i * plane
                                            + y as usize * w
                                            + xx as usize]
                                            as f64;
                                        let term = xv * wt[(o * ins + i) * 9 + r * 3 + s] as f64;
                                        sum += term;
                                        size += term.abs();
                                    }
                                }
                            }
                            let want = if relu { sum.max(0.0) } else { sum };
                            let got = out[((n * outs + o) * ho + oy) * wo + ox] as f64;
                            // The transforms add up to 4 terms at a time and
                            // their coefficients are 0, ±½ and ±1, so each
                            // value goes through a few dozen f32 roundings of
                            // sums at most a few times the terms' total size:
                            // 2e-6 of it (about 30 ulps) bounds the error.
                            assert!(
                                (got - want).abs() <= 2e-6 * (1.0 + size),
                                "case {case}: out[{n}, {o}, {oy}, {ox}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
