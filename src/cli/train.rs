//! `salient train`, `salient eval` and `salient predict`.

use std::path::{Path, PathBuf};

use clap::Args;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::inputs::{self, Inputs};
use crate::data::{self, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{self, Classifier, Sequential};
use crate::train::{evaluate, fit, FitOptions, KerasProgress};

/// `salient train`: the tutorial's settings unless told otherwise.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// mnist (IDX files), cifar10 (binary batches or class folders) or folder (`DIR/<class>/*.png|jpg`).
    #[arg(long)]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Passes over the training data.
    #[arg(long, default_value_t = 25, value_parser = super::at_least_one)]
    pub epochs: usize,
    /// Images per Adam step.
    #[arg(long, default_value_t = 250, value_parser = super::at_least_one)]
    pub batch_size: usize,
    /// Share of the training data held out for validation, from the end (as Keras).
    #[arg(long, default_value_t = 0.2)]
    pub validation_split: f64,
    /// Fixes initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = super::positive_f32)]
    pub learning_rate: f32,
    /// Train on N training images only (a quick run): the first N, or N at random (seeded) if the data is sorted by class.
    #[arg(long, value_parser = super::at_least_one)]
    pub limit: Option<usize>,
    /// Where to write the checkpoint.
    #[arg(long)]
    pub out: PathBuf,
}

/// `salient eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// mnist, cifar10 or folder.
    #[arg(long)]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Which split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Images per forward pass.
    #[arg(long, default_value_t = 250, value_parser = super::at_least_one)]
    pub batch_size: usize,
}

/// `salient predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// PNG or JPEG files.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3, value_parser = super::at_least_one)]
    pub top: usize,
}

/// Trains, saves the checkpoint, evaluates on the test split if there is one,
/// and returns the model.
pub fn train(args: &TrainArgs) -> Result<Sequential> {
    // Checked before the minutes of training, so that a bad path or setting
    // fails at once.
    fsutil::check_output_file(&args.out)?;
    if !(args.learning_rate.is_finite() && args.learning_rate > 0.0) {
        return Err(Error::invalid(
            "learning-rate",
            format!(
                "must be a finite number above 0, got {}",
                args.learning_rate
            ),
        ));
    }
    if args.epochs == 0 || args.batch_size == 0 || args.limit == Some(0) {
        return Err(Error::invalid(
            "train",
            "--epochs, --batch-size and --limit must be at least 1",
        ));
    }
    if !(0.0..1.0).contains(&args.validation_split) {
        return Err(Error::invalid(
            "validation-split",
            format!("must be in [0, 1), got {}", args.validation_split),
        ));
    }
    let mut train = data::load(args.dataset, &args.data, Split::Train)?;
    if let Some(n) = args.limit {
        train = limit(train, n, args.seed)?;
    }
    let [c, h, w] = train.shape();
    println!(
        "Loaded {} training images of {c}x{h}x{w} in {} classes from {}",
        train.len(),
        train.num_classes(),
        args.data.display()
    );
    let mut model = Sequential::tutorial([c, h, w], train.num_classes(), args.seed)?;
    model.set_class_names(train.class_names.clone())?;
    println!(
        "Model: the tutorial's CNN, {} parameters",
        model.num_params()
    );
    let opts = FitOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        validation_split: args.validation_split,
        seed: args.seed,
        learning_rate: args.learning_rate,
    };
    fit(&mut model, &train, &opts, &mut KerasProgress::new())?;
    model::save(&model, &args.out)?;
    println!("Saved {}", args.out.display());
    drop(train);
    report_test(&model, args.dataset, &args.data, args.batch_size).map_err(|e| {
        Error::invalid(
            "train",
            format!(
                "the model is trained and saved in {}, but the test split could not be evaluated: {e}",
                args.out.display()
            ),
        )
    })?;
    Ok(model)
}

/// The first `n` images; or, when the labels are sorted by class (as class
/// folders load), `n` images drawn at random with `seed`, so that a quick run
/// still sees every class.
pub fn limit(data: Dataset, n: usize, seed: u64) -> Result<Dataset> {
    let sorted = data.labels.windows(2).all(|w| w[0] <= w[1]);
    let several_classes = data.labels.first() != data.labels.last();
    if n >= data.len() || !(sorted && several_classes) {
        return Ok(data.take(n));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.truncate(n);
    println!(
        "The training images are sorted by class: took {n} of {} at random (seed {seed})",
        data.len()
    );
    data.select(&order)
}

/// Prints and returns the loss and accuracy of a checkpoint on one split.
pub fn eval(args: &EvalArgs) -> Result<(f32, f32)> {
    let loaded = model::load_model(&args.model)?;
    let model = loaded.classifier();
    let set = data::load(args.dataset, &args.data, args.split)?;
    let (loss, accuracy) = evaluate(model, &set, args.batch_size)?;
    println!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}");
    Ok((loss, accuracy))
}

/// Prints the `top` classes of each image with their probabilities, after
/// saying how the image was converted to fit the model.
pub fn predict(args: &PredictArgs) -> Result<()> {
    if args.top == 0 {
        return Err(Error::invalid("top", "must be at least 1"));
    }
    let loaded = model::load_model(&args.model)?;
    let model = loaded.classifier();
    let inputs = Inputs::from_files(model, &args.image)?;
    let probs = inputs::probabilities(model, &inputs.images, 250)?;
    for (item, row) in inputs.items.iter().zip(probs.outer_iter()) {
        println!("{}", item.name);
        for note in &item.notes {
            println!("  note: {note}");
        }
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (class, p) in ranked.into_iter().take(args.top) {
            println!(
                "  {:>6.2}%  {}",
                p * 100.0,
                super::class_label(model.class_names(), class)
            );
        }
    }
    Ok(())
}

/// Evaluates on the test split with the tutorial's line, if the data has a
/// test split. A test split whose files are missing is said so and skipped; one
/// that is there but unreadable is an error.
pub fn report_test(
    model: &dyn Classifier,
    dataset: DatasetKind,
    dir: &Path,
    batch_size: usize,
) -> Result<Option<(f32, f32)>> {
    match data::load(dataset, dir, Split::Test) {
        Ok(test) => {
            let (loss, accuracy) = evaluate(model, &test, batch_size)?;
            println!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}");
            Ok(Some((loss, accuracy)))
        }
        Err(Error::Io { source, path }) if source.kind() == std::io::ErrorKind::NotFound => {
            println!("No test split evaluated: {}: {source}", path.display());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn labelled(labels: Vec<usize>) -> Dataset {
        let n = labels.len();
        // Image i holds the value i, to see which were taken.
        let images = Tensor::from_shape_fn(ndarray::IxDyn(&[n, 1, 1, 1]), |d| d[0] as f32);
        Dataset::new(images, labels, vec!["a".into(), "b".into(), "c".into()]).unwrap()
    }

    #[test]
    fn limit_takes_the_first_images_of_mixed_data() {
        let data = limit(labelled(vec![2, 0, 1, 0, 2, 1]), 3, 0).unwrap();
        assert_eq!(data.labels, [2, 0, 1]);
    }

    #[test]
    fn limit_draws_from_every_class_of_sorted_data() {
        let sorted: Vec<usize> = (0..300).map(|i| i / 100).collect();
        let data = limit(labelled(sorted), 30, 7).unwrap();
        assert_eq!(data.len(), 30);
        assert!(
            data.label_counts().iter().all(|&c| c > 0),
            "{:?}",
            data.label_counts()
        );
        assert_eq!(limit(labelled(vec![0, 1, 2]), 5, 0).unwrap().len(), 3);
    }
}
