//! Saliency methods: checked against finite differences, hand computations and
//! models built so that the right answer is known.

mod common;

use common::*;
use ndarray::{array, s, Array2, Axis, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use salient::data::Dataset;
use salient::layers::Activation;
use salient::model::{Head, Sequential};
use salient::saliency::{self, attribute, cam, Method, Options};
use salient::{Error, Tensor};

// ---------------------------------------------------------------------------
// Fixtures.

/// The small CNN of [`small_trained_mnist`], trained once for this file.
fn trained() -> &'static (Sequential, Dataset) {
    small_trained_mnist()
}

/// The first `n` test digits as a batch.
fn digits(n: usize) -> Tensor {
    trained()
        .1
        .images()
        .slice_axis(Axis(0), ndarray::Slice::from(..n))
        .to_owned()
}

fn params(model: &Sequential) -> Vec<Tensor> {
    model.params().cloned().collect()
}

fn set_params(model: &mut Sequential, layer: usize, w: Tensor, b: Tensor) {
    let slot = &mut model.layers_mut()[layer].params;
    let (w0, b0) = slot.as_ref().unwrap();
    assert_eq!((w0.shape(), b0.shape()), (w.shape(), b.shape()));
    *slot = Some((w, b));
}

/// Channel 0 of input `i` of `[N, C, H, W]` attributions, as an `[H, W]` array.
fn plane(t: &Tensor, i: usize) -> Array2<f32> {
    t.slice(s![i, 0, .., ..])
        .to_owned()
        .into_dimensionality::<Ix2>()
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.iter().copied().collect()
}

fn max_abs(t: &Tensor) -> f32 {
    t.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Quick settings, so that running every method stays fast.
fn quick() -> Options {
    Options {
        samples: 8,
        steps: 16,
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------
// Gradient methods.

/// The trained model's linear class scores in f64, written with the reference
/// ops of `tests/common` (no code shared with the crate).
fn reference_scores(model: &Sequential, x: &T64) -> T64 {
    let p: Vec<(T64, T64)> = model
        .layers()
        .iter()
        .filter_map(|l| l.params.as_ref())
        .map(|(w, b)| (to64(w), to64(b)))
        .collect();
    let n = x.shape()[0];
    let h = relu_ref(&conv2d_ref(x, &p[0].0, &p[0].1, 1, 0, 0, 26, 26));
    let h = max_pool_ref(&h, 2, 2, 2, 2); // [n, 8, 13, 13]
    let h = relu_ref(&conv2d_ref(&h, &p[1].0, &p[1].1, 1, 0, 0, 11, 11));
    let h = max_pool_ref(&h, 2, 2, 2, 2); // [n, 16, 5, 5]
    let h = h.into_shape_with_order(vec![n, 400]).unwrap();
    let h = relu_ref(&dense_ref(&h, &p[2].0, &p[2].1));
    dense_ref(&h, &p[3].0, &p[3].1) // [n, 10]: linear scores, no softmax
}

#[test]
fn vanilla_equals_finite_differences_on_a_trained_model() {
    let (model, test) = trained();
    // Real digits have a constant black background, which puts many max-pool
    // windows in exact ties: there the score is not differentiable (the f32
    // backward routes to the first maximum, a one-sided choice). A dither of
    // at most 0.02 puts the image in general position without changing what it
    // shows.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for i in 0..2 {
        let x = test
            .images()
            .slice(s![i..i + 1, .., .., ..])
            .mapv(|v| v + rng.random_range(0.0..0.02))
            .into_dyn();
        let label = test.labels[i];
        let out = attribute(
            model,
            &x,
            Some(&[label]),
            Method::Vanilla,
            &Options::default(),
        )
        .unwrap();
        let x64 = to64(&x);
        let f = |x: &T64| reference_scores(model, x)[[0, label]];
        // The reported score is the linear one (not a probability).
        assert!((f64::from(out.scores[0]) - f(&x64)).abs() < 1e-4);

        // Central differences in f64 with step 1e-6: exact for a piecewise-linear
        // function unless a ReLU or max-pool kink lies within the step. Such a
        // kink shows as one-sided slopes that disagree; those pixels are counted
        // and left out, and must be rare.
        let h = STEP;
        let scale = max_abs(&out.raw) as f64;
        // Tolerance: the analytic gradient is f32 through four layers with sums
        // of up to 400 terms; by the bound in `common::REL_TOL` each layer adds
        // at most ~1e-4 of the largest entry, so 1e-3 of it covers all four. The
        // f64 side errs by ~1e-16·|f|/h ≈ 1e-9. A wrong rule errs by O(1).
        let tol = 1e-3 * scale;
        let f0 = f(&x64);
        let (mut kinks, mut checked) = (0, 0);
        let mut probe = x64.clone();
        for (j, &analytic) in out.raw.iter().enumerate() {
            let orig = probe.as_slice().unwrap()[j];
            probe.as_slice_mut().unwrap()[j] = orig + h;
            let plus = f(&probe);
            probe.as_slice_mut().unwrap()[j] = orig - h;
            let minus = f(&probe);
            probe.as_slice_mut().unwrap()[j] = orig;
            let (right, left) = ((plus - f0) / h, (f0 - minus) / h);
            if (right - left).abs() > 1e-6 * scale.max(1e-3) {
                kinks += 1;
                continue;
            }
            checked += 1;
            let numeric = (plus - minus) / (2.0 * h);
            assert!(
                (f64::from(analytic) - numeric).abs() <= tol,
                "digit {i}, pixel {j}: analytic {analytic} vs numeric {numeric} (tolerance {tol:e})"
            );
        }
        assert!(kinks <= 4, "{kinks} pixels sit on a kink");
        assert_eq!(checked + kinks, 784);
        // Not a trivial gradient: the digit's strokes matter.
        assert!(scale > 1e-3, "largest gradient {scale}");
    }
}

/// Flatten → Dense 4 relu → Dense 2 (softmax, made linear), weights by hand:
///
/// ```text
/// W1 = [[1, 1], [1, -1], [2, 0], [0, -1]], b1 = 0      z = W1 x, h = relu(z)
/// V  = [[1, 2, -1, -3], [0, 0, 0, 0]],     b2 = 0      y = V h
/// ```
fn hand_dense_model() -> Sequential {
    let mut model = Sequential::builder([1, 1, 2])
        .flatten()
        .dense(4, Activation::Relu)
        .dense(2, Activation::Softmax)
        .build(0)
        .unwrap();
    let w1 = array![[1.0f32, 1.0], [1.0, -1.0], [2.0, 0.0], [0.0, -1.0]].into_dyn();
    let v = array![[1.0f32, 2.0, -1.0, -3.0], [0.0, 0.0, 0.0, 0.0]].into_dyn();
    set_params(&mut model, 1, w1, Tensor::zeros(vec![4]));
    set_params(&mut model, 2, v, Tensor::zeros(vec![2]));
    model
}

#[test]
fn guided_and_rectified_differ_from_vanilla_only_at_relu_by_hand() {
    // Input 0: x = [1, 2].
    //   z = W1 x = [3, -1, 2, -2], h = [3, 0, 2, 0], y0 = 3 - 2 = 1, y1 = 0.
    //   The gradient reaching h from y0 is g = V[0] = [1, 2, -1, -3].
    //   vanilla   passes 1[z > 0]·g           = [1, 0, -1, 0]
    //             dx = W1ᵀ [1, 0, -1, 0] = [1, 1] - [2, 0]      = [-1, 1]
    //   rectified passes 1[g > 0]·g           = [1, 2, 0, 0]
    //             dx = [1, 1] + 2·[1, -1]                       = [3, -1]
    //   guided    passes 1[z > 0]·1[g > 0]·g  = [1, 0, 0, 0]
    //             dx = [1, 1]
    //   gradient ⊙ input = [1·(-1), 2·1] = [-1, 2].
    // Input 1: x = [-1, 0]: z = [-1, -1, -2, 0], every ReLU off (z = 0 counts
    //   as off), so vanilla and guided are 0; rectified ignores the forward
    //   mask and gives [3, -1] again. The rows of the batch do not mix.
    let model = hand_dense_model();
    let x = array![[[[1.0f32, 2.0]]], [[[-1.0, 0.0]]]].into_dyn();
    let run = |method| attribute(&model, &x, Some(&[0, 0]), method, &Options::default()).unwrap();
    let vanilla = run(Method::Vanilla);
    assert_eq!(values(&vanilla.raw), [-1.0, 1.0, 0.0, 0.0]);
    assert_eq!(values(&run(Method::Rectified).raw), [3.0, -1.0, 3.0, -1.0]);
    assert_eq!(values(&run(Method::Guided).raw), [1.0, 1.0, 0.0, 0.0]);
    assert_eq!(
        values(&run(Method::GradientXInput).raw),
        [-1.0, 2.0, 0.0, 0.0]
    );
    assert_eq!(vanilla.scores, [1.0, 0.0]);

    // Without targets, the predicted class is explained: class 0 (y = [1, 0])
    // for input 0; class 0 on the tie y = [0, 0] for input 1 (first maximum).
    let predicted = attribute(&model, &x, None, Method::Vanilla, &Options::default()).unwrap();
    assert_eq!(predicted.targets, [0, 0]);
    assert_eq!(predicted.raw, vanilla.raw);
}

#[test]
fn smoothgrad_with_zero_noise_is_vanilla_and_seeds_repeat() {
    let (model, _) = trained();
    let x = digits(3);
    let vanilla = attribute(model, &x, None, Method::Vanilla, &Options::default()).unwrap();
    let silent = Options {
        noise_level: 0.0,
        samples: 5,
        batch_size: 2, // several chunks per input
        ..Options::default()
    };
    let smooth = attribute(model, &x, None, Method::SmoothGrad, &silent).unwrap();
    assert_eq!(smooth.targets, vanilla.targets);
    // σ = 0: five copies of x, each with the vanilla gradient; their f64 mean is
    // that gradient again. Allow a last-bit difference in case an op's blocking
    // depends on where a row sits in its batch.
    let worst = (&smooth.raw - &vanilla.raw)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-6 * max_abs(&vanilla.raw), "differs by {worst}");

    let noisy = Options {
        samples: 6,
        batch_size: 4,
        seed: 7,
        ..Options::default()
    };
    let a = attribute(model, &x, None, Method::SmoothGrad, &noisy).unwrap();
    let b = attribute(model, &x, None, Method::SmoothGrad, &noisy).unwrap();
    assert_eq!(a.raw, b.raw, "same seed, same bits");
    let other = Options {
        seed: 8,
        ..noisy.clone()
    };
    let c = attribute(model, &x, None, Method::SmoothGrad, &other).unwrap();
    assert_ne!(a.raw, c.raw, "another seed, other noise");
    // Input i's noise comes from its own stream, seeded by (seed, i): what comes
    // after it in the batch does not change its map.
    let alone = attribute(
        model,
        &x.slice(s![..1, .., .., ..]).to_owned().into_dyn(),
        Some(&a.targets[..1]),
        Method::SmoothGrad,
        &noisy,
    )
    .unwrap();
    assert_eq!(
        alone.raw.index_axis(Axis(0), 0),
        a.raw.index_axis(Axis(0), 0)
    );
    // The noise is real: the map differs from vanilla.
    assert_ne!(a.raw, vanilla.raw);

    // VarGrad = E[g²] − E[g]², from the same draws.
    let sq = attribute(model, &x, None, Method::SmoothGradSq, &noisy).unwrap();
    let var = attribute(model, &x, None, Method::VarGrad, &noisy).unwrap();
    let expected = &sq.raw - &(&a.raw * &a.raw);
    let scale = max_abs(&sq.raw);
    for (v, e) in var.raw.iter().zip(expected.iter()) {
        assert!(
            *v >= 0.0 && (v - e.max(0.0)).abs() <= 1e-5 * scale,
            "{v} vs {e}"
        );
    }
}

// ---------------------------------------------------------------------------
// Integrated gradients.

#[test]
fn integrated_gradients_are_complete_within_one_percent_at_200_steps() {
    let (model, _) = trained();
    let x = digits(4);
    let opts = Options {
        steps: 200,
        ..Options::default()
    };
    let out = attribute(model, &x, None, Method::IntegratedGradients, &opts).unwrap();
    let report = out.completeness.as_ref().unwrap();
    assert_eq!(report.len(), 4);

    // Recompute what the report says, independently: Σ attributions in f64, and
    // the linear scores of the inputs and of the black baseline.
    let at_x = model.predict(&x, 10, Head::Linear).unwrap();
    let at_black = model
        .predict(&Tensor::zeros(x.raw_dim()), 10, Head::Linear)
        .unwrap();
    for (i, c) in report.iter().enumerate() {
        let t = out.targets[i];
        let sum: f64 = out
            .raw
            .index_axis(Axis(0), i)
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        let expected = f64::from(at_x[[i, t]]) - f64::from(at_black[[i, t]]);
        assert_eq!(c.attribution_sum, sum);
        assert_eq!(
            (c.score, c.baseline_score),
            (at_x[[i, t]], at_black[[i, t]])
        );
        assert_eq!(c.score, out.scores[i]);
        assert!((c.abs_error - (sum - expected).abs()).abs() < 1e-9);
        assert!((c.rel_error - c.abs_error / expected.abs()).abs() < 1e-9);
        assert!(expected.abs() > 1.0, "the score moves: {expected}");
        assert!(c.rel_error < 0.01, "input {i}: {c:?}");
    }
    // The notes tell the user the same numbers, one line per input.
    assert!(
        out.notes.iter().filter(|n| n.contains("error")).count() >= 4,
        "{:?}",
        out.notes
    );

    // Fewer steps, larger gap: the check is what tells how many steps suffice.
    let rough = Options {
        steps: 2,
        ..Options::default()
    };
    let coarse = attribute(model, &x, None, Method::IntegratedGradients, &rough).unwrap();
    let worst = |r: &[saliency::Completeness]| r.iter().map(|c| c.rel_error).fold(0.0, f64::max);
    assert!(worst(coarse.completeness.as_ref().unwrap()) > worst(report));
}

#[test]
fn integrated_gradients_of_a_linear_model_are_exact() {
    // For y = w·x + b the gradient is w everywhere, so IG = (x − x′) ⊙ w with any
    // number of steps, and completeness holds up to rounding.
    let mut model = Sequential::builder([1, 2, 2])
        .flatten()
        .dense(2, Activation::Softmax)
        .build(0)
        .unwrap();
    let w = array![[1.0f32, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]].into_dyn();
    set_params(&mut model, 1, w, array![0.25f32, 0.0].into_dyn());
    let x = array![[[[1.0f32, 2.0], [4.0, -1.0]]]].into_dyn();
    let opts = Options {
        steps: 1,
        baseline: saliency::Baseline::Constant(1.0),
        ..Options::default()
    };
    let out = attribute(&model, &x, Some(&[0]), Method::IntegratedGradients, &opts).unwrap();
    // (x − 1) ⊙ w = [0, 1, 3, -2] ⊙ [1, -2, 0.5, 3] = [0, -2, 1.5, -6].
    assert_eq!(values(&out.raw), [0.0, -2.0, 1.5, -6.0]);
    let c = out.completeness.unwrap()[0];
    // y(x) = 1 - 4 + 2 - 3 + 0.25 = -3.75; y(1) = 1 - 2 + 0.5 + 3 + 0.25 = 2.75.
    assert_eq!((c.score, c.baseline_score), (-3.75, 2.75));
    assert_eq!(
        (c.attribution_sum, c.abs_error, c.rel_error),
        (-6.5, 0.0, 0.0)
    );
}

// ---------------------------------------------------------------------------
// Class activation maps.

/// A model whose Grad-CAM is known: Conv2D 2 3x3 relu on 8x8 → Flatten →
/// Dense 2 (softmax, made linear).
///
/// - Channel 0 averages its 3x3 window minus 0.5: it fires only where most of
///   the window is bright.
/// - Channel 1 is minus the average plus 0.2: it fires where the window is dark.
/// - Class 1 ("bright") sums channel 0; class 0 ("dark") sums channel 1.
fn hand_cam_model() -> Sequential {
    let mut model = Sequential::builder([1, 8, 8])
        .conv2d(2, 3, Activation::Relu)
        .flatten()
        .dense(2, Activation::Softmax)
        .build(0)
        .unwrap();
    let mut kernel = Tensor::zeros(vec![2, 1, 3, 3]);
    kernel.slice_mut(s![0, .., .., ..]).fill(1.0 / 9.0);
    kernel.slice_mut(s![1, .., .., ..]).fill(-1.0 / 9.0);
    set_params(&mut model, 0, kernel, array![-0.5f32, 0.2].into_dyn());
    let mut dense = Tensor::zeros(vec![2, 72]);
    dense.slice_mut(s![1, ..36]).fill(1.0); // class 1 ← channel 0 (features 0..36)
    dense.slice_mut(s![0, 36..]).fill(1.0); // class 0 ← channel 1
    set_params(&mut model, 2, dense, Tensor::zeros(vec![2]));
    model
}

/// An 8x8 black image with a bright 3x3 square in the top-left corner.
fn corner_square() -> Tensor {
    let mut x = Tensor::zeros(vec![1, 1, 8, 8]);
    x.slice_mut(s![0, 0, ..3, ..3]).fill(1.0);
    x
}

#[test]
fn grad_cam_finds_the_bright_corner_on_a_hand_built_model() {
    // Channel 0's 6x6 output: window (0, 0) covers the whole square: 9/9 − 0.5
    // = 0.5; windows (0, 1) and (1, 0) cover 6 of its pixels: 6/9 − 0.5 = 1/6;
    // every other window covers at most 4: ≤ 4/9 − 0.5 < 0 → 0.
    // For class 1, ∂y/∂A⁰ = 1 and ∂y/∂A¹ = 0 everywhere, so α = [1, 0] and
    // L = ReLU(1·A⁰ + 0·A¹) = A⁰.
    let model = hand_cam_model();
    let x = corner_square();
    let layer_map =
        cam::grad_cam(&mut saliency::Explainer::new(&model), &x, &[1], None, 250).unwrap();
    assert_eq!(layer_map.layer, "conv2d");
    assert_eq!(values(&layer_map.weights), [1.0, 0.0]);
    let map = layer_map
        .maps
        .index_axis(Axis(0), 0)
        .into_dimensionality::<Ix2>()
        .unwrap();
    assert!((map[[0, 0]] - 0.5).abs() < 1e-6);
    assert!((map[[0, 1]] - 1.0 / 6.0).abs() < 1e-6 && (map[[1, 0]] - 1.0 / 6.0).abs() < 1e-6);
    assert_eq!(map.iter().filter(|&&v| v != 0.0).count(), 3);

    // Upsampled 6x6 → 8x8: output pixel p samples A at 0.75p − 0.125, so pixels
    // 0..=2 blend rows (columns) 0..=2 of A and pixel 3 blends 2 and 3, where A
    // is zero: the map is zero off the bright square, positive on it (but for
    // its inner corner (2, 2), which blends only zeros), and peaks at (0, 0).
    let out = attribute(&model, &x, Some(&[1]), Method::GradCam, &Options::default()).unwrap();
    assert_eq!(out.raw.shape(), &[1, 1, 8, 8]);
    let up = plane(&out.raw, 0);
    let peak = up.iter().copied().fold(0.0f32, f32::max);
    assert_eq!(up[[0, 0]], peak);
    for ((r, c), &v) in up.indexed_iter() {
        let on_square = r < 3 && c < 3 && (r, c) != (2, 2);
        assert_eq!(v > 0.0, on_square, "pixel ({r}, {c}) = {v}");
    }
    assert!(out.notes[0].contains("conv2d"), "{:?}", out.notes);

    // Grad-CAM++ weighs channel 0 only too (ReLU(g) = 0 for channel 1), so it is
    // the same map up to scale; Guided Grad-CAM lives on the square as well.
    for method in [Method::GradCamPlusPlus, Method::GuidedGradCam] {
        let other = attribute(&model, &x, Some(&[1]), method, &Options::default()).unwrap();
        let m = plane(&other.raw, 0);
        let peak = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(peak > 0.0, "{method}");
        for ((r, c), &v) in m.indexed_iter() {
            if r >= 3 || c >= 3 {
                assert_eq!(v, 0.0, "{method}: pixel ({r}, {c})");
            }
        }
    }
    // Score-CAM's softmax weights keep some of the dark channel, but the map
    // still peaks at the bright corner.
    let score = attribute(
        &model,
        &x,
        Some(&[1]),
        Method::ScoreCam,
        &Options::default(),
    )
    .unwrap();
    let m = plane(&score.raw, 0);
    let peak = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(m[[0, 0]], peak);
    assert!(m[[7, 7]] < 0.5 * peak);

    // The dark class is explained by the dark channel: zero on the square.
    let dark = attribute(&model, &x, Some(&[0]), Method::GradCam, &Options::default()).unwrap();
    assert_eq!(dark.raw[[0, 0, 0, 0]], 0.0);
    assert!(dark.raw[[0, 0, 7, 7]] > 0.0);
}

#[test]
fn grad_cam_on_the_trained_model_replicates_over_channels_and_takes_named_layers() {
    let (model, _) = trained();
    let x = digits(2);
    let out = attribute(model, &x, None, Method::GradCam, &Options::default()).unwrap();
    assert_eq!(out.raw.shape(), &[2, 1, 28, 28]);
    assert!(out.raw.iter().all(|&v| v >= 0.0));
    assert!(
        out.notes[0].contains("conv2d_1"),
        "default: the last Conv2D"
    );
    let pooled = Options {
        layer: Some("max_pooling2d".into()),
        ..Options::default()
    };
    let first = cam::grad_cam(
        &mut saliency::Explainer::new(model),
        &x,
        &out.targets,
        Some("max_pooling2d"),
        250,
    )
    .unwrap();
    assert_eq!(first.maps.shape(), &[2, 13, 13]);
    let named = attribute(model, &x, Some(&out.targets), Method::GradCam, &pooled).unwrap();
    assert_eq!(named.raw.index_axis(Axis(1), 0), first.upsampled);

    // Three channels in: the CAM is copied to each.
    let rgb = Sequential::builder([3, 8, 8])
        .conv2d(2, 3, Activation::Relu)
        .flatten()
        .dense(2, Activation::Softmax)
        .build(1)
        .unwrap();
    let x = random(&[1, 3, 8, 8], 4).mapv(f32::abs);
    let out = attribute(&rgb, &x, Some(&[1]), Method::ScoreCam, &Options::default()).unwrap();
    assert_eq!(out.raw.shape(), &[1, 3, 8, 8]);
    assert_eq!(
        out.raw.index_axis(Axis(1), 0),
        out.raw.index_axis(Axis(1), 2)
    );
}

#[test]
fn score_cam_weights_are_a_softmax_over_the_channels() {
    let (model, _) = trained();
    let x = digits(3);
    let (targets, _) = saliency::targets_and_scores(model, &x, None, 250).unwrap();
    // A batch size of 5 splits the 16 channels of conv2d_1 into four chunks.
    let cam = cam::score_cam(model, &x, &targets, None, 5).unwrap();
    assert_eq!(cam.weights.shape(), &[3, 16]);
    for (i, row) in cam.weights.outer_iter().enumerate() {
        let sum: f32 = row.sum();
        assert!((sum - 1.0).abs() < 1e-5, "input {i}: weights sum to {sum}");
        assert!(row.iter().all(|&w| w >= 0.0));
        for &k in &cam.skipped[i] {
            assert_eq!(row[k], 0.0, "a constant channel has no weight");
        }
    }
    // The same maps in one chunk.
    let whole = cam::score_cam(model, &x, &targets, None, 250).unwrap();
    assert_eq!(whole.weights, cam.weights);
}

// ---------------------------------------------------------------------------
// Occlusion.

#[test]
fn occluding_a_region_the_model_ignores_changes_nothing() {
    // Dense on the 8x8 pixels, with zero weights on columns 4..8: the model
    // ignores the right half.
    let mut model = Sequential::builder([1, 8, 8])
        .flatten()
        .dense(2, Activation::Softmax)
        .build(0)
        .unwrap();
    let mut w = random(&[2, 1, 8, 8], 5);
    w.slice_mut(s![.., .., .., 4..]).fill(0.0);
    let w = w.into_shape_with_order(vec![2, 64]).unwrap();
    set_params(&mut model, 1, w, Tensor::zeros(vec![2]));
    let x = random(&[2, 1, 8, 8], 6).mapv(|v| v + 2.0); // nonzero everywhere
    let opts = Options {
        patch: Some(2),
        stride: Some(1),
        ..Options::default()
    };
    let out = attribute(&model, &x, Some(&[0, 1]), Method::Occlusion, &opts).unwrap();
    // A pixel in column 5 or beyond is covered only by patches starting at
    // column ≥ 4, which hide only ignored pixels: y(x) − y(occluded) is exactly
    // 0 (zero weights times any value sum to the same float).
    for i in 0..2 {
        let map = plane(&out.raw, i);
        assert!(map.slice(s![.., 5..]).iter().all(|&v| v == 0.0), "{map}");
        assert!(map.slice(s![.., ..4]).iter().all(|&v| v != 0.0), "{map}");
    }
    assert!(out.notes[0].contains("2x2"), "{:?}", out.notes);

    // By hand, one pixel: with fill 0, hiding pixel p alone lowers y by w_p·x_p.
    let single = Options {
        patch: Some(1),
        stride: Some(1),
        ..Options::default()
    };
    let out = attribute(&model, &x, Some(&[0, 1]), Method::Occlusion, &single).unwrap();
    let w = &model.layers()[1].params.as_ref().unwrap().0;
    let want = w[[0, 9]] * x[[0, 0, 1, 1]];
    assert!((out.raw[[0, 0, 1, 1]] - want).abs() < 1e-5 * want.abs().max(1.0));
}

// ---------------------------------------------------------------------------
// Every method: shapes, the model untouched, errors.

#[test]
fn every_method_leaves_the_model_bit_for_bit_unchanged() {
    let (model, _) = trained();
    let before = (model.architecture(), params(model), model.clone());
    let x = digits(2);
    for method in Method::ALL {
        let out = attribute(model, &x, None, method, &quick()).unwrap();
        assert_eq!(out.raw.shape(), x.shape(), "{method}");
        assert!(out.raw.iter().all(|v| v.is_finite()), "{method}");
        assert_eq!(out.targets.len(), 2);
        assert_eq!(
            out.completeness.is_some(),
            method == Method::IntegratedGradients
        );
        assert_eq!(model.architecture(), before.0, "{method}");
        assert_eq!(params(model), before.1, "{method}");
    }
    // Predictions of the model as built are still probabilities.
    let p = model.predict(&x, 2, Head::AsBuilt).unwrap();
    assert_eq!(p, before.2.predict(&x, 2, Head::AsBuilt).unwrap());
    for row in p.outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn method_names_round_trip() {
    for method in Method::ALL {
        assert_eq!(method.to_string().parse::<Method>().unwrap(), method);
    }
    assert_eq!(
        "Grad_CAM++".parse::<Method>().unwrap(),
        Method::GradCamPlusPlus
    );
    let err = "saliency".parse::<Method>().unwrap_err().to_string();
    assert!(
        err.contains("grad-cam++") && err.contains("occlusion"),
        "{err}"
    );
}

#[test]
fn errors_are_typed_and_say_what_to_do() {
    let (model, _) = trained();
    let x = digits(2);
    let opts = Options::default();

    let err = attribute(
        model,
        &Tensor::zeros(vec![1, 1, 27, 28]),
        None,
        Method::Vanilla,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("[1, 1, 27, 28]"), "{err}");
    let err = attribute(
        model,
        &Tensor::zeros(vec![28, 28]),
        None,
        Method::GradCam,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");

    let err = attribute(model, &x, Some(&[3, 10]), Method::Vanilla, &opts).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("class 10 of input 1") && msg.contains("10 classes"),
        "{msg}"
    );
    let err = attribute(model, &x, Some(&[3]), Method::Occlusion, &opts).unwrap_err();
    assert!(err.to_string().contains("1 targets for 2 inputs"), "{err}");

    let named = |layer: &str| Options {
        layer: Some(layer.into()),
        ..Options::default()
    };
    let err = attribute(model, &x, None, Method::GradCam, &named("conv9")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(
        msg.contains("'conv9'") && msg.contains("conv2d, max_pooling2d, conv2d_1, max_pooling2d_1"),
        "{msg}"
    );
    let err = attribute(model, &x, None, Method::ScoreCam, &named("dense")).unwrap_err();
    assert!(err.to_string().contains("[32]"), "{err}");
    let flat = hand_dense_model();
    let err = attribute(
        &flat,
        &array![[[[1.0f32, 2.0]]]].into_dyn(),
        None,
        Method::GradCam,
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no Conv2D layer"), "{err}");

    let zero_steps = Options {
        steps: 0,
        ..Options::default()
    };
    let err = attribute(model, &x, None, Method::IntegratedGradients, &zero_steps).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            op: "integrated-gradients",
            ..
        }
    ));
    assert!(
        err.to_string().contains("steps must be at least 1"),
        "{err}"
    );

    let bad = [
        (
            Method::SmoothGrad,
            Options {
                samples: 0,
                ..Options::default()
            },
            "samples",
        ),
        (
            Method::VarGrad,
            Options {
                noise_level: -0.1,
                ..Options::default()
            },
            "noise_level",
        ),
        (
            Method::Vanilla,
            Options {
                batch_size: 0,
                ..Options::default()
            },
            "batch_size",
        ),
        (
            Method::Occlusion,
            Options {
                patch: Some(29),
                ..Options::default()
            },
            "between 1 and 28",
        ),
        (
            Method::Occlusion,
            Options {
                stride: Some(0),
                ..Options::default()
            },
            "stride",
        ),
        (
            Method::IntegratedGradients,
            Options {
                baseline: saliency::Baseline::Image(Tensor::zeros(vec![1, 28])),
                ..Options::default()
            },
            "baseline",
        ),
    ];
    for (method, opts, word) in bad {
        let err = attribute(model, &x, None, method, &opts).unwrap_err();
        assert!(err.to_string().contains(word), "{method}: {err}");
    }

    // The methods' own functions check their arguments too.
    let err = cam::grad_cam(
        &mut saliency::Explainer::new(model),
        &x,
        &[99, 0],
        None,
        250,
    )
    .unwrap_err();
    assert!(err.to_string().contains("class 99 of input 0"), "{err}");
    let err =
        saliency::gradient::class_gradient(model, &x, Some(&[1]), salient::ReluRule::Guided, None)
            .unwrap_err();
    assert!(err.to_string().contains("1 targets for 2 inputs"), "{err}");

    let mut nan = x.clone();
    nan[[1, 0, 3, 3]] = f32::NAN;
    let err = attribute(model, &nan, None, Method::Vanilla, &opts).unwrap_err();
    assert!(
        err.to_string().contains("input 1 holds the value NaN"),
        "{err}"
    );
}

#[test]
fn an_empty_batch_gives_empty_attributions() {
    let (model, _) = trained();
    let empty = Tensor::zeros(vec![0, 1, 28, 28]);
    for method in [Method::Vanilla, Method::GradCam, Method::Occlusion] {
        let out = attribute(model, &empty, None, method, &Options::default()).unwrap();
        assert_eq!(out.raw.shape(), &[0, 1, 28, 28]);
        assert!(out.targets.is_empty());
    }
}

// ---------------------------------------------------------------------------
// The sanity check (Adebayo et al.).

#[test]
fn cascading_randomization_decorrelates_the_gradient_but_not_the_model() {
    let (model, _) = trained();
    let before = params(model);
    let x = digits(3);
    let steps = salient::trust::cascading_randomization(
        model,
        &x,
        None,
        Method::Vanilla,
        &Options::default(),
        1,
    )
    .unwrap();
    let layers: Vec<&str> = steps.iter().map(|s| s.layer.as_str()).collect();
    assert_eq!(layers, ["dense_1", "dense", "conv2d_1", "conv2d"]);
    // Once every layer is random, the gradient map has little to do with the
    // trained one (on this model: mean rank correlation 0.77 after the top
    // layer, 0.63 after all four).
    let last = steps.last().unwrap();
    assert!(last.mean() < 0.9, "{steps:?}");
    assert!(last.spearman.iter().all(|r| (-1.0..=1.0).contains(r)));
    // The paper's finding: guided backprop changes less than the gradient when
    // the top layer is randomised (here 0.87 against 0.77), Grad-CAM much more
    // (about −0.4: its map moves elsewhere).
    let top = |method| {
        salient::trust::cascading_randomization(model, &x, None, method, &Options::default(), 1)
            .unwrap()[0]
            .mean()
    };
    assert!(top(Method::Guided) > steps[0].mean(), "{steps:?}");
    assert!(top(Method::GradCam) < 0.5);
    assert_eq!(params(model), before, "the model itself is untouched");
}

// ---------------------------------------------------------------------------
// Timings (run by hand: `cargo test --release --test saliency -- --ignored --nocapture`).

#[test]
#[ignore]
fn timings_for_seven_digits_with_the_tutorial_model() {
    let model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
    let x = digits(7);
    for method in Method::ALL {
        let start = std::time::Instant::now();
        attribute(&model, &x, None, method, &Options::default()).unwrap();
        println!(
            "{method:>22}: {:8.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[test]
fn an_explainer_allocates_nothing_on_repeat_calls_and_changes_nothing() {
    let (model, _) = trained();
    let x = digits(8);
    let mut explainer = saliency::Explainer::new(model);
    let (mut maps, mut fresh) = (Vec::new(), Vec::new());
    for method in [
        Method::Vanilla,
        Method::Vanilla,
        Method::Guided,
        Method::Guided,
    ] {
        let a = explainer.attribute(&x, None, method, &quick()).unwrap();
        maps.push(a.raw);
        fresh.push(explainer.fresh_allocations());
    }
    assert!(fresh[0] > 0);
    assert_eq!(fresh[3], fresh[0], "{fresh:?}");
    // The same answers as without a workspace.
    assert_eq!(
        maps[1],
        attribute(model, &x, None, Method::Vanilla, &quick())
            .unwrap()
            .raw
    );
    assert_eq!(
        maps[3],
        attribute(model, &x, None, Method::Guided, &quick())
            .unwrap()
            .raw
    );
}
