//! One hand-computed example per op: small enough to check on paper, with the
//! working in the comments.

use ndarray::{array, ArrayD};
use salient::ops::{dropout_mask, one_hot, Conv2dSpec, MaxPool2dSpec, Padding};
use salient::tensor::Pool;
use salient::{Kernels, ReluRule, Tape, Tensor};

/// The ops that have fast paths are worked by hand on each kind of kernels.
const KERNELS: [Kernels; 3] = [Kernels::Reference, Kernels::Fast, Kernels::Winograd];

fn t<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> Tensor {
    a.into_dyn()
}

fn close(got: &Tensor, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape());
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

/// The 3x3 image, 2x2 kernel and bias of the convolution examples:
///
/// ```text
/// x = 1 2 0     W = 1  2    b = 0.5
///     0 1 3         0 -1
///     2 1 0
/// ```
fn paper_example(tape: &mut Tape) -> (salient::Var, salient::Var, salient::Var) {
    let x = tape.input(t(array![[[
        [1.0, 2.0, 0.0],
        [0.0, 1.0, 3.0],
        [2.0, 1.0, 0.0]
    ]]]));
    let w = tape.input(t(array![[[[1.0, 2.0], [0.0, -1.0]]]]));
    let b = tape.input(t(array![0.5]));
    (x, w, b)
}

#[test]
fn conv2d_by_hand() {
    for kernels in KERNELS {
        // With `paper_example`'s x, W and b:
        // y00 = 1·1 + 2·2 + 0·0 + 1·(−1) + .5 = 4.5    y01 = 2 + 0 + 0 − 3 + .5 = −0.5
        // y10 = 0 + 2 + 0 − 1 + .5 = 1.5               y11 = 1 + 6 + 0 − 0 + .5 = 7.5
        let mut tape = Tape::new().with_kernels(kernels);
        let (x, w, b) = paper_example(&mut tape);
        let y = tape.conv2d(x, w, b, Conv2dSpec::default()).unwrap();
        close(
            tape.value(y).unwrap(),
            &t(array![[[[4.5, -0.5], [1.5, 7.5]]]]),
        );
        // Seed dy = [[1, 0], [0, 1]]: the gradient of y00 + y11.
        // dW = window at (0,0) + window at (1,1) = [[1,2],[0,1]] + [[1,3],[1,0]]; db = 2;
        // dx = W placed at (0,0) plus W placed at (1,1).
        let g = tape
            .backward(
                y,
                &t(array![[[[1.0, 0.0], [0.0, 1.0]]]]),
                ReluRule::Gradient,
            )
            .unwrap();
        close(g.get(w).unwrap(), &t(array![[[[2.0, 5.0], [1.0, 1.0]]]]));
        close(g.get(b).unwrap(), &t(array![2.0]));
        close(
            g.get(x).unwrap(),
            &t(array![[[
                [1.0, 2.0, 0.0],
                [0.0, 0.0, 2.0],
                [0.0, 0.0, -1.0]
            ]]]),
        );
    }
}

#[test]
fn conv2d_same_padding_stride_two_pads_bottom_right() {
    for kernels in KERNELS {
        // 4x4 ones, 3x3 ones kernel, stride 2, 'same': output ⌈4/2⌉ = 2, total padding
        // (2−1)·2 + 3 − 4 = 1, which TensorFlow puts at the bottom and right. So the
        // windows hold 9, 6 (one padded column), 6 (one padded row) and 4 ones.
        let mut tape = Tape::new().with_kernels(kernels);
        let x = tape.input(Tensor::ones(vec![1, 1, 4, 4]));
        let w = tape.input(Tensor::ones(vec![1, 1, 3, 3]));
        let b = tape.input(Tensor::zeros(vec![1]));
        let spec = Conv2dSpec {
            stride: 2,
            padding: Padding::Same,
        };
        let y = tape.conv2d(x, w, b, spec).unwrap();
        close(
            tape.value(y).unwrap(),
            &t(array![[[[9.0, 6.0], [6.0, 4.0]]]]),
        );
    }
}

#[test]
fn max_pool2d_by_hand_with_ties() {
    for kernels in KERNELS {
        // 1 3 | 2 2      windows: {1,3,4,0} → 4 at (1,0)
        // 4 0 | 2 1               {2,2,2,1} → tie, first in row-major order: (0,2)
        // ----+----               {5,6,0,6} → tie, first: (2,1)
        // 5 6 | 7 8               {7,8,1,9} → 9 at (3,3)
        // 0 6 | 1 9
        let mut tape = Tape::new().with_kernels(kernels);
        let x = tape.input(t(array![[[
            [1.0, 3.0, 2.0, 2.0],
            [4.0, 0.0, 2.0, 1.0],
            [5.0, 6.0, 7.0, 8.0],
            [0.0, 6.0, 1.0, 9.0]
        ]]]));
        let y = tape.max_pool2d(x, MaxPool2dSpec::square(2)).unwrap();
        close(
            tape.value(y).unwrap(),
            &t(array![[[[4.0, 2.0], [6.0, 9.0]]]]),
        );
        let g = tape
            .backward(
                y,
                &t(array![[[[1.0, 2.0], [3.0, 4.0]]]]),
                ReluRule::Gradient,
            )
            .unwrap();
        let want = t(array![[[
            [0.0, 0.0, 2.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 4.0]
        ]]]);
        close(g.get(x).unwrap(), &want);
    }
}

#[test]
fn overlapping_pool_windows_sum_their_gradients() {
    for kernels in KERNELS {
        // 1x3 input [0, 5, 1], windows of 1x2 with stride 1: both windows pick the 5.
        let mut tape = Tape::new().with_kernels(kernels);
        let x = tape.input(t(array![[[[0.0, 5.0, 1.0]]]]));
        let spec = MaxPool2dSpec {
            pool: (1, 2),
            stride: (1, 1),
        };
        let y = tape.max_pool2d(x, spec).unwrap();
        let g = tape
            .backward(y, &t(array![[[[1.0, 10.0]]]]), ReluRule::Gradient)
            .unwrap();
        close(g.get(x).unwrap(), &t(array![[[[0.0, 11.0, 0.0]]]]));
    }
}

#[test]
fn dense_by_hand() {
    for kernels in KERNELS {
        // x = [1, 2], W = [[1, 0], [2, −1], [0, 3]], b = [.5, 0, −1]
        // y = x·Wᵀ + b = [1 + .5, 2 − 2 + 0, 6 − 1] = [1.5, 0, 5]
        // dy = [1, 1, 1]: dx = dy·W = [3, 2], dW = dyᵀ·x = [1, 2] in each row, db = dy.
        let mut tape = Tape::new().with_kernels(kernels);
        let x = tape.input(t(array![[1.0, 2.0]]));
        let w = tape.input(t(array![[1.0, 0.0], [2.0, -1.0], [0.0, 3.0]]));
        let b = tape.input(t(array![0.5, 0.0, -1.0]));
        let y = tape.dense(x, w, b).unwrap();
        close(tape.value(y).unwrap(), &t(array![[1.5, 0.0, 5.0]]));
        let g = tape
            .backward(y, &Tensor::ones(vec![1, 3]), ReluRule::Gradient)
            .unwrap();
        close(g.get(x).unwrap(), &t(array![[3.0, 2.0]]));
        close(
            g.get(w).unwrap(),
            &t(array![[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]),
        );
        close(g.get(b).unwrap(), &t(array![1.0, 1.0, 1.0]));
    }
}

#[test]
fn relu_rules_differ_as_their_definitions_say() {
    // x = [−1, 2, 3], incoming g = [5, −4, 6]:
    //   gradient  1[x>0]·g        = [0, −4, 6]
    //   rectified 1[g>0]·g        = [5,  0, 6]
    //   guided    1[x>0]·1[g>0]·g = [0,  0, 6]
    let mut tape = Tape::new();
    let x = tape.input(t(array![[-1.0, 2.0, 3.0]]));
    let y = tape.relu(x).unwrap();
    close(tape.value(y).unwrap(), &t(array![[0.0, 2.0, 3.0]]));
    let seed = t(array![[5.0, -4.0, 6.0]]);
    let grad = |tape: &mut Tape, rule| tape.backward(y, &seed, rule).unwrap().take(x).unwrap();
    close(
        &grad(&mut tape, ReluRule::Gradient),
        &t(array![[0.0, -4.0, 6.0]]),
    );
    close(
        &grad(&mut tape, ReluRule::Rectified),
        &t(array![[5.0, 0.0, 6.0]]),
    );
    close(
        &grad(&mut tape, ReluRule::Guided),
        &t(array![[0.0, 0.0, 6.0]]),
    );
}

#[test]
fn relu_uses_subgradient_zero_at_zero() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![[0.0]]));
    let y = tape.relu(x).unwrap();
    let g = tape
        .backward(y, &t(array![[1.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[0.0]]));
}

#[test]
fn identity_by_hand() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, -2.0]]));
    let y = tape.identity(x).unwrap();
    let g = tape
        .backward(y, &t(array![[3.0, 4.0]]), ReluRule::Guided)
        .unwrap();
    close(tape.value(y).unwrap(), &t(array![[1.0, -2.0]]));
    close(g.get(x).unwrap(), &t(array![[3.0, 4.0]]));
}

#[test]
fn softmax_by_hand() {
    // x = [0, ln 3]: e^x = [1, 3], y = [1/4, 3/4].
    // dy = [1, 0]: Σ dy·y = 1/4, dx = y ⊙ (dy − 1/4) = [3/16, −3/16].
    let mut tape = Tape::new();
    let x = tape.input(t(array![[0.0, 3f32.ln()]]));
    let y = tape.softmax(x).unwrap();
    close(tape.value(y).unwrap(), &t(array![[0.25, 0.75]]));
    let g = tape
        .backward(y, &t(array![[1.0, 0.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[0.1875, -0.1875]]));
}

#[test]
fn softmax_cross_entropy_by_hand() {
    // Row 1: logits [0, ln 3] → p = [1/4, 3/4], label 1: loss −ln(3/4).
    // Row 2: logits [ln 3, 0] → p = [3/4, 1/4], label 0: the same loss.
    // Mean = −ln 0.75 = 0.2876821; ∂L/∂x = (p − t) / 2.
    let mut tape = Tape::new();
    let l3 = 3f32.ln();
    let x = tape.input(t(array![[0.0, l3], [l3, 0.0]]));
    let loss = tape
        .softmax_cross_entropy(x, one_hot(&[1, 0], 2).unwrap())
        .unwrap();
    let value = tape.value(loss).unwrap();
    assert_eq!(value.ndim(), 0);
    assert!((value.sum() - 0.287_682_1).abs() < 1e-6);
    let g = tape.backward_scalar(loss).unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[0.125, -0.125], [-0.125, 0.125]]),
    );
}

#[test]
fn softmax_cross_entropy_is_stable_for_huge_logits() {
    // A naive log(softmax) would compute log(0) = −∞ for the second class.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1000.0, 0.0]]));
    let loss = tape
        .softmax_cross_entropy(x, one_hot(&[1], 2).unwrap())
        .unwrap();
    assert!((tape.value(loss).unwrap().sum() - 1000.0).abs() < 1e-3);
}

#[test]
fn reshape_and_flatten_by_hand() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![[
        [[1.0, 2.0], [3.0, 4.0]],
        [[5.0, 6.0], [7.0, 8.0]]
    ]])); // [1, 2, 2, 2]
    let f = tape.flatten(x).unwrap();
    close(
        tape.value(f).unwrap(),
        &t(array![[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]]),
    );
    let seed = t(array![[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]]);
    let g = tape.backward(f, &seed, ReluRule::Gradient).unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[[[8.0, 7.0], [6.0, 5.0]], [[4.0, 3.0], [2.0, 1.0]]]]),
    );
    assert!(tape.reshape(x, &[3, 3]).is_err());
}

#[test]
fn dropout_keeps_the_right_share_and_scales_it() {
    let mut pool = Pool::new();
    let mask = dropout_mask(&[100_000], 0.25, 42, &mut pool).unwrap();
    let kept = mask.iter().filter(|&&m| m > 0.0).count();
    // Binomial(100000, 0.75): standard deviation 137, so ±1000 is over 7σ.
    assert!((kept as i64 - 75_000).abs() < 1000, "kept {kept}");
    assert!(mask
        .iter()
        .all(|&m| m == 0.0 || (m - 1.0 / 0.75).abs() < 1e-6));
    // Same seed, same mask; another seed, another mask.
    assert_eq!(mask, dropout_mask(&[100_000], 0.25, 42, &mut pool).unwrap());
    assert_ne!(mask, dropout_mask(&[100_000], 0.25, 43, &mut pool).unwrap());
    // Rate 0 keeps everything unscaled; rate 1 and negative rates are refused.
    assert!(dropout_mask(&[10], 0.0, 1, &mut pool)
        .unwrap()
        .iter()
        .all(|&m| m == 1.0));
    assert!(dropout_mask(&[10], 1.0, 1, &mut pool).is_err());
    assert!(dropout_mask(&[10], -0.1, 1, &mut pool).is_err());
}

#[test]
fn dropout_backward_is_the_mask() {
    // x = [1, 2, 3, 4] with a mask from seed 3; dy = 1 → dx = m, and y = x ⊙ m.
    let mut tape = Tape::new();
    let x = tape.input(t(array![1.0, 2.0, 3.0, 4.0]));
    let y = tape.dropout(x, 0.5, 3).unwrap();
    let m = dropout_mask(&[4], 0.5, 3, &mut Pool::new()).unwrap();
    close(
        tape.value(y).unwrap(),
        &(&m * &t(array![1.0, 2.0, 3.0, 4.0])),
    );
    let g = tape
        .backward(y, &Tensor::ones(vec![4]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &m);
}

#[test]
fn nan_propagates_through_relu_and_max_pooling() {
    for kernels in KERNELS {
        // A diverged network must show NaN, not be silently "repaired" to zeros.
        let mut tape = Tape::new().with_kernels(kernels);
        let x = tape.input(t(array![[[[f32::NAN, -1.0], [0.5, 2.0]]]]));
        let r = tape.relu(x).unwrap();
        assert!(tape.value(r).unwrap()[[0, 0, 0, 0]].is_nan());
        let p = tape.max_pool2d(x, MaxPool2dSpec::square(2)).unwrap();
        assert!(tape.value(p).unwrap()[[0, 0, 0, 0]].is_nan());
    }
}

#[test]
fn conv2d_relu_by_hand_in_all_three_rules() {
    for kernels in KERNELS {
        // The example of `conv2d_by_hand`: y = relu([[4.5, −0.5], [1.5, 7.5]]) =
        // [[4.5, 0], [1.5, 7.5]]. Seed dy = [[1, 1], [−1, 1]]:
        //   gradient  passes where y > 0:          dz = [[1, 0], [−1, 1]]
        //   rectified passes where dy > 0:         dz = [[1, 1], [0, 1]]
        //   guided    passes where both:           dz = [[1, 0], [0, 1]]
        // and db = Σ dz: 1, 3 and 2.
        let mut tape = Tape::new().with_kernels(kernels);
        let (x, w, b) = paper_example(&mut tape);
        let y = tape.conv2d_relu(x, w, b, Conv2dSpec::default()).unwrap();
        close(
            tape.value(y).unwrap(),
            &t(array![[[[4.5, 0.0], [1.5, 7.5]]]]),
        );
        let seed = t(array![[[[1.0, 1.0], [-1.0, 1.0]]]]);
        for (rule, db) in [
            (ReluRule::Gradient, 1.0),
            (ReluRule::Rectified, 3.0),
            (ReluRule::Guided, 2.0),
        ] {
            let g = tape.backward(y, &seed, rule).unwrap();
            close(g.get(b).unwrap(), &t(array![db]));
        }
        // Guided: dz = [[1, 0], [0, 1]], so dW is the sum of the windows at (0,0) and (1,1).
        let g = tape.backward(y, &seed, ReluRule::Guided).unwrap();
        close(g.get(w).unwrap(), &t(array![[[[2.0, 5.0], [1.0, 1.0]]]]));
    }
}
