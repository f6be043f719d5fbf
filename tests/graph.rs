//! Graph models: a residual network against an f64 reference of the same
//! formulas (values and the input gradient, by central differences), the
//! tutorial's stack as a graph equal to the `Sequential` model, and the
//! checks `Graph::add` makes.

mod common;

use common::*;
use ndarray::IxDyn;
use salient::layers::Mode;
use salient::model::graph::{Act, Graph, Op};
use salient::model::{Head, Sequential};
use salient::ops::{AvgPool2dSpec, Conv2dOptions};
use salient::{ReluRule, Tape, Tensor};

const SAME: Conv2dOptions = Conv2dOptions {
    stride: (1, 1),
    dilation: (1, 1),
    pads: (1, 1, 1, 1),
    groups: 1,
};

/// conv 3x3 → batch norm → relu → conv 3x3 stride 2 ─┐
/// └──────────── conv 1x1 stride 2 (the shortcut) ────┴→ add → relu → global average → dense 3
fn residual() -> Graph {
    let mut g = Graph::new([2, 6, 6]);
    let conv = Op::conv2d;
    g.add("conv1", conv(3, 3, 1, 1), &["input"]).unwrap();
    g.add("bn1", Op::BatchNorm { eps: 1e-3 }, &["conv1"])
        .unwrap();
    g.add("relu1", Op::Activation(Act::Relu), &["bn1"]).unwrap();
    g.add("conv2", conv(3, 3, 2, 1), &["relu1"]).unwrap();
    g.add("shortcut", conv(3, 1, 2, 0), &["input"]).unwrap();
    g.add("sum", Op::Add, &["conv2", "shortcut"]).unwrap();
    g.add("relu2", Op::Activation(Act::Relu), &["sum"]).unwrap();
    g.add("pool", Op::GlobalAvgPool2D, &["relu2"]).unwrap();
    g.add("logits", Op::Dense { units: 3 }, &["pool"]).unwrap();
    g.init(5).unwrap();
    // Batch norm statistics that are not the identity.
    let bn = g.node_index("bn1").unwrap();
    let node = &mut g.nodes_mut()[bn];
    node.params = vec![
        random(&[3], 1).mapv(|v| 1.0 + 0.3 * v),
        random(&[3], 2) * 0.2,
        random(&[3], 3) * 0.1,
        random(&[3], 4).mapv(|v| 1.0 + 0.4 * v),
    ];
    g
}

/// The same network in f64, from the graph's parameters.
fn residual_ref(g: &Graph, x: &T64) -> T64 {
    let p = |name: &str, k: usize| to64(&g.nodes()[g.node_index(name).unwrap()].params[k]);
    let conv1 = conv2d_ref(x, &p("conv1", 0), &p("conv1", 1), 1, 1, 1, 6, 6);
    let mut bn = conv1.clone();
    for c in 0..3 {
        let (gamma, beta, mean, var) = (
            p("bn1", 0)[c],
            p("bn1", 1)[c],
            p("bn1", 2)[c],
            p("bn1", 3)[c],
        );
        bn.index_axis_mut(ndarray::Axis(1), c)
            .mapv_inplace(|v| gamma * (v - mean) / (var + 1e-3f64).sqrt() + beta);
    }
    let relu1 = relu_ref(&bn);
    let conv2 = conv2d_ref(&relu1, &p("conv2", 0), &p("conv2", 1), 2, 1, 1, 3, 3);
    let short = conv2d_ref(x, &p("shortcut", 0), &p("shortcut", 1), 2, 0, 0, 3, 3);
    let relu2 = relu_ref(&(&conv2 + &short));
    let pooled = relu2
        .mean_axis(ndarray::Axis(3))
        .unwrap()
        .mean_axis(ndarray::Axis(2))
        .unwrap();
    dense_ref(&pooled, &p("logits", 0), &p("logits", 1))
}

#[test]
fn a_residual_graph_matches_its_f64_formulas_and_their_gradient() {
    let g = residual();
    assert_eq!(g.output_shape(), &[3]);
    // Away from ReLU's kink, so that a finite-difference step never crosses it.
    let x = random_away_from_zero(&[2, 2, 6, 6], 11, 1e-2);
    let mut tape = Tape::new();
    let xv = tape.input(x.clone());
    let pass = g.forward(&mut tape, xv, Mode::Infer, Head::Linear).unwrap();
    let out = pass.last();
    let want = residual_ref(&g, &to64(&x));
    check_forward("residual", tape.value(out).unwrap(), &want).unwrap();
    // ∂(Σ r ⊙ y)/∂x against central differences of the f64 network.
    let r = random(&[2, 3], 12);
    let grads = tape.backward(out, &r, ReluRule::Gradient).unwrap();
    let r64 = to64(&r);
    check_gradient(
        "residual d/dx",
        &to64(&x),
        grads.get(xv).unwrap(),
        |x| (&residual_ref(&g, x) * &r64).sum(),
        STEP,
        REL_TOL,
    )
    .unwrap();
    // One var per node.
    assert_eq!(pass.outputs.len(), g.nodes().len());
}

/// The stack as a graph: the library's conversion, activations as
/// `<layer>/relu` and `<layer>/softmax` nodes.
fn graph_of(model: &Sequential) -> Graph {
    model.to_graph().unwrap()
}

#[test]
fn the_tutorials_stack_as_a_graph_gives_the_sequential_models_scores() {
    let model = Sequential::tutorial([1, 28, 28], 10, 3).unwrap();
    let g = graph_of(&model);
    let x = random(&[3, 1, 28, 28], 4).mapv(|v| (v + 1.0) / 2.0);
    for head in [Head::Linear, Head::AsBuilt] {
        let want = model.predict(&x, 3, head).unwrap();
        let mut tape = Tape::inference();
        let xv = tape.input(x.clone());
        let pass = g.forward(&mut tape, xv, Mode::Infer, head).unwrap();
        let got = tape.value(pass.last()).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            // The same ops; only the fused conv + ReLU + pool of the stack may round
            // differently from the ops one by one (measured: at most 1.2e-7 relative
            // with AVX-512, exactly equal on the portable path).
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{head:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn training_mode_uses_batch_statistics_and_dropout() {
    let mut g = Graph::new([2, 3, 3]);
    g.add("bn", Op::BatchNorm { eps: 1e-5 }, &["input"])
        .unwrap();
    g.add("drop", Op::Dropout { rate: 0.5 }, &["bn"]).unwrap();
    let x = random(&[4, 2, 3, 3], 8) * 3.0 + 1.0;
    let run = |mode| {
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let pass = g.forward(&mut tape, xv, mode, Head::AsBuilt).unwrap();
        tape.value(pass.outputs[0]).unwrap().clone()
    };
    // In training the batch is normalised by its own statistics: mean 0 per channel.
    let trained = run(Mode::Train { dropout_seed: 1 });
    let mean = trained.sum() / trained.len() as f32;
    assert!(mean.abs() < 1e-5, "{mean}");
    // At inference the running statistics (0 and 1) leave x as it was, to ε.
    let inferred = run(Mode::Infer);
    for (a, b) in inferred.iter().zip(x.iter()) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn concat_average_pooling_and_padded_max_pooling_shapes() {
    let mut g = Graph::new([2, 5, 5]);
    let avg = AvgPool2dSpec {
        pool: (3, 3),
        stride: (2, 2),
        pads: (1, 1, 1, 1),
        count_include_pad: false,
    };
    g.add("avg", Op::AvgPool2D(avg), &["input"]).unwrap();
    let max = Op::MaxPool2D {
        pool: (3, 3),
        stride: (2, 2),
        pads: (1, 1, 1, 1),
    };
    g.add("max", max, &["input"]).unwrap();
    let both = g
        .add("both", Op::Concat { axis: 0 }, &["avg", "max"])
        .unwrap();
    assert_eq!(both.output_shape, [4, 3, 3]);
    // A constant image: every pooling gives the constant, padding or not.
    let x = Tensor::from_elem(IxDyn(&[1, 2, 5, 5]), -2.0);
    let mut tape = Tape::new();
    let xv = tape.input(x);
    let pass = g
        .forward(&mut tape, xv, Mode::Infer, Head::AsBuilt)
        .unwrap();
    assert!(tape.value(pass.last()).unwrap().iter().all(|&v| v == -2.0));
}

#[test]
fn bad_graphs_are_refused_with_the_nodes_name() {
    let mut g = Graph::new([1, 4, 4]);
    g.add(
        "conv",
        Op::Conv2D {
            filters: 2,
            kernel: (3, 3),
            options: SAME,
        },
        &["input"],
    )
    .unwrap();
    let errors = [
        g.clone().add("conv", Op::Flatten, &["input"]).map(|_| ()),
        g.clone().add("x", Op::Flatten, &["nowhere"]).map(|_| ()),
        // [2, 4, 4] and [32] do not broadcast ([1, 4, 4] and [2, 4, 4] would).
        {
            let mut h = g.clone();
            h.add("flat", Op::Flatten, &["conv"]).unwrap();
            h.add("x", Op::Add, &["conv", "flat"]).map(|_| ())
        },
        g.clone()
            .add("x", Op::Dense { units: 2 }, &["conv"])
            .map(|_| ()),
        g.clone().add("x", Op::Add, &["conv"]).map(|_| ()),
        g.clone()
            .add(
                "x",
                Op::Conv2D {
                    filters: 2,
                    kernel: (9, 9),
                    options: Conv2dOptions::default(),
                },
                &["input"],
            )
            .map(|_| ()),
    ];
    for (i, e) in errors.into_iter().enumerate() {
        let e = e.expect_err(&format!("case {i}")).to_string();
        assert!(e.contains("node") || e.contains("nowhere"), "case {i}: {e}");
    }
}

#[test]
fn every_saliency_method_explains_a_graph_as_it_explains_the_same_stack() {
    use salient::saliency::{attribute, Method, Options};
    // The small model trained on real digits, and the same weights as a graph.
    let (model, test) = small_trained_mnist();
    let g = graph_of(model);
    let x = test.batch(&[0, 1, 2, 3]).unwrap();
    let targets = [1, 2, 3, 4];
    for method in Method::ALL {
        // The CAMs explain the second convolution's post-ReLU output in both.
        let layer = |name: &str| Options {
            layer: method.uses_layer().then(|| name.to_string()),
            tolerance: None,
            ..Options::default()
        };
        let stack = attribute(model, &x, Some(&targets), method, &layer("conv2d_1")).unwrap();
        let graph = attribute(&g, &x, Some(&targets), method, &layer("conv2d_1/relu")).unwrap();
        assert_eq!(graph.raw.shape(), stack.raw.shape());
        // The same functions through different kernels (the stack fuses conv, ReLU
        // and pooling): equal to f32 rounding, relative to each map's largest value
        // (measured: at most 1.2e-6; the bound leaves a margin of 8).
        for (i, (a, b)) in graph
            .raw
            .outer_iter()
            .zip(stack.raw.outer_iter())
            .enumerate()
        {
            let scale = b.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{method} input {i}: {worst} of {scale}"
            );
        }
    }
}

/// A function on the tape explained as Captum explains a `forward_func`:
/// integrated gradients of `y = Σ x²` from a zero baseline add up to `y`;
/// the CAMs, which need layers, and a function giving the wrong shape are
/// refused with errors.
#[test]
fn any_function_on_the_tape_is_explained() {
    use salient::model::FnClassifier;
    use salient::saliency::{attribute, Method, Options};
    let model = FnClassifier::new([1, 2, 3], 1, |tape, x| {
        // [N, 1, 2, 3] -> [N, 1]: one channel, summed over its pixels.
        let sq = tape.mul(x, x)?;
        tape.sum(sq, &[2, 3], false)
    });
    let x = Tensor::from_shape_vec(vec![1, 1, 2, 3], vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.5]).unwrap();
    let vanilla = attribute(&model, &x, Some(&[0]), Method::Vanilla, &Options::default()).unwrap();
    // d(Σ x²)/dx = 2x.
    for (g, v) in vanilla.raw.iter().zip(x.iter()) {
        assert!((g - 2.0 * v).abs() < 1e-6);
    }
    let options = Options {
        steps: 64,
        tolerance: None,
        ..Options::default()
    };
    let ig = attribute(
        &model,
        &x,
        Some(&[0]),
        Method::IntegratedGradients,
        &options,
    )
    .unwrap();
    let total: f32 = x.iter().map(|v| v * v).sum();
    assert!(
        (ig.raw.sum() - total).abs() < 1e-3 * total,
        "{} vs {total}",
        ig.raw.sum()
    );
    let cam = attribute(&model, &x, Some(&[0]), Method::GradCam, &Options::default());
    assert!(cam.is_err());
    let wrong = FnClassifier::new([1, 2, 3], 2, |tape, x| tape.flatten(x));
    let e = attribute(&wrong, &x, Some(&[0]), Method::Vanilla, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("expected [1, 2]"), "{e}");
}

/// The class scores alone (`predict_scores`, which runs each convolution with
/// its batch normalisation and ReLU as one op) are bit for bit the scores of
/// the same graph recorded op by op, as a saliency map's forward pass records
/// it: torchvision's ResNet-18 on real CIFAR-10 images (4 at once, and one
/// alone, whose convolutions share their channels between the threads).
#[test]
fn resnet18s_fused_scores_are_the_bits_of_its_ops_one_by_one() {
    use salient::data::{self, DatasetKind, Split};
    use salient::model::Classifier;
    use salient::tensor::Pool;
    let Some(dir) = shared_data("cifar10/cifar-10-batches-bin") else {
        return;
    };
    let test = data::load(DatasetKind::Cifar10, &dir, Split::Test).unwrap();
    let model = Graph::resnet18([3, 32, 32], 10, 21).unwrap();
    for n in [4, 1] {
        let x = test.select(&(0..n).collect::<Vec<_>>()).unwrap().images();
        let fused = model.predict_scores(&x, n, &mut Pool::new()).unwrap();
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let (scores, _) = model.record_scores(&mut tape, xv, None).unwrap();
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&fused),
            bits(tape.value(scores).unwrap()),
            "{n} images"
        );
    }
}
