//! Shared test helpers: f64 reference implementations of every op, written as
//! plainly as the formulas, and a central finite-difference gradient checker.
//!
//! Why f64 references: the checker differentiates the *reference* numerically,
//! in f64, and compares the result with the crate's analytic f32 backward. The
//! two share no code, and f64 makes the numerical side accurate to ~1e-9, so the
//! tolerance only has to cover the f32 rounding of the analytic side.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use salient::data::{self, Dataset, DatasetKind, Split};
use salient::layers::Activation;
use salient::model::Sequential;
use salient::train::{fit, FitOptions};
use salient::{Kernels, ReluRule, Tape, Tensor, Var};
use std::sync::OnceLock;

pub type T64 = ArrayD<f64>;

pub fn to64(t: &Tensor) -> T64 {
    t.mapv(f64::from)
}

/// A tensor of uniform values in `[-1, 1)` from `seed`.
pub fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

/// Uniform values in `±[margin, 1)`: kept away from ReLU's kink at 0, so a
/// finite-difference step never crosses it.
pub fn random_away_from_zero(shape: &[usize], seed: u64, margin: f32) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_fn(IxDyn(shape), |_| {
        let m = rng.random_range(margin..1.0);
        if rng.random::<bool>() {
            m
        } else {
            -m
        }
    })
}

/// Distinct values at least `gap` apart, in random order: max pooling has no
/// near-ties, so a finite-difference step never changes a window's winner.
pub fn random_distinct(shape: &[usize], seed: u64, gap: f32) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len: usize = shape.iter().product();
    let mut values: Vec<f32> = (0..len)
        .map(|i| (i as f32 - len as f32 / 2.0) * gap)
        .collect();
    for i in (1..len).rev() {
        values.swap(i, rng.random_range(0..=i));
    }
    Tensor::from_shape_vec(IxDyn(shape), values).unwrap()
}

// ---------------------------------------------------------------------------
// f64 reference ops: direct loops over the definitions.

/// Direct convolution (cross-correlation) with zero padding:
/// `y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s+ky−pt, ox·s+kx−pl]`.
/// (Flat indexing on slices: `IxDyn` indexing would make the whole-network
/// finite-difference test minutes long.)
#[allow(clippy::too_many_arguments)]
pub fn conv2d_ref(
    x: &T64,
    w: &T64,
    b: &T64,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    ho: usize,
    wo: usize,
) -> T64 {
    let (n, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout, kh, kw) = (w.shape()[0], w.shape()[2], w.shape()[3]);
    let (xs, ws, bs) = (
        x.as_slice().unwrap(),
        w.as_slice().unwrap(),
        b.as_slice().unwrap(),
    );
    let mut y = vec![0.0; n * cout * ho * wo];
    for i in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = bs[o];
                    for c in 0..cin {
                        for ky in 0..kh {
                            let iy = (oy * stride + ky) as isize - pad_top as isize;
                            if iy < 0 || iy as usize >= h {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * stride + kx) as isize - pad_left as isize;
                                if ix >= 0 && (ix as usize) < wd {
                                    s += ws[((o * cin + c) * kh + ky) * kw + kx]
                                        * xs[((i * cin + c) * h + iy as usize) * wd + ix as usize];
                                }
                            }
                        }
                    }
                    y[((i * cout + o) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    T64::from_shape_vec(IxDyn(&[n, cout, ho, wo]), y).unwrap()
}

/// Maximum over each `ph × pw` window, windows `sh`, `sw` apart.
pub fn max_pool_ref(x: &T64, ph: usize, pw: usize, sh: usize, sw: usize) -> T64 {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (ho, wo) = ((h - ph) / sh + 1, (w - pw) / sw + 1);
    let xs = x.as_slice().unwrap();
    let mut y = vec![f64::NEG_INFINITY; n * c * ho * wo];
    for plane in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let out = &mut y[(plane * ho + oy) * wo + ox];
                for a in 0..ph {
                    for b in 0..pw {
                        *out = out.max(xs[(plane * h + oy * sh + a) * w + ox * sw + b]);
                    }
                }
            }
        }
    }
    T64::from_shape_vec(IxDyn(&[n, c, ho, wo]), y).unwrap()
}

/// `y = x·Wᵀ + b`.
pub fn dense_ref(x: &T64, w: &T64, b: &T64) -> T64 {
    let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let (xs, ws) = (x.as_slice().unwrap(), w.as_slice().unwrap());
    T64::from_shape_fn(IxDyn(&[n, out]), |ix| {
        let (row, col) = (
            &xs[ix[0] * fan_in..][..fan_in],
            &ws[ix[1] * fan_in..][..fan_in],
        );
        b[[ix[1]]] + row.iter().zip(col).map(|(a, b)| a * b).sum::<f64>()
    })
}

pub fn relu_ref(x: &T64) -> T64 {
    x.mapv(|v| v.max(0.0))
}

pub fn softmax_ref(x: &T64) -> T64 {
    let mut y = x.clone();
    for mut row in y.outer_iter_mut() {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    y
}

/// Mean over rows of `−Σ t · log softmax(x)`.
pub fn cross_entropy_ref(x: &T64, t: &T64) -> T64 {
    let p = softmax_ref(x);
    let n = x.shape()[0] as f64;
    let l: f64 = p
        .iter()
        .zip(t.iter())
        .map(|(p, t)| -t * p.ln())
        .sum::<f64>()
        / n;
    T64::from_elem(IxDyn(&[]), l)
}

// ---------------------------------------------------------------------------
// The checker.

/// Tolerance for comparing an f32 analytic gradient with an f64 numerical one.
///
/// Every gradient entry here is a sum of at most a few hundred products of
/// values of order 1, computed in f32. Such a sum's rounding error is at most
/// `K·u·Σ|terms|` with `u = 2⁻²⁴ ≈ 6e-8` (Higham, *Accuracy and Stability*,
/// §3.1): for `K ≤ 500` about `3e-5` of the absolute sum. The absolute sum can
/// exceed the largest gradient entry by a small factor, so we allow `2e-4`
/// relative to the largest entry, a margin of a few times the bound. The
/// numerical side contributes ~1e-9 (f64, step 1e-6). A wrong backward rule
/// (a missing term, a transposed weight) errs by O(1) relative and fails.
pub const REL_TOL: f64 = 2e-4;

/// Finite-difference step: in f64, truncation error ~h² and rounding ~1e-16/h
/// are both far below the tolerance at 1e-6.
pub const STEP: f64 = 1e-6;

/// The central difference of `loss` around `x`, perturbing each element in
/// turn (in parallel: the probes are independent).
pub fn numeric_gradient(x: &T64, loss: impl Fn(&T64) -> f64 + Sync, step: f64) -> T64 {
    let flat: Vec<f64> = (0..x.len())
        .into_par_iter()
        .map_init(
            || x.clone(),
            |probe, i| {
                let orig = probe.as_slice().unwrap()[i];
                probe.as_slice_mut().unwrap()[i] = orig + step;
                let plus = loss(probe);
                probe.as_slice_mut().unwrap()[i] = orig - step;
                let minus = loss(probe);
                probe.as_slice_mut().unwrap()[i] = orig;
                (plus - minus) / (2.0 * step)
            },
        )
        .collect();
    T64::from_shape_vec(x.raw_dim(), flat).unwrap()
}

/// Compares `analytic` with a numeric gradient, within `rel_tol` of the
/// largest numeric value (at least 1). Returns a description of the worst
/// mismatch on failure.
pub fn compare_gradient(
    name: &str,
    analytic: &Tensor,
    numeric: &T64,
    rel_tol: f64,
) -> Result<(), String> {
    if analytic.shape() != numeric.shape() {
        return Err(format!(
            "{name}: gradient shape {:?} != input shape {:?}",
            analytic.shape(),
            numeric.shape()
        ));
    }
    let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let tol = rel_tol * scale.max(1.0);
    for (i, (&a, &n)) in analytic.iter().zip(numeric.iter()).enumerate() {
        if (f64::from(a) - n).abs() > tol || !a.is_finite() {
            return Err(format!(
                "{name}[{i}] (shape {:?}): analytic {a} vs numeric {n} (tolerance {tol:e})",
                numeric.shape()
            ));
        }
    }
    Ok(())
}

/// Compares `analytic` with the central difference of `loss` around `x`.
pub fn check_gradient(
    name: &str,
    x: &T64,
    analytic: &Tensor,
    loss: impl Fn(&T64) -> f64 + Sync,
    step: f64,
    rel_tol: f64,
) -> Result<(), String> {
    compare_gradient(name, analytic, &numeric_gradient(x, loss, step), rel_tol)
}

/// Compares an f32 forward value with its f64 reference.
pub fn check_forward(name: &str, got: &Tensor, want: &T64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{name}: forward shape {:?} != reference {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        if (f64::from(g) - w).abs() > REL_TOL * scale {
            return Err(format!("{name}: forward[{i}] = {g}, reference {w}"));
        }
    }
    Ok(())
}

/// Checks one op end to end, on each kind of [`Kernels`]: records it on a tape
/// with `inputs` as differentiated leaves, compares the forward with
/// `reference`, seeds the backward with a random `r`, and checks the gradient
/// of `Σ r ⊙ f(inputs)` with respect to each input in `check` against central
/// differences of the reference.
pub fn check_op(
    name: &str,
    inputs: &[Tensor],
    check: &[usize],
    build: impl Fn(&mut Tape, &[Var]) -> salient::Result<Var>,
    reference: impl Fn(&[T64]) -> T64 + Sync,
    seed: u64,
) -> Result<(), String> {
    let inputs64: Vec<T64> = inputs.iter().map(to64).collect();
    let want = reference(&inputs64);
    let r = random(want.shape(), seed ^ 0x5eed);
    let r64 = to64(&r);
    let numeric: Vec<T64> = check
        .iter()
        .map(|&i| {
            let loss = |xi: &T64| {
                let mut args = inputs64.clone();
                args[i] = xi.clone();
                (&reference(&args) * &r64).sum()
            };
            numeric_gradient(&inputs64[i], loss, STEP)
        })
        .collect();
    for kernels in [Kernels::Reference, Kernels::Fast, Kernels::Winograd] {
        let name = format!("{name} ({kernels:?})");
        let mut tape = Tape::new().with_kernels(kernels);
        let vars: Vec<Var> = inputs.iter().map(|t| tape.input(t.clone())).collect();
        let y = build(&mut tape, &vars).map_err(|e| format!("{name}: {e}"))?;
        check_forward(&name, tape.value(y).unwrap(), &want)?;
        let grads = tape
            .backward(y, &r, ReluRule::Gradient)
            .map_err(|e| e.to_string())?;
        for (&i, numeric) in check.iter().zip(&numeric) {
            let analytic = grads
                .get(vars[i])
                .ok_or_else(|| format!("{name}: no gradient for input {i}"))?;
            compare_gradient(&format!("{name} d/dinput{i}"), analytic, numeric, REL_TOL)?;
        }
    }
    Ok(())
}

/// `../shared/data/<sub>` beside the crate, or `None` (with a note) where it is
/// missing: the real-data tests are skipped then.
pub fn shared_data(sub: &str) -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")).join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "note: {} is missing, skipping this real-data test",
            dir.display()
        );
        None
    }
}

/// A small CNN trained briefly on the bundled MNIST sample, trained once per
/// test binary (a few seconds in release).
///
/// Conv2D 8 3x3 relu [8, 26, 26] → MaxPool 2 [8, 13, 13] → Conv2D 16 3x3 relu
/// [16, 11, 11] → MaxPool 2 [16, 5, 5] → Flatten [400] → Dense 32 relu → Dense
/// 10 softmax.
pub fn small_trained_mnist() -> &'static (Sequential, Dataset) {
    static MODEL: OnceLock<(Sequential, Dataset)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
        let train = data::load(DatasetKind::Mnist, &dir, Split::Train)
            .unwrap()
            .take(2000);
        let test = data::load(DatasetKind::Mnist, &dir, Split::Test)
            .unwrap()
            .take(200);
        let mut model = Sequential::builder([1, 28, 28])
            .conv2d(8, 3, Activation::Relu)
            .max_pooling2d(2)
            .conv2d(16, 3, Activation::Relu)
            .max_pooling2d(2)
            .flatten()
            .dense(32, Activation::Relu)
            .dense(10, Activation::Softmax)
            .build(3)
            .unwrap();
        let opts = FitOptions {
            epochs: 3,
            batch_size: 32,
            validation_split: 0.0,
            seed: 3,
            learning_rate: 2e-3,
        };
        fit(&mut model, &train, &opts, &mut ()).unwrap();
        let (_, accuracy) = model.evaluate(&test.images(), &test.labels, 200).unwrap();
        // Far above chance (0.1): the model has learnt something worth explaining.
        assert!(accuracy >= 0.7, "accuracy {accuracy}");
        (model, test)
    })
}

/// An HTTP client that hands back 4xx and 5xx answers instead of failing.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

/// The status and body of an HTTP answer (bodies up to 64 MiB).
pub fn http_answer(mut response: ureq::http::Response<ureq::Body>) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (status, body)
}
