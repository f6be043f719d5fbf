//! Noisy linear imputation: how ROAD (Rong et al. 2022, "A Consistent and Efficient
//! Evaluation Strategy for Attribution Methods") fills the pixels it removes, so that the
//! model sees plausible values instead of a tell-tale mask of zeros.
//!
//! # Formula
//! Every removed pixel p becomes the weighted mean of its in-image 8-neighbours N(p), with
//! weight 1/6 for the 4 direct neighbours and 1/12 for the 4 diagonal ones (they sum to 1):
//!
//! ```text
//! x_p = Σ_{q∈N(p)} w_pq x_q / Σ_{q∈N(p)} w_pq
//! ```
//!
//! Removed neighbours are unknowns too, so this is one sparse linear system over the removed
//! pixels, shared by all channels; moving the known neighbours (values v_q) to the right:
//!
//! ```text
//! (Σ_{q∈N(p)} w_pq) x_p − Σ_{q∈N(p), q removed} w_pq x_q = Σ_{q∈N(p), q known} w_pq v_q
//! ```
//!
//! The matrix is symmetric (w_pq = w_qp) and diagonally dominant; it is positive definite as
//! long as one pixel is known, since then every 8-connected group of removed pixels borders a
//! known one. It is solved by conjugate gradients, once per channel; then each imputed value gets
//! `noise_std · n`, n ~ N(0, 1), added.
//!
//! # What the reference implementation does
//! Read in the authors' code, `tleemann/road_evaluation`, `road/imputations.py`, class
//! `NoisyLinearImputer` (`setup_sparse_system` and `__call__`):
//! - Weights: `neighbors_weights` lists the 8 offsets, 1/6 direct and 1/12 diagonal.
//! - Borders: each equation's diagonal starts at 1 (the sum of all 8 weights) and loses the weight
//!   of every neighbour outside the image; nothing else is renormalised. So the diagonal is the sum
//!   of the in-image weights, as above, and x_p is the mean over the in-image neighbours only.
//!   (One consequence: a linear ramp is reproduced at a border only if it runs along the border.)
//! - Removed neighbours enter the matrix as unknowns (not with their current values); known ones
//!   move `weight · value` to the right-hand side, one column per channel.
//! - Solution: `scipy.sparse.linalg.spsolve`, a direct solve. Conjugate gradients here stop at a
//!   relative residual ‖b − Ax‖ ≤ 1e-6 ‖b‖ (or after [`MAX_CG_ITERATIONS`]).
//! - Noise: `self.noise * torch.randn_like(res)`, default `noise = 0.01`: Gaussian with standard
//!   deviation 0.01 in the image's own units, drawn independently for every channel and removed
//!   pixel, added to the imputed values only; known pixels are copied unchanged.
//! - With every pixel removed the reference's matrix is singular (each row sums to 0) and
//!   `spsolve` fails; here such an image is filled with 0 (plus the noise), a choice of ours.

/// The ROAD weight of each of the 4 direct (edge-sharing) neighbours.
pub const DIRECT_WEIGHT: f64 = 1.0 / 6.0;
/// The ROAD weight of each of the 4 diagonal (corner-sharing) neighbours.
pub const DIAGONAL_WEIGHT: f64 = 1.0 / 12.0;
/// Conjugate gradients stop once ‖b − Ax‖ ≤ this · ‖b‖.
pub const CG_RELATIVE_RESIDUAL: f64 = 1e-6;
/// Conjugate gradients also stop after this many iterations, whatever the residual. Far more
/// than needed: the slowest masks are large removed regions far from known pixels, and a
/// 224x224 image with its top 90% of rows removed takes about 600.
pub const MAX_CG_ITERATIONS: usize = 20_000;

/// Replaces the `removed` pixels (`[height * width]`, shared by the channels) of `image`
/// (`[channels, height, width]`, row-major) in place by noisy linear imputation (see the module
/// doc). `noise()` returns one standard-normal sample per call; each imputed value gets
/// `noise_std * noise()` added. Known pixels are never changed.
///
/// `noise` is called exactly once per imputed value, channel by channel and within a channel in
/// row-major order, also when `noise_std` is 0, so a seeded generator gives the same stream
/// whatever the noise level.
///
/// If every pixel is removed there is nothing to interpolate from: the pixels become 0 plus the
/// noise. A NaN or infinite known value makes all imputed values of its channel NaN.
///
/// # Errors
/// If `removed.len() != height * width` or `image.len() != channels * height * width`; the image
/// is then left unchanged.
pub fn impute(
    image: &mut [f32],
    channels: usize,
    height: usize,
    width: usize,
    removed: &[bool],
    noise_std: f32,
    noise: &mut dyn FnMut() -> f32,
) -> Result<(), String> {
    let pixels = height
        .checked_mul(width)
        .ok_or_else(|| format!("impute: image size {height}x{width} overflows"))?;
    if removed.len() != pixels {
        return Err(format!(
            "impute: mask has {} entries but the image is {height}x{width} = {pixels} pixels",
            removed.len()
        ));
    }
    if Some(image.len()) != channels.checked_mul(pixels) {
        return Err(format!(
            "impute: image has {} values but [channels, height, width] = [{channels}, {height}, \
             {width}] needs {}",
            image.len(),
            channels.saturating_mul(pixels)
        ));
    }

    let unknowns = removed.iter().filter(|&&r| r).count();
    if unknowns == 0 || channels == 0 {
        return Ok(());
    }
    if unknowns == pixels {
        // No known pixel to interpolate from (the reference's matrix is singular here).
        for value in image.iter_mut() {
            *value = noise_std * noise();
        }
        return Ok(());
    }

    let system = Grid::new(height, width, removed);
    let mut solution = vec![0.0; system.diagonal.len()];
    for plane in image.chunks_exact_mut(pixels) {
        let rhs = system.right_hand_side(plane);
        system.solve(&rhs, &mut solution);
        for (pixel, value) in plane.iter_mut().enumerate() {
            if removed[pixel] {
                *value = solution[system.index(pixel)] as f32 + noise_std * noise();
            }
        }
    }
    Ok(())
}

/// The linear system laid out on the image grid itself, with a border of one pixel around the
/// image: vectors are `[height + 2, width + 2]`, row-major, and hold 0 at known pixels and on the
/// border. Since the stencil then reads zeros there, one branch-free pass over the grid applies
/// the matrix, and the image border needs no special case.
struct Grid {
    /// Width of the bordered grid: `width + 2`.
    stride: usize,
    /// Height of the bordered grid: `height + 2`.
    rows: usize,
    /// 1 at removed pixels, 0 at known pixels and on the border.
    unknown: Vec<f64>,
    /// The matrix diagonal Σ_{q∈N(p)} w_pq (in-image neighbours only) at removed pixels; 0
    /// elsewhere.
    diagonal: Vec<f64>,
}

impl Grid {
    fn new(height: usize, width: usize, removed: &[bool]) -> Self {
        let (stride, rows) = (width + 2, height + 2);
        let mut grid = Grid {
            stride,
            rows,
            unknown: vec![0.0; stride * rows],
            diagonal: vec![0.0; stride * rows],
        };
        let mut inside = vec![0.0; stride * rows];
        for (pixel, &is_removed) in removed.iter().enumerate() {
            let g = grid.index(pixel);
            inside[g] = 1.0;
            grid.unknown[g] = if is_removed { 1.0 } else { 0.0 };
        }
        // The weights of the in-image neighbours: the weighted sum of the indicator `inside`.
        let mut in_image_weight = vec![0.0; stride * rows];
        grid.neighbour_sum(&inside, &mut in_image_weight);
        for ((d, &u), &w) in grid
            .diagonal
            .iter_mut()
            .zip(&grid.unknown)
            .zip(&in_image_weight)
        {
            *d = u * w;
        }
        grid
    }

    /// The grid index of image pixel `pixel` (row-major in the unbordered image).
    fn index(&self, pixel: usize) -> usize {
        let width = self.stride - 2;
        (pixel / width + 1) * self.stride + pixel % width + 1
    }

    /// out_p = Σ_q w_pq v_q over the 8 neighbours of every image pixel p (the border of `out`
    /// is left as it is).
    fn neighbour_sum(&self, v: &[f64], out: &mut [f64]) {
        let s = self.stride;
        for r in 1..self.rows - 1 {
            self.neighbour_sum_row(v, r, &mut out[r * s..(r + 1) * s]);
        }
    }

    /// [`Grid::neighbour_sum`] for grid row `r` alone (1 ≤ r ≤ height), into `out` (`[stride]`).
    fn neighbour_sum_row(&self, v: &[f64], r: usize, out: &mut [f64]) {
        let s = self.stride;
        let up = &v[(r - 1) * s..r * s];
        let mid = &v[r * s..(r + 1) * s];
        let down = &v[(r + 1) * s..(r + 2) * s];
        // Column c of `out` reads columns c − 1, c, c + 1 of the three rows: the windows at c − 1.
        let windows = up.windows(3).zip(mid.windows(3)).zip(down.windows(3));
        for (o, ((u, m), d)) in out[1..s - 1].iter_mut().zip(windows) {
            let direct = u[1] + d[1] + m[0] + m[2];
            let diagonal = u[0] + u[2] + d[0] + d[2];
            *o = DIRECT_WEIGHT * direct + DIAGONAL_WEIGHT * diagonal;
        }
    }

    /// b_p = Σ over the known neighbours q of removed pixel p of w_pq v_q, for one channel.
    fn right_hand_side(&self, plane: &[f32]) -> Vec<f64> {
        // The known values on the grid, 0 at removed pixels and on the border.
        let mut known = vec![0.0; self.unknown.len()];
        for (pixel, &value) in plane.iter().enumerate() {
            let g = self.index(pixel);
            known[g] = (1.0 - self.unknown[g]) * f64::from(value);
        }
        let mut rhs = vec![0.0; known.len()];
        self.neighbour_sum(&known, &mut rhs);
        for (b, &u) in rhs.iter_mut().zip(&self.unknown) {
            *b *= u;
        }
        rhs
    }

    /// y = A x: y_p = diagonal_p x_p − Σ_q w_pq x_q at removed pixels p, 0 elsewhere. As x is 0
    /// at known pixels, the sum runs over the removed neighbours only. Returns x · y, which
    /// conjugate gradients need next (computed here to save a pass over memory).
    fn apply(&self, x: &[f64], y: &mut [f64]) -> f64 {
        let s = self.stride;
        let mut x_dot_y = 0.0;
        for r in 1..self.rows - 1 {
            let row = r * s..(r + 1) * s;
            let out = &mut y[row.clone()];
            self.neighbour_sum_row(x, r, out);
            let (x, d, u) = (
                &x[row.clone()],
                &self.diagonal[row.clone()],
                &self.unknown[row],
            );
            for c in 0..s {
                out[c] = d[c] * x[c] - u[c] * out[c];
                x_dot_y += x[c] * out[c];
            }
        }
        x_dot_y
    }

    /// Solves A x = b by conjugate gradients from x = 0 (A is symmetric positive definite when
    /// some pixel is known). Returns the number of iterations. A non-finite b gives x = NaN.
    fn solve(&self, b: &[f64], x: &mut [f64]) -> usize {
        let target = CG_RELATIVE_RESIDUAL * dot(b, b).sqrt();
        if !target.is_finite() {
            // A NaN or infinite known value: no meaningful mean exists, so say so loudly.
            x.fill(f64::NAN);
            return 0;
        }
        x.fill(0.0);
        // Residual r = b − A x = b at x = 0; the first search direction is r.
        let mut r = b.to_vec();
        let mut direction = r.clone();
        let mut a_direction = vec![0.0; b.len()];
        let mut r_squared = dot(&r, &r);
        for iteration in 0..MAX_CG_ITERATIONS {
            // Should the residual overflow, stop rather than run to the cap.
            if r_squared.sqrt() <= target || !r_squared.is_finite() {
                return iteration;
            }
            let curvature = self.apply(&direction, &mut a_direction);
            // The step that minimises the error along `direction` in the A-norm.
            let step = r_squared / curvature;
            let mut next_r_squared = 0.0;
            for i in 0..x.len() {
                x[i] += step * direction[i];
                r[i] -= step * a_direction[i];
                next_r_squared += r[i] * r[i];
            }
            // The next direction is A-conjugate to all earlier ones.
            let beta = next_r_squared / r_squared;
            for (d, &ri) in direction.iter_mut().zip(&r) {
                *d = ri + beta * *d;
            }
            r_squared = next_r_squared;
        }
        MAX_CG_ITERATIONS
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8 neighbour offsets `(row, column)` with their weights, as the reference lists
    /// them: an independent description of the stencil that `Grid` hard-codes.
    const NEIGHBOURS: [(isize, isize, f64); 8] = [
        (-1, 0, DIRECT_WEIGHT),
        (1, 0, DIRECT_WEIGHT),
        (0, -1, DIRECT_WEIGHT),
        (0, 1, DIRECT_WEIGHT),
        (-1, -1, DIAGONAL_WEIGHT),
        (-1, 1, DIAGONAL_WEIGHT),
        (1, -1, DIAGONAL_WEIGHT),
        (1, 1, DIAGONAL_WEIGHT),
    ];

    /// A tiny deterministic generator: 64-bit LCG, top 24 bits scaled to [0, 1).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    fn no_noise() -> impl FnMut() -> f32 {
        || 0.0
    }

    fn impute_quiet(image: &mut [f32], channels: usize, h: usize, w: usize, removed: &[bool]) {
        impute(image, channels, h, w, removed, 0.0, &mut no_noise()).unwrap();
    }

    /// A mask with each pixel removed with probability `share`.
    fn random_mask(rng: &mut Lcg, pixels: usize, share: f32) -> Vec<bool> {
        (0..pixels).map(|_| rng.next() < share).collect()
    }

    /// The weights must make a proper mean: 4/6 + 4/12 = 1.
    #[test]
    fn weights_sum_to_one() {
        let total: f64 = NEIGHBOURS.iter().map(|n| n.2).sum();
        assert!((total - 1.0).abs() < 1e-15);
    }

    #[test]
    fn centre_with_equal_neighbours_gets_their_value() {
        let mut image = vec![0.7f32; 9];
        image[4] = 100.0;
        let mut removed = vec![false; 9];
        removed[4] = true;
        impute_quiet(&mut image, 1, 3, 3, &removed);
        assert!((image[4] - 0.7).abs() < 1e-6, "{}", image[4]);
    }

    /// Centre removed; direct neighbours 1, 2, 3, 4 and diagonal ones 5, 6, 7, 8:
    /// x = (1 + 2 + 3 + 4)/6 + (5 + 6 + 7 + 8)/12 = 20/12 + 26/12 = 23/6.
    #[test]
    fn centre_with_mixed_neighbours_by_hand() {
        #[rustfmt::skip]
        let mut image = vec![
            5.0, 1.0, 6.0,
            2.0, 0.0, 3.0,
            7.0, 4.0, 8.0,
        ];
        let removed: Vec<bool> = (0..9).map(|i| i == 4).collect();
        impute_quiet(&mut image, 1, 3, 3, &removed);
        assert!((image[4] - 23.0 / 6.0).abs() < 1e-6, "{}", image[4]);
    }

    /// Corner (0, 0) removed: its in-image neighbours are (0, 1) and (1, 0) at 1/6 and (1, 1)
    /// at 1/12, total 5/12, as in the reference: x = (2·3 + 2·6 + 9) / 5 = 27/5.
    #[test]
    fn corner_uses_only_in_image_neighbours() {
        #[rustfmt::skip]
        let mut image = vec![
            0.0, 3.0, 1.0,
            6.0, 9.0, 1.0,
            1.0, 1.0, 1.0,
        ];
        let removed: Vec<bool> = (0..9).map(|i| i == 0).collect();
        impute_quiet(&mut image, 1, 3, 3, &removed);
        assert!((image[0] - 27.0 / 5.0).abs() < 1e-6, "{}", image[0]);
    }

    /// Two coupled unknowns in a one-row image: only the left and right neighbours exist, so
    /// each is the mean of the two beside it: x1 = (0 + x2)/2, x2 = (x1 + 3)/2 → 1, 2.
    #[test]
    fn adjacent_removed_pixels_are_solved_together() {
        let mut image = vec![0.0, 9.0, 9.0, 3.0];
        let removed = [false, true, true, false];
        impute_quiet(&mut image, 1, 1, 4, &removed);
        assert!(
            (image[1] - 1.0).abs() < 1e-5 && (image[2] - 2.0).abs() < 1e-5,
            "{image:?}"
        );
    }

    /// Linear functions are harmonic for this stencil away from the border: every offset d
    /// comes with −d at the same weight, so Σ w (f(p + d) − f(p)) = Σ w (α d_r + β d_c) = 0.
    #[test]
    fn interior_block_of_a_plane_is_reconstructed_exactly() {
        let (h, w) = (12, 14);
        let plane = |r: usize, c: usize| 0.5 + 0.2 * r as f32 - 0.05 * c as f32;
        let original: Vec<f32> = (0..h * w).map(|i| plane(i / w, i % w)).collect();
        let removed: Vec<bool> = (0..h * w)
            .map(|i| (2..10).contains(&(i / w)) && (3..11).contains(&(i % w)))
            .collect();
        let mut image: Vec<f32> = original
            .iter()
            .zip(&removed)
            .map(|(&v, &r)| if r { -7.0 } else { v })
            .collect();
        impute_quiet(&mut image, 1, h, w, &removed);
        for (got, want) in image.iter().zip(&original) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    /// At the top and bottom borders the missing neighbours sit symmetrically in the column
    /// direction, so a horizontal ramp stays harmonic there: full-height removed columns are
    /// recovered. A vertical ramp is not: the top row then leans towards the row below it.
    #[test]
    fn horizontal_ramp_survives_top_and_bottom_borders_vertical_does_not() {
        let (h, w) = (6, 10);
        let removed: Vec<bool> = (0..h * w).map(|i| (3..7).contains(&(i % w))).collect();
        let ramp: Vec<f32> = (0..h * w).map(|i| (i % w) as f32 * 0.1).collect();
        let mut image: Vec<f32> = ramp
            .iter()
            .zip(&removed)
            .map(|(&v, &r)| if r { 0.0 } else { v })
            .collect();
        impute_quiet(&mut image, 1, h, w, &removed);
        for (got, want) in image.iter().zip(&ramp) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }

        let vertical: Vec<f32> = (0..h * w).map(|i| (i / w) as f32).collect();
        let mut image = vertical.clone();
        impute_quiet(&mut image, 1, h, w, &removed);
        assert!(
            image[4] > 0.5,
            "top row pulled up towards row 1: {}",
            image[4]
        );
    }

    /// The defining property on a random mask: every imputed value is the weighted mean of its
    /// in-image neighbours (imputed or not), so the system was solved, not just approximated.
    #[test]
    fn every_imputed_pixel_is_the_mean_of_its_neighbours() {
        let (h, w) = (20, 17);
        let mut rng = Lcg(42);
        let removed = random_mask(&mut rng, h * w, 0.7);
        let mut image: Vec<f32> = (0..h * w).map(|_| rng.next()).collect();
        impute_quiet(&mut image, 1, h, w, &removed);
        for p in (0..h * w).filter(|&p| removed[p]) {
            let (r, c) = ((p / w) as isize, (p % w) as isize);
            let (mut sum, mut total) = (0.0f64, 0.0f64);
            for &(dr, dc, weight) in &NEIGHBOURS {
                let (rr, cc) = (r + dr, c + dc);
                if rr >= 0 && cc >= 0 && rr < h as isize && cc < w as isize {
                    sum += weight * f64::from(image[rr as usize * w + cc as usize]);
                    total += weight;
                }
            }
            let mean = sum / total;
            assert!((f64::from(image[p]) - mean).abs() < 1e-5, "pixel {p}");
        }
    }

    /// The channels share one system, and the result is linear in the known values: a channel
    /// that is 2 · the first + 1 is imputed as 2 · (the first's imputation) + 1.
    #[test]
    fn channels_share_the_mask_and_are_solved_independently() {
        let (h, w) = (9, 8);
        let mut rng = Lcg(3);
        let removed = random_mask(&mut rng, h * w, 0.5);
        let first: Vec<f32> = (0..h * w).map(|_| rng.next()).collect();
        let mut image: Vec<f32> = first.clone();
        image.extend(first.iter().map(|v| 2.0 * v + 1.0));
        impute_quiet(&mut image, 2, h, w, &removed);
        let (a, b) = image.split_at(h * w);
        for (x, y) in a.iter().zip(b) {
            assert!((2.0 * x + 1.0 - y).abs() < 1e-5, "{x} {y}");
        }
    }

    #[test]
    fn known_pixels_never_change() {
        let (c, h, w) = (3, 16, 13);
        let mut rng = Lcg(7);
        let removed = random_mask(&mut rng, h * w, 0.6);
        let original: Vec<f32> = (0..c * h * w).map(|_| rng.next()).collect();
        let mut image = original.clone();
        let mut noise_rng = Lcg(8);
        let mut noise = || noise_rng.next() - 0.5;
        impute(&mut image, c, h, w, &removed, 0.3, &mut noise).unwrap();
        for (i, (got, want)) in image.iter().zip(&original).enumerate() {
            if !removed[i % (h * w)] {
                assert_eq!(got.to_bits(), want.to_bits(), "value {i}");
            }
        }
    }

    /// With noise, only the removed pixels move, each by exactly noise_std · its sample, and
    /// `noise` is called once per imputed value.
    #[test]
    fn noise_is_added_to_removed_pixels_only() {
        let (c, h, w) = (2, 10, 11);
        let mut rng = Lcg(9);
        let removed = random_mask(&mut rng, h * w, 0.4);
        let original: Vec<f32> = (0..c * h * w).map(|_| rng.next()).collect();
        let mut quiet = original.clone();
        impute_quiet(&mut quiet, c, h, w, &removed);

        let mut noisy = original.clone();
        let mut calls = 0;
        // Sample k (counting from 1) is k, so each shift tells which sample it got.
        let mut samples = || {
            calls += 1;
            calls as f32
        };
        impute(&mut noisy, c, h, w, &removed, 0.01, &mut samples).unwrap();
        let imputed = c * removed.iter().filter(|&&r| r).count();
        assert_eq!(calls, imputed);

        // Samples arrive channel by channel, row-major within a channel.
        let mut expected_sample = 0;
        for i in 0..c * h * w {
            if removed[i % (h * w)] {
                expected_sample += 1;
                let shift = noisy[i] - quiet[i];
                assert!(
                    (shift - 0.01 * expected_sample as f32).abs() < 1e-5,
                    "value {i}"
                );
            } else {
                assert_eq!(noisy[i].to_bits(), original[i].to_bits());
            }
        }
    }

    /// A NaN among the known values makes every imputed value of its channel NaN (visible, not
    /// silently 0), returns at once, and leaves the known values alone.
    #[test]
    fn nan_known_value_stops_quickly() {
        let (h, w) = (64, 64);
        let removed: Vec<bool> = (0..h * w).map(|i| i >= w).collect();
        let mut image = vec![0.5f32; h * w];
        image[3] = f32::NAN;
        let start = std::time::Instant::now();
        impute_quiet(&mut image, 1, h, w, &removed);
        assert!(start.elapsed().as_millis() < 1000, "{:?}", start.elapsed());
        assert!(image[w..].iter().all(|v| v.is_nan()));
        assert!(image[..w]
            .iter()
            .enumerate()
            .all(|(i, &v)| i == 3 || v == 0.5));
    }

    #[test]
    fn all_removed_fills_zero() {
        let mut image = vec![3.0f32; 2 * 4 * 5];
        impute_quiet(&mut image, 2, 4, 5, &[true; 20]);
        assert!(image.iter().all(|&v| v == 0.0), "{image:?}");
    }

    #[test]
    fn nothing_removed_changes_nothing() {
        let mut image = vec![3.0f32; 12];
        impute_quiet(&mut image, 1, 3, 4, &[false; 12]);
        assert!(image.iter().all(|&v| v == 3.0));
    }

    #[test]
    fn mismatched_lengths_are_errors_and_leave_the_image_alone() {
        let mut image = vec![1.0f32; 12];
        let err = impute(&mut image, 1, 3, 4, &[true; 11], 0.0, &mut no_noise()).unwrap_err();
        assert!(err.contains("mask has 11 entries"), "{err}");
        let err = impute(&mut image, 2, 3, 4, &[true; 12], 0.0, &mut no_noise()).unwrap_err();
        assert!(err.contains("needs 24"), "{err}");
        assert!(image.iter().all(|&v| v == 1.0));
    }

    /// A 32x32x3 image with 90% removed; and the hardest common case at 224x224: one big
    /// removed block (conjugate gradients need the most iterations when known pixels are far).
    #[test]
    fn imputation_is_fast_enough() {
        let mut rng = Lcg(11);
        let (h, w) = (32, 32);
        let removed = random_mask(&mut rng, h * w, 0.9);
        let mut image: Vec<f32> = (0..3 * h * w).map(|_| rng.next()).collect();
        let start = std::time::Instant::now();
        impute_quiet(&mut image, 3, h, w, &removed);
        let small = start.elapsed();

        let (h, w) = (224, 224);
        let removed = random_mask(&mut rng, h * w, 0.9);
        let mut image: Vec<f32> = (0..3 * h * w).map(|_| rng.next()).collect();
        let start = std::time::Instant::now();
        impute_quiet(&mut image, 3, h, w, &removed);
        let large = start.elapsed();
        println!("32x32x3, 90% removed: {small:?}; 224x224x3, 90% removed: {large:?}");
        // Generous bounds so debug builds on a busy machine pass; see the report for release.
        assert!(small.as_millis() < 100, "{small:?}");
        assert!(large.as_secs() < 10, "{large:?}");
    }
}
