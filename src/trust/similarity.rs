//! How alike two saliency maps are: the similarity measures behind the sanity checks of
//! Adebayo et al. (2018, "Sanity Checks for Saliency Maps"), which compare the map of a trained
//! model with the map after its weights were randomised. Besides Spearman's rank correlation
//! (in `trust::sanity`) the paper reports SSIM; top-k intersection is the measure of
//! Ghorbani et al. (2019, "Interpretation of Neural Networks is Fragile").
//!
//! # SSIM (Wang et al. 2004, with scikit-image's defaults)
//! For every 7x7 window lying wholly inside the image, with `x`, `y` the window's 49 values of
//! the two maps and N = 49:
//!
//! ```text
//! μx = Σx / N                  μy = Σy / N
//! σx² = (Σx² / N − μx²) · N/(N−1)      σy² likewise
//! σxy = (Σxy / N − μx μy) · N/(N−1)
//! S = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
//! C1 = (0.01 L)², C2 = (0.03 L)², L = data_range
//! ssim = mean of S over the (height − 6)(width − 6) windows
//! ```
//!
//! This is what `skimage.metrics.structural_similarity(a, b, data_range=L)` computes with its
//! defaults (read in scikit-image's `skimage/metrics/_structural_similarity.py`): the local
//! means come from `scipy.ndimage.uniform_filter(size=7)` (a plain 7x7 mean),
//! `use_sample_covariance=True` gives the factor N/(N−1), `K1 = 0.01`, `K2 = 0.03`, and without
//! `padding_mode` the SSIM image is cropped by (7 − 1)/2 = 3 pixels on each side before the mean,
//! which keeps exactly the positions whose window lies inside the image (so the filter's
//! 'reflect' border never counts). One difference: scikit-image computes in the input's float
//! type (float32 for float32 maps); here everything is f64, which matches scikit-image given
//! float64 copies of the maps.
//!
//! # Top-k intersection
//! |top_k(a) ∩ top_k(b)| / k, with top_k the indices of the k largest values.

/// Side of the square SSIM window (scikit-image's default `win_size`).
pub const SSIM_WINDOW: usize = 7;
/// SSIM's constant for the luminance term: C1 = (K1 · data_range)².
pub const SSIM_K1: f64 = 0.01;
/// SSIM's constant for the contrast-structure term: C2 = (K2 · data_range)².
pub const SSIM_K2: f64 = 0.03;

/// Mean structural similarity of two maps `[height, width]` (row-major), as scikit-image's
/// `structural_similarity` computes it with its defaults: 7x7 uniform window, K1 = 0.01,
/// K2 = 0.03, sample covariance (N/(N−1)), C1 = (K1 L)², C2 = (K2 L)² with L = `data_range`,
/// and the mean taken over the positions whose window lies wholly inside the image
/// (scikit-image crops (7 − 1)/2 = 3 px at each border). See the module doc for the formula.
///
/// 1 for identical maps; near 0 for unrelated ones; negative for anti-correlated ones.
/// `data_range` is the span of possible values (1 for maps normalised to [0, 1]); it only
/// sets C1 and C2, which keep flat windows from dividing by zero.
///
/// Returns NaN if the image is smaller than 7x7 in either side, or if `a` or `b` is not
/// `height * width` long.
pub fn ssim(a: &[f32], b: &[f32], height: usize, width: usize, data_range: f64) -> f64 {
    let len = height.checked_mul(width);
    if height < SSIM_WINDOW || width < SSIM_WINDOW || len != Some(a.len()) || a.len() != b.len() {
        return f64::NAN;
    }
    let a: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    let products =
        |f: fn(f64, f64) -> f64| -> Vec<f64> { a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect() };

    // The five window sums SSIM needs, one per window position: [height - 6, width - 6].
    let sum_x = window_sums(&a, height, width, SSIM_WINDOW);
    let sum_y = window_sums(&b, height, width, SSIM_WINDOW);
    let sum_xx = window_sums(&products(|x, _| x * x), height, width, SSIM_WINDOW);
    let sum_yy = window_sums(&products(|_, y| y * y), height, width, SSIM_WINDOW);
    let sum_xy = window_sums(&products(|x, y| x * y), height, width, SSIM_WINDOW);

    let n = (SSIM_WINDOW * SSIM_WINDOW) as f64;
    let sample = n / (n - 1.0);
    let c1 = (SSIM_K1 * data_range).powi(2);
    let c2 = (SSIM_K2 * data_range).powi(2);

    let mut total = 0.0;
    for i in 0..sum_x.len() {
        // Window means, then the formula term by term as scikit-image writes it.
        let (ux, uy) = (sum_x[i] / n, sum_y[i] / n);
        let (uxx, uyy, uxy) = (sum_xx[i] / n, sum_yy[i] / n, sum_xy[i] / n);
        let vx = sample * (uxx - ux * ux);
        let vy = sample * (uyy - uy * uy);
        let vxy = sample * (uxy - ux * uy);
        let numerator = (2.0 * ux * uy + c1) * (2.0 * vxy + c2);
        let denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2);
        total += numerator / denominator;
    }
    total / sum_x.len() as f64
}

/// Sums of `values` (`[height, width]`) over every `window`x`window` square lying inside the
/// image: `[height - window + 1, width - window + 1]`, row-major.
///
/// Summed along rows, then along columns, so each sum adds only `window`² numbers (no running
/// totals over the whole image whose differences would lose precision).
fn window_sums(values: &[f64], height: usize, width: usize, window: usize) -> Vec<f64> {
    let out_w = width - window + 1;
    let out_h = height - window + 1;
    // Horizontal pass: [height, out_w].
    let mut rows = Vec::with_capacity(height * out_w);
    for row in values.chunks_exact(width) {
        rows.extend(row.windows(window).map(|w| w.iter().sum::<f64>()));
    }
    // Vertical pass: [out_h, out_w].
    let mut sums = vec![0.0; out_h * out_w];
    for r in 0..out_h {
        let out = &mut sums[r * out_w..(r + 1) * out_w];
        for source in rows[r * out_w..].chunks_exact(out_w).take(window) {
            for (o, s) in out.iter_mut().zip(source) {
                *o += s;
            }
        }
    }
    sums
}

/// The share of the `k` largest values of `a` that are also among the `k` largest of `b`
/// (in [0, 1]): 1 when both maps point at the same `k` pixels, whatever their order.
///
/// Ties are broken by lower index first, so the result is deterministic (a constant map's top
/// k is its first k pixels). NaN values rank below every number; −0.0 ties with 0.0.
///
/// Returns NaN if `k == 0`, `k > a.len()`, or the lengths differ.
pub fn top_k_intersection(a: &[f32], b: &[f32], k: usize) -> f64 {
    if k == 0 || k > a.len() || a.len() != b.len() {
        return f64::NAN;
    }
    let mut in_top_a = vec![false; a.len()];
    for i in top_k_indices(a, k) {
        in_top_a[i] = true;
    }
    let shared = top_k_indices(b, k)
        .into_iter()
        .filter(|&i| in_top_a[i])
        .count();
    shared as f64 / k as f64
}

/// The indices of the `k` largest values, largest first, ties by lower index first.
fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    // NaN compares as the smallest value; `partial_cmp` makes −0.0 equal to 0.0.
    let key = |i: usize| {
        if values[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            values[i]
        }
    };
    let by_rank = |&i: &usize, &j: &usize| {
        let (vi, vj) = (key(i), key(j));
        let larger_first = vj.partial_cmp(&vi).unwrap_or(std::cmp::Ordering::Equal);
        // A NaN must rank below a true −∞ too.
        let nan_last = values[i].is_nan().cmp(&values[j].is_nan());
        larger_first.then(nan_last).then(i.cmp(&j))
    };
    if k < order.len() {
        // Only the first k need to be in order; partition first so large maps stay fast.
        order.select_nth_unstable_by(k - 1, by_rank);
        order.truncate(k);
    }
    order.sort_unstable_by(by_rank);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator: 64-bit LCG (Knuth's MMIX constants), top 16 bits
    /// scaled to [0, 1). Values k / 65536 are exact in f32 and in f64.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 48) as f32 / 65536.0
        }
        fn map(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    fn close(x: f64, y: f64, tol: f64) -> bool {
        (x - y).abs() <= tol
    }

    #[test]
    fn ssim_of_a_map_with_itself_is_one() {
        let a = Lcg(1).map(20 * 30);
        assert!(close(ssim(&a, &a, 20, 30, 1.0), 1.0, 1e-12));
    }

    #[test]
    fn ssim_is_symmetric() {
        let a = Lcg(2).map(16 * 12);
        let b = Lcg(3).map(16 * 12);
        let ab = ssim(&a, &b, 16, 12, 1.0);
        let ba = ssim(&b, &a, 16, 12, 1.0);
        assert!(close(ab, ba, 1e-15), "{ab} vs {ba}");
        assert!(
            ab.abs() < 0.5,
            "independent noise should be far from 1: {ab}"
        );
    }

    /// One 7x7 window. `a` has ones in row 0, `b` in rows 0 and 1, zeros elsewhere; L = 1,
    /// so C1 = 1e-4, C2 = 9e-4. By hand, with N = 49 and N/(N−1) = 49/48:
    ///   μx = 7/49 = 1/7,  σx² = 49/48 · (1/7 − 1/49) = 6/48 = 1/8
    ///   μy = 14/49 = 2/7, σy² = 49/48 · (2/7 − 4/49) = 10/48 = 5/24
    ///   Σxy/N = 7/49 = 1/7, σxy = 49/48 · (1/7 − 2/49) = 5/48
    ///   S = (2·(1/7)(2/7) + C1)(2·5/48 + C2) / ((1/49 + 4/49 + C1)(1/8 + 5/24 + C2))
    ///     = (4/49 + C1)(5/24 + C2) / ((5/49 + C1)(1/3 + C2)) ≈ 0.5009
    #[test]
    fn ssim_of_one_window_matches_the_hand_computation() {
        let mut a = vec![0.0f32; 49];
        let mut b = vec![0.0f32; 49];
        a[..7].fill(1.0);
        b[..14].fill(1.0);
        let (c1, c2) = (1e-4, 9e-4);
        let expected =
            (4.0 / 49.0 + c1) * (5.0 / 24.0 + c2) / ((5.0 / 49.0 + c1) * (1.0 / 3.0 + c2));
        assert!(close(ssim(&a, &b, 7, 7, 1.0), expected, 1e-12));
        assert!(close(expected, 0.5009, 1e-4), "hand value {expected}");
    }

    /// Same `a`; its negation has μy = −1/7, σy² = 1/8, σxy = −1/8, so
    /// S = (C1 − 2/49)(C2 − 1/4) / ((2/49 + C1)(1/4 + C2)): nearly +1, since both the
    /// luminance and the structure terms are nearly −1.
    /// A constant map c = 0.5 has σy² = σxy = 0, so
    /// S = (2·(1/7)·0.5 + C1) · C2 / ((1/49 + 1/4 + C1)(1/8 + C2)) ≈ 0.0038.
    #[test]
    fn ssim_against_negation_and_constant_by_hand() {
        let mut a = vec![0.0f32; 49];
        a[..7].fill(1.0);
        let negated: Vec<f32> = a.iter().map(|v| -v).collect();
        let (c1, c2) = (1e-4, 9e-4);
        let expected = (c1 - 2.0 / 49.0) * (c2 - 0.25) / ((2.0 / 49.0 + c1) * (0.25 + c2));
        assert!(close(ssim(&a, &negated, 7, 7, 1.0), expected, 1e-12));

        let constant = vec![0.5f32; 49];
        let expected = (1.0 / 7.0 + c1) * c2 / ((1.0 / 49.0 + 0.25 + c1) * (0.125 + c2));
        assert!(close(ssim(&a, &constant, 7, 7, 1.0), expected, 1e-12));
        assert!(close(expected, 0.0038, 1e-4), "hand value {expected}");
    }

    /// A map whose every window has mean exactly 0, against its negation: each row repeats
    /// −3, −2, −1, 0, 1, 2, 3, so any 7 consecutive columns hold each value once. Then
    /// μx = μy = 0 and the luminance term is C1/C1 = 1; Σx² = 7 · 28 = 196 per window, so
    /// σx² = σy² = 49/48 · 196/49 = 49/12 and σxy = −49/12. With L = 6, C2 = 0.18² = 0.0324 and
    /// every window gives S = (C2 − 49/6)/(49/6 + C2) ≈ −0.9921.
    /// (With nonzero means the luminance term is negative too, and S can even be positive.)
    #[test]
    fn ssim_of_a_zero_mean_map_against_its_negation_is_near_minus_one() {
        let (h, w) = (9, 12);
        let a: Vec<f32> = (0..h * w).map(|i| (i % w % 7) as f32 - 3.0).collect();
        let negated: Vec<f32> = a.iter().map(|v| -v).collect();
        let c2 = 0.0324;
        let expected = (c2 - 49.0 / 6.0) / (49.0 / 6.0 + c2);
        assert!(close(ssim(&a, &negated, h, w, 6.0), expected, 1e-12));
        assert!(close(expected, -0.9921, 1e-4), "hand value {expected}");
    }

    /// Cropping: a 7x8 image has exactly two windows (columns 0..7 and 1..8), and the
    /// result is the mean of the two 7x7 SSIMs.
    #[test]
    fn ssim_averages_only_the_windows_inside_the_image() {
        let a = Lcg(4).map(7 * 8);
        let b = Lcg(5).map(7 * 8);
        let crop = |m: &[f32], c0: usize| -> Vec<f32> {
            m.chunks_exact(8)
                .flat_map(|row| row[c0..c0 + 7].to_vec())
                .collect()
        };
        let left = ssim(&crop(&a, 0), &crop(&b, 0), 7, 7, 1.0);
        let right = ssim(&crop(&a, 1), &crop(&b, 1), 7, 7, 1.0);
        assert!(close(ssim(&a, &b, 7, 8, 1.0), (left + right) / 2.0, 1e-14));
    }

    #[test]
    fn ssim_rejects_small_or_mismatched_images() {
        let a = vec![0.5f32; 6 * 10];
        assert!(ssim(&a, &a, 6, 10, 1.0).is_nan());
        assert!(ssim(&a, &a, 10, 6, 1.0).is_nan());
        let b = vec![0.5f32; 49];
        assert!(ssim(&b, &b[..48], 7, 7, 1.0).is_nan());
        assert!(ssim(&b, &b, 7, 8, 1.0).is_nan());
    }

    /// Reference values from scikit-image 0.26.0 (numpy 2.4.6, scipy 1.17.1), by this script,
    /// which mirrors `Lcg` above:
    ///
    /// ```text
    /// import numpy as np
    /// from skimage.metrics import structural_similarity
    /// def lcg(seed, n):
    ///     out, s = [], seed
    ///     for _ in range(n):
    ///         s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
    ///         out.append((s >> 48) / 65536.0)
    ///     return np.array(out, dtype=np.float64).reshape(28, 28)
    /// a, r = lcg(10, 784), lcg(11, 784)
    /// for x, y in [(a, r), (a, (a + r) / 2), (a, 1 - a)]:
    ///     print(repr(structural_similarity(x, y, data_range=1.0)))
    /// ```
    ///
    /// It printed -0.003925038468485667, 0.6707728793386503 and -0.9744799722927828.
    #[test]
    fn ssim_matches_scikit_image() {
        let a = Lcg(10).map(28 * 28);
        let r = Lcg(11).map(28 * 28);
        // (a + r) / 2 and 1 − a are exact in f32 for these 16-bit values.
        let half: Vec<f32> = a.iter().zip(&r).map(|(x, y)| (x + y) / 2.0).collect();
        let flipped: Vec<f32> = a.iter().map(|x| 1.0 - x).collect();
        let cases = [
            (&r, SKIMAGE_INDEPENDENT),
            (&half, SKIMAGE_HALF),
            (&flipped, SKIMAGE_FLIPPED),
        ];
        for (b, expected) in cases {
            let got = ssim(&a, b, 28, 28, 1.0);
            assert!(
                close(got, expected, 1e-9),
                "{got} vs scikit-image {expected}"
            );
        }
    }
    const SKIMAGE_INDEPENDENT: f64 = -0.003925038468485667;
    const SKIMAGE_HALF: f64 = 0.6707728793386503;
    const SKIMAGE_FLIPPED: f64 = -0.9744799722927828;

    #[test]
    fn ssim_of_224_by_224_is_fast() {
        let a = Lcg(6).map(224 * 224);
        let b = Lcg(7).map(224 * 224);
        let start = std::time::Instant::now();
        let s = ssim(&a, &b, 224, 224, 1.0);
        let elapsed = start.elapsed();
        assert!(s.is_finite());
        // Generous bound for debug builds and busy machines; release takes about a millisecond.
        assert!(elapsed.as_millis() < 200, "{elapsed:?}");
    }

    #[test]
    fn top_k_of_identical_and_disjoint_maps() {
        let a = [0.1, 0.9, 0.3, 0.7, 0.5];
        assert_eq!(top_k_intersection(&a, &a, 2), 1.0);
        // Reversed order: top 2 of `a` are indices {1, 3}, of `b` {0, 4}.
        let b = [0.9, 0.1, 0.2, 0.3, 0.8];
        assert_eq!(top_k_intersection(&a, &b, 2), 0.0);
        // Top 3: {1, 3, 4} and {0, 4, 3} share {3, 4}.
        assert!(close(top_k_intersection(&a, &b, 3), 2.0 / 3.0, 1e-15));
        // k = len: everything is shared.
        assert_eq!(top_k_intersection(&a, &b, 5), 1.0);
    }

    #[test]
    fn top_k_breaks_ties_by_lower_index() {
        // All equal: the top 2 are indices {0, 1}.
        let flat = [1.0f32; 4];
        let b = [0.0, 0.0, 5.0, 4.0];
        assert_eq!(top_k_intersection(&flat, &b, 2), 0.0);
        let c = [3.0, 2.0, 2.0, 2.0];
        // Top 2 of `c`: index 0, then the lowest of the tied 2.0s, index 1.
        assert_eq!(top_k_intersection(&flat, &c, 2), 1.0);
        // −0.0 ties with 0.0, so the lower index wins: top 1 of `d` is index 0.
        let d = [-0.0f32, 0.0];
        assert_eq!(top_k_intersection(&d, &[1.0, 0.0], 1), 1.0);
        assert_eq!(
            top_k_indices(&[2.0, 1.0, 2.0, 1.0, 2.0], 4),
            vec![0, 2, 4, 1]
        );
    }

    #[test]
    fn top_k_ranks_nan_last() {
        let a = [f32::NAN, f32::NEG_INFINITY, 0.5];
        assert_eq!(top_k_indices(&a, 3), vec![2, 1, 0]);
    }

    #[test]
    fn top_k_rejects_bad_arguments() {
        let a = [1.0f32, 2.0, 3.0];
        assert!(top_k_intersection(&a, &a, 0).is_nan());
        assert!(top_k_intersection(&a, &a, 4).is_nan());
        assert!(top_k_intersection(&a, &a[..2], 1).is_nan());
    }
}
