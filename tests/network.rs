//! The tutorial's whole network on a 28x28x1 input: the gradient of one linear
//! class score with respect to the input (a saliency map) equals central finite
//! differences of an f64 reference network with the same weights.
//!
//! Conv2D 32 3x3 relu → MaxPool 2 → Dropout 0.25 → Conv2D 64 3x3 relu →
//! MaxPool 2 → Dropout 0.25 → Flatten → Dense 256 relu → Dense 10 (linear).
//! Dropout is the identity at inference, which is when saliency is computed.

mod common;

use common::*;
use salient::ops::{Conv2dSpec, MaxPool2dSpec};
use salient::{ReluRule, Tape, Tensor};

struct Weights {
    c1: (Tensor, Tensor),
    c2: (Tensor, Tensor),
    d1: (Tensor, Tensor),
    d2: (Tensor, Tensor),
}

/// Uniform weights of Glorot-like scale, so activations stay of order 1.
fn weights() -> Weights {
    let layer = |w: &[usize], seed: u64, scale: f32| {
        (random(w, seed) * scale, random(&[w[0]], seed + 100) * 0.1)
    };
    Weights {
        c1: layer(&[32, 1, 3, 3], 1, 0.6),
        c2: layer(&[64, 32, 3, 3], 2, 0.1),
        d1: layer(&[256, 1600], 3, 0.06),
        d2: layer(&[10, 256], 4, 0.15),
    }
}

fn reference(x: &T64, w: &Weights) -> T64 {
    let (c1w, c1b) = (to64(&w.c1.0), to64(&w.c1.1));
    let (c2w, c2b) = (to64(&w.c2.0), to64(&w.c2.1));
    let h = relu_ref(&conv2d_ref(x, &c1w, &c1b, 1, 0, 0, 26, 26));
    let h = max_pool_ref(&h, 2, 2, 2, 2); // [1, 32, 13, 13]
    let h = relu_ref(&conv2d_ref(&h, &c2w, &c2b, 1, 0, 0, 11, 11));
    let h = max_pool_ref(&h, 2, 2, 2, 2); // [1, 64, 5, 5]
    let h = h.into_shape_with_order(vec![1, 1600]).unwrap();
    let h = relu_ref(&dense_ref(&h, &to64(&w.d1.0), &to64(&w.d1.1)));
    dense_ref(&h, &to64(&w.d2.0), &to64(&w.d2.1)) // [1, 10]: linear scores
}

#[test]
fn tutorial_network_input_gradient_matches_finite_differences() {
    let w = weights();
    let x = random(&[1, 1, 28, 28], 99).mapv(|v| (v + 1.0) / 2.0); // pixels in [0, 1]
    let class = 3;

    let mut tape = Tape::new();
    let xv = tape.input(x.clone());
    // Weights are constants: only the input gradient is wanted, as in saliency.
    let (c1w, c1b) = (tape.constant(w.c1.0.clone()), tape.constant(w.c1.1.clone()));
    let (c2w, c2b) = (tape.constant(w.c2.0.clone()), tape.constant(w.c2.1.clone()));
    let (d1w, d1b) = (tape.constant(w.d1.0.clone()), tape.constant(w.d1.1.clone()));
    let (d2w, d2b) = (tape.constant(w.d2.0.clone()), tape.constant(w.d2.1.clone()));
    let h = tape.conv2d(xv, c1w, c1b, Conv2dSpec::default()).unwrap();
    let h = tape.relu(h).unwrap();
    let h = tape.max_pool2d(h, MaxPool2dSpec::square(2)).unwrap();
    let h = tape.conv2d(h, c2w, c2b, Conv2dSpec::default()).unwrap();
    let h = tape.relu(h).unwrap();
    let h = tape.max_pool2d(h, MaxPool2dSpec::square(2)).unwrap();
    let h = tape.flatten(h).unwrap();
    let h = tape.dense(h, d1w, d1b).unwrap();
    let h = tape.relu(h).unwrap();
    let scores = tape.dense(h, d2w, d2b).unwrap();

    let x64 = to64(&x);
    let want = reference(&x64, &w);
    check_forward("scores", tape.value(scores).unwrap(), &want).unwrap();
    // Scores of order 1: the network is not saturated, the test is not trivial.
    assert!(want.iter().any(|v| v.abs() > 0.1), "{want:?}");

    let mut seed = Tensor::zeros(vec![1, 10]);
    seed[[0, class]] = 1.0;
    let grads = tape.backward(scores, &seed, ReluRule::Gradient).unwrap();
    let saliency = grads.get(xv).unwrap();
    assert!(saliency.iter().any(|&g| g != 0.0));

    // The f32 gradient passes through four layers with sums of up to 1600
    // terms; by the bound in `common::REL_TOL` each adds at most ~1e-4 of the
    // absolute sum, so 1e-3 of the largest entry covers all four.
    check_gradient(
        "d score / d input",
        &x64,
        saliency,
        |x| reference(x, &w)[[0, class]],
        STEP,
        1e-3,
    )
    .unwrap();
}

/// `Sequential::forward` records each Conv2D and the MaxPooling2D after it in
/// one pass (`Layer::forward_with_pool`). Recording the layers one at a time
/// instead gives the same output and gradients, bit for bit, with dropout on,
/// for the tutorial's model on both inputs, on the fast kernels and through
/// Winograd's transforms (which its second convolutions take where the CPU
/// has AVX-512).
#[test]
fn the_model_pools_inside_its_convolutions_with_the_same_results() {
    use salient::layers::Mode;
    use salient::model::{Head, Sequential};
    use salient::Kernels;
    let cases = [[1, 28, 28], [3, 32, 32]]
        .into_iter()
        .flat_map(|shape| [Kernels::Fast, Kernels::Winograd].map(|k| (shape, k)));
    for (shape, kernels) in cases {
        let model = Sequential::tutorial(shape, 10, 7).unwrap();
        let x = random(&[5, shape[0], shape[1], shape[2]], 8).mapv(|v| (v + 1.0) / 2.0);
        let mode = Mode::Train { dropout_seed: 9 };
        let run = |by_layer: bool| {
            let mut tape = Tape::new().with_kernels(kernels);
            let xv = tape.input(x.clone());
            let (out, params) = match by_layer {
                false => {
                    let pass = model.forward(&mut tape, xv, mode, Head::Linear).unwrap();
                    (pass.last(), pass.params)
                }
                true => {
                    let (mut h, mut params) = (xv, Vec::new());
                    let last = model.layers().len() - 1;
                    for (i, layer) in model.layers().iter().enumerate() {
                        let head = (i == last).then_some(salient::layers::Activation::Linear);
                        let vars = layer.forward(&mut tape, h, mode, head, i).unwrap();
                        params.push(vars.params);
                        h = vars.output;
                    }
                    (h, params)
                }
            };
            let dy = random(tape.value(out).unwrap().shape(), 10);
            let mut grads = tape.backward(out, &dy, ReluRule::Gradient).unwrap();
            let mut results = vec![tape.value(out).unwrap().clone(), grads.take(xv).unwrap()];
            for (w, b) in params.into_iter().flatten() {
                results.extend([grads.take(w).unwrap(), grads.take(b).unwrap()]);
            }
            results
        };
        let (fused, apart) = (run(false), run(true));
        assert_eq!(fused.len(), apart.len());
        for (i, (f, a)) in fused.iter().zip(&apart).enumerate() {
            let same = f
                .iter()
                .zip(a.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(
                same && f.shape() == a.shape(),
                "{shape:?} {kernels:?}, result {i}"
            );
        }
    }
}
