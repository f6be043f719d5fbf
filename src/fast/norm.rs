//! Batch normalisation at inference, on every thread: the reference's
//! formula per channel (see [`crate::ops::norm`]), a group of `[H·W]` planes
//! per task. Each value is computed by the same operations in the same order
//! as the reference, so the results are the same bits.

use rayon::prelude::*;

/// Values per parallel task: enough work to be worth sending to a thread.
const CHUNK: usize = 1 << 15;

/// `y = (x − μ_c)·scale_c + β_c` over `x: [N, C, S]` (flat, `S` values a
/// plane), with `scale_c = γ_c / √(σ²_c + ε)` worked out by the caller.
pub(crate) fn forward(
    x: &[f32],
    s: usize,
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    per_plane(y, x, s, mean.len(), |c, y, x| {
        let (m, k, b) = (mean[c], scale[c], beta[c]);
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - m) * k + b;
        }
    });
}

/// The input's gradient alone at inference: `dx = scale_c · dy`.
pub(crate) fn input_gradient(dy: &[f32], s: usize, scale: &[f32], dx: &mut [f32]) {
    per_plane(dx, dy, s, scale.len(), |c, dx, dy| {
        let k = scale[c];
        for (d, &g) in dx.iter_mut().zip(dy) {
            *d = k * g;
        }
    });
}

/// Runs `f(channel, out plane, in plane)` over every `s`-value plane of
/// `[N, C, S]`, a group of whole planes per task.
fn per_plane(
    out: &mut [f32],
    x: &[f32],
    s: usize,
    c: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync,
) {
    if s == 0 || c == 0 {
        return;
    }
    let planes = (CHUNK / s).max(1);
    out.par_chunks_mut(planes * s)
        .zip(x.par_chunks(planes * s))
        .enumerate()
        .for_each(|(task, (out, x))| {
            for (i, (out, x)) in out.chunks_mut(s).zip(x.chunks(s)).enumerate() {
                f((task * planes + i) % c, out, x);
            }
        });
}
