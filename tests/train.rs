//! Models, training and checkpoints, on the bundled MNIST sample.

use std::path::Path;

use salient::data::{self, Dataset, DatasetKind, Split};
use salient::layers::{Activation, LayerSpec};
use salient::model::{self, Head, Sequential};
use salient::train::{fit, split_validation, FitOptions, TrainStep};
use salient::{Error, Tensor};

fn sample(split: Split) -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
    data::load(DatasetKind::Mnist, &dir, split).unwrap()
}

fn all_params(model: &Sequential) -> Vec<Tensor> {
    model.params().cloned().collect()
}

#[test]
fn tutorial_model_has_keras_names_and_shapes() {
    let model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
    let names: Vec<&str> = model.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv2d",
            "max_pooling2d",
            "dropout",
            "conv2d_1",
            "max_pooling2d_1",
            "dropout_1",
            "flatten",
            "dense",
            "visualized_layer"
        ]
    );
    let shapes: Vec<Vec<usize>> = model
        .layers()
        .iter()
        .map(|l| l.output_shape.clone())
        .collect();
    assert_eq!(shapes[0], [32, 26, 26]);
    assert_eq!(shapes[4], [64, 5, 5]);
    assert_eq!(shapes[6], [1600]);
    assert_eq!(shapes[8], [10]);
    // Keras's summary for this model: 320 + 18,496 + 409,856 + 2,570 parameters.
    assert_eq!(model.num_params(), 431_242);
    // CIFAR-10: 32x32x3 gives 64·6·6 = 2304 flattened features.
    let cifar = Sequential::tutorial([3, 32, 32], 10, 0).unwrap();
    assert_eq!(cifar.layers()[6].output_shape, [2304]);
}

#[test]
fn glorot_uniform_limits_and_zero_biases() {
    let model = Sequential::tutorial([1, 28, 28], 10, 7).unwrap();
    // conv2d_1: fan_in = 32·9, fan_out = 64·9 → limit √(6 / 864) = 0.0833.
    let (w, b) = model.layers()[3].params.as_ref().unwrap();
    let limit = (6.0f32 / 864.0).sqrt();
    let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max <= limit && max > 0.95 * limit,
        "max {max}, limit {limit}"
    );
    assert!(b.iter().all(|&v| v == 0.0));
    // Uniform: the mean absolute value is half the limit (within 3%, over 18,432 draws).
    let mean_abs = w.iter().map(|v| v.abs()).sum::<f32>() / w.len() as f32;
    assert!((mean_abs / limit - 0.5).abs() < 0.015, "{mean_abs}");
}

#[test]
fn builder_errors_are_clear() {
    let err = Sequential::builder([1, 28, 28])
        .dense(10, Activation::Softmax)
        .build(0)
        .unwrap_err();
    assert!(err.to_string().contains("Flatten"), "{err}");
    let err = Sequential::builder([1, 4, 4])
        .conv2d(8, 5, Activation::Relu)
        .build(0)
        .unwrap_err();
    assert!(err.to_string().contains("conv2d"), "{err}");
    let err = Sequential::builder([1, 4, 4])
        .flatten()
        .name("x")
        .dense(2, Activation::Linear)
        .name("x")
        .build(0)
        .unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
    let err = Sequential::builder([1, 4, 4])
        .dropout(1.5)
        .build(0)
        .unwrap_err();
    assert!(err.to_string().contains("rate"), "{err}");
}

#[test]
fn validation_is_the_last_share_unless_labels_are_sorted() {
    let images = Tensor::zeros(vec![10, 1, 2, 2]);
    let names: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let mixed = Dataset::new(
        images.clone(),
        vec![0, 2, 1, 0, 2, 1, 0, 1, 2, 0],
        names.clone(),
    )
    .unwrap();
    let (train, val) = split_validation(&mixed, 0.2, 1).unwrap();
    assert_eq!(train, (0..8).collect::<Vec<_>>());
    assert_eq!(val, [8, 9]);
    // Sorted by class (as folders give): shuffled once, so validation is not all class 2.
    let sorted = Dataset::new(images, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 2], names).unwrap();
    let (train, val) = split_validation(&sorted, 0.3, 1).unwrap();
    assert_eq!(train.len() + val.len(), 10);
    assert_eq!(val.len(), 3);
    assert!(val.iter().any(|&i| sorted.labels[i] != 2), "{val:?}");
    assert!(split_validation(&sorted, 1.0, 1).is_err());
}

#[test]
fn training_on_the_sample_learns_and_a_checkpoint_predicts_identically() {
    let train = sample(Split::Train);
    let test = sample(Split::Test);
    let mut model = Sequential::tutorial([1, 28, 28], 10, 1).unwrap();
    let opts = FitOptions {
        epochs: 2,
        seed: 1,
        ..FitOptions::default()
    };
    let history = fit(&mut model, &train, &opts, &mut ()).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[1].loss < history[0].loss);
    let (_, accuracy) = model.evaluate(&test.images(), &test.labels, 250).unwrap();
    // Chance is 0.1; two epochs on 3,200 digits reach about 0.85.
    assert!(accuracy > 0.7, "test accuracy {accuracy}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model::save(&model, &path).unwrap();
    let loaded = model::load(&path).unwrap();
    assert_eq!(all_params(&loaded), all_params(&model));
    assert_eq!(loaded.architecture(), model.architecture());
    let before = model.predict(&test.images(), 100, Head::AsBuilt).unwrap();
    let after = loaded.predict(&test.images(), 100, Head::AsBuilt).unwrap();
    assert_eq!(before, after);
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let train = sample(Split::Train).take(1000);
    let run = |seed| {
        let mut model = Sequential::tutorial([1, 28, 28], 10, seed).unwrap();
        let opts = FitOptions {
            epochs: 1,
            seed,
            batch_size: 100,
            ..FitOptions::default()
        };
        fit(&mut model, &train, &opts, &mut ()).unwrap();
        all_params(&model)
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}

#[test]
fn a_non_finite_loss_stops_training_with_epoch_and_batch() {
    let sample = sample(Split::Train).take(600);
    // NaN pixels must reach the loss (ReLU and max pooling propagate NaN).
    let mut images = sample.images();
    images.fill(f32::NAN);
    let train = Dataset::new(images, sample.labels, sample.class_names).unwrap();
    let mut model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
    let err = fit(&mut model, &train, &FitOptions::default(), &mut ()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteLoss {
                epoch: 1,
                batch: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 1, batch 1"), "{err}");
}

#[test]
fn checkpoints_are_checked_on_loading() {
    let dir = tempfile::tempdir().unwrap();
    let model = Sequential::builder([1, 6, 6])
        .conv2d(2, 3, Activation::Relu)
        .flatten()
        .dense(3, Activation::Softmax)
        .build(0)
        .unwrap();
    let good = dir.path().join("good.safetensors");
    model::save(&model, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Truncated.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let msg = model::load(&cut).unwrap_err().to_string();
    assert!(msg.contains("cut.safetensors"), "{msg}");

    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(model::load(&junk)
        .unwrap_err()
        .to_string()
        .contains("junk.safetensors"));

    // Missing file.
    assert!(matches!(
        model::load(&dir.path().join("none")),
        Err(Error::Io { .. })
    ));

    // An architecture whose dense layer no longer fits the stored weights.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let changed = header
        .replace("\\\"units\\\":3", "\\\"units\\\":4")
        .replace("\\\"output_shape\\\":[3]", "\\\"output_shape\\\":[4]");
    assert_ne!(changed, header);
    let mut edited = (changed.len() as u64).to_le_bytes().to_vec();
    edited.extend_from_slice(changed.as_bytes());
    edited.extend_from_slice(&bytes[8 + header_len..]);
    let wrong = dir.path().join("wrong.safetensors");
    std::fs::write(&wrong, edited).unwrap();
    let msg = model::load(&wrong).unwrap_err().to_string();
    assert!(msg.contains("dense") && msg.contains("shape"), "{msg}");

    // The spec round-trips through JSON as the README documents it.
    let arch = model.architecture();
    assert!(matches!(
        arch.layers[2].spec,
        LayerSpec::Dense {
            units: 3,
            activation: Activation::Softmax
        }
    ));
    let json = serde_json::to_string(&arch).unwrap();
    assert!(
        json.contains("\"type\":\"Conv2D\"") && json.contains("\"activation\":\"relu\""),
        "{json}"
    );
}

#[test]
fn training_steps_after_the_first_allocate_nothing_new() {
    let data = sample(Split::Train);
    let mut model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
    let mut step = TrainStep::new(1e-3);
    let n = 32;
    let labels = &data.labels[..n];
    let mut fresh = Vec::new();
    for seed in 0..3 {
        let mut x = step.pool.to_overwrite(&[n, 1, 28, 28]);
        x.assign(&data.images().slice(ndarray::s![..n, .., .., ..]));
        let (loss, _) = step.step(&mut model, x, labels, seed).unwrap();
        assert!(loss.is_finite());
        fresh.push(step.pool.fresh_allocations());
    }
    // Activations, gradients, masks and the batch itself all come back to the
    // pool, so the second and third steps take every buffer from it.
    assert!(fresh[0] > 0);
    assert_eq!(fresh[2], fresh[0], "{fresh:?}");
}
