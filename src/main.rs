//! The `salient` command line: train the tutorial's CNN, evaluate it, predict,
//! and draw saliency maps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use salient::data::{self, DatasetKind, Split};
use salient::model::{self, Head, Sequential};
use salient::train::{fit, FitOptions, KerasProgress};

#[derive(Parser)]
#[command(
    name = "salient",
    version,
    about = "Train small CNNs from scratch and see, with saliency maps, where they look."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the tutorial's CNN and save it as a safetensors checkpoint.
    Train {
        /// mnist (IDX files), cifar10 (binary batches or class folders) or folder (DIR/<class>/*.png|jpg).
        #[arg(long)]
        dataset: DatasetKind,
        /// The data set's folder.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 25)]
        epochs: usize,
        #[arg(long, default_value_t = 250)]
        batch_size: usize,
        /// Share of the training data held out for validation, from the end (as Keras).
        #[arg(long, default_value_t = 0.2)]
        validation_split: f64,
        /// Fixes initialisation, shuffling and dropout.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f32,
        /// Train on the first N training images only (a quick run).
        #[arg(long)]
        limit: Option<usize>,
        /// Where to write the checkpoint.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the test loss and accuracy of a checkpoint.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        dataset: DatasetKind,
        #[arg(long)]
        data: PathBuf,
        /// Which split to evaluate.
        #[arg(long, default_value = "test")]
        split: Split,
        #[arg(long, default_value_t = 250)]
        batch_size: usize,
    },
    /// Print the top classes of images, converted to the model's input if needed.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// PNG or JPEG files.
        #[arg(long, num_args = 1.., required = true)]
        image: Vec<PathBuf>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
    },
}

fn main() -> ExitCode {
    // A bug must still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("salient: internal error: {info}")
    }));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("salient: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> salient::Result<()> {
    match cli.command {
        Command::Train {
            dataset,
            data: dir,
            epochs,
            batch_size,
            validation_split,
            seed,
            learning_rate,
            limit,
            out,
        } => {
            let mut train = data::load(dataset, &dir, Split::Train)?;
            if let Some(n) = limit {
                train = train.take(n);
            }
            let [c, h, w] = train.shape();
            println!(
                "Loaded {} training images of {c}x{h}x{w} in {} classes from {}",
                train.len(),
                train.num_classes(),
                dir.display()
            );
            let mut model = Sequential::tutorial([c, h, w], train.num_classes(), seed)?;
            model.set_class_names(train.class_names.clone())?;
            println!(
                "Model: the tutorial's CNN, {} parameters",
                model.num_params()
            );
            let opts = FitOptions {
                epochs,
                batch_size,
                validation_split,
                seed,
                learning_rate,
            };
            fit(&mut model, &train, &opts, &mut KerasProgress::new())?;
            model::save(&model, &out)?;
            println!("Saved {}", out.display());
            drop(train);
            report_test(&model, dataset, &dir, batch_size)
        }
        Command::Eval {
            model,
            dataset,
            data: dir,
            split,
            batch_size,
        } => {
            let model = model::load(&model)?;
            let set = data::load(dataset, &dir, split)?;
            let (loss, accuracy) = model.evaluate(&set.images, &set.labels, batch_size)?;
            println!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}");
            Ok(())
        }
        Command::Predict { model, image, top } => {
            let model = model::load(&model)?;
            for path in &image {
                predict_one(&model, path, top)?;
            }
            Ok(())
        }
    }
}

/// Evaluates on the test split, if the data has one, with the tutorial's line.
fn report_test(
    model: &Sequential,
    dataset: DatasetKind,
    dir: &Path,
    batch_size: usize,
) -> salient::Result<()> {
    match data::load(dataset, dir, Split::Test) {
        Ok(test) => {
            let (loss, accuracy) = model.evaluate(&test.images, &test.labels, batch_size)?;
            println!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}");
        }
        Err(e) => println!("No test split evaluated: {e}"),
    }
    Ok(())
}

fn predict_one(model: &Sequential, path: &Path, top: usize) -> salient::Result<()> {
    let image = data::load_image(path)?;
    let [c, h, w] = model.input_shape();
    let (input, notes) = data::to_model_input(&image, c, h, w)?;
    let batch = input.insert_axis(ndarray::Axis(0));
    let probs = model.predict(&batch, 1, Head::AsBuilt)?;
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("{}", path.display());
    for note in notes {
        println!("  note: {note}");
    }
    for (class, p) in ranked.into_iter().take(top.max(1)) {
        println!("  {:>6.2}%  {}", p * 100.0, model.class_names()[class]);
    }
    Ok(())
}
