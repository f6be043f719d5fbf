//! Property tests: every op's backward against central finite differences of an
//! independent f64 reference, on random shapes and values (odd sizes, several
//! channels, stride 2, both paddings, batches > 1). 64 cases per op.

mod common;

use common::*;
use proptest::prelude::*;
use salient::ops::{dropout_mask, one_hot, Conv2dSpec, MaxPool2dSpec, Padding};
use salient::tensor::Pool;
use salient::{Kernels, Tape, Tensor};

/// Output size and leading padding along one axis, derived here from the
/// TensorFlow conventions rather than taken from the crate.
fn axis(len: usize, k: usize, s: usize, same: bool) -> (usize, usize) {
    if same {
        let out = len.div_ceil(s);
        let total = ((out - 1) * s + k).saturating_sub(len);
        (out, total / 2)
    } else {
        ((len - k) / s + 1, 0)
    }
}

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(64)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn conv2d_matches_finite_differences(
        n in 1usize..=3, cin in 1usize..=3, cout in 1usize..=4,
        kh in 1usize..=3, kw in 1usize..=3, extra_h in 0usize..=6, extra_w in 0usize..=6,
        stride in 1usize..=2, same in any::<bool>(), seed in any::<u64>(),
    ) {
        let (h, w) = (kh + extra_h, kw + extra_w);
        let x = random(&[n, cin, h, w], seed);
        let wt = random(&[cout, cin, kh, kw], seed + 1);
        let b = random(&[cout], seed + 2);
        let spec = Conv2dSpec { stride, padding: if same { Padding::Same } else { Padding::Valid } };
        let (ho, pt) = axis(h, kh, stride, same);
        let (wo, pl) = axis(w, kw, stride, same);
        let result = check_op(
            "conv2d", &[x, wt, b], &[0, 1, 2],
            |t, v| t.conv2d(v[0], v[1], v[2], spec),
            |a| conv2d_ref(&a[0], &a[1], &a[2], stride, pt, pl, ho, wo),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn conv2d_relu_matches_finite_differences(
        n in 1usize..=2, cin in 1usize..=3, cout in 1usize..=4,
        k in 1usize..=3, extra in 0usize..=6, stride in 1usize..=2, same in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // The fused op is relu(conv2d): the reference composes the two. Its
        // pre-activations are random sums, at a distance ≫ 1e-6 from the kink
        // with overwhelming probability, so the step never crosses it.
        let side = k + extra;
        let x = random(&[n, cin, side, side], seed);
        let wt = random(&[cout, cin, k, k], seed + 1);
        let b = random(&[cout], seed + 2);
        let spec = Conv2dSpec { stride, padding: if same { Padding::Same } else { Padding::Valid } };
        let (out, pad) = axis(side, k, stride, same);
        let result = check_op(
            "conv2d_relu", &[x, wt, b], &[0, 1, 2],
            |t, v| t.conv2d_relu(v[0], v[1], v[2], spec),
            |a| relu_ref(&conv2d_ref(&a[0], &a[1], &a[2], stride, pad, pad, out, out)),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn dense_matches_finite_differences(
        n in 1usize..=4, fan_in in 1usize..=13, out in 1usize..=9, seed in any::<u64>(),
    ) {
        let x = random(&[n, fan_in], seed);
        let w = random(&[out, fan_in], seed + 1);
        let b = random(&[out], seed + 2);
        let result = check_op(
            "dense", &[x, w, b], &[0, 1, 2],
            |t, v| t.dense(v[0], v[1], v[2]),
            |a| dense_ref(&a[0], &a[1], &a[2]),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn max_pool2d_matches_finite_differences(
        n in 1usize..=2, c in 1usize..=3, ph in 1usize..=3, pw in 1usize..=3,
        sh in 1usize..=3, sw in 1usize..=3, extra_h in 0usize..=6, extra_w in 0usize..=6,
        seed in any::<u64>(),
    ) {
        let (h, w) = (ph + extra_h, pw + extra_w);
        // Distinct values 0.01 apart: a step of 1e-6 cannot change a winner.
        let x = random_distinct(&[n, c, h, w], seed, 0.01);
        let spec = MaxPool2dSpec { pool: (ph, pw), stride: (sh, sw) };
        let result = check_op(
            "max_pool2d", &[x], &[0],
            |t, v| t.max_pool2d(v[0], spec),
            |a| max_pool_ref(&a[0], ph, pw, sh, sw),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn dropout_matches_finite_differences(
        dims in proptest::collection::vec(1usize..=7, 1..=4), rate in 0.0f32..0.9, seed in any::<u64>(),
    ) {
        let x = random(&dims, seed);
        // The reference multiplies by the mask the same seed draws.
        let mask = to64(&dropout_mask(&dims, rate, seed, &mut Pool::new()).unwrap());
        let result = check_op(
            "dropout", &[x], &[0],
            |t, v| t.dropout(v[0], rate, seed),
            |a| &a[0] * &mask,
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn relu_matches_finite_differences(
        dims in proptest::collection::vec(1usize..=7, 1..=4), seed in any::<u64>(),
    ) {
        // |x| ≥ 1e-3: a step of 1e-6 never crosses the kink at 0.
        let x = random_away_from_zero(&dims, seed, 1e-3);
        let result = check_op("relu", &[x], &[0], |t, v| t.relu(v[0]), |a| relu_ref(&a[0]), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn identity_matches_finite_differences(
        dims in proptest::collection::vec(1usize..=7, 1..=4), seed in any::<u64>(),
    ) {
        let x = random(&dims, seed);
        let result = check_op("identity", &[x], &[0], |t, v| t.identity(v[0]), |a| a[0].clone(), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn softmax_matches_finite_differences(n in 1usize..=4, k in 1usize..=11, seed in any::<u64>()) {
        let x = random(&[n, k], seed) * 3.0;
        let result = check_op("softmax", &[x], &[0], |t, v| t.softmax(v[0]), |a| softmax_ref(&a[0]), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn reshape_and_flatten_match_finite_differences(
        dims in proptest::collection::vec(1usize..=5, 2..=4), seed in any::<u64>(),
    ) {
        let x = random(&dims, seed);
        let flat = [dims[0], dims[1..].iter().product()];
        let result = check_op(
            "flatten", std::slice::from_ref(&x), &[0],
            |t, v| t.flatten(v[0]),
            |a| a[0].clone().into_shape_with_order(flat.to_vec()).unwrap(),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
        let reversed: Vec<usize> = dims.iter().rev().copied().collect();
        let result = check_op(
            "reshape", &[x], &[0],
            |t, v| t.reshape(v[0], &reversed),
            |a| a[0].clone().into_shape_with_order(reversed.clone()).unwrap(),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn softmax_cross_entropy_matches_finite_differences(
        n in 1usize..=5, k in 2usize..=10, soft in any::<bool>(), seed in any::<u64>(),
    ) {
        let logits = random(&[n, k], seed) * 4.0;
        let targets: Tensor = if soft {
            // Random distributions over the classes.
            let mut t = random(&[n, k], seed + 1).mapv(|v| v + 1.0);
            for mut row in t.outer_iter_mut() {
                let s = row.sum();
                row.mapv_inplace(|v| v / s);
            }
            t
        } else {
            let labels: Vec<usize> = (0..n).map(|i| (seed as usize).wrapping_add(i * 7) % k).collect();
            one_hot(&labels, k).unwrap()
        };
        let t64 = to64(&targets);
        let result = check_op(
            "softmax_cross_entropy", &[logits], &[0],
            |t, v| t.softmax_cross_entropy(v[0], targets.clone()),
            |a| cross_entropy_ref(&a[0], &t64),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A convolution deeper than the property tests reach: K = 40·3·3 = 360 steps
/// of the sum, more than the kernel takes in one block (288), so a block's
/// packed output is accumulated onto; and a 15-wide input, whose output grid
/// ends in a panel of one column (193 = 4·48 + 1), run column by column.
/// With the ReLU fused, which only the last block may apply.
#[test]
fn a_deep_convolution_matches_the_reference() {
    let (n, cin, cout, side) = (1, 40, 4, 15);
    let x = random(&[n, cin, side, side], 11);
    let w = random(&[cout, cin, 3, 3], 12);
    let b = random(&[cout], 13);
    let spec = Conv2dSpec::default();
    let out = side - 2;
    let result = check_op(
        "deep conv2d_relu",
        &[x, w, b],
        &[0, 1, 2],
        |t, v| t.conv2d_relu(v[0], v[1], v[2], spec),
        |a| relu_ref(&conv2d_ref(&a[0], &a[1], &a[2], 1, 0, 0, out, out)),
        14,
    );
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// 3x3 convolutions with 16 or more channels both ways, whose forward
    /// runs through Winograd's transforms where the CPU has AVX-512: odd and
    /// even sides (down to 1, padded), both paddings, a fused ReLU or not. Fewer cases than the
    /// others, as each differentiates some 3,000 values.
    #[test]
    fn winograd_conv2d_matches_finite_differences(
        n in 1usize..=2, cin in 16usize..=17, cout in 16usize..=17, side in 1usize..=8,
        same in any::<bool>(), relu in any::<bool>(), seed in any::<u64>(),
    ) {
        // Inputs smaller than the kernel only with `same` padding.
        let same = same || side < 3;
        let x = random(&[n, cin, side, side], seed);
        let wt = random(&[cout, cin, 3, 3], seed + 1);
        let b = random(&[cout], seed + 2);
        let spec = Conv2dSpec { stride: 1, padding: if same { Padding::Same } else { Padding::Valid } };
        let (out, pad) = axis(side, 3, 1, same);
        let conv = move |a: &[T64]| conv2d_ref(&a[0], &a[1], &a[2], 1, pad, pad, out, out);
        // With the ReLU, no pre-activation within 1e-4 of its kink: Winograd's
        // f32 outputs are off by up to ~2e-6 here and a finite-difference step
        // moves them by up to 1e-6, either of which can flip a value that
        // close to 0 (one failure in some 400 cases, at 8.7e-7). 1e-4 rejects a
        // few percent of the cases.
        if relu {
            let pre = conv(&[to64(&x), to64(&wt), to64(&b)]);
            prop_assume!(pre.iter().all(|v| v.abs() > 1e-4));
        }
        let result = check_op(
            "winograd conv2d", &[x, wt, b], &[0, 1, 2],
            |t, v| match relu {
                true => t.conv2d_relu(v[0], v[1], v[2], spec),
                false => t.conv2d(v[0], v[1], v[2], spec),
            },
            |a| if relu { relu_ref(&conv(a)) } else { conv(a) },
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A convolution with the 2x2 pooling after it taken in the same pass
    /// (`conv2d_max_pool2d`): few channels (the direct products) or 16
    /// (Winograd's), odd and even sides, a ReLU or not.
    #[test]
    fn conv2d_max_pool2d_matches_finite_differences(
        n in 1usize..=2, many in any::<bool>(), side in 4usize..=9,
        same in any::<bool>(), relu in any::<bool>(), seed in any::<u64>(),
    ) {
        let (cin, cout) = if many { (16, 16) } else { (2, 3) };
        let x = random(&[n, cin, side, side], seed);
        let wt = random(&[cout, cin, 3, 3], seed + 1);
        let b = random(&[cout], seed + 2);
        let spec = Conv2dSpec { stride: 1, padding: if same { Padding::Same } else { Padding::Valid } };
        let (out, pad) = axis(side, 3, 1, same);
        let conv = move |a: &[T64]| {
            let z = conv2d_ref(&a[0], &a[1], &a[2], 1, pad, pad, out, out);
            if relu { relu_ref(&z) } else { z }
        };
        // As for Winograd above: no pre-activation within 1e-4 of the ReLU's
        // kink, and, for the same reason, no window whose two largest
        // values are within 1e-4 of each other (the winner could flip).
        let z = conv(&[to64(&x), to64(&wt), to64(&b)]);
        let zs = z.as_slice().unwrap();
        if relu {
            let pre = conv2d_ref(&to64(&x), &to64(&wt), &to64(&b), 1, pad, pad, out, out);
            prop_assume!(pre.iter().all(|v| v.abs() > 1e-4));
        }
        for plane in zs.chunks(out * out) {
            for (oy, ox) in (0..out / 2).flat_map(|oy| (0..out / 2).map(move |ox| (oy, ox))) {
                let mut window: Vec<f64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(a, c)| plane[(2 * oy + a) * out + 2 * ox + c])
                    .collect();
                window.sort_by(|p, q| q.total_cmp(p));
                // Ties at 0 (after the ReLU) carry no gradient either way.
                prop_assume!(window[0] == 0.0 || window[0] - window[1] > 1e-4);
            }
        }
        let result = check_op(
            "conv2d_max_pool2d", &[x, wt, b], &[0, 1, 2],
            |t, v| t.conv2d_max_pool2d(v[0], v[1], v[2], spec, relu, MaxPool2dSpec::square(2)),
            |a| max_pool_ref(&conv(a), 2, 2, 2, 2),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The Winograd forward on a batch that spans several sets of images (a
/// 13x13 input has 9 tiles of 4x4, so a set holds 7 images and 16 images
/// make three sets, the last one short): every image against the f64
/// reference.
#[test]
fn winograd_forward_over_several_sets_of_images() {
    let (n, cin, cout, side) = (16, 16, 17, 13);
    let x = random(&[n, cin, side, side], 21);
    let w = random(&[cout, cin, 3, 3], 22);
    let b = random(&[cout], 23);
    let mut tape = Tape::new().with_kernels(Kernels::Winograd);
    let (xv, wv, bv) = (
        tape.input(x.clone()),
        tape.input(w.clone()),
        tape.input(b.clone()),
    );
    let y = tape.conv2d_relu(xv, wv, bv, Conv2dSpec::default()).unwrap();
    let want = relu_ref(&conv2d_ref(
        &to64(&x),
        &to64(&w),
        &to64(&b),
        1,
        0,
        0,
        11,
        11,
    ));
    let result = check_forward("winograd sets", tape.value(y).unwrap(), &want);
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

/// The input gradient through Winograd's transforms (a 15x15 input, as
/// CIFAR's second layer: `dx` in 4x4 tiles, four images a set) over 9 images,
/// sets of 4, 4 and 1: against the f64 sum
/// `dx[n, i, y, x] = Σₒᵣₛ dy[n, o, y − r, x − s] · w[o, i, r, s]`.
#[test]
fn winograd_input_gradient_over_several_sets_of_images() {
    let (n, cin, cout, side) = (9, 16, 17, 15);
    let out = side - 2;
    let x = random(&[n, cin, side, side], 31);
    let w = random(&[cout, cin, 3, 3], 32);
    let b = random(&[cout], 33);
    let dy = random(&[n, cout, out, out], 34);
    let mut tape = Tape::new().with_kernels(Kernels::Winograd);
    let (xv, wv, bv) = (
        tape.input(x.clone()),
        tape.input(w.clone()),
        tape.input(b.clone()),
    );
    let y = tape.conv2d(xv, wv, bv, Conv2dSpec::default()).unwrap();
    let grads = tape.backward(y, &dy, salient::ReluRule::Gradient).unwrap();
    let (dy, w) = (to64(&dy), to64(&w));
    let mut want = T64::zeros(vec![n, cin, side, side]);
    let dy = dy.into_dimensionality::<ndarray::Ix4>().unwrap();
    for ((m, o, oy, ox), &g) in dy.indexed_iter() {
        for (i, r, s) in (0..cin).flat_map(|i| (0..9).map(move |rs| (i, rs / 3, rs % 3))) {
            want[[m, i, oy + r, ox + s].as_slice()] += g * w[[o, i, r, s].as_slice()];
        }
    }
    let result = check_forward("winograd input gradient", grads.get(xv).unwrap(), &want);
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

/// The checker is not blind: a gradient that is wrong by 1% in one entry fails,
/// and so does a too-small step in f32-like precision.
#[test]
fn checker_rejects_a_slightly_wrong_gradient() {
    let x = to64(&random(&[3, 4], 7));
    let w = to64(&random(&[2, 4], 8));
    let b = to64(&random(&[2], 9));
    // L = Σ dense(x, w, b); ∂L/∂x[i, k] = Σₒ w[o, k].
    let loss = |x: &T64| dense_ref(x, &w, &b).sum();
    let exact = Tensor::from_shape_fn(x.raw_dim(), |ix| (w[[0, ix[1]]] + w[[1, ix[1]]]) as f32);
    assert!(check_gradient("exact", &x, &exact, loss, STEP, REL_TOL).is_ok());
    let mut wrong = exact.clone();
    wrong[[1, 2]] *= 1.01;
    assert!(check_gradient("wrong", &x, &wrong, loss, STEP, REL_TOL).is_err());
    // In f64 a step of 1e-14 is swamped by rounding (1e-16 / 1e-14 = 1%).
    let big = |x: &T64| 1e3 * dense_ref(x, &w, &b).sum();
    let exact_big = exact.mapv(|v| v * 1e3);
    assert!(check_gradient("tiny step", &x, &exact_big, big, 1e-14, REL_TOL).is_err());
}
