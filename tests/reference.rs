//! The fast paths against the reference ops that define them.
//!
//! Random inputs almost never tie, so a fast path that broke ties another way
//! would pass every gradient check. Real images tie all the time: in a flat
//! background every position of a channel holds `relu(bias)`, and identical
//! patches of a saturated stroke give identical sums. So the fast paths are
//! held to the reference here three ways:
//!
//! - by hand, on windows whose ties TensorFlow and PyTorch are known to break
//!   (the first maximum in row-major order wins);
//! - on random shapes whose inputs are quantised to 8-bit levels and hold
//!   constant regions (proptests);
//! - on real images: a model trained on real MNIST digits (the tutorial's
//!   seven and 200 more) and one trained on real CIFAR-10 images (50
//!   explained), every gradient-based saliency method computed through the
//!   fast paths and through the reference ops.
//!
//! **Which reference.** The reference is f32 with a position-independent
//! summation order (im2col, then one matrix product per image), not f64. An
//! f64 reference would decide windows whose values differ by less than f32's
//! rounding (different patches that happen to sum within an ulp) otherwise
//! than any f32 implementation can, TensorFlow and PyTorch included; what
//! matters is that *identical* receptive fields give *identical* values, so
//! that exact ties stay exact, and that the first maximum then wins.

mod common;

use std::sync::OnceLock;

use common::{random, shared_data};
use ndarray::{Axis, Slice};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use salient::data::{self, DatasetKind, Split};
use salient::model::Sequential;
use salient::ops::{Conv2dSpec, MaxPool2dSpec, Padding};
use salient::saliency::{Explainer, Method, Options};
use salient::train::{fit, FitOptions};
use salient::{Kernels, ReluRule, Tape, Tensor};

const ALL_KERNELS: [Kernels; 3] = [Kernels::Reference, Kernels::Fast, Kernels::Winograd];
const RULES: [ReluRule; 3] = [ReluRule::Gradient, ReluRule::Rectified, ReluRule::Guided];

// ---------------------------------------------------------------------------
// Ties by hand.

/// The input gradient of a 2x2 max pooling of one 2x2 window, seeded with 1.
fn pool_gradient(window: [[f32; 2]; 2], kernels: Kernels) -> Vec<f32> {
    let x = Tensor::from_shape_vec(vec![1, 1, 2, 2], window.concat()).unwrap();
    let mut tape = Tape::new().with_kernels(kernels);
    let xv = tape.input(x);
    let y = tape.max_pool2d(xv, MaxPool2dSpec::square(2)).unwrap();
    let grads = tape
        .backward(y, &Tensor::ones(vec![1, 1, 1, 1]), ReluRule::Gradient)
        .unwrap();
    grads.get(xv).unwrap().iter().copied().collect()
}

/// The windows checked in TensorFlow and PyTorch: `[[1, 1], [1, 1]]` gives
/// `[[1, 0], [0, 0]]`, and `[[0, 2], [2, 2]]` gives `[[0, 1], [0, 0]]`.
#[test]
fn a_tied_window_sends_its_gradient_to_the_first_maximum() {
    let cases = [
        ([[1.0, 1.0], [1.0, 1.0]], [1.0, 0.0, 0.0, 0.0]),
        ([[0.0, 2.0], [2.0, 2.0]], [0.0, 1.0, 0.0, 0.0]),
        ([[0.0, 0.0], [3.0, 3.0]], [0.0, 0.0, 1.0, 0.0]),
        ([[0.0, 0.0], [0.0, 0.0]], [1.0, 0.0, 0.0, 0.0]),
        ([[-1.0, 5.0], [-1.0, 5.0]], [0.0, 1.0, 0.0, 0.0]),
    ];
    for kernels in ALL_KERNELS {
        for (window, want) in cases {
            assert_eq!(
                pool_gradient(window, kernels),
                want,
                "{window:?} on {kernels:?}"
            );
        }
    }
}

/// The same windows made by a convolution (a 1x1 filter of weight 1 and a
/// ReLU) and pooled in the same op: the fused op breaks ties as the pooling
/// alone does, under every ReLU rule. A negative input ties at 0 after the
/// ReLU: deconvnet still sends it gradient, to the first zero.
#[test]
fn the_fused_convolution_and_pooling_break_ties_the_same_way() {
    let cases = [
        ([[1.0, 1.0], [1.0, 1.0]], [1.0, 0.0, 0.0, 0.0]),
        ([[0.0, 2.0], [2.0, 2.0]], [0.0, 1.0, 0.0, 0.0]),
        ([[-3.0, -1.0], [-2.0, -1.0]], [1.0, 0.0, 0.0, 0.0]),
    ];
    for kernels in ALL_KERNELS {
        for rule in RULES {
            for (window, want) in cases {
                let x = Tensor::from_shape_vec(vec![1, 1, 2, 2], window.concat()).unwrap();
                let (w, b) = (Tensor::ones(vec![1, 1, 1, 1]), Tensor::zeros(vec![1]));
                let mut tape = Tape::new().with_kernels(kernels);
                let xv = tape.input(x);
                let (wv, bv) = (tape.constant_ref(&w), tape.constant_ref(&b));
                let pool = MaxPool2dSpec::square(2);
                let y = tape
                    .conv2d_max_pool2d(xv, wv, bv, Conv2dSpec::default(), true, pool)
                    .unwrap();
                let seed = Tensor::ones(vec![1, 1, 1, 1]);
                let grads = tape.backward(y, &seed, rule).unwrap();
                let got: Vec<f32> = grads.get(xv).unwrap().iter().copied().collect();
                // A ReLU at a non-positive maximum passes nothing, except
                // deconvnet's, which looks at the gradient alone.
                let positive = window.concat().iter().any(|&v| v > 0.0);
                let want = match (positive, rule) {
                    (false, ReluRule::Gradient | ReluRule::Guided) => [0.0; 4],
                    _ => want,
                };
                assert_eq!(got, want, "{window:?}, {rule:?}, {kernels:?}");
            }
        }
    }
}

/// On the reference and fast kernels, a convolution gives bit-identical
/// values for identical receptive fields wherever they sit: an image made of
/// one 5x5 tile repeated, through 3x3 filters, has outputs with period 5
/// (with 'same' padding, away from the border, whose fields read padding).
#[test]
fn identical_patches_give_identical_values() {
    let tile = random(&[3, 5, 5], 1);
    for (cin, cout, side) in [(1, 32, 28), (3, 32, 32), (32, 64, 26), (32, 64, 15)] {
        let x = Tensor::from_shape_fn(vec![2, cin, side, side], |d| {
            tile[[d[1] % 3, d[2] % 5, d[3] % 5]]
        });
        let w = random(&[cout, cin, 3, 3], 2);
        let b = random(&[cout], 3);
        for (padding, shift) in [(Padding::Valid, 0), (Padding::Same, 1)] {
            for kernels in [Kernels::Reference, Kernels::Fast] {
                let mut tape = Tape::new().with_kernels(kernels);
                let (xv, wv, bv) = (tape.input(x.clone()), tape.param(&w), tape.param(&b));
                let spec = Conv2dSpec { stride: 1, padding };
                let y = tape.conv2d(xv, wv, bv, spec).unwrap();
                let y = tape.value(y).unwrap();
                let o = y.shape()[2];
                // Output (i, j) reads input rows i − shift to i − shift + 2.
                let inside = |i: usize| i >= shift && i + 3 - shift <= side;
                let y4 = y.view().into_dimensionality::<ndarray::Ix4>().unwrap();
                for ((n, c, i, j), v) in y4.indexed_iter() {
                    if !(inside(i) && inside(j)) {
                        continue;
                    }
                    let (i0, j0) = (shift + (i - shift) % 5, shift + (j - shift) % 5);
                    if i0 < o && j0 < o && inside(i0) && inside(j0) {
                        let first = y[[n, c, i0, j0]];
                        let at = format!("{cin}->{cout} {padding:?} {kernels:?} at {i},{j}");
                        assert_eq!(v.to_bits(), first.to_bits(), "{at}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random shapes with ties.

/// Values on 8-bit levels (`k / 255`), with a constant rectangle (0, 1 or a
/// level between) in each image: the ties of real images.
fn quantised(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Tensor::from_shape_simple_fn(shape.to_vec(), || {
        rng.random_range(0..=255u8) as f32 / 255.0
    });
    let (h, w) = (shape[2], shape[3]);
    for mut image in x.outer_iter_mut() {
        let (top, left) = (rng.random_range(0..h), rng.random_range(0..w));
        let (bottom, right) = (rng.random_range(top..h) + 1, rng.random_range(left..w) + 1);
        let level = [0.0, 1.0, rng.random_range(0..=255u8) as f32 / 255.0][rng.random_range(0..3)];
        image
            .slice_mut(ndarray::s![.., top..bottom, left..right])
            .fill(level);
    }
    x
}

/// Everything a two-layer stack computes: the pooled output and the
/// gradients of the input, weights and biases.
fn stack(
    kernels: Kernels,
    fused: bool,
    x: &Tensor,
    p: &[Tensor],
    rule: ReluRule,
    padding: Padding,
) -> Vec<Tensor> {
    let mut tape = Tape::new().with_kernels(kernels);
    let xv = tape.input(x.clone());
    let v: Vec<_> = p.iter().map(|t| tape.param(t)).collect();
    let spec = Conv2dSpec { stride: 1, padding };
    let pool = MaxPool2dSpec::square(2);
    let h = tape.conv2d_relu(xv, v[0], v[1], spec).unwrap();
    let out = match fused {
        true => tape
            .conv2d_max_pool2d(h, v[2], v[3], spec, true, pool)
            .unwrap(),
        false => {
            let c = tape.conv2d_relu(h, v[2], v[3], spec).unwrap();
            tape.max_pool2d(c, pool).unwrap()
        }
    };
    let y = tape.value(out).unwrap().clone();
    let seed = random(y.shape(), 9);
    let mut grads = tape.backward(out, &seed, rule).unwrap();
    let mut all = vec![y];
    all.extend([xv, v[0], v[1], v[2], v[3]].map(|v| grads.take(v).unwrap()));
    all
}

/// Largest `|a − b|` over the largest `|b|` (0 where both are all zero).
fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let diff = a.iter().zip(b.iter()).fold(0.0f64, |m, (&p, &q)| {
        m.max((f64::from(p) - f64::from(q)).abs())
    });
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The fast kernels, with the pooling taken by the convolution or not,
    /// against the reference: every output and gradient within 1e-4 of its
    /// largest value (f32 products summed in other orders differ by a few
    /// ulps of the largest partial sums; a tie broken differently would move
    /// a whole gradient, orders of magnitude more).
    #[test]
    fn fast_paths_match_the_reference_where_inputs_tie(
        n in 1usize..=3, cin in 1usize..=3, mid in prop::sample::select(vec![4usize, 16, 17]),
        cout in 1usize..=5, h in 6usize..=16, w in 6usize..=16, same in any::<bool>(),
        rule in 0usize..3, fused in any::<bool>(), seed in any::<u64>(),
    ) {
        let x = quantised(&[n, cin, h, w], seed);
        let p = vec![
            random(&[mid, cin, 3, 3], seed ^ 1),
            random(&[mid], seed ^ 2).mapv(|v| v * 0.1),
            random(&[cout, mid, 3, 3], seed ^ 3),
            random(&[cout], seed ^ 4).mapv(|v| v * 0.1),
        ];
        let padding = if same { Padding::Same } else { Padding::Valid };
        let rule = RULES[rule];
        let want = stack(Kernels::Reference, false, &x, &p, rule, padding);
        let got = stack(Kernels::Fast, fused, &x, &p, rule, padding);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            let d = relative_difference(g, r);
            prop_assert!(d <= 1e-4, "result {} differs by {:e} of its largest value", i, d);
        }
    }
}

// ---------------------------------------------------------------------------
// Real images.

/// The tutorial's test digits (keras-vis's notebook draws these).
const TUTORIAL_DIGITS: [usize; 7] = [0, 12, 38, 83, 112, 74, 190];

/// A model and the real images and labels it is explained on.
type Explained = (Sequential, Tensor, Vec<usize>);

/// The tutorial's model for `shape`, trained briefly on `train` (batches of
/// 128, Adam 1e-3, seed 7).
fn trained(shape: [usize; 3], train: &data::Dataset, epochs: usize) -> Sequential {
    let mut model = Sequential::tutorial(shape, 10, 7).unwrap();
    let options = FitOptions {
        epochs,
        batch_size: 128,
        validation_split: 0.0,
        seed: 7,
        learning_rate: 1e-3,
    };
    fit(&mut model, train, &options, &mut ()).unwrap();
    model
}

/// The tutorial model trained for an epoch on 12,000 real MNIST training
/// digits, and 207 real test digits with their labels: the tutorial's seven,
/// then test digits 200 to 399.
fn mnist() -> Option<&'static Explained> {
    static MNIST: OnceLock<Option<Explained>> = OnceLock::new();
    MNIST
        .get_or_init(|| {
            let dir = shared_data("mnist")?;
            let train = data::load(DatasetKind::Mnist, &dir, Split::Train).unwrap();
            let model = trained([1, 28, 28], &train.take(12_000), 1);
            let indices: Vec<usize> = TUTORIAL_DIGITS.into_iter().chain(200..400).collect();
            let test = data::load(DatasetKind::Mnist, &dir, Split::Test).unwrap();
            let test = test.select(&indices).unwrap();
            let (_, accuracy) = model.evaluate(&test.images(), &test.labels, 250).unwrap();
            assert!(accuracy > 0.9, "MNIST accuracy {accuracy}");
            Some((model, test.images(), test.labels))
        })
        .as_ref()
}

/// The tutorial's CIFAR-10 model trained for two epochs on 5,000 real
/// test-batch images, and 50 others (test images 0 to 49) with their labels.
fn cifar() -> Option<&'static Explained> {
    static CIFAR: OnceLock<Option<Explained>> = OnceLock::new();
    CIFAR
        .get_or_init(|| {
            let dir = shared_data("cifar10/cifar-10-batches-bin")?;
            let all = data::load(DatasetKind::Cifar10, &dir, Split::Test).unwrap();
            let train = all.select(&(50..5050).collect::<Vec<_>>()).unwrap();
            let model = trained([3, 32, 32], &train, 2);
            let test = all.select(&(0..50).collect::<Vec<_>>()).unwrap();
            Some((model, test.images(), test.labels))
        })
        .as_ref()
}

/// The methods of the issue, SmoothGrad's noise fixed by its seed; 16 points
/// of integrated gradients and 8 noisy copies keep the reference passes short.
const METHODS: [Method; 9] = [
    Method::Vanilla,
    Method::Rectified,
    Method::Guided,
    Method::GradientXInput,
    Method::IntegratedGradients,
    Method::GradCam,
    Method::GradCamPlusPlus,
    Method::GuidedGradCam,
    Method::SmoothGrad,
];

fn options() -> Options {
    Options {
        samples: 8,
        steps: 16,
        // The same quadrature on both paths: a step count chosen per input
        // could differ where the two paths' completeness errors straddle the
        // tolerance.
        tolerance: None,
        seed: 11,
        ..Options::default()
    }
}

/// Every method through the fast paths against the same method through the
/// reference ops: each map within 1e-4 of its largest absolute value, on
/// every pixel. Prints each method's largest difference.
fn assert_matches_reference(what: &str, (model, images, labels): &Explained) {
    let mut fast = Explainer::new(model);
    let mut reference = Explainer::new(model).with_kernels(Kernels::Reference);
    for method in METHODS {
        let got = fast
            .attribute(images, Some(labels), method, &options())
            .unwrap()
            .raw;
        let want = reference
            .attribute(images, Some(labels), method, &options())
            .unwrap()
            .raw;
        let worst = got
            .outer_iter()
            .zip(want.outer_iter())
            .map(|(g, w)| relative_difference(&g.to_owned().into_dyn(), &w.to_owned().into_dyn()))
            .fold(0.0f64, f64::max);
        eprintln!("{what}, {method}: largest difference {worst:.2e} of the map's largest value");
        assert!(worst <= 1e-4, "{what}, {method}: {worst:e}");
    }
}

/// The tutorial's seven test digits and 200 more.
#[test]
fn saliency_on_real_digits_matches_the_reference() {
    if let Some(explained) = mnist() {
        assert_matches_reference("MNIST", explained);
    }
}

/// 50 real CIFAR-10 images.
#[test]
fn saliency_on_real_cifar_images_matches_the_reference() {
    if let Some(explained) = cifar() {
        assert_matches_reference("CIFAR-10", explained);
    }
}

/// Why saliency never runs Winograd's transforms: on the tutorial's real
/// digits, rounding that depends on an output's position turns exact ties
/// into near-ties, and the maps move by far more than the 1e-4 the fast
/// paths are held to (by 10-19% of each map's largest value with these
/// weights; each digit's figure is printed).
#[test]
fn winograd_moves_the_maps_of_real_digits() {
    let Some((model, images, labels)) = mnist() else {
        return;
    };
    let first = images
        .slice_axis(Axis(0), Slice::from(..TUTORIAL_DIGITS.len()))
        .to_owned();
    let labels = &labels[..TUTORIAL_DIGITS.len()];
    let mut winograd = Explainer::new(model).with_kernels(Kernels::Winograd);
    let mut reference = Explainer::new(model).with_kernels(Kernels::Reference);
    let got = winograd
        .attribute(&first, Some(labels), Method::Vanilla, &options())
        .unwrap()
        .raw;
    let want = reference
        .attribute(&first, Some(labels), Method::Vanilla, &options())
        .unwrap()
        .raw;
    let fast = Explainer::new(model)
        .attribute(&first, Some(labels), Method::Vanilla, &options())
        .unwrap()
        .raw;
    if got == fast {
        // Without AVX-512 (or with SALIENT_PORTABLE=1) there are no transforms.
        eprintln!("skipped: Winograd's transforms did not run (they need AVX-512)");
        return;
    }
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.outer_iter().zip(want.outer_iter()).enumerate() {
        let d = relative_difference(&g.to_owned().into_dyn(), &w.to_owned().into_dyn());
        eprintln!(
            "digit {}: Winograd's vanilla map differs by {d:.2e} of its largest value",
            TUTORIAL_DIGITS[i]
        );
        worst = worst.max(d);
    }
    assert!(
        worst > 1e-2,
        "Winograd's maps are within {worst:e} of the reference"
    );
}

/// The direct loops and im2col with one product: two readings of the same
/// convolution, forward and backward, on random shapes with stride and
/// padding.
#[test]
fn direct_and_im2col_convolutions_agree() {
    use salient::ops::{
        conv2d_direct, conv2d_direct_backward, conv2d_reference, conv2d_reference_backward,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for case in 0..40 {
        let (n, cin, cout) = (
            rng.random_range(1..3),
            rng.random_range(1..4),
            rng.random_range(1..5),
        );
        let (kh, kw) = (rng.random_range(1..4), rng.random_range(1..4));
        let (h, w) = (rng.random_range(kh..10), rng.random_range(kw..10));
        let spec = Conv2dSpec {
            stride: rng.random_range(1..3),
            padding: if rng.random() {
                Padding::Same
            } else {
                Padding::Valid
            },
        };
        let x = random(&[n, cin, h, w], case);
        let wt = random(&[cout, cin, kh, kw], case ^ 1);
        let b = random(&[cout], case ^ 2);
        let y = conv2d_direct(&x, &wt, &b, spec).unwrap();
        let y2 = conv2d_reference(&x, &wt, &b, spec).unwrap();
        assert!(relative_difference(&y2, &y) < 1e-5, "case {case}: forward");
        let dy = random(y.shape(), case ^ 3);
        let (dx, dw, db) = conv2d_direct_backward(&x, &wt, &dy, spec).unwrap();
        let (dx2, dw2, db2) = conv2d_reference_backward(&x, &wt, &dy, spec).unwrap();
        for (what, a, b) in [("dx", &dx2, &dx), ("dW", &dw2, &dw), ("db", &db2, &db)] {
            assert!(relative_difference(a, b) < 1e-5, "case {case}: {what}");
        }
    }
}

/// Two random images (seeded by `seed`), then, where the data is present, 4
/// real CIFAR-10 test images and the first of them alone: fewer images than
/// threads, so the fast paths share one image's channels between the
/// threads.
fn random_and_real_batches(seed: u64) -> Vec<(&'static str, Tensor)> {
    let mut batches = vec![("random", random(&[2, 3, 17, 19], seed))];
    if let Some(dir) = shared_data("cifar10/cifar-10-batches-bin") {
        let test = data::load(DatasetKind::Cifar10, &dir, Split::Test).unwrap();
        let images = test.select(&(0..4).collect::<Vec<_>>()).unwrap().images();
        let one = images.slice_axis(Axis(0), Slice::from(0..1)).to_owned();
        batches.push(("CIFAR-10", images));
        batches.push(("one CIFAR-10 image", one));
    }
    batches
}

/// The general convolution's route through `conv2d` (pad, then the fast
/// 'valid' convolution; a stride of 2 split in phases on the AVX-512
/// kernel) against its reference loops, forward and backward,
/// on ResNet's strided and padded convolutions (7x7 stride 2 pad 3, 3x3
/// stride 2 pad 1, 1x1 stride 2, 3x3 stride 1 pad 1) and on asymmetric padding: random shapes
/// and real CIFAR-10 images, whose flat skies and saturated pixels give
/// exact ties in the windows.
#[test]
fn padded_and_strided_convolutions_match_their_reference_on_real_images() {
    use salient::ops::{
        conv2d_general_reference, conv2d_general_reference_backward, Conv2dOptions,
    };
    let batches = random_and_real_batches(40);
    let cases = [
        (7, (2, 2), (3, 3, 3, 3)),
        (3, (2, 2), (1, 1, 1, 1)),
        (1, (2, 2), (0, 0, 0, 0)),
        (3, (1, 1), (1, 1, 1, 1)),
        (3, (1, 1), (0, 1, 2, 1)),
        (5, (3, 3), (2, 0, 1, 2)),
    ];
    // Each batch also as 6 channels (x and 1 − x), and with the input's
    // gradient alone (weights as constants, as in a saliency map): with
    // fewer images than threads the fast backward then shares the input
    // channels between the threads.
    let batches: Vec<(String, Tensor, bool)> = batches
        .into_iter()
        .flat_map(|(what, x)| {
            let wide = ndarray::concatenate![Axis(1), x, x.mapv(|v| 1.0 - v)];
            [
                (what.to_string(), x, false),
                (format!("{what}, 6 channels, dx alone"), wide, true),
            ]
        })
        .collect();
    for (what, x, dx_alone) in &batches {
        for (seed, &(k, stride, pads)) in cases.iter().enumerate() {
            let options = Conv2dOptions {
                stride,
                pads,
                ..Conv2dOptions::default()
            };
            let cin = x.shape()[1];
            let w = random(&[6, cin, k, k], 50 + seed as u64).mapv(|v| v * 0.3);
            let b = random(&[6], 60 + seed as u64);
            let want = conv2d_general_reference(x, &w, &b, options).unwrap();
            let dy = random(want.shape(), 70 + seed as u64);
            let (dx_ref, dw_ref, db_ref) =
                conv2d_general_reference_backward(x, &w, &dy, options).unwrap();
            for kernels in [Kernels::Fast, Kernels::Reference] {
                let mut tape = Tape::new().with_kernels(kernels);
                let xv = tape.input(x.clone());
                let (wv, bv) = match dx_alone {
                    true => (tape.constant(w.clone()), tape.constant(b.clone())),
                    false => (tape.input(w.clone()), tape.input(b.clone())),
                };
                let y = tape.conv2d_with(xv, wv, bv, options).unwrap();
                let got = tape.value(y).unwrap().clone();
                let mut grads = tape.backward(y, &dy, ReluRule::Gradient).unwrap();
                let mut compared =
                    vec![("y", got, &want), ("dx", grads.take(xv).unwrap(), &dx_ref)];
                if !dx_alone {
                    compared.push(("dw", grads.take(wv).unwrap(), &dw_ref));
                    compared.push(("db", grads.take(bv).unwrap(), &db_ref));
                }
                // f32 sums of at most 7·7·6 = 294 products in another order:
                // a few ulps of the largest value.
                for (name, a, b) in compared {
                    let a = &a;
                    let d = relative_difference(a, b);
                    assert!(
                        d < 1e-5,
                        "{what}, {k}x{k} {options:?}, {kernels:?}: {name} differs by {d:e}"
                    );
                }
            }
        }
    }
}

/// A convolution with its batch normalisation, a residual and its ReLU as
/// one op, for the scores alone (`Tape::conv2d_inference`), gives the bits of
/// the fast ops one after the other, recorded on a tape that records nothing
/// and on one that records (where a padded stride-1 convolution pads first
/// and reads shifted rows of the padded tensor, where the others pad in
/// cache): on random values and real CIFAR-10 images, on every route (the
/// image padded in cache, shifted rows, stride 2 in phases, im2col for
/// stride 3, one image's channels shared between the threads), with and
/// without each of the normalisation, the residual and the ReLU. The
/// separate ops are held to their reference by the tests above.
#[test]
fn a_convolution_fused_with_its_batch_norm_residual_and_relu_gives_the_same_bits_on_real_images() {
    use salient::ops::norm::{AfterConv, BatchNormVars};
    use salient::ops::Conv2dOptions;
    let batches = random_and_real_batches(90);
    let cases = [
        (3, (1, 1), (1, 1, 1, 1)),
        (3, (1, 1), (0, 0, 0, 0)),
        (7, (2, 2), (3, 3, 3, 3)),
        (3, (2, 2), (1, 1, 1, 1)),
        (1, (2, 2), (0, 0, 0, 0)),
        (3, (3, 3), (1, 1, 1, 1)),
    ];
    let folds = [
        (true, false, true),
        (true, false, false),
        (false, false, true),
        (true, true, true),
        (true, true, false),
        (false, true, true),
    ];
    for (what, x) in &batches {
        let x = ndarray::concatenate![Axis(1), *x, x.mapv(|v| 1.0 - v)];
        for (seed, &(k, stride, pads)) in cases.iter().enumerate() {
            let options = Conv2dOptions {
                stride,
                pads,
                ..Conv2dOptions::default()
            };
            let w = random(&[6, 6, k, k], 91 + seed as u64).mapv(|v| v * 0.3);
            let b = random(&[6], 92 + seed as u64);
            // A γ of 0 (a flat channel) and a negative one.
            let gamma = Tensor::from_shape_vec(vec![6], vec![1.5, 0.0, -0.7, 1.0, 0.3, 2.0]);
            let norm = [
                gamma.unwrap(),
                random(&[6], 93),
                random(&[6], 94),
                random(&[6], 95).mapv(|v| v.abs() + 0.1),
            ];
            for (with_norm, with_residual, relu) in folds {
                let ops_on = |mut tape: Tape<'static>, fused: bool| {
                    let xv = tape.input(x.clone());
                    let (wv, bv) = (tape.constant(w.clone()), tape.constant(b.clone()));
                    let [gamma, beta, mean, var] = norm.clone().map(|t| tape.constant(t));
                    let shape = tape.value(xv).unwrap().shape().to_vec();
                    let (ho, wo) = (
                        (shape[2] + pads.0 + pads.2 - k) / stride.0 + 1,
                        (shape[3] + pads.1 + pads.3 - k) / stride.1 + 1,
                    );
                    let residual = random(&[shape[0], 6, ho, wo], 96 + seed as u64);
                    let rv = tape.constant(residual);
                    let after = AfterConv {
                        norm: with_norm.then_some(BatchNormVars {
                            gamma,
                            beta,
                            mean,
                            var,
                            eps: 1e-5,
                        }),
                        residual: with_residual.then_some(rv),
                        relu,
                    };
                    let y = match fused {
                        true => tape.conv2d_inference((xv, wv, bv), options, after).unwrap(),
                        false => {
                            let mut y = tape.conv2d_with(xv, wv, bv, options).unwrap();
                            if with_norm {
                                y = tape.batch_norm(y, gamma, beta, mean, var, 1e-5).unwrap();
                            }
                            if with_residual {
                                y = tape.add(y, rv).unwrap();
                            }
                            if relu {
                                y = tape.relu(y).unwrap();
                            }
                            y
                        }
                    };
                    let t: &Tensor = tape.value(y).unwrap();
                    t.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let fused = ops_on(Tape::inference(), true);
                let at = format!(
                    "{what}, {k}x{k} {options:?}, norm {with_norm}, residual {with_residual}, relu {relu}"
                );
                assert_eq!(fused, ops_on(Tape::inference(), false), "{at}");
                assert_eq!(fused, ops_on(Tape::new(), false), "{at}, recorded");
            }
        }
    }
}

/// ResNet's stem after its convolution, on the fast kernels and on the
/// reference: inference batch norm, then a 3x3 stride-2 max pooling padded by
/// a −∞ border; forward and input gradient, bit for bit (the fast paths
/// compute the same operations in the same order), on random values and on
/// real CIFAR-10 images, whose flat skies and saturated pixels tie in the
/// pooling windows (and a γ of 0 makes the second channel flat: every window
/// ties there).
#[test]
fn batch_norm_and_padded_pooling_match_their_reference_on_real_images() {
    let batches = random_and_real_batches(80);
    let gamma = Tensor::from_shape_vec(vec![3], vec![1.5, 0.0, -0.7]).unwrap();
    let beta = Tensor::from_shape_vec(vec![3], vec![0.1, 0.25, -0.3]).unwrap();
    let mean = Tensor::from_shape_vec(vec![3], vec![0.5, 0.4, 0.45]).unwrap();
    let var = Tensor::from_shape_vec(vec![3], vec![0.06, 0.05, 0.07]).unwrap();
    let spec = MaxPool2dSpec {
        pool: (3, 3),
        stride: (2, 2),
    };
    for (what, x) in &batches {
        let run = |kernels: Kernels| {
            let mut tape = Tape::new().with_kernels(kernels);
            let xv = tape.input(x.clone());
            let [g, b, m, v] = [&gamma, &beta, &mean, &var].map(|t| tape.constant(t.clone()));
            let y = tape.batch_norm(xv, g, b, m, v, 1e-5).unwrap();
            let border = [(0, 0), (0, 0), (1, 1), (1, 1)];
            let y = tape.pad(y, &border, f32::NEG_INFINITY).unwrap();
            let y = tape.max_pool2d(y, spec).unwrap();
            let out = tape.value(y).unwrap().clone();
            let dy = random(out.shape(), 81);
            let mut grads = tape.backward(y, &dy, ReluRule::Gradient).unwrap();
            (out, grads.take(xv).unwrap())
        };
        let (y_fast, dx_fast) = run(Kernels::Fast);
        let (y_ref, dx_ref) = run(Kernels::Reference);
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y_fast), bits(&y_ref), "{what}: values");
        assert_eq!(bits(&dx_fast), bits(&dx_ref), "{what}: input gradient");
    }
}

/// The dense layer on real CIFAR-10 images flattened (3072 features, with
/// flat skies and saturated pixels) and on random ones: a product of a few
/// rows (up to 16, where `W` is read as it lies) and of many (17, where
/// `Wᵀ` is laid out first) against the reference, within 1e-5 of the
/// largest output (f32 sums of 3072 products taken in another order); and
/// the few rows' bits are the many rows' (each output the same chain of
/// products from its bias), on the AVX-512 kernel and on the portable path.
#[test]
fn the_dense_layer_on_few_rows_and_many_matches_its_reference_on_real_images() {
    use salient::ops::dense::dense_reference;
    let images = match shared_data("cifar10/cifar-10-batches-bin") {
        Some(dir) => {
            let test = data::load(DatasetKind::Cifar10, &dir, Split::Test).unwrap();
            let batch = test.select(&(0..17).collect::<Vec<_>>()).unwrap().images();
            vec![("CIFAR-10", batch)]
        }
        None => Vec::new(),
    };
    let random_batch = random(&[17, 3, 32, 32], 97);
    for (what, x) in images.into_iter().chain([("random", random_batch)]) {
        let x = x.into_shape_with_order(vec![17, 3072]).unwrap();
        let w = random(&[100, 3072], 98).mapv(|v| v * 0.05);
        let b = random(&[100], 99);
        let dense = |x: &Tensor| {
            let mut tape = Tape::inference();
            let (xv, wv, bv) = (
                tape.constant(x.clone()),
                tape.constant(w.clone()),
                tape.constant(b.clone()),
            );
            let y = tape.dense(xv, wv, bv).unwrap();
            tape.value(y).unwrap().clone()
        };
        let many = dense(&x);
        let few_rows = x.slice_axis(Axis(0), Slice::from(0..16)).to_owned();
        let few = dense(&few_rows);
        let want = dense_reference(&x, &w, &b).unwrap();
        let want_few = want.slice_axis(Axis(0), Slice::from(0..16)).to_owned();
        assert!(relative_difference(&many, &want) < 1e-5, "{what}: 17 rows");
        assert!(
            relative_difference(&few, &want_few) < 1e-5,
            "{what}: 16 rows"
        );
        let many_16 = many.slice_axis(Axis(0), Slice::from(0..16)).to_owned();
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&few), bits(&many_16), "{what}: 16 rows against 17");
    }
}
