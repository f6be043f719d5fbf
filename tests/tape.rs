//! The tape itself: order, fan-out, reuse, inference mode, threads and errors.

use ndarray::array;
use salient::ops::{Conv2dSpec, MaxPool2dSpec};
use salient::tensor::Pool;
use salient::{Error, ReluRule, Tape, Tensor};

fn t<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> Tensor {
    a.into_dyn()
}

#[test]
fn a_value_used_twice_gets_both_gradients() {
    // h = identity(x) feeds two consumers: y = h · relu(h)ᵀ = Σ hᵢ·relu(hᵢ).
    // ∂y/∂hᵢ = relu(hᵢ) + hᵢ·1[hᵢ>0]: 2x for x > 0, 0 for x < 0. A depth-first
    // propagation that visits h once per path, or only once, gets this wrong.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, -2.0, 3.0]]));
    let h = tape.identity(x).unwrap();
    let r = tape.relu(h).unwrap();
    let zero = tape.constant(t(array![0.0]));
    let y = tape.dense(h, r, zero).unwrap(); // [1, 1]
    assert_eq!(tape.value(y).unwrap()[[0, 0]], 1.0 + 9.0);
    let g = tape
        .backward(y, &t(array![[1.0]]), ReluRule::Gradient)
        .unwrap();
    assert_eq!(g.get(x).unwrap(), &t(array![[2.0, 0.0, 6.0]]));
    // Every recorded value that depends on x has its gradient, intermediates too.
    assert_eq!(g.get(h).unwrap(), &t(array![[2.0, 0.0, 6.0]]));
    assert_eq!(g.get(r).unwrap(), &t(array![[1.0, -2.0, 3.0]]));
    // Constants get none.
    assert!(g.get(zero).is_none());
}

#[test]
fn the_same_var_twice_in_one_op() {
    // y = x·xᵀ = Σ xᵢ²: ∂y/∂x = 2x.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, 2.0, -3.0]]));
    let b = tape.constant(t(array![0.0]));
    let y = tape.dense(x, x, b).unwrap();
    let g = tape
        .backward(y, &t(array![[1.0]]), ReluRule::Gradient)
        .unwrap();
    assert_eq!(g.get(x).unwrap(), &t(array![[2.0, 4.0, -6.0]]));
}

#[test]
fn backward_is_linear_in_the_seed() {
    // Seeding with e₀ + e₁ gives the sum of the two one-hot gradients.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[0.5, -1.0, 2.0]]));
    let w = tape.constant(t(array![[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]));
    let b = tape.constant(t(array![0.0, 0.0]));
    let h = tape.dense(x, w, b).unwrap();
    let y = tape.softmax(h).unwrap();
    let g0 = tape
        .backward(y, &t(array![[1.0, 0.0]]), ReluRule::Gradient)
        .unwrap()
        .take(x)
        .unwrap();
    let g1 = tape
        .backward(y, &t(array![[0.0, 1.0]]), ReluRule::Gradient)
        .unwrap()
        .take(x)
        .unwrap();
    let both = tape
        .backward(y, &t(array![[1.0, 1.0]]), ReluRule::Gradient)
        .unwrap()
        .take(x)
        .unwrap();
    for ((a, b), c) in g0.iter().zip(g1.iter()).zip(both.iter()) {
        assert!((a + b - c).abs() < 1e-6);
    }
}

/// A small convolutional step, used to check reuse and threads.
fn step<'a>(tape: &mut Tape<'a>, x: &'a Tensor, w: &'a Tensor, b: &'a Tensor) -> (Tensor, Tensor) {
    let xv = tape.param(x);
    let wv = tape.param(w);
    let bv = tape.param(b);
    let y = tape.conv2d(xv, wv, bv, Conv2dSpec::default()).unwrap();
    let y = tape.relu(y).unwrap();
    let y = tape.max_pool2d(y, MaxPool2dSpec::square(2)).unwrap();
    let seed = Tensor::ones(tape.value(y).unwrap().shape());
    let g = tape.backward(y, &seed, ReluRule::Gradient).unwrap();
    let out = (g.get(wv).unwrap().clone(), g.get(xv).unwrap().clone());
    tape.recycle(g);
    out
}

fn inputs(seed: f32) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::from_shape_fn(vec![2, 3, 9, 9], |i| {
        ((i[0] * 7 + i[1] * 5 + i[2] * 3 + i[3]) as f32 * 0.37 + seed).sin()
    });
    let w = Tensor::from_shape_fn(vec![4, 3, 3, 3], |i| {
        ((i[0] + 2 * i[1] + 3 * i[2] + 5 * i[3]) as f32 * 0.11 - seed).cos()
    });
    let b = Tensor::from_shape_fn(vec![4], |i| i[0] as f32 * 0.1);
    (x, w, b)
}

#[test]
fn a_reused_pool_stops_growing_and_gives_the_same_answers() {
    let (x, w, b) = inputs(0.0);
    let mut pool = Pool::new();
    let (mut counts, mut fresh) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for _ in 0..4 {
        let mut tape = Tape::with_pool(pool);
        results.push(step(&mut tape, &x, &w, &b));
        pool = tape.into_pool();
        counts.push(pool.free_buffers());
        fresh.push(pool.fresh_allocations());
    }
    // After the first step every buffer a step needs is already in the pool,
    // and every one it takes comes back (spent gradients included).
    assert!(counts[0] > 0);
    assert_eq!(counts[1], counts[0]);
    assert_eq!(counts[3], counts[0]);
    assert!(fresh[0] > 0);
    assert_eq!(fresh[3], fresh[0], "steps after the first allocated");
    assert!(results.iter().all(|r| r == &results[0]));
}

#[test]
fn tapes_in_two_threads_do_not_interfere() {
    let sequential: Vec<(Tensor, Tensor)> = [0.0, 1.0]
        .iter()
        .map(|&s| {
            let (x, w, b) = inputs(s);
            step(&mut Tape::new(), &x, &w, &b)
        })
        .collect();
    let threads: Vec<_> = [0.0, 1.0]
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let (x, w, b) = inputs(s);
                (0..20)
                    .map(|_| step(&mut Tape::new(), &x, &w, &b))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (thread, want) in threads.into_iter().zip(&sequential) {
        for got in thread.join().unwrap() {
            assert_eq!(&got, want);
        }
    }
}

#[test]
fn inference_records_nothing_and_computes_the_same_values() {
    let (x, w, b) = inputs(0.5);
    let run = |tape: &mut Tape| {
        let xv = tape.input(x.clone());
        let wv = tape.constant(w.clone());
        let bv = tape.constant(b.clone());
        let y = tape.conv2d(xv, wv, bv, Conv2dSpec::default()).unwrap();
        let y = tape.relu(y).unwrap();
        (y, tape.value(y).unwrap().clone())
    };
    let (_, recorded) = run(&mut Tape::new());
    let mut inference = Tape::inference();
    let (y, value) = run(&mut inference);
    assert_eq!(value, recorded);
    assert!(!inference.requires_grad(y));
    let err = inference
        .backward(y, &Tensor::ones(value.shape()), ReluRule::Gradient)
        .unwrap_err();
    assert!(err.to_string().contains("inference"), "{err}");
}

#[test]
fn borrowed_params_are_read_in_place() {
    let w = t(array![[2.0, 3.0]]);
    let b = t(array![1.0]);
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, 1.0]]));
    let wv = tape.param(&w);
    let bv = tape.constant_ref(&b);
    let y = tape.dense(x, wv, bv).unwrap();
    let g = tape
        .backward(y, &t(array![[1.0]]), ReluRule::Gradient)
        .unwrap();
    assert_eq!(g.get(wv).unwrap(), &t(array![[1.0, 1.0]]));
    assert_eq!(g.get(x).unwrap(), &t(array![[2.0, 3.0]]));
    assert!(g.get(bv).is_none());
}

#[test]
fn shape_errors_name_the_op_and_both_shapes() {
    let mut tape = Tape::new();
    let x = tape.input(Tensor::zeros(vec![2, 3, 8, 8]));
    let w = tape.input(Tensor::zeros(vec![4, 2, 3, 3]));
    let b = tape.input(Tensor::zeros(vec![4]));
    let err = tape.conv2d(x, w, b, Conv2dSpec::default()).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "conv2d", .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("conv2d") && msg.contains("[2, 3, 8, 8]") && msg.contains("[4, 2, 3, 3]"),
        "{msg}"
    );

    let x = tape.input(Tensor::zeros(vec![5, 7]));
    let w = tape.input(Tensor::zeros(vec![3, 6]));
    let b = tape.input(Tensor::zeros(vec![3]));
    let msg = tape.dense(x, w, b).unwrap_err().to_string();
    assert!(
        msg.contains("dense") && msg.contains("[5, 7]") && msg.contains("[3, 6]"),
        "{msg}"
    );

    let big = tape.input(Tensor::zeros(vec![1, 1, 2, 2]));
    let k = tape.input(Tensor::zeros(vec![1, 1, 3, 3]));
    let kb = tape.input(Tensor::zeros(vec![1]));
    assert!(tape.conv2d(big, k, kb, Conv2dSpec::default()).is_err());
    assert!(tape.max_pool2d(big, MaxPool2dSpec::square(3)).is_err());
    let zero_stride = Conv2dSpec {
        stride: 0,
        ..Default::default()
    };
    assert!(tape.conv2d(big, big, kb, zero_stride).is_err());
}

#[test]
fn misuse_of_the_tape_is_an_error_not_a_panic() {
    let mut small = Tape::new();
    let mut other = Tape::new();
    let _ = other.input(Tensor::zeros(vec![1]));
    let _ = other.input(Tensor::zeros(vec![1]));
    let foreign = other.input(Tensor::zeros(vec![1, 2]));
    assert!(small.relu(foreign).is_err());
    assert!(small.value(foreign).is_err());
    let x = small.input(Tensor::zeros(vec![1, 2]));
    let y = small.relu(x).unwrap();
    // A seed of the wrong shape.
    let msg = small
        .backward(y, &Tensor::zeros(vec![2, 1]), ReluRule::Gradient)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[1, 2]") && msg.contains("[2, 1]"), "{msg}");
    // backward_scalar (and its keeping twin) on a non-scalar.
    let msg = small.backward_scalar(y).unwrap_err().to_string();
    assert!(msg.contains("one value") && msg.contains("[1, 2]"), "{msg}");
    assert!(small.backward_scalar_to(y, &[x]).is_err());
}

mod common;

/// `backward_to` against `backward` on conv → ReLU → 2x2 pool stacks, and on
/// variants: the convolution's output also read elsewhere, kept for the
/// caller, or pooled 3x3.
mod backward_to {
    use super::common::random;
    use proptest::prelude::*;
    use salient::ops::{Conv2dSpec, MaxPool2dSpec};
    use salient::{ReluRule, Tape, Tensor, Var};

    #[derive(Clone, Copy, Debug)]
    enum Shape {
        /// Two conv → ReLU → 2x2 pool layers.
        Stack,
        /// The first convolution's output has a second consumer.
        Shared,
        /// The first convolution's gradient is asked for.
        Kept,
        /// A 3x3 pooling.
        Wide,
    }

    /// Gradients of `x`, the weights and biases (and the first convolution's
    /// output and the last output, for `Kept`) by both passes.
    fn both(
        shape: Shape,
        x: &Tensor,
        params: &[Tensor],
        seed: u64,
        rule: ReluRule,
    ) -> [Vec<Tensor>; 2] {
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let p: Vec<Var> = params.iter().map(|t| tape.param(t)).collect();
        let spec = Conv2dSpec::default();
        let pool = match shape {
            Shape::Wide => MaxPool2dSpec::square(3),
            _ => MaxPool2dSpec::square(2),
        };
        let c1 = tape.conv2d_relu(xv, p[0], p[1], spec).unwrap();
        let mut out = tape.max_pool2d(c1, pool).unwrap();
        if let Shape::Stack = shape {
            let c2 = tape.conv2d_relu(out, p[2], p[3], spec).unwrap();
            out = tape.max_pool2d(c2, pool).unwrap();
        }
        let mut vars = vec![xv, p[0], p[1]];
        match shape {
            Shape::Stack => vars.extend([p[2], p[3]]),
            // The output's gradient too: the seed, copied.
            Shape::Kept => vars.extend([c1, out]),
            Shape::Shared => {
                // A second consumer of c1 (after `out`, so no gradient comes
                // through it; the tape counts consumers, not paths).
                let flat = tape.flatten(c1).unwrap();
                let _ = tape.relu(flat).unwrap();
            }
            Shape::Wide => {}
        }
        let dy = random(tape.value(out).unwrap().shape(), seed ^ 3);
        let mut all = tape.backward(out, &dy, rule).unwrap();
        let mut some = tape.backward_to(out, &dy, rule, &vars).unwrap();
        [
            vars.iter().map(|&v| all.take(v).unwrap()).collect(),
            vars.iter().map(|&v| some.take(v).unwrap()).collect(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn gives_the_same_gradients_bit_for_bit(
            n in 1usize..=3,
            cin in 1usize..=3,
            cout in 1usize..=9,
            h in 10usize..=15,
            w in 10usize..=15,
            rule in 0usize..3,
            which in 0usize..4,
            seed in any::<u64>(),
        ) {
            let rule = [ReluRule::Gradient, ReluRule::Rectified, ReluRule::Guided][rule];
            let shape = [Shape::Stack, Shape::Shared, Shape::Kept, Shape::Wide][which];
            let x = random(&[n, cin, h, w], seed);
            let params = vec![
                random(&[cout, cin, 3, 3], seed ^ 1),
                random(&[cout], seed ^ 2),
                random(&[4, cout, 3, 3], seed ^ 4),
                random(&[4], seed ^ 5),
            ];
            let [all, some] = both(shape, &x, &params, seed, rule);
            for (a, s) in all.iter().zip(&some) {
                prop_assert_eq!(a.shape(), s.shape());
                let same = a.iter().zip(s.iter()).all(|(p, q)| p.to_bits() == q.to_bits());
                prop_assert!(same, "{:?} {:?}: {} vs {}", shape, rule, a, s);
            }
        }
    }
}

/// `Tape::conv2d_max_pool2d` takes the pooling as the convolution's outputs
/// are stored, keeps the windows' winners, and sends the pooled gradient
/// straight to them; it must compute exactly what recording `conv2d` (or
/// `conv2d_relu`) and then `max_pool2d` on the same kernels computes: the same
/// values and gradients, bit for bit, by `backward` and by `backward_to`.
mod conv_then_pool {
    use super::common::random;
    use proptest::prelude::*;
    use salient::ops::{Conv2dSpec, MaxPool2dSpec, Padding};
    use salient::{Kernels, ReluRule, Tape, Tensor};

    struct Case {
        spec: Conv2dSpec,
        relu: bool,
        pool: MaxPool2dSpec,
        rule: ReluRule,
        kernels: Kernels,
    }

    /// The pooled values, then the gradients of `x`, `w` and `b` by
    /// `backward` and by `backward_to`.
    fn run(fused: bool, case: &Case, x: &Tensor, w: &Tensor, b: &Tensor, seed: u64) -> Vec<Tensor> {
        let mut tape = Tape::new().with_kernels(case.kernels);
        let (xv, wv, bv) = (tape.input(x.clone()), tape.param(w), tape.param(b));
        let p = match fused {
            true => tape
                .conv2d_max_pool2d(xv, wv, bv, case.spec, case.relu, case.pool)
                .unwrap(),
            false => {
                let c = match case.relu {
                    true => tape.conv2d_relu(xv, wv, bv, case.spec).unwrap(),
                    false => tape.conv2d(xv, wv, bv, case.spec).unwrap(),
                };
                tape.max_pool2d(c, case.pool).unwrap()
            }
        };
        let mut out = vec![tape.value(p).unwrap().clone()];
        let dy = random(out[0].shape(), seed ^ 7);
        let mut all = tape.backward(p, &dy, case.rule).unwrap();
        out.extend([xv, wv, bv].map(|v| all.take(v).unwrap()));
        let mut some = tape.backward_to(p, &dy, case.rule, &[xv, wv, bv]).unwrap();
        out.extend([xv, wv, bv].map(|v| some.take(v).unwrap()));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Few channels (the direct products) or 16-17 (Winograd's, with
        /// `Kernels::Winograd` where the CPU has AVX-512), up to 5 images (two
        /// of Winograd's sets), odd and even sides, both paddings, a ReLU or
        /// not, each ReLU rule, ties, and a 3x3 pooling (recorded as the two
        /// ops).
        #[test]
        fn records_what_the_two_ops_record(
            n in 1usize..=5, many in any::<bool>(), extra_c in 0usize..=2,
            h in 5usize..=15, w in 5usize..=15, same in any::<bool>(), relu in any::<bool>(),
            rule in 0usize..3, size in 2usize..=3, ties in any::<bool>(), winograd in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (cin, cout) = if many { (16 + extra_c % 2, 16 + extra_c / 2) } else { (1 + extra_c, 3) };
            // With `ties`, values in {-1, 0, 1}: whole-number outputs, many
            // windows with two or more maxima, so the winners' order counts.
            let values = |shape: &[usize], seed| {
                let t = random(shape, seed);
                if ties { t.mapv(|v| (v * 1.5).round()) } else { t }
            };
            let x = values(&[n, cin, h, w], seed);
            let (wt, b) = (values(&[cout, cin, 3, 3], seed ^ 1), values(&[cout], seed ^ 2));
            let case = Case {
                spec: Conv2dSpec { stride: 1, padding: if same { Padding::Same } else { Padding::Valid } },
                relu,
                pool: MaxPool2dSpec::square(size),
                rule: [ReluRule::Gradient, ReluRule::Rectified, ReluRule::Guided][rule],
                kernels: if winograd { Kernels::Winograd } else { Kernels::Fast },
            };
            let fused = run(true, &case, &x, &wt, &b, seed);
            let apart = run(false, &case, &x, &wt, &b, seed);
            for (i, (f, a)) in fused.iter().zip(&apart).enumerate() {
                prop_assert_eq!(f.shape(), a.shape());
                let same = f.iter().zip(a.iter()).all(|(p, q)| p.to_bits() == q.to_bits());
                prop_assert!(same, "result {}: {} vs {}", i, f, a);
            }
        }
    }
}
