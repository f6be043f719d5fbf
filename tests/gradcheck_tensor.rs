//! Property tests of the general tensor ops (element-wise arithmetic with
//! broadcasting, the smooth unary functions, reductions) against central
//! finite differences of f64 references written here with `ndarray`'s own
//! broadcasting and folds. 64 cases per op.

mod common;

use common::*;
use ndarray::{Dimension, IxDyn};
use proptest::prelude::*;
use salient::ops::{AvgPool2dSpec, Conv2dOptions, Conv2dSpec, Padding, UnaryOp};
use salient::Tensor;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(64)
}

/// The error function in f64, by the series `2/√π Σ (−1)ⁿ x²ⁿ⁺¹ / (n!(2n+1))`
/// (exact to f64 rounding for |x| ≤ 3, where these tests use it).
fn erf64(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// A shape that broadcasts to `full`: its last `keep` axes, each set to 1
/// where `ones` says.
fn broadcastable(full: &[usize], keep: usize, ones: &[bool]) -> Vec<usize> {
    let keep = keep.min(full.len());
    full[full.len() - keep..]
        .iter()
        .zip(ones)
        .map(|(&d, &one)| if one { 1 } else { d })
        .collect()
}

/// `f(a, b)` in f64 with `ndarray`'s broadcasting.
fn binary_ref(a: &T64, b: &T64, f: impl Fn(f64, f64) -> f64) -> T64 {
    let shape = if a.ndim() >= b.ndim() {
        a.shape()
    } else {
        b.shape()
    };
    let mut full = shape.to_vec();
    let n = full.len();
    for (i, d) in full.iter_mut().enumerate() {
        let da = (i + a.ndim()).checked_sub(n).map_or(1, |j| a.shape()[j]);
        let db = (i + b.ndim()).checked_sub(n).map_or(1, |j| b.shape()[j]);
        *d = da.max(db);
    }
    let (a, b) = (
        a.broadcast(IxDyn(&full)).unwrap(),
        b.broadcast(IxDyn(&full)).unwrap(),
    );
    ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| f(x, y))
}

/// Reduces `x` over `axes` (sorted, distinct) in f64.
fn reduce_ref(
    x: &T64,
    axes: &[usize],
    keep: bool,
    f: &dyn Fn(ndarray::ArrayViewD<f64>) -> f64,
) -> T64 {
    let mut shape = x.shape().to_vec();
    let mut out = x.clone();
    // Move the reduced axes last, flatten them, and fold each row.
    let kept: Vec<usize> = (0..x.ndim()).filter(|a| !axes.contains(a)).collect();
    let order: Vec<usize> = kept.iter().chain(axes).copied().collect();
    out = out
        .permuted_axes(IxDyn(&order))
        .as_standard_layout()
        .into_owned();
    let groups: usize = kept.iter().map(|&a| x.shape()[a]).product();
    let size: usize = axes.iter().map(|&a| x.shape()[a]).product();
    let rows = out.into_shape_with_order(IxDyn(&[groups, size])).unwrap();
    let values: Vec<f64> = rows.outer_iter().map(|r| f(r.into_dyn())).collect();
    for &a in axes.iter().rev() {
        if keep {
            shape[a] = 1;
        } else {
            shape.remove(a);
        }
    }
    T64::from_shape_vec(IxDyn(&shape), values).unwrap()
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn broadcasting_arithmetic_matches_finite_differences(
        full in proptest::collection::vec(1usize..=4, 1..=4),
        keep in 0usize..=4, ones in proptest::collection::vec(any::<bool>(), 4),
        swap in any::<bool>(), op in 0usize..4, seed in any::<u64>(),
    ) {
        let small = broadcastable(&full, keep, &ones);
        let (sa, sb) = if swap { (small, full) } else { (full, small) };
        let a = random(&sa, seed);
        // Divisors kept away from 0 (|b| ≥ 0.5), where a/b is smooth.
        let b = if op == 3 { random_away_from_zero(&sb, seed + 1, 0.5) } else { random(&sb, seed + 1) };
        type F = fn(f64, f64) -> f64;
        let (name, f): (&str, F) = match op {
            0 => ("add", |x, y| x + y),
            1 => ("sub", |x, y| x - y),
            2 => ("mul", |x, y| x * y),
            _ => ("div", |x, y| x / y),
        };
        let result = check_op(
            name, &[a, b], &[0, 1],
            |t, v| match op { 0 => t.add(v[0], v[1]), 1 => t.sub(v[0], v[1]), 2 => t.mul(v[0], v[1]), _ => t.div(v[0], v[1]) },
            |x| binary_ref(&x[0], &x[1], f),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn unary_functions_match_finite_differences(
        dims in proptest::collection::vec(1usize..=5, 1..=3), op in 0usize..10,
        p in -2.0f32..3.0, seed in any::<u64>(),
    ) {
        // log, sqrt and fractional powers on (0.2, 2]: away from 0, where they are smooth.
        let positive = random(&dims, seed).mapv(|v| 0.2 + 0.9 * (v + 1.0));
        let x = match op {
            2..=4 => positive,
            // Away from the kinks at −0.5, 0 and 0.7 by more than the step.
            7 | 8 => random_away_from_zero(&dims, seed, 1e-3).mapv(|v| if (v + 0.5).abs() < 1e-3 || (v - 0.7).abs() < 1e-3 { v + 0.01 } else { v }),
            _ => random(&dims, seed) * 2.0,
        };
        let (unary, f): (UnaryOp, Box<dyn Fn(f64) -> f64 + Sync>) = match op {
            0 => (UnaryOp::Neg, Box::new(|x| -x)),
            1 => (UnaryOp::Exp, Box::new(f64::exp)),
            2 => (UnaryOp::Log, Box::new(f64::ln)),
            3 => (UnaryOp::Sqrt, Box::new(f64::sqrt)),
            4 => (UnaryOp::Pow(p), Box::new(move |x| x.powf(f64::from(p)))),
            5 => (UnaryOp::Tanh, Box::new(f64::tanh)),
            6 => (UnaryOp::Sigmoid, Box::new(|x| 1.0 / (1.0 + (-x).exp()))),
            // The kinks of clip and leaky ReLU are avoided by the inputs below.
            7 => (UnaryOp::Clip(-0.5, 0.7), Box::new(|x| x.clamp(-0.5, 0.7))),
            8 => (UnaryOp::LeakyRelu(0.1), Box::new(|x| if x > 0.0 { x } else { 0.1 * x })),
            _ => (UnaryOp::Gelu, Box::new(|x| x * 0.5 * (1.0 + erf64(x / 2f64.sqrt())))),
        };
        let result = check_op(
            &format!("{unary:?}"), &[x], &[0],
            |t, v| t.unary(unary, v[0]),
            |a| a[0].mapv(&f),
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn reductions_match_finite_differences(
        dims in proptest::collection::vec(1usize..=4, 1..=4),
        pick in proptest::collection::vec(any::<bool>(), 4), keep in any::<bool>(),
        how in 0usize..3, seed in any::<u64>(),
    ) {
        let axes: Vec<usize> = (0..dims.len()).filter(|&a| pick[a]).collect();
        let every: Vec<usize> = (0..dims.len()).collect();
        let reduced = if axes.is_empty() { &every } else { &axes };
        // Distinct values 1e-2 apart: no ties, so max is differentiable.
        let x = random_distinct(&dims, seed, 1e-2);
        let mean = |r: ndarray::ArrayViewD<f64>| r.sum() / r.len() as f64;
        let max = |r: ndarray::ArrayViewD<f64>| r.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum = |r: ndarray::ArrayViewD<f64>| r.sum();
        let result = check_op(
            ["sum", "mean", "max"][how], &[x], &[0],
            |t, v| match how { 0 => t.sum(v[0], &axes, keep), 1 => t.mean(v[0], &axes, keep), _ => t.max(v[0], &axes, keep) },
            |a| match how {
                0 => reduce_ref(&a[0], reduced, keep, &sum),
                1 => reduce_ref(&a[0], reduced, keep, &mean),
                _ => reduce_ref(&a[0], reduced, keep, &max),
            },
            seed,
        );
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// `a · b` per batch element in f64 (batch axes broadcast), by the triple loop.
fn matmul_ref(a: &T64, b: &T64) -> T64 {
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let batch = binary_ref(
        &T64::zeros(IxDyn(&a.shape()[..ra - 2])),
        &T64::zeros(IxDyn(&b.shape()[..rb - 2])),
        |x, y| x + y,
    )
    .shape()
    .to_vec();
    let full = |x: &T64, r: usize, c: usize| {
        let mut s = batch.clone();
        s.extend([r, c]);
        x.broadcast(IxDyn(&s)).unwrap().to_owned()
    };
    let (a, b) = (full(a, m, k), full(b, k, n));
    let mut shape = batch.clone();
    shape.extend([m, n]);
    T64::from_shape_fn(IxDyn(&shape), |ix| {
        let r = ix.ndim();
        (0..k)
            .map(|s| {
                let mut ia = ix.clone();
                ia[r - 1] = s;
                let mut ib = ix.clone();
                ib[r - 2] = s;
                a[&ia] * b[&ib]
            })
            .sum::<f64>()
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn matmul_matches_finite_differences(
        batch in proptest::collection::vec(1usize..=3, 0..=2), shared in any::<bool>(),
        m in 1usize..=4, k in 1usize..=5, n in 1usize..=4, seed in any::<u64>(),
    ) {
        let mut sa = batch.clone();
        sa.extend([m, k]);
        // b is one matrix shared by the batch, or a batch of its own.
        let mut sb = if shared { vec![] } else { batch.clone() };
        sb.extend([k, n]);
        let (a, b) = (random(&sa, seed), random(&sb, seed + 1));
        let result = check_op("matmul", &[a, b], &[0, 1], |t, v| t.matmul(v[0], v[1]), |x| matmul_ref(&x[0], &x[1]), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn permute_concat_slice_and_pad_match_finite_differences(
        dims in proptest::collection::vec(1usize..=4, 1..=4), order_seed in any::<u64>(),
        which in 0usize..4, extra in 1usize..=3, pad_before in 0usize..=2, pad_after in 0usize..=2,
        seed in any::<u64>(),
    ) {
        let x = random(&dims, seed);
        let rank = dims.len();
        let axis = (order_seed as usize) % rank;
        let result = match which {
            0 => {
                // A permutation: rotate the axes by a seed-chosen amount, then swap two.
                let mut axes: Vec<usize> = (0..rank).map(|a| (a + axis) % rank).collect();
                axes.swap(0, rank - 1);
                let order = axes.clone();
                check_op("permute", &[x], &[0], move |t, v| t.permute(v[0], &axes),
                    move |a| a[0].clone().permuted_axes(IxDyn(&order)).as_standard_layout().into_owned(), seed)
            }
            1 => {
                let mut other_dims = dims.clone();
                other_dims[axis] = extra;
                let y = random(&other_dims, seed + 7);
                check_op("concat", &[x, y], &[0, 1], move |t, v| t.concat(&[v[0], v[1]], axis),
                    move |a| ndarray::concatenate(ndarray::Axis(axis), &[a[0].view(), a[1].view()]).unwrap(), seed)
            }
            2 => {
                let len = dims[axis];
                let (start, end) = (len / 3, len - len / 4);
                check_op("slice", &[x], &[0], move |t, v| t.slice(v[0], axis, start, end),
                    move |a| a[0].slice_axis(ndarray::Axis(axis), ndarray::Slice::from(start..end)).to_owned(), seed)
            }
            _ => {
                let pads: Vec<(usize, usize)> = (0..rank).map(|a| if a == axis { (pad_before, pad_after) } else { (a % 2, 0) }).collect();
                let p = pads.clone();
                check_op("pad", &[x], &[0], move |t, v| t.pad(v[0], &pads, 0.5),
                    move |a| {
                        let shape: Vec<usize> = a[0].shape().iter().zip(&p).map(|(&l, &(b, e))| l + b + e).collect();
                        T64::from_shape_fn(IxDyn(&shape), |ix| {
                            let inner: Option<Vec<usize>> = (0..ix.ndim()).map(|d| ix[d].checked_sub(p[d].0).filter(|&i| i < a[0].shape()[d])).collect();
                            inner.map_or(0.5, |i| a[0][IxDyn(&i)])
                        })
                    }, seed)
            }
        };
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// Average pooling in f64: each output the mean of its window's input values
/// (padding counted in the divisor, or not).
fn avg_pool_ref(
    x: &T64,
    k: (usize, usize),
    s: (usize, usize),
    pads: (usize, usize, usize, usize),
    include: bool,
) -> T64 {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (top, left, bottom, right) = pads;
    let ho = (h + top + bottom - k.0) / s.0 + 1;
    let wo = (w + left + right - k.1) / s.1 + 1;
    T64::from_shape_fn(IxDyn(&[n, c, ho, wo]), |ix| {
        let (mut sum, mut count) = (0.0, 0);
        for i in 0..k.0 {
            for j in 0..k.1 {
                // Position in the padded input, then in the input itself.
                let (py, px) = (ix[2] * s.0 + i, ix[3] * s.1 + j);
                let inside = py >= top && py - top < h && px >= left && px - left < w;
                if inside {
                    sum += x[[ix[0], ix[1], py - top, px - left]];
                    count += 1;
                }
            }
        }
        sum / if include {
            (k.0 * k.1) as f64
        } else {
            f64::from(count)
        }
    })
}

/// Batch normalisation in f64, over axis 1, with the given statistics or the batch's.
fn batch_norm_ref(x: &T64, gamma: &T64, beta: &T64, stats: Option<(&T64, &T64)>, eps: f64) -> T64 {
    let c = x.shape()[1];
    let mut y = x.clone();
    for ch in 0..c {
        let values = x.index_axis(ndarray::Axis(1), ch);
        let (mean, var) = match stats {
            Some((m, v)) => (m[ch], v[ch]),
            None => {
                let mean = values.sum() / values.len() as f64;
                (
                    mean,
                    values.mapv(|v| (v - mean).powi(2)).sum() / values.len() as f64,
                )
            }
        };
        y.index_axis_mut(ndarray::Axis(1), ch)
            .mapv_inplace(|v| gamma[ch] * (v - mean) / (var + eps).sqrt() + beta[ch]);
    }
    y
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn log_softmax_matches_finite_differences(n in 1usize..=4, k in 1usize..=9, seed in any::<u64>()) {
        let x = random(&[n, k], seed) * 4.0;
        let result = check_op("log_softmax", &[x], &[0], |t, v| t.log_softmax(v[0]), |a| {
            let mut y = a[0].clone();
            for mut row in y.outer_iter_mut() {
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                row.mapv_inplace(|v| v - lse);
            }
            y
        }, seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn avg_pool2d_matches_finite_differences(
        n in 1usize..=2, c in 1usize..=3, kh in 1usize..=3, kw in 1usize..=3,
        extra_h in 0usize..=5, extra_w in 0usize..=5, sh in 1usize..=3, sw in 1usize..=3,
        pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2), include in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // Padding smaller than the window, as the op requires.
        let pads = (pads.0.min(kh - 1), pads.1.min(kw - 1), pads.2.min(kh - 1), pads.3.min(kw - 1));
        let x = random(&[n, c, kh + extra_h, kw + extra_w], seed);
        let spec = AvgPool2dSpec { pool: (kh, kw), stride: (sh, sw), pads, count_include_pad: include };
        let result = check_op("avg_pool2d", &[x], &[0], |t, v| t.avg_pool2d(v[0], spec),
            |a| avg_pool_ref(&a[0], (kh, kw), (sh, sw), pads, include), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn global_avg_pool2d_matches_finite_differences(
        n in 1usize..=3, c in 1usize..=4, h in 1usize..=5, w in 1usize..=5, seed in any::<u64>(),
    ) {
        let x = random(&[n, c, h, w], seed);
        let result = check_op("global_avg_pool2d", &[x], &[0], |t, v| t.global_avg_pool2d(v[0]),
            |a| a[0].mean_axis(ndarray::Axis(3)).unwrap().mean_axis(ndarray::Axis(2)).unwrap(), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn batch_norm_matches_finite_differences(
        n in 1usize..=3, c in 1usize..=3, rest in proptest::collection::vec(1usize..=3, 0..=2),
        training in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut dims = vec![n, c];
        dims.extend(&rest);
        let x = random(&dims, seed);
        let gamma = random(&[c], seed + 1);
        let beta = random(&[c], seed + 2);
        let mean = random(&[c], seed + 3) * 0.5;
        // Variances in [0.5, 1.5].
        let var = random(&[c], seed + 4).mapv(|v| 1.0 + 0.5 * v);
        let eps = 1e-3;
        let result = if training {
            // One value per channel has zero variance: the op is then only ε away from
            // dividing by zero, so training needs at least two values per channel.
            prop_assume!(n * rest.iter().product::<usize>() >= 2);
            check_op("batch_norm_train", &[x, gamma, beta], &[0, 1, 2],
                |t, v| t.batch_norm_train(v[0], v[1], v[2], eps),
                |a| batch_norm_ref(&a[0], &a[1], &a[2], None, f64::from(eps)), seed)
        } else {
            check_op("batch_norm", &[x, gamma, beta, mean, var], &[0, 1, 2, 3, 4],
                |t, v| t.batch_norm(v[0], v[1], v[2], v[3], v[4], eps),
                |a| batch_norm_ref(&a[0], &a[1], &a[2], Some((&a[3], &a[4])), f64::from(eps)), seed)
        };
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The general convolution in f64, by its formula.
fn conv_general_ref(x: &T64, w: &T64, b: &T64, o: Conv2dOptions) -> T64 {
    let (n, h, wd) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let (cout, cin_g, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let (top, left, bottom, right) = o.pads;
    let ho = (h + top + bottom - ((kh - 1) * o.dilation.0 + 1)) / o.stride.0 + 1;
    let wo = (wd + left + right - ((kw - 1) * o.dilation.1 + 1)) / o.stride.1 + 1;
    let cout_g = cout / o.groups;
    T64::from_shape_fn(IxDyn(&[n, cout, ho, wo]), |ix| {
        let (img, co, oy, ox) = (ix[0], ix[1], ix[2], ix[3]);
        let group = co / cout_g;
        let mut sum = b[co];
        for c in 0..cin_g {
            for i in 0..kh {
                for j in 0..kw {
                    let py = (oy * o.stride.0 + i * o.dilation.0) as isize - top as isize;
                    let px = (ox * o.stride.1 + j * o.dilation.1) as isize - left as isize;
                    if py >= 0 && px >= 0 && (py as usize) < h && (px as usize) < wd {
                        sum += w[[co, c, i, j]]
                            * x[[img, group * cin_g + c, py as usize, px as usize]];
                    }
                }
            }
        }
        sum
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn general_conv2d_matches_finite_differences(
        n in 1usize..=2, groups in 1usize..=3, cin_g in 1usize..=2, cout_g in 1usize..=2,
        kh in 1usize..=3, kw in 1usize..=3, sh in 1usize..=3, sw in 1usize..=2,
        dh in 1usize..=2, dw in 1usize..=3, extra_h in 0usize..=4, extra_w in 0usize..=4,
        pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2), seed in any::<u64>(),
    ) {
        let o = Conv2dOptions { stride: (sh, sw), dilation: (dh, dw), pads, groups };
        let h = (kh - 1) * dh + 1 + extra_h;
        let w = (kw - 1) * dw + 1 + extra_w;
        let x = random(&[n, groups * cin_g, h, w], seed);
        let wt = random(&[groups * cout_g, cin_g, kh, kw], seed + 1);
        let b = random(&[groups * cout_g], seed + 2);
        let result = check_op("conv2d_with", &[x, wt, b], &[0, 1, 2],
            |t, v| t.conv2d_with(v[0], v[1], v[2], o),
            |a| conv_general_ref(&a[0], &a[1], &a[2], o), seed);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn general_conv2d_equals_the_plain_one_where_they_overlap(
        n in 1usize..=2, cin in 1usize..=3, cout in 1usize..=4, k in 1usize..=3,
        extra in 0usize..=6, stride in 1usize..=2, same in any::<bool>(), seed in any::<u64>(),
    ) {
        // The reference loops against `conv2d`'s reference (im2col), on the
        // options both can express; `conv2d_with` hands those to `conv2d`.
        let side = k + extra;
        let x = random(&[n, cin, side, side], seed);
        let w = random(&[cout, cin, k, k], seed + 1);
        let b = random(&[cout], seed + 2);
        let mut o = Conv2dOptions { stride: (stride, stride), ..Conv2dOptions::default() };
        if same {
            o.pads = o.same_pads(side, side, k, k);
        }
        let spec = Conv2dSpec { stride, padding: if same { Padding::Same } else { Padding::Valid } };
        let general = salient::ops::conv2d_general_reference(&x, &w, &b, o).unwrap();
        let plain = salient::ops::conv2d_reference(&x, &w, &b, spec).unwrap();
        prop_assert_eq!(general.shape(), plain.shape());
        for (g, p) in general.iter().zip(plain.iter()) {
            // The same terms summed in another order: f32 rounding of ≤ 27 terms of size ≤ 1.
            prop_assert!((g - p).abs() <= 1e-5, "{} vs {}", g, p);
        }
    }
}

#[test]
fn reductions_keep_the_first_maximum_on_real_ties() {
    // Every value tied: the gradient goes to the first element of each group only.
    let mut tape = salient::Tape::new();
    let x = tape.input(Tensor::ones(vec![2, 3, 2]));
    let y = tape.max(x, &[1, 2], false).unwrap();
    let g = tape
        .backward(y, &Tensor::ones(vec![2]), salient::ReluRule::Gradient)
        .unwrap();
    let dx = g.get(x).unwrap();
    assert_eq!(dx.sum(), 2.0);
    assert_eq!(dx[[0, 0, 0]], 1.0);
    assert_eq!(dx[[1, 0, 0]], 1.0);
}
