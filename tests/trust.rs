//! Trust scores, each checked on a case whose answer is known.

mod common;

use common::*;
use ndarray::{Array2, Array3, Axis};
use salient::layers::Activation;
use salient::model::Sequential;
use salient::saliency::{attribute, Explainer, Method, Options};
use salient::trust::perturbation::{class_probabilities, ranking};
use salient::trust::shortcut::Cue;
use salient::trust::{
    self, deletion_insertion, drawn_maps, infidelity, max_sensitivity, road, sanity_check,
    CurveOptions, RoadOptions, RobustnessOptions, SanityOptions, Spread, StageKind,
};
use salient::Tensor;

fn digits(n: usize) -> Tensor {
    small_trained_mnist()
        .1
        .images()
        .slice_axis(Axis(0), ndarray::Slice::from(..n))
        .to_owned()
}

fn labels(n: usize) -> Vec<usize> {
    small_trained_mnist().1.labels[..n].to_vec()
}

/// y = w·x + b over a 1x4x4 input: Flatten → Dense 2 (softmax, made linear
/// for the scores). Class 0's weights are `w`, class 1's are 0.
fn linear_model(w: &[f32]) -> Sequential {
    let mut model = Sequential::builder([1, 4, 4])
        .flatten()
        .dense(2, Activation::Softmax)
        .build(0)
        .unwrap();
    let slot = &mut model.layers_mut()[1].params;
    let (k, b) = slot.as_ref().unwrap();
    let mut kernel = Tensor::zeros(k.raw_dim());
    // The kernel is stored [out, in] (PyTorch's layout).
    for (i, &v) in w.iter().enumerate() {
        kernel[[0, i]] = v;
    }
    *slot = Some((kernel, Tensor::zeros(b.raw_dim())));
    model
}

fn ramp() -> Vec<f32> {
    (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect()
}

#[test]
fn the_gradient_of_a_linear_model_has_zero_infidelity() {
    // f(x) − f(x − I) = w·I = Iᵀ∇f exactly, for every perturbation I.
    let model = linear_model(&ramp());
    let x = random(&[3, 1, 4, 4], 5).mapv(|v| v.abs());
    let targets = [0, 0, 0];
    let gradient = attribute(
        &model,
        &x,
        Some(&targets),
        Method::Vanilla,
        &Options::default(),
    )
    .unwrap()
    .raw;
    let options = RobustnessOptions::default();
    let exact = infidelity(&model, &x, &targets, &gradient, &options).unwrap();
    // The score change is a difference of f32 forward passes of size ~1
    // (sum of 16 products): its rounding, about 1e-6, squared is ~1e-12.
    for i in &exact {
        assert!(i.raw < 1e-9 && i.normalized < 1e-9, "{i:?}");
    }
    // Half the gradient: the raw score sees it, the normalised one rescales it away.
    let half = infidelity(&model, &x, &targets, &(&gradient * 0.5), &options).unwrap();
    for i in &half {
        assert!(i.raw > 1e-3 && i.normalized < 1e-9, "{i:?}");
    }
    // A map of the wrong sign pattern scores badly even normalised.
    let shuffled = gradient
        .mapv(|v| v * if v > 0.0 { 1.0 } else { -3.0 })
        .permuted_axes(vec![0, 1, 3, 2])
        .as_standard_layout()
        .to_owned();
    let wrong = infidelity(&model, &x, &targets, &shuffled, &options).unwrap();
    assert!(wrong.iter().all(|i| i.normalized > 1e-3), "{wrong:?}");
}

#[test]
fn a_constant_map_scores_exactly_as_the_random_order() {
    let (model, _) = small_trained_mnist();
    let x = digits(4);
    let targets = labels(4);
    let options = CurveOptions::default();
    let zero = Tensor::zeros(vec![4, 28, 28]);
    let constant = Tensor::from_elem(vec![4, 28, 28], 0.37);
    let random = deletion_insertion(model, &x, &targets, &zero, &options).unwrap();
    let flat = deletion_insertion(model, &x, &targets, &constant, &options).unwrap();
    assert_eq!(random, flat);
    let r = road(model, &x, &targets, &zero, &RoadOptions::default()).unwrap();
    let f = road(model, &x, &targets, &constant, &RoadOptions::default()).unwrap();
    assert_eq!(r, f);
    // Endpoints: nothing removed is the input's own probability; everything
    // removed is the probability of a black image.
    let p = class_probabilities(model, &x, targets[0], 10, &mut Default::default()).unwrap();
    assert!((random.deletion[0][0] - p[0]).abs() < 1e-12);
    let black = class_probabilities(
        model,
        &Tensor::zeros(vec![1, 1, 28, 28]),
        targets[0],
        10,
        &mut Default::default(),
    )
    .unwrap();
    assert!((random.deletion[0][32] - black[0]).abs() < 1e-12);
    assert!((random.insertion[0][32] - p[0]).abs() < 1e-12);
}

#[test]
fn the_true_weights_delete_better_than_random() {
    // On a linear model with positive weights on some pixels, deleting the
    // pixels with the largest w·x first drops the class-0 score fastest.
    let w: Vec<f32> = (0..16)
        .map(|i| if i % 3 == 0 { 2.0 } else { -0.5 })
        .collect();
    let model = linear_model(&w);
    let x = Tensor::from_elem(vec![1, 1, 4, 4], 1.0);
    let good = Tensor::from_shape_vec(vec![1, 4, 4], w.clone()).unwrap();
    let bad = good.mapv(|v| -v);
    let random = Tensor::zeros(vec![1, 4, 4]);
    let o = CurveOptions {
        steps: 16,
        ..CurveOptions::default()
    };
    let auc = |map: &Tensor| {
        deletion_insertion(&model, &x, &[0], map, &o)
            .unwrap()
            .deletion_auc()[0]
    };
    let (g, r, b) = (auc(&good), auc(&random), auc(&bad));
    assert!(g < r && r < b, "good {g}, random {r}, reversed {b}");
    // Ranking is most relevant first, ties in a seeded order.
    let order = ranking(
        good.index_axis(Axis(0), 0).into_dimensionality().unwrap(),
        0,
    );
    assert!(order[..6].iter().all(|p| p % 3 == 0), "{order:?}");
}

#[test]
fn randomising_every_layer_decorrelates_the_signed_gradient() {
    let (model, _) = small_trained_mnist();
    let x = digits(6);
    let targets = labels(6);
    let found = sanity_check(
        model,
        &x,
        &targets,
        &[Method::Vanilla, Method::Guided, Method::GradientXInput],
        &Options::default(),
        &SanityOptions::default(),
        None,
        &mut |_| {},
    )
    .unwrap();
    // 4 layers with weights: 4 cascading + 4 independent stages.
    assert_eq!(found.stages.len(), 8);
    let last = found
        .stages
        .iter()
        .rposition(|s| s.kind == StageKind::Cascading)
        .unwrap();
    let mean = |m, f: fn(&trust::Similarity) -> f64| {
        Spread::of(found.get(last, m).unwrap().similarity.iter().map(f)).mean
    };
    let signed = mean(Method::Vanilla, |s| s.spearman_signed);
    assert!(signed.abs() < 0.15, "signed rank correlation {signed}");
    // The magnitude keeps more (the digit's outline shapes any network's
    // gradient), and guided backprop keeps the most: the paper's finding.
    let abs = mean(Method::Vanilla, |s| s.spearman_abs);
    assert!(abs < 0.9, "|gradient| {abs}");
    assert!(mean(Method::Guided, |s| s.spearman_abs) > abs);
    // Every measure stays in range.
    for r in &found.results {
        for s in &r.similarity {
            assert!((-1.0..=1.0).contains(&s.spearman_abs) && (0.0..=1.0).contains(&s.top_k));
            assert!(s.ssim <= 1.0 + 1e-12);
        }
    }
}

#[test]
fn max_sensitivity_is_zero_for_a_linear_model_and_positive_otherwise() {
    // The gradient of a linear model does not depend on the input.
    let model = linear_model(&ramp());
    let x = random(&[2, 1, 4, 4], 9);
    let o = RobustnessOptions::default();
    let s = max_sensitivity(
        &mut Explainer::new(&model),
        &x,
        &[0, 0],
        Method::Vanilla,
        &Options::default(),
        None,
        &o,
    )
    .unwrap();
    assert_eq!(s, [0.0, 0.0]);
    // Gradient × input moves with the input, by ‖δ ⊙ w‖ / ‖x ⊙ w‖: above 0,
    // and small for a radius of 0.02.
    let s = max_sensitivity(
        &mut Explainer::new(&model),
        &x,
        &[0, 0],
        Method::GradientXInput,
        &Options::default(),
        None,
        &o,
    )
    .unwrap();
    assert!(s.iter().all(|&v| v > 0.0 && v < 1.0), "{s:?}");
}

#[test]
fn integrated_gradients_add_steps_until_complete() {
    let (model, _) = small_trained_mnist();
    let x = digits(5);
    let targets = labels(5);
    let options = Options {
        steps: 4,
        ..Options::default()
    };
    let out = attribute(
        model,
        &x,
        Some(&targets),
        Method::IntegratedGradients,
        &options,
    )
    .unwrap();
    let report = out.completeness.unwrap();
    for c in &report {
        // Each input met the 1% tolerance, or stopped at the cap.
        assert!(c.rel_error <= 0.01 || c.steps == 1024, "{c:?}");
        assert!(c.steps >= 4 && c.steps.is_power_of_two());
    }
    // Four steps are not enough for some input here, so the rule had work to do.
    assert!(report.iter().any(|c| c.steps > 4), "{report:?}");
    // Without a tolerance the steps stay put.
    let fixed = Options {
        tolerance: None,
        ..options
    };
    let out = attribute(
        model,
        &x,
        Some(&targets),
        Method::IntegratedGradients,
        &fixed,
    )
    .unwrap();
    assert!(out.completeness.unwrap().iter().all(|c| c.steps == 4));
}

#[test]
fn the_cue_model_story_on_a_hand_built_model() {
    // A model that reads only the top-left 4x4 corner: its gradient lies
    // entirely in the cue's mask, so the energy share is 1 and the map peaks there.
    let w: Vec<f32> = (0..16).map(|i| if i < 4 { 1.0 } else { 0.0 }).collect();
    let model = linear_model(&w);
    let x = random(&[1, 1, 4, 4], 2).mapv(|v| v.abs() + 0.1);
    let raw = attribute(
        &model,
        &x,
        Some(&[0]),
        Method::GradientXInput,
        &Options::default(),
    )
    .unwrap()
    .raw;
    let maps = drawn_maps(Method::GradientXInput, &raw).unwrap();
    let mut mask = Array2::from_elem((4, 4), false);
    mask.row_mut(0).fill(true);
    let p = trust::pointing(
        maps.index_axis(Axis(0), 0).into_dimensionality().unwrap(),
        mask.view(),
    )
    .unwrap();
    assert_eq!((p.energy, p.hit), (1.0, true));
    // A stamped cue's mask has exactly the square's pixels.
    let mut images = Tensor::zeros(vec![2, 3, 8, 8]);
    let masks: Array3<bool> = Cue::default_for(2).stamp(&mut images, &[1, 0], 0).unwrap();
    assert!(masks
        .outer_iter()
        .all(|m| m.iter().filter(|&&v| v).count() == 16));
}
