//! The traced backward pass (`saliency::trace`): every node of the tape, its
//! gradient, the gates of its ReLU rule, the winners of its pooling and the
//! paths of largest contributions. Checked on real digits of the bundled
//! sample (flat black backgrounds, saturated strokes: ties and zeros that
//! random inputs never give), and by hand on a model small enough to work out.

mod common;

use ndarray::{array, IxDyn};
use salient::layers::Activation;
use salient::model::Sequential;
use salient::ops::ReluRule;
use salient::saliency::gradient::class_gradient;
use salient::saliency::trace::{trace, Gate, NodeOp, Trace};
use salient::saliency::Explainer;
use salient::tape::Kernels;
use salient::Tensor;

const RULES: [ReluRule; 3] = [ReluRule::Gradient, ReluRule::Rectified, ReluRule::Guided];

fn digit(i: usize) -> Tensor {
    let (_, test) = common::small_trained_mnist();
    test.batch(&[i]).unwrap()
}

fn traced(i: usize, rule: ReluRule) -> Trace {
    let (model, _) = common::small_trained_mnist();
    trace(model, &digit(i), None, rule).unwrap()
}

#[test]
fn one_node_per_value_the_gradient_reaches_from_head_to_pixels() {
    let t = traced(0, ReluRule::Gradient);
    let names: Vec<(&str, &str, Vec<usize>)> = t
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.op.name(), n.value.shape().to_vec()))
        .collect();
    assert_eq!(
        names,
        [
            ("input", "input", vec![1, 28, 28]),
            ("conv2d", "conv2d + relu", vec![8, 26, 26]),
            ("max_pooling2d", "max_pool2d", vec![8, 13, 13]),
            ("conv2d_1", "conv2d + relu", vec![16, 11, 11]),
            ("max_pooling2d_1", "max_pool2d", vec![16, 5, 5]),
            ("flatten", "flatten", vec![400]),
            ("dense", "dense", vec![32]),
            ("dense/relu", "relu", vec![32]),
            ("dense_1", "dense", vec![10]),
        ]
    );
    // The head's gradient is the seed: one 1 at the target.
    let head = t.nodes.last().unwrap();
    let mut seed = [0.0; 10];
    seed[t.target] = 1.0;
    assert_eq!(head.gradient.as_slice().unwrap(), &seed[..]);
    assert_eq!(head.value.as_slice().unwrap(), &t.logits[..]);
}

#[test]
fn the_input_node_is_the_gradient_map_bit_for_bit_on_real_digits() {
    let (model, _) = common::small_trained_mnist();
    for i in [0, 1, 7, 42] {
        let x = digit(i);
        for rule in RULES {
            let t = trace(model, &x, None, rule).unwrap();
            // The same reference ops in the same order: the same bits.
            let reference = Explainer::new(model)
                .with_kernels(Kernels::Reference)
                .class_gradient(&x, Some(&[t.target]), rule, None)
                .unwrap();
            let traced = t.nodes[0].gradient.as_slice().unwrap();
            assert_eq!(
                traced,
                reference.input.as_slice().unwrap(),
                "digit {i} {rule:?}"
            );
            // The fast kernels sum in another order: equal to rounding, relative
            // to the map's largest value (f32 sums of a few hundred terms; measured:
            // at most 1.7e-7 with AVX-512, exactly equal on the portable path).
            let fast = class_gradient(model, &x, Some(&[t.target]), rule, None).unwrap();
            let scale = traced.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            for (a, b) in traced.iter().zip(fast.input.iter()) {
                assert!(
                    (a - b).abs() <= 1e-6 * scale,
                    "digit {i} {rule:?}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn every_node_passes_on_what_its_backward_rule_says() {
    for rule in RULES {
        let t = traced(7, rule);
        for k in 1..t.nodes.len() {
            let (before, node) = (&t.nodes[k - 1], &t.nodes[k]);
            let sent = node.ruled_gradient(rule);
            match node.op {
                // A pooling sends each output's gradient to its window's winner, all of it.
                NodeOp::MaxPool2d { .. } => {
                    let winners = node.winners.as_ref().unwrap();
                    let mut expect = vec![0.0f32; before.value.len()];
                    for (o, &at) in winners.iter().enumerate() {
                        expect[at] += sent.as_slice().unwrap()[o];
                        // The winner holds the window's maximum.
                        assert_eq!(
                            before.value.as_slice().unwrap()[at],
                            node.value.as_slice().unwrap()[o]
                        );
                    }
                    assert_eq!(
                        before.gradient.as_slice().unwrap(),
                        &expect[..],
                        "{rule:?} node {k}"
                    );
                }
                // A flatten and a ReLU node hand the (ruled) gradient on in place.
                NodeOp::Flatten { .. } | NodeOp::Relu { .. } => {
                    assert_eq!(
                        before.gradient.as_slice().unwrap(),
                        sent.as_slice().unwrap(),
                        "{rule:?} node {k}"
                    );
                }
                _ => {}
            }
            // Gates are open exactly where the rule passes the gradient.
            if let Some(gates) = &node.gates {
                for ((&y, &g), gate) in node.value.iter().zip(node.gradient.iter()).zip(gates) {
                    assert_eq!(*gate, Gate::of(rule, y, g));
                    if *gate != Gate::Open {
                        assert_eq!(rule.apply(y, g), 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn the_three_rules_differ_only_at_the_gates() {
    let (plain, guided) = (traced(3, ReluRule::Gradient), traced(3, ReluRule::Guided));
    let head = plain.nodes.len() - 1;
    // Down to the first gated node the gradients are the same.
    assert_eq!(plain.nodes[head].gradient, guided.nodes[head].gradient);
    assert_eq!(
        plain.nodes[head - 1].gradient,
        guided.nodes[head - 1].gradient
    );
    // The vanilla gradient closes exactly where x <= 0: the forward pass decides.
    for node in plain.nodes.iter().filter(|n| n.op.has_relu()) {
        for (&y, gate) in node.value.iter().zip(node.gates.as_ref().unwrap()) {
            assert_eq!(*gate == Gate::Open, y > 0.0);
        }
    }
    // Guided backprop closes some units the vanilla gradient left open.
    let closed_by_g = guided
        .nodes
        .iter()
        .filter_map(|n| n.gates.as_ref())
        .flatten()
        .filter(|g| **g == Gate::GradientNotPositive)
        .count();
    assert!(closed_by_g > 0);
    assert_ne!(plain.nodes[0].gradient, guided.nodes[0].gradient);
}

/// Input 1x3x3 → Conv2D 1 filter 2x2 relu [1, 2, 2] → Flatten [4] → Dense 2.
fn hand_model() -> Sequential {
    let mut model = Sequential::builder([1, 3, 3])
        .conv2d(1, 2, Activation::Relu)
        .flatten()
        .dense(2, Activation::Linear)
        .build(0)
        .unwrap();
    let conv_w = array![[[[1.0f32, 2.0], [3.0, 4.0]]]].into_dyn();
    model.layers_mut()[0].params = Some((conv_w, Tensor::zeros(IxDyn(&[1]))));
    let dense_w = array![[1.0f32, -1.0, 0.5, 2.0], [-3.0, 1.0, 1.0, 1.0]].into_dyn();
    model.layers_mut()[2].params = Some((dense_w, Tensor::zeros(IxDyn(&[2]))));
    model
}

#[test]
fn the_path_of_a_pixel_by_hand() {
    let model = hand_model();
    // x = 1 everywhere: each conv output is 1+2+3+4 = 10 > 0, all gates open.
    let x = Tensor::ones(IxDyn(&[1, 3, 3]));
    // Class 1's seed: the dense gradient at the flatten is row 1 of W = [-3, 1, 1, 1].
    let t = trace(&model, &x, Some(1), ReluRule::Gradient).unwrap();
    assert_eq!(t.logits, [10.0 * 2.5, 10.0 * 0.0]);
    assert_eq!(
        t.nodes[1].gradient.as_slice().unwrap(),
        &[-3.0, 1.0, 1.0, 1.0]
    );
    // Pixel (1, 1) feeds all four conv outputs: through output (0, 0) with
    // w[1][1] = 4 (term -3·4 = -12), (0, 1) with w[1][0] = 3 (3), (1, 0) with
    // w[0][1] = 2 (2), (1, 1) with w[0][0] = 1 (1). Largest in size: -12 at unit 0.
    // Flatten keeps unit 0; the dense unit 0 feeds class 1 only through the seed
    // (term δ·W = 1·(-3) for class 1, 0 for class 0): class 1.
    assert_eq!(t.path(&model, 4).unwrap(), [4, 0, 0, 1]);
    // Pixel (0, 2) feeds only output (0, 1), with w[0][1] = 2: term 1·2.
    assert_eq!(t.path(&model, 2).unwrap(), [2, 1, 1, 1]);
    // Its gradient is the sum of its terms: ∂y_1/∂x[0,2] = 2.
    assert_eq!(t.nodes[0].gradient.as_slice().unwrap()[2], 2.0);
    // Every pixel has a path, starting at itself.
    let paths = t.pixel_paths(&model).unwrap();
    assert_eq!(paths.len(), 9);
    assert!(paths.iter().enumerate().all(|(p, path)| path[0] == p));
    // Out of range is an error, not a panic.
    assert!(t.path(&model, 9).is_err());
}

#[test]
fn a_path_stops_where_the_gradient_died() {
    let model = hand_model();
    let x = Tensor::zeros(IxDyn(&[1, 3, 3]));
    let t = trace(&model, &x, Some(0), ReluRule::Gradient).unwrap();
    // Conv outputs are 0 (bias 0): the vanilla gate at 0 is closed (ReLU'(0) = 0).
    assert!(t.nodes[1]
        .gates
        .as_ref()
        .unwrap()
        .iter()
        .all(|g| *g == Gate::InputNotPositive));
    assert_eq!(t.path(&model, 4).unwrap(), [4]);
    assert!(t.nodes[0].gradient.iter().all(|&g| g == 0.0));
}

#[test]
fn bad_inputs_are_errors() {
    let (model, _) = common::small_trained_mnist();
    let wrong = Tensor::zeros(IxDyn(&[1, 1, 27, 28]));
    assert!(trace(model, &wrong, None, ReluRule::Gradient).is_err());
    let x = digit(0);
    assert!(trace(model, &x, Some(10), ReluRule::Gradient).is_err());
    let mut nan = x.clone();
    nan[[0, 0, 3, 3]] = f32::NAN;
    assert!(trace(model, &nan, None, ReluRule::Gradient).is_err());
}
