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

#[test]
fn broadcasting_arithmetic_by_hand() {
    // a = [[1, 2, 3], [4, 5, 6]], b = [10, 20, 30] (one row, repeated for both rows).
    let mut tape = Tape::new();
    let a = tape.input(t(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]));
    let b = tape.input(t(array![10.0, 20.0, 30.0]));
    let y = tape.mul(a, b).unwrap();
    close(
        tape.value(y).unwrap(),
        &t(array![[10.0, 40.0, 90.0], [40.0, 100.0, 180.0]]),
    );
    // Seed 1 everywhere: ∂/∂a = b in each row; ∂/∂b = the column sums of a.
    let g = tape
        .backward(y, &Tensor::ones(vec![2, 3]), ReluRule::Gradient)
        .unwrap();
    close(
        g.get(a).unwrap(),
        &t(array![[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]]),
    );
    close(g.get(b).unwrap(), &t(array![5.0, 7.0, 9.0]));

    // a / b at one element: 6 / 3 = 2; ∂/∂a = 1/3, ∂/∂b = −6/9.
    let mut tape = Tape::new();
    let a = tape.input(t(array![6.0]));
    let b = tape.input(t(array![3.0]));
    let y = tape.div(a, b).unwrap();
    let g = tape
        .backward(y, &Tensor::ones(vec![1]), ReluRule::Gradient)
        .unwrap();
    close(g.get(a).unwrap(), &t(array![1.0 / 3.0]));
    close(g.get(b).unwrap(), &t(array![-6.0 / 9.0]));
    // a − b: ∂/∂b = −1.
    let y = tape.sub(a, b).unwrap();
    let g = tape
        .backward(y, &Tensor::ones(vec![1]), ReluRule::Gradient)
        .unwrap();
    close(g.get(b).unwrap(), &t(array![-1.0]));
}

#[test]
fn unary_functions_by_hand() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![0.0, 1.0, 4.0]));
    let one = Tensor::ones(vec![3]);
    let grad = |tape: &mut Tape, y| {
        let g = tape.backward(y, &one, ReluRule::Gradient).unwrap();
        g.get(x).unwrap().clone()
    };
    // exp: y = [1, e, e⁴] and y′ = y.
    let y = tape.exp(x).unwrap();
    let e = std::f32::consts::E;
    close(tape.value(y).unwrap(), &t(array![1.0, e, e.powi(4)]));
    close(&grad(&mut tape, y), &t(array![1.0, e, e.powi(4)]));
    // sqrt at 1 and 4: 1 and 2; derivative 1/(2√x) = 1/2 and 1/4 (∞ at 0, as in PyTorch).
    let y = tape.sqrt(x).unwrap();
    let g = grad(&mut tape, y);
    assert!(g[0].is_infinite());
    assert_eq!((g[1], g[2]), (0.5, 0.25));
    // x³: derivative 3x² = 0, 3, 48.
    let y = tape.powf(x, 3.0).unwrap();
    close(&grad(&mut tape, y), &t(array![0.0, 3.0, 48.0]));
    // tanh′(0) = 1, sigmoid(0) = 1/2 with σ′(0) = 1/4.
    let y = tape.tanh(x).unwrap();
    assert_eq!(grad(&mut tape, y)[0], 1.0);
    let y = tape.sigmoid(x).unwrap();
    assert_eq!(tape.value(y).unwrap()[0], 0.5);
    assert_eq!(grad(&mut tape, y)[0], 0.25);
    // log at 1 and 4: 0 and ln 4; derivative 1/x = 1 and 1/4.
    let y = tape.log(x).unwrap();
    let g = grad(&mut tape, y);
    assert_eq!((g[1], g[2]), (1.0, 0.25));
    // −x: −1.
    let y = tape.neg(x).unwrap();
    close(&grad(&mut tape, y), &t(array![-1.0, -1.0, -1.0]));
}

#[test]
fn reductions_by_hand() {
    // x = [[1, 5, 5], [7, 2, 0]]: row sums 11, 9; row means 11/3, 3; row maxima 5 (first at
    // column 1: the tie with column 2 goes to the first), 7.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, 5.0, 5.0], [7.0, 2.0, 0.0]]));
    let seed = t(array![1.0, 2.0]);
    let s = tape.sum(x, &[1], false).unwrap();
    close(tape.value(s).unwrap(), &t(array![11.0, 9.0]));
    let g = tape.backward(s, &seed, ReluRule::Gradient).unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]),
    );
    let m = tape.mean(x, &[1], false).unwrap();
    let g = tape.backward(m, &seed, ReluRule::Gradient).unwrap();
    let third = 1.0 / 3.0;
    close(
        g.get(x).unwrap(),
        &t(array![
            [third, third, third],
            [2.0 * third, 2.0 * third, 2.0 * third]
        ]),
    );
    let mx = tape.max(x, &[1], true).unwrap();
    close(tape.value(mx).unwrap(), &t(array![[5.0], [7.0]]));
    let g = tape
        .backward(mx, &t(array![[1.0], [2.0]]), ReluRule::Gradient)
        .unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]),
    );
}

#[test]
fn a_users_own_op_joins_the_tape() {
    use salient::tape::{Backward, GradArgs};
    // y = 2x, defined outside the crate: ∂L/∂x = 2·∂L/∂y.
    struct Double;
    impl Backward for Double {
        fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
            vec![Some(a.dy.mapv(|g| 2.0 * g))]
        }
    }
    let mut tape = Tape::new();
    let x = tape.input(t(array![1.0, -3.0]));
    let doubled = tape.value(x).unwrap().mapv(|v| 2.0 * v);
    let y = tape.record(doubled, &[x], Box::new(Double)).unwrap();
    // Then a crate op on top of it: the chain rule runs through both.
    let z = tape.mul(y, y).unwrap();
    let g = tape
        .backward(z, &Tensor::ones(vec![2]), ReluRule::Gradient)
        .unwrap();
    // z = 4x², ∂z/∂x = 8x.
    close(g.get(x).unwrap(), &t(array![8.0, -24.0]));
    // A var of another tape is refused.
    let mut other = Tape::new();
    assert!(other
        .record(Tensor::zeros(vec![2]), &[x], Box::new(Double))
        .is_err());

    // A rule that returns a gradient of the wrong shape, or too few, is an error of
    // the backward pass, not a panic.
    struct Wrong(usize);
    impl Backward for Wrong {
        fn backward(&self, _: GradArgs<'_>) -> Vec<Option<Tensor>> {
            vec![Some(Tensor::zeros(vec![3])); self.0]
        }
    }
    for count in [0, 1] {
        let mut tape = Tape::new();
        let x = tape.input(t(array![1.0, 2.0]));
        let y = tape
            .record(Tensor::zeros(vec![2]), &[x], Box::new(Wrong(count)))
            .unwrap();
        let e = tape
            .backward(y, &Tensor::ones(vec![2]), ReluRule::Gradient)
            .unwrap_err();
        assert!(e.to_string().contains("value #1"), "{e}");
    }
}

#[test]
fn matmul_by_hand() {
    // A = [[1, 2], [3, 4]], B = [[5, 6], [7, 8]]: AB = [[19, 22], [43, 50]].
    let mut tape = Tape::new();
    let a = tape.input(t(array![[1.0, 2.0], [3.0, 4.0]]));
    let b = tape.input(t(array![[5.0, 6.0], [7.0, 8.0]]));
    let y = tape.matmul(a, b).unwrap();
    close(
        tape.value(y).unwrap(),
        &t(array![[19.0, 22.0], [43.0, 50.0]]),
    );
    // Seed 1 at (0, 1) only: y₀₁ = Σₛ a₀ₛ·bₛ₁, so ∂y₀₁/∂a₀ₛ = bₛ₁ = (6, 8) in A's
    // row 0, and ∂y₀₁/∂bₛ₁ = a₀ₛ = (1, 2) in B's column 1.
    let seed = t(array![[0.0, 1.0], [0.0, 0.0]]);
    let g = tape.backward(y, &seed, ReluRule::Gradient).unwrap();
    close(g.get(a).unwrap(), &t(array![[6.0, 8.0], [0.0, 0.0]]));
    close(g.get(b).unwrap(), &t(array![[0.0, 1.0], [0.0, 2.0]]));
}

#[test]
fn moving_values_by_hand() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]));
    // Transpose: the gradient at yᵀ[2][1] (x[1][2]) comes back to x[1][2].
    let y = tape.transpose(x).unwrap();
    close(
        tape.value(y).unwrap(),
        &t(array![[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]),
    );
    let seed = t(array![[0.0, 0.0], [0.0, 0.0], [0.0, 7.0]]);
    let g = tape.backward(y, &seed, ReluRule::Gradient).unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[0.0, 0.0, 0.0], [0.0, 0.0, 7.0]]),
    );
    // Slice columns 1..3, then pad one column of 9 on the left: [[9, 2, 3], [9, 5, 6]].
    let s = tape.slice(x, 1, 1, 3).unwrap();
    let p = tape.pad(s, &[(0, 0), (1, 0)], 9.0).unwrap();
    close(
        tape.value(p).unwrap(),
        &t(array![[9.0, 2.0, 3.0], [9.0, 5.0, 6.0]]),
    );
    let seed = t(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let g = tape.backward(p, &seed, ReluRule::Gradient).unwrap();
    // The padding's gradient is dropped; column 0 of x was sliced away.
    close(
        g.get(x).unwrap(),
        &t(array![[0.0, 2.0, 3.0], [0.0, 5.0, 6.0]]),
    );
    // Concatenating x with itself along rows: each copy gets its half of dy.
    let c = tape.concat(&[x, x], 0).unwrap();
    assert_eq!(tape.value(c).unwrap().shape(), &[4, 3]);
    let seed = t(array![
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],
        [2.0, 2.0, 2.0],
        [2.0, 2.0, 2.0]
    ]);
    let g = tape.backward(c, &seed, ReluRule::Gradient).unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]),
    );
    // Bad arguments are errors.
    assert!(tape.permute(x, &[0, 0]).is_err());
    assert!(tape.slice(x, 1, 2, 5).is_err());
    assert!(tape.concat(&[x, y], 0).is_err());
    assert!(tape.pad(x, &[(1, 1)], 0.0).is_err());
}

#[test]
fn log_softmax_by_hand() {
    // Scores [0, ln 3]: softmax [1/4, 3/4], log-softmax [−ln 4, ln 3 − ln 4].
    let mut tape = Tape::new();
    let x = tape.input(t(array![[0.0, 3.0f32.ln()]]));
    let y = tape.log_softmax(x).unwrap();
    close(
        tape.value(y).unwrap(),
        &t(array![[-(4.0f32.ln()), 3.0f32.ln() - 4.0f32.ln()]]),
    );
    // Seed [1, 0]: dx = dy − softmax·Σdy = [1 − 1/4, −3/4].
    let g = tape
        .backward(y, &t(array![[1.0, 0.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[0.75, -0.75]]));
}

#[test]
fn average_pooling_by_hand() {
    use salient::ops::AvgPool2dSpec;
    // x = [[1, 2], [3, 4]], a 2x2 window with stride 2 and one row of padding on top:
    // the padded input has windows rows {pad, 0} (then nothing more fits).
    let mut tape = Tape::new();
    let x = tape.input(t(array![[[[1.0, 2.0], [3.0, 4.0]]]]));
    let spec = |include| AvgPool2dSpec {
        pool: (2, 2),
        stride: (2, 2),
        pads: (1, 0, 0, 0),
        count_include_pad: include,
    };
    // Window over the pad row and row 0: (1 + 2) / 4 counting the padding, / 2 without.
    let y = tape.avg_pool2d(x, spec(true)).unwrap();
    close(tape.value(y).unwrap(), &t(array![[[[0.75]]]]));
    let g = tape
        .backward(y, &t(array![[[[1.0]]]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[[[0.25, 0.25], [0.0, 0.0]]]]));
    let y = tape.avg_pool2d(x, spec(false)).unwrap();
    close(tape.value(y).unwrap(), &t(array![[[[1.5]]]]));
    // Global average: the mean of all four, each getting a quarter of the gradient.
    let y = tape.global_avg_pool2d(x).unwrap();
    close(tape.value(y).unwrap(), &t(array![[2.5]]));
    let g = tape
        .backward(y, &t(array![[1.0]]), ReluRule::Gradient)
        .unwrap();
    close(
        g.get(x).unwrap(),
        &t(array![[[[0.25, 0.25], [0.25, 0.25]]]]),
    );
}

#[test]
fn batch_norm_by_hand() {
    // One channel, values [1, 3]: batch mean 2, biased variance 1, x̂ = [−1, 1]
    // (ε = 0 to keep the numbers round). With γ = 2, β = 0.5: y = [−1.5, 2.5].
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0], [3.0]]));
    let gamma = tape.input(t(array![2.0]));
    let beta = tape.input(t(array![0.5]));
    let y = tape.batch_norm_train(x, gamma, beta, 0.0).unwrap();
    close(tape.value(y).unwrap(), &t(array![[-1.5], [2.5]]));
    // Seed [1, 1]: shifting every value moves the mean with them, so dx = 0;
    // dγ = Σ g·x̂ = 0 and dβ = Σ g = 2.
    let g = tape
        .backward(y, &t(array![[1.0], [1.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[0.0], [0.0]]));
    close(g.get(gamma).unwrap(), &t(array![0.0]));
    close(g.get(beta).unwrap(), &t(array![2.0]));
    // At inference with μ = 2, σ² = 1 as constants, the same seed gives dx = γ·g = [2, 2].
    let mean = tape.constant(t(array![2.0]));
    let var = tape.constant(t(array![1.0]));
    let y = tape.batch_norm(x, gamma, beta, mean, var, 0.0).unwrap();
    close(tape.value(y).unwrap(), &t(array![[-1.5], [2.5]]));
    let g = tape
        .backward(y, &t(array![[1.0], [1.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[2.0], [2.0]]));
    // With only x differentiated (a saliency map) the same dx, by the short path:
    // γ/σ = 2/√4 = 1 and 3/√9 = 1, so dx = dy.
    let mut tape = Tape::new();
    let x = tape.input(t(array![[1.0, 5.0], [3.0, -1.0]]));
    let consts = [
        array![2.0, 3.0],
        array![0.5, 0.0],
        array![2.0, 0.0],
        array![4.0, 9.0],
    ];
    let [gamma, beta, mean, var] = consts.map(|c| tape.constant(t(c)));
    let y = tape.batch_norm(x, gamma, beta, mean, var, 0.0).unwrap();
    close(tape.value(y).unwrap(), &t(array![[-0.5, 5.0], [1.5, -1.0]]));
    let g = tape
        .backward(y, &t(array![[1.0, 2.0], [3.0, 4.0]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(x).unwrap(), &t(array![[1.0, 2.0], [3.0, 4.0]]));
}

#[test]
fn dilated_and_grouped_convolutions_by_hand() {
    use salient::ops::Conv2dOptions;
    // The 3x3 image of the paper example and W = [[1, 2], [0, −1]] dilated by 2: the taps
    // land on the four corners, y = 1·1 + 2·0 + 0·2 + (−1)·0 + 0.5 = 1.5.
    let mut tape = Tape::new();
    let (x, w, b) = paper_example(&mut tape);
    let dilated = Conv2dOptions {
        dilation: (2, 2),
        ..Conv2dOptions::default()
    };
    let y = tape.conv2d_with(x, w, b, dilated).unwrap();
    close(tape.value(y).unwrap(), &t(array![[[[1.5]]]]));
    // dW holds the corners the taps read: [[1, 0], [2, 0]]; dx the weights at the corners.
    let g = tape
        .backward(y, &t(array![[[[1.0]]]]), ReluRule::Gradient)
        .unwrap();
    close(g.get(w).unwrap(), &t(array![[[[1.0, 0.0], [2.0, 0.0]]]]));
    close(
        g.get(x).unwrap(),
        &t(array![[[
            [1.0, 0.0, 2.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, -1.0]
        ]]]),
    );

    // Two groups of one channel, 1x1 kernels 3 and −1: each output channel scales
    // its own input channel only (a depthwise convolution).
    let mut tape = Tape::new();
    let x = tape.input(t(array![[[[1.0, 2.0]], [[10.0, 20.0]]]]));
    let w = tape.input(t(array![[[[3.0]]], [[[-1.0]]]]));
    let b = tape.input(t(array![0.0, 0.0]));
    let grouped = Conv2dOptions {
        groups: 2,
        ..Conv2dOptions::default()
    };
    let y = tape.conv2d_with(x, w, b, grouped).unwrap();
    close(
        tape.value(y).unwrap(),
        &t(array![[[[3.0, 6.0]], [[-10.0, -20.0]]]]),
    );
    // Stride (1, 2) with one column of padding each side: columns −1 and 1 of a 1x2 image.
    let strided = Conv2dOptions {
        stride: (1, 2),
        pads: (0, 1, 0, 1),
        ..Conv2dOptions::default()
    };
    let x1 = tape.input(t(array![[[[5.0, 7.0]]]]));
    let w1 = tape.input(t(array![[[[1.0, 10.0]]]]));
    let b1 = tape.input(t(array![0.0]));
    let y = tape.conv2d_with(x1, w1, b1, strided).unwrap();
    // Windows: (pad, 5) → 50; (7, pad) → 7.
    close(tape.value(y).unwrap(), &t(array![[[[50.0, 7.0]]]]));
}

#[test]
fn clip_leaky_relu_and_gelu_by_hand() {
    let mut tape = Tape::new();
    let x = tape.input(t(array![-2.0, 0.5, 7.0]));
    let one = Tensor::ones(vec![3]);
    // relu6: [0, 0.5, 6]; gradient 1 only strictly inside (0, 6).
    let y = tape.relu6(x).unwrap();
    close(tape.value(y).unwrap(), &t(array![0.0, 0.5, 6.0]));
    let g = tape.backward(y, &one, ReluRule::Gradient).unwrap();
    close(g.get(x).unwrap(), &t(array![0.0, 1.0, 0.0]));
    // Leaky ReLU with α = 0.1: [−0.2, 0.5, 7], gradient [0.1, 1, 1].
    let y = tape.leaky_relu(x, 0.1).unwrap();
    close(tape.value(y).unwrap(), &t(array![-0.2, 0.5, 7.0]));
    let g = tape.backward(y, &one, ReluRule::Gradient).unwrap();
    close(g.get(x).unwrap(), &t(array![0.1, 1.0, 1.0]));
    // GELU(0.5) = 0.5·Φ(0.5) = 0.5·0.6914625 = 0.3457312; GELU′(0.5) = Φ(0.5) + 0.5·φ(0.5)
    // = 0.6914625 + 0.5·0.3520653 = 0.8674951 (normal tables).
    let y = tape.gelu(x).unwrap();
    assert!((tape.value(y).unwrap()[1] - 0.345_731_2).abs() < 1e-6);
    let g = tape.backward(y, &one, ReluRule::Gradient).unwrap();
    assert!((g.get(x).unwrap()[1] - 0.867_495_1).abs() < 1e-6);
}
