//! Fast max pooling: the 2x2 case in vector code, with or without each
//! window's winner kept. What it computes is defined by
//! [`crate::ops::pool`]'s reference: the winner of a window is its first
//! maximum in row-major order, and a NaN beats every number.
//!
//! No argmax is kept by [`forward`]: the backward finds each window's winner
//! again as the first input equal to the output, which is cheaper than
//! writing and reading one index per output. A convolution that takes the
//! pooling itself (`fast::fused`) does keep one, a byte per window (0-3),
//! since it finds it while the inputs are in registers.

use rayon::prelude::*;

use super::{kernel, Pool};
use crate::error::Result;
use crate::ops::{beats, MaxPool2dSpec};
use crate::tensor::{as_slice, expect_rank, Tensor};

/// Max-pools `x: [N, C, H, W]` into `y: [N, C, Ho, Wo]`.
pub(crate) fn forward(x: &Tensor, spec: MaxPool2dSpec, pool: &mut Pool) -> Result<Tensor> {
    forward_padded(x, spec, (0, 0, 0, 0), pool)
}

/// [`forward`] of `x` with a −∞ border `(top, left, bottom, right)`: the
/// pooling of `pad(x, −∞)`, bit for bit, without writing the padded tensor
/// (each plane is padded in a scratch buffer in the core's cache).
pub(crate) fn forward_padded(
    x: &Tensor,
    spec: MaxPool2dSpec,
    pads: (usize, usize, usize, usize),
    pool: &mut Pool,
) -> Result<Tensor> {
    let (n, c, h, w) = dims(x)?;
    let (top, left, bottom, right) = pads;
    let border = super::pad::Border {
        top,
        bottom,
        left,
        right,
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    let (ho, wo) = spec.output_size(hp, wp)?;
    let xs = as_slice(x, "max_pool2d")?;
    let mut y = pool.to_overwrite(&[n, c, ho, wo]);
    let fast = kernel::available();
    y.as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(PLANES * ho * wo)
        .zip(xs.par_chunks(PLANES * h * w))
        .for_each(|(y, x)| {
            let task = Planes {
                x,
                y,
                size: (h, w),
                border,
                spec,
            };
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `fast`: the CPU has AVX-512.
                unsafe { task.pool_avx512() };
                return;
            }
            task.pool(fast);
        });
    Ok(y)
}

/// One task of [`forward_padded`]: whole planes of `x` pooled into `y`.
struct Planes<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    /// Each input plane's height and width.
    size: (usize, usize),
    /// Its −∞ border.
    border: super::pad::Border,
    spec: MaxPool2dSpec,
}

impl Planes<'_> {
    /// The pooling, each plane padded first in a scratch buffer in the
    /// core's cache.
    #[inline(always)]
    fn pool(self, fast: bool) {
        let Planes {
            x,
            y,
            size: (h, w),
            border: b,
            spec,
        } = self;
        let (hp, wp) = (h + b.top + b.bottom, w + b.left + b.right);
        let (ho, wo) = spec.output_size(hp, wp).expect("checked by the caller");
        let (mut rows, mut padded) = (Vec::new(), Vec::new());
        for (y, x) in y.chunks_mut(ho * wo).zip(x.chunks(h * w)) {
            let x = match (b.top, b.left, b.bottom, b.right) {
                (0, 0, 0, 0) => x,
                _ => {
                    padded.resize(hp * wp, 0.0);
                    super::pad::plane(x, w, b, f32::NEG_INFINITY, &mut padded);
                    &padded[..]
                }
            };
            if spec == MaxPool2dSpec::square(2) {
                max_2x2(x, wp, wo, y, fast);
            } else {
                max_plane(x, wp, spec, y, &mut rows);
            }
        }
    }

    /// [`Planes::pool`] compiled for AVX-512, so that its loops run 16
    /// lanes wide.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pool_avx512(self) {
        self.pool(true)
    }
}

/// The best of `best` (earlier in the window) and `v` (later): `v` only if it
/// [`beats`] it, so the first maximum stays; a select the compiler vectorises.
#[inline(always)]
fn keep_first(best: f32, v: f32) -> f32 {
    if beats(v, best) {
        v
    } else {
        best
    }
}

/// Any pooling of one plane, in two passes: each window's rows first, then
/// down its columns. Scanning a window row by row picks its first maximum in
/// row-major order, and so does this: each row's first maximum, then the first
/// row whose maximum is the window's (a later row replaces it only by beating
/// it). So the values are the reference's, bit for bit (a −0 and a +0 tie
/// too). Both passes run over contiguous values; `rows` is scratch.
fn max_plane(x: &[f32], w: usize, spec: MaxPool2dSpec, y: &mut [f32], rows: &mut Vec<f32>) {
    let ((ph, pw), (sh, sw)) = (spec.pool, spec.stride);
    let wo = (w - pw) / sw + 1;
    let ho = y.len() / wo;
    let used = (ho - 1) * sh + ph;
    // rows[r·wo + ox] = the first maximum of x[r, ox·sw .. ox·sw + pw].
    rows.resize(used * wo + w, 0.0);
    let (across, run) = rows.split_at_mut(used * wo);
    for (r, across) in across.chunks_exact_mut(wo).enumerate() {
        let line = &x[r * w..][..w];
        // ResNet's 3x3 stride-2 pooling, with its window known to the
        // compiler.
        if (pw, sw) == (3, 2) {
            windows_across::<3, 2>(line, across);
            continue;
        }
        // run[k] = the first maximum of x[r, k .. k + pw], for every start k.
        let starts = w - pw + 1;
        run[..starts].copy_from_slice(&line[..starts]);
        for j in 1..pw {
            for (best, &v) in run[..starts].iter_mut().zip(&line[j..]) {
                *best = keep_first(*best, v);
            }
        }
        for (out, &best) in across.iter_mut().zip(run.iter().step_by(sw)) {
            *out = best;
        }
    }
    for (oy, y) in y.chunks_exact_mut(wo).enumerate() {
        y.copy_from_slice(&across[oy * sh * wo..][..wo]);
        for i in 1..ph {
            for (best, &v) in y.iter_mut().zip(&across[(oy * sh + i) * wo..][..wo]) {
                *best = keep_first(*best, v);
            }
        }
    }
}

/// `across[ox]` = the first maximum of `line[ox·SW .. ox·SW + PW]`, with
/// the window's size and stride known to the compiler, which then
/// vectorises the strided reads: the same maxima, in the same order, as
/// `max_plane`'s runs over every start.
#[inline(always)]
fn windows_across<const PW: usize, const SW: usize>(line: &[f32], across: &mut [f32]) {
    let wo = across.len();
    let line = &line[..(wo - 1) * SW + PW];
    for (ox, out) in across.iter_mut().enumerate() {
        let window = &line[ox * SW..][..PW];
        let mut best = window[0];
        for &v in &window[1..] {
            best = keep_first(best, v);
        }
        *out = best;
    }
}

/// Planes per parallel task: enough work to be worth sending to a thread.
const PLANES: usize = 8;

fn dims(x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    expect_rank(x, 4, "max_pool2d", "input [N, C, H, W]")?;
    let &[n, c, h, w] = x.shape() else {
        unreachable!("rank checked")
    };
    Ok((n, c, h, w))
}

/// `max(a, b)`, but a NaN in either wins, so that NaN propagates.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}

/// Whether input `v` is the output `y` of its window: equal, or both NaN.
#[inline(always)]
fn is_max(v: f32, y: f32) -> bool {
    v == y || (v.is_nan() && y.is_nan())
}

/// The position in the plane of output `(oy, ox)`'s winner, given its value
/// `y`: the first input of the window, in row-major order, equal to it (or
/// NaN, for a NaN). The first maximum is the first input equal to the
/// maximum, so this is the reference's winner.
fn winner(x: &[f32], w: usize, spec: MaxPool2dSpec, (oy, ox): (usize, usize), y: f32) -> usize {
    let ((ph, pw), (sh, sw)) = (spec.pool, spec.stride);
    let corner = oy * sh * w + ox * sw;
    (0..ph)
        .flat_map(|i| (0..pw).map(move |j| corner + i * w + j))
        .find(|&at| is_max(x[at], y))
        .unwrap_or(corner)
}

/// The common 2x2, stride-2 case for one plane, one output row at a time;
/// `fast`: with AVX-512 (the caller checked that the CPU has it).
fn max_2x2(x: &[f32], w: usize, wo: usize, y: &mut [f32], fast: bool) {
    for (oy, y) in y.chunks_mut(wo).enumerate() {
        let (r0, r1) = (&x[2 * oy * w..][..2 * wo], &x[(2 * oy + 1) * w..][..2 * wo]);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: AVX-512 is available; the rows hold 2·wo values each.
            unsafe { avx512::max_row(r0, r1, y) };
            continue;
        }
        let _ = fast;
        for (y, (a, b)) in y.iter_mut().zip(r0.chunks_exact(2).zip(r1.chunks_exact(2))) {
            *y = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
        }
    }
}

/// [`max_2x2`] keeping each window's winner too: 0 top left, 1 top right,
/// 2 bottom left, 3 bottom right, the first input in row-major order equal to
/// the maximum (a NaN equal to a NaN), which is the input the backward would
/// find (see [`max_2x2_backward_winners`]).
pub(crate) fn max_2x2_winners(
    x: &[f32],
    w: usize,
    wo: usize,
    y: &mut [f32],
    winners: &mut [u8],
    fast: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && wo > 0 {
        let ho = y.len() / wo;
        assert!(
            ho == 0 || x.len() >= (2 * ho - 1) * w + 2 * wo,
            "input too short"
        );
        assert!(winners.len() >= ho * wo, "winners too short");
        assert!(2 * wo <= w, "rows of {w} hold no {wo} windows");
        // SAFETY: AVX-512 is available; the asserts bound every row read
        // and written.
        unsafe { avx512::max_plane_winners(x, w, wo, &mut y[..ho * wo], winners) };
        return;
    }
    let _ = fast;
    for (oy, (y, win)) in y.chunks_mut(wo).zip(winners.chunks_mut(wo)).enumerate() {
        let (r0, r1) = (&x[2 * oy * w..][..2 * wo], &x[(2 * oy + 1) * w..][..2 * wo]);
        let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
        for ((y, win), (a, b)) in y.iter_mut().zip(win.iter_mut()).zip(windows) {
            *y = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
            *win = [a[0], a[1], b[0]]
                .iter()
                .position(|&v| is_max(v, *y))
                .unwrap_or(3) as u8;
        }
    }
}

/// The backward of a 2x2, stride-2 pooling for one `h × w` plane: each
/// window's four inputs get `dy` at the winner and 0 elsewhere, written in one
/// pass; rows and columns no window covers (odd sizes) are zero. Row `r` of
/// `dx` starts at `r·dx_rs` (`w` for a plane of its own; a convolution's wide
/// grid is wider, and what lies between rows is left alone).
#[allow(clippy::too_many_arguments)]
pub(crate) fn max_2x2_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    h: usize,
    w: usize,
    dx: &mut [f32],
    dx_rs: usize,
    fast: bool,
) {
    let wo = w / 2;
    clear_uncovered(dx, h, w, dx_rs);
    for (oy, (y, dy)) in y.chunks(wo).zip(dy.chunks(wo)).enumerate() {
        let top = 2 * oy * w;
        let (x0, x1) = (&x[top..top + 2 * wo], &x[top + w..top + w + 2 * wo]);
        let (d0, d1) = dx[2 * oy * dx_rs..].split_at_mut(dx_rs);
        let (d0, d1) = (&mut d0[..2 * wo], &mut d1[..2 * wo]);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: AVX-512 is available; x0, x1, d0, d1 hold 2·wo values
            // and y, dy hold wo.
            unsafe { avx512::max_backward_row(x0, x1, y, dy, d0, d1) };
            continue;
        }
        let _ = fast;
        for ox in 0..wo {
            let (v, g) = (y[ox], dy[ox]);
            let (a, b, c) = (
                is_max(x0[2 * ox], v),
                is_max(x0[2 * ox + 1], v),
                is_max(x1[2 * ox], v),
            );
            // Row-major order: the first input equal to the max wins.
            let (wa, wb, wc) = (a, !a && b, !a && !b && c);
            let wd = !a && !b && !c;
            d0[2 * ox] = if wa { g } else { 0.0 };
            d0[2 * ox + 1] = if wb { g } else { 0.0 };
            d1[2 * ox] = if wc { g } else { 0.0 };
            d1[2 * ox + 1] = if wd { g } else { 0.0 };
        }
    }
}

/// Zeroes what no 2x2 window of an `h × w` plane covers, in its gradient
/// whose rows are `dx_rs` apart: the last column (odd `w`) and the last row
/// (odd `h`).
fn clear_uncovered(dx: &mut [f32], h: usize, w: usize, dx_rs: usize) {
    if w % 2 == 1 {
        for r in 0..h / 2 * 2 {
            dx[r * dx_rs + w - 1] = 0.0;
        }
    }
    if h % 2 == 1 {
        dx[(h - 1) * dx_rs..][..w].fill(0.0);
    }
}

/// [`max_2x2_backward`] with each window's winner given (0 top left, 1 top
/// right, 2 bottom left, 3 bottom right) instead of found from `x` and `y`.
pub(crate) fn max_2x2_backward_winners(
    winners: &[u8],
    dy: &[f32],
    h: usize,
    w: usize,
    dx: &mut [f32],
    dx_rs: usize,
    fast: bool,
) {
    let wo = w / 2;
    #[cfg(target_arch = "x86_64")]
    if fast && wo > 0 {
        let ho = dy.len() / wo;
        assert!(winners.len() >= ho * wo, "winners too short");
        assert!(w <= dx_rs, "rows of {w} values {dx_rs} apart");
        assert!(
            ho == 0 || dx.len() >= (2 * ho - 1) * dx_rs + w,
            "dx too short"
        );
        // SAFETY: AVX-512 is available; the asserts bound every row written.
        unsafe { avx512::winners_backward_plane(winners, &dy[..ho * wo], wo, dx, dx_rs) };
        clear_uncovered(dx, h, w, dx_rs);
        return;
    }
    let _ = fast;
    clear_uncovered(dx, h, w, dx_rs);
    for (oy, (win, dy)) in winners.chunks(wo).zip(dy.chunks(wo)).enumerate() {
        let (d0, d1) = dx[2 * oy * dx_rs..].split_at_mut(dx_rs);
        let (d0, d1) = (&mut d0[..2 * wo], &mut d1[..2 * wo]);
        for (ox, (&k, &g)) in win.iter().zip(dy).enumerate() {
            let at = |i: u8| if k == i { g } else { 0.0 };
            (d0[2 * ox], d0[2 * ox + 1]) = (at(0), at(1));
            (d1[2 * ox], d1[2 * ox + 1]) = (at(2), at(3));
        }
    }
}

/// The 2x2 rows with AVX-512: 16 outputs (32 inputs per row) per step forward,
/// 8 windows per step backward, with lane masks for the tails.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::fast::kernel::lanes;

    /// `max(a, b)` lane-wise, NaN where either is NaN (`vmaxps` alone returns
    /// `b` when either is).
    #[inline(always)]
    unsafe fn nan_max(a: __m512, b: __m512) -> __m512 {
        let a_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a);
        _mm512_mask_mov_ps(_mm512_max_ps(a, b), a_nan, a)
    }

    /// `y[o] = max(x0[2o], x0[2o + 1], x1[2o], x1[2o + 1])`.
    ///
    /// # Safety
    /// AVX-512F must be available; `x0` and `x1` hold at least `2·y.len()` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_row(x0: &[f32], x1: &[f32], y: &mut [f32]) {
        let wo = y.len();
        debug_assert!(x0.len() >= 2 * wo && x1.len() >= 2 * wo);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for o in (0..wo).step_by(16) {
            let n = (wo - o).min(16);
            // 2n inputs per row: the first vector's lanes, then the second's.
            let (m_lo, m_hi) = (lanes(2 * n), lanes(2 * n.saturating_sub(8)));
            let (p0, p1) = (x0.as_ptr().add(2 * o), x1.as_ptr().add(2 * o));
            let lo = nan_max(
                _mm512_maskz_loadu_ps(m_lo, p0),
                _mm512_maskz_loadu_ps(m_lo, p1),
            );
            let hi = nan_max(
                _mm512_maskz_loadu_ps(m_hi, p0.add(16)),
                _mm512_maskz_loadu_ps(m_hi, p1.add(16)),
            );
            // Column pairs: even lanes against odd lanes of the 32 maxima.
            let left = _mm512_permutex2var_ps(lo, even, hi);
            let right = _mm512_permutex2var_ps(lo, odd, hi);
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(o), lanes(n), nan_max(left, right));
        }
    }

    /// [`max_row`] for every output row of a plane, `wo` wide, whose input
    /// rows are `w` apart, with each window's winner (0-3, the first input in
    /// row-major order equal to the maximum) stored in `win`.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` holds the `2·ho` input rows (the last
    /// at least `2·wo` long), `win` at least `y.len()` values, `2·wo ≤ w`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_plane_winners(x: &[f32], w: usize, wo: usize, y: &mut [f32], win: &mut [u8]) {
        let ho = y.len() / wo;
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let at = [0, 1, 2, 3].map(|i| _mm512_set1_epi32(i));
        for oy in 0..ho {
            let (r0, r1) = (x.as_ptr().add(2 * oy * w), x.as_ptr().add((2 * oy + 1) * w));
            let (yr, wr) = (y.as_mut_ptr().add(oy * wo), win.as_mut_ptr().add(oy * wo));
            for o in (0..wo).step_by(16) {
                let n = (wo - o).min(16);
                let (m_lo, m_hi) = (lanes(2 * n), lanes(2 * n.saturating_sub(8)));
                // Window o + l's four inputs in lane l: top left, top right,
                // bottom left, bottom right.
                let (p0, p1) = (r0.add(2 * o), r1.add(2 * o));
                let [tl, tr, bl, br] =
                    [(p0, even), (p0, odd), (p1, even), (p1, odd)].map(|(p, pick)| {
                        let lo = _mm512_maskz_loadu_ps(m_lo, p);
                        let hi = _mm512_maskz_loadu_ps(m_hi, p.add(16));
                        _mm512_permutex2var_ps(lo, pick, hi)
                    });
                // max_row's order: down each column, then across.
                let max = nan_max(nan_max(tl, bl), nan_max(tr, br));
                // Where an input equals the maximum; a NaN maximum (rare) is
                // matched by the NaNs among the inputs.
                let max_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(max, max);
                let hits = |v: __m512| {
                    let equal = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, max);
                    match max_nan {
                        0 => equal,
                        _ => equal | (_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) & max_nan),
                    }
                };
                // Later inputs first, so that the first hit is written last.
                let mut k = at[3];
                for (v, i) in [(bl, 2), (tr, 1), (tl, 0)] {
                    k = _mm512_mask_mov_epi32(k, hits(v), at[i]);
                }
                _mm512_mask_storeu_ps(yr.add(o), lanes(n), max);
                _mm512_mask_cvtepi32_storeu_epi8(wr.add(o).cast(), lanes(n), k);
            }
        }
    }

    /// The backward of a plane's windows from their winners, `wo` windows to
    /// a row: lane `2i + c` of an output row's top input row takes `dy[i]`
    /// where window `i`'s winner is `c`, of its bottom row where it is `2 + c`.
    /// Into `dx` rows `dx_rs` apart (the first `2·wo` values of each).
    ///
    /// # Safety
    /// AVX-512F must be available; `win` holds at least `dy.len()` values and
    /// `dx` the `2·ho` rows.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn winners_backward_plane(
        win: &[u8],
        dy: &[f32],
        wo: usize,
        dx: &mut [f32],
        dx_rs: usize,
    ) {
        let ho = dy.len() / wo;
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        let top = _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);
        let bottom = _mm512_add_epi32(top, _mm512_set1_epi32(2));
        for oy in 0..ho {
            let d0 = dx.as_mut_ptr().add(2 * oy * dx_rs);
            let d1 = d0.add(dx_rs);
            for o in (0..wo).step_by(8) {
                let (at, n) = (oy * wo + o, (wo - o).min(8));
                let (m8, m16) = (lanes(n), lanes(2 * n));
                let g = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(m8, dy.as_ptr().add(at)));
                // 8 winners in one load where the plane has them (the lanes
                // past n are never stored). At its end they are gathered in a
                // register: through a buffer on the stack, the 8-byte load
                // would stall on store forwarding from the byte stores before
                // it.
                let bytes = match at + 8 <= win.len() {
                    true => win.as_ptr().add(at).cast::<u64>().read_unaligned(),
                    false => win[at..at + n]
                        .iter()
                        .rev()
                        .fold(0u64, |acc, &b| (acc << 8) | b as u64),
                };
                let k = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(bytes as i64));
                let k = _mm512_permutexvar_epi32(dup, k);
                let at0 = _mm512_cmpeq_epi32_mask(k, top);
                let at1 = _mm512_cmpeq_epi32_mask(k, bottom);
                _mm512_mask_storeu_ps(d0.add(2 * o), m16, _mm512_maskz_mov_ps(at0, g));
                _mm512_mask_storeu_ps(d1.add(2 * o), m16, _mm512_maskz_mov_ps(at1, g));
            }
        }
    }

    /// One output row's backward: `d0`, `d1` (the two input rows' gradients)
    /// get `dy[o]` at the first input of window `o` equal to `y[o]`, 0 elsewhere.
    ///
    /// # Safety
    /// AVX-512F must be available; `x0`, `x1`, `d0`, `d1` hold at least
    /// `2·y.len()` values and `dy` at least `y.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_backward_row(
        x0: &[f32],
        x1: &[f32],
        y: &[f32],
        dy: &[f32],
        d0: &mut [f32],
        d1: &mut [f32],
    ) {
        let wo = y.len();
        debug_assert!(x0.len() >= 2 * wo && x1.len() >= 2 * wo && dy.len() >= wo);
        debug_assert!(d0.len() >= 2 * wo && d1.len() >= 2 * wo);
        // Lane 2i and 2i + 1 both read window i.
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        // Even lanes are left columns, odd lanes right columns.
        const LEFT: u16 = 0x5555;
        // The first set lane of each pair, left before right.
        let first = |e: u16| {
            let l = e & LEFT;
            l | (e & !LEFT & !(l << 1))
        };
        for o in (0..wo).step_by(8) {
            let n = (wo - o).min(8);
            let (m8, m16) = (lanes(n), lanes(2 * n));
            let yv = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(m8, y.as_ptr().add(o)));
            let g = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(m8, dy.as_ptr().add(o)));
            let y_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(yv, yv);
            // Where an input is its window's max: equal, or both NaN.
            let hits = |x: __m512| {
                _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, yv)
                    | (_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x) & y_nan)
            };
            let a = _mm512_maskz_loadu_ps(m16, x0.as_ptr().add(2 * o));
            let b = _mm512_maskz_loadu_ps(m16, x1.as_ptr().add(2 * o));
            // Row-major order: the top row's first hit wins; the bottom row
            // only where the top row has none.
            let top = first(hits(a));
            let taken = (top | (top >> 1)) & LEFT;
            let bottom = first(hits(b) & !(taken | (taken << 1)));
            _mm512_mask_storeu_ps(d0.as_mut_ptr().add(2 * o), m16, _mm512_maskz_mov_ps(top, g));
            _mm512_mask_storeu_ps(
                d1.as_mut_ptr().add(2 * o),
                m16,
                _mm512_maskz_mov_ps(bottom, g),
            );
        }
    }
}

/// The backward of [`forward`]: `dy` to each window's winner, found again
/// as the first input equal to the output, or read from `winners` (a byte per
/// window, kept by a 2x2 pooling that a convolution took: see `fast::fused`).
pub(crate) fn backward(
    spec: MaxPool2dSpec,
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    pool: &mut Pool,
) -> Tensor {
    let x_shape = x.shape();
    let (h, w) = (x_shape[2], x_shape[3]);
    let (ho, wo) = (dy.shape()[2], dy.shape()[3]);
    let (plane_in, plane_out) = (h * w, ho * wo);
    let xs = x.as_slice().expect("checked in forward");
    let ys = y.as_slice().expect("values are contiguous");
    let dys = dy.as_slice().expect("gradients are contiguous");
    let fast = kernel::available();
    // Each group of planes is cleared and filled by one task, in cache.
    let mut dx = pool.to_overwrite(x_shape);
    dx.as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(PLANES * plane_in)
        .zip(xs.par_chunks(PLANES * plane_in))
        .zip(ys.par_chunks(PLANES * plane_out))
        .zip(dys.par_chunks(PLANES * plane_out))
        .for_each(|(((dx, x), y), dy)| {
            let planes = dx
                .chunks_mut(plane_in)
                .zip(x.chunks(plane_in))
                .zip(y.chunks(plane_out).zip(dy.chunks(plane_out)));
            for ((dx, x), (y, dy)) in planes {
                if spec == MaxPool2dSpec::square(2) {
                    max_2x2_backward(x, y, dy, h, w, dx, w, fast);
                    continue;
                }
                // Overlapping windows: an input that wins several sums them.
                dx.fill(0.0);
                for (o, (&g, &y)) in dy.iter().zip(y).enumerate() {
                    dx[winner(x, w, spec, (o / wo, o % wo), y)] += g;
                }
            }
        });
    dx
}

/// The backward of a 2x2 pooling from its winners (see
/// [`max_2x2_backward_winners`]), plane by plane: `dx` of shape `x_shape`.
pub(crate) fn backward_from_winners(
    x_shape: &[usize],
    winners: &[u8],
    dy: &Tensor,
    pool: &mut Pool,
) -> Tensor {
    let (h, w) = (x_shape[2], x_shape[3]);
    let plane_in = h * w;
    let plane_out = dy.shape()[2] * dy.shape()[3];
    let dys = dy.as_slice().expect("gradients are contiguous");
    let fast = kernel::available();
    let mut dx = pool.to_overwrite(x_shape);
    dx.as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(PLANES * plane_in)
        .zip(winners.par_chunks(PLANES * plane_out))
        .zip(dys.par_chunks(PLANES * plane_out))
        .for_each(|((dx, win), dy)| {
            let planes = dx
                .chunks_mut(plane_in)
                .zip(win.chunks(plane_out).zip(dy.chunks(plane_out)));
            for (dx, (win, dy)) in planes {
                max_2x2_backward_winners(win, dy, h, w, dx, w, fast);
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{max_pool2d_reference, max_pool2d_reference_backward};

    /// The reference's maxima and winners (positions in the plane) for one
    /// `h × w` plane.
    fn reference(x: &[f32], h: usize, w: usize, spec: MaxPool2dSpec) -> (Vec<f32>, Vec<usize>) {
        let x = Tensor::from_shape_vec(vec![1, 1, h, w], x.to_vec()).unwrap();
        let (y, winners) = max_pool2d_reference(&x, spec).unwrap();
        (y.iter().copied().collect(), winners)
    }

    /// Any window and stride: the two-pass maxima are the reference's bit for
    /// bit (ties, signed zeros, NaNs, −∞ as a padded border has), and the
    /// backward sends each gradient to the reference's winner.
    #[test]
    fn general_pooling_matches_the_reference() {
        let palette = [
            0.0,
            -0.0,
            1.0,
            2.0,
            f32::NAN,
            1.0,
            2.0,
            f32::NEG_INFINITY,
            0.5,
        ];
        let specs = [
            ((3, 3), (2, 2)),
            ((3, 3), (1, 1)),
            ((2, 3), (1, 2)),
            ((3, 2), (3, 1)),
        ];
        for (pool, stride) in specs {
            let spec = MaxPool2dSpec { pool, stride };
            for (h, w) in (3..=40).map(|w| (3 + w % 6, w)) {
                let x: Vec<f32> = (0..2 * h * w)
                    .map(|i| palette[(i * 7 + i / 5) % 9])
                    .collect();
                let (ho, wo) = spec.output_size(h, w).unwrap();
                let xt = Tensor::from_shape_vec(vec![1, 2, h, w], x.clone()).unwrap();
                let y = forward(&xt, spec, &mut Pool::new()).unwrap();
                let dy: Vec<f32> = (0..2 * ho * wo).map(|i| i as f32 + 1.0).collect();
                let dyt = Tensor::from_shape_vec(vec![1, 2, ho, wo], dy).unwrap();
                let dx = backward(spec, &xt, &y, &dyt, &mut Pool::new());
                let (want_y, winners) = max_pool2d_reference(&xt, spec).unwrap();
                let want_dx = max_pool2d_reference_backward(xt.shape(), &winners, &dyt);
                let at = format!("{pool:?}/{stride:?} on {h}x{w}");
                let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want_y), "{at}");
                assert_eq!(dx, want_dx, "{at}");
            }
        }
    }

    /// A −∞ border taken plane by plane is the pooling of the padded tensor,
    /// bit for bit (ties, signed zeros, NaNs, −∞ inside), for every border
    /// up to 2 on each side, 3x3 stride 2 and 2x2 windows.
    #[test]
    fn a_padded_pooling_is_the_pooling_of_the_padded_planes() {
        use crate::ops::pad_forward;
        let palette = [0.0, -0.0, 1.0, f32::NAN, 2.0, f32::NEG_INFINITY, 2.0, 0.5];
        let (h, w) = (7, 9);
        let x: Vec<f32> = (0..3 * h * w)
            .map(|i| palette[(i * 5 + i / 7) % 8])
            .collect();
        let xt = Tensor::from_shape_vec(vec![1, 3, h, w], x).unwrap();
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for spec in [
            MaxPool2dSpec::square(2),
            MaxPool2dSpec {
                pool: (3, 3),
                stride: (2, 2),
            },
        ] {
            for pads in (0..81).map(|i| (i % 3, i / 3 % 3, i / 9 % 3, i / 27)) {
                let (t, l, b, r) = pads;
                let border = [(0, 0), (0, 0), (t, b), (l, r)];
                let padded = pad_forward(&xt, &border, f32::NEG_INFINITY).unwrap();
                let want = forward(&padded, spec, &mut Pool::new()).unwrap();
                let got = forward_padded(&xt, spec, pads, &mut Pool::new()).unwrap();
                assert_eq!(bits(&got), bits(&want), "{spec:?}, border {pads:?}");
            }
        }
    }

    /// The 2x2 fast path (vector code where the CPU has it) agrees with the
    /// reference on planes full of ties, signed zeros and NaNs, at
    /// every width up to 40 (so every tail of the vector loops): the maxima,
    /// the winners kept, and the backward (from `y` and from the winners),
    /// both into a plane and into wider rows.
    #[test]
    fn fast_2x2_agrees_with_the_reference() {
        let spec = MaxPool2dSpec::square(2);
        let palette = [0.0, -0.0, 1.0, 2.0, f32::NAN, 1.0, 2.0, 0.5];
        for (h, w) in (2..=40).map(|w| (2 + w % 5, w)) {
            let x: Vec<f32> = (0..h * w).map(|i| palette[(i * 7 + i / 3) % 8]).collect();
            let (ho, wo) = spec.output_size(h, w).unwrap();
            let dy: Vec<f32> = (0..ho * wo).map(|i| i as f32 + 1.0).collect();
            let (_, winners_ref) = reference(&x, h, w, spec);
            let mut want = vec![0.0; h * w];
            for o in 0..ho * wo {
                want[winners_ref[o]] += dy[o];
            }
            for fast in [false, kernel::available()] {
                let mut y = vec![0.0; ho * wo];
                max_2x2(&x, w, wo, &mut y, fast);
                for (o, &y) in y.iter().enumerate() {
                    let at = winners_ref[o];
                    assert!(is_max(x[at], y), "{h}x{w} output {o}, fast {fast}");
                }
                // The same maxima with each window's winner kept.
                let mut y_kept = vec![0.0; ho * wo];
                let mut winners = vec![9; ho * wo];
                max_2x2_winners(&x, w, wo, &mut y_kept, &mut winners, fast);
                for (o, (&v, &k)) in y_kept.iter().zip(&winners).enumerate() {
                    assert!(is_max(v, y[o]), "{h}x{w} output {o}, fast {fast}");
                    let at = winners_ref[o];
                    let (dy, dx) = (k as usize / 2, k as usize % 2);
                    assert_eq!((o / wo * 2 + dy) * w + o % wo * 2 + dx, at, "{h}x{w} {o}");
                }
                // Into a plane of its own, and into rows 3 wider whose gaps
                // (7.0 here) must be left alone; by comparison with `y` and
                // from the winners.
                for rs in [w, w + 3] {
                    for kept in [false, true] {
                        let mut dx = vec![7.0; (h - 1) * rs + w];
                        match kept {
                            false => max_2x2_backward(&x, &y, &dy, h, w, &mut dx, rs, fast),
                            true => {
                                max_2x2_backward_winners(&winners, &dy, h, w, &mut dx, rs, fast)
                            }
                        }
                        for (r, row) in dx.chunks(rs).enumerate() {
                            let at = format!("{h}x{w}/{rs}, fast {fast}, kept {kept}");
                            assert_eq!(row[..w], want[r * w..][..w], "{at}");
                            assert!(row[w..].iter().all(|&v| v == 7.0), "{at}: gap");
                        }
                    }
                }
            }
        }
    }
}
