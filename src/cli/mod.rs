//! The `salient` command line, as a library: each subcommand is a `clap` argument
//! struct and a `run` function, so that tests and other programs can call them
//! without a shell. `src/main.rs` only parses the arguments and prints errors.
//!
//! | command | module | what it does |
//! | --- | --- | --- |
//! | `train` | [`train`] | trains the tutorial's CNN, saves a safetensors checkpoint |
//! | `eval` | [`train`] | prints `Test loss: ... / Test accuracy: ...` |
//! | `predict` | [`train`] | top classes of image files, converted to the model's input |
//! | `saliency` | [`mod@saliency`] | one method's figure per input, optionally the numbers as `.npy` |
//! | `report` | [`report`] | every method side by side in an HTML page |
//! | `sanity` | [`trust`] | the sanity checks: maps of randomised models against the trained one's |
//! | `faithfulness` | [`trust`] | deletion, insertion, ROAD, infidelity, max-sensitivity, object masks |
//! | `shortcut` | [`shortcut`] | trains a model with a planted shortcut and shows which methods reveal it |
//! | `demo` | [`demo`] | trains on the bundled MNIST sample and writes the report |
//! | `explore` | [`explore`] | a page in the browser: draw a digit, watch the gradient flow back |
//! | `import` | [`import`] | an ONNX model (PyTorch, Keras via tf2onnx) as a checkpoint |
//!
//! Every command prints what it does on standard output and returns a typed
//! [`Error`](crate::Error) instead of panicking.

pub mod demo;
pub mod explore;
pub mod import;
pub mod inputs;
pub mod report;
pub mod saliency;
pub mod shortcut;
pub mod train;
pub mod trust;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::limits::Limits;

pub use demo::DemoArgs;
pub use inputs::{Inputs, Item};
pub use report::ReportArgs;
pub use saliency::{MethodArgs, SaliencyArgs};
pub use train::{EvalArgs, PredictArgs, TrainArgs};

/// `salient`'s arguments.
#[derive(Debug, Parser)]
#[command(
    name = "salient",
    version,
    about = "Train small CNNs from scratch and see, with saliency maps, where they look."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The largest image accepted, in pixels (width x height).
    #[arg(long, global = true, default_value_t = Limits::DEFAULT.max_pixels, value_parser = at_least_one_u64)]
    pub max_pixels: u64,
    /// The largest model accepted, in parameters (weights and biases).
    #[arg(long, global = true, default_value_t = Limits::DEFAULT.max_params, value_parser = at_least_one_u64)]
    pub max_params: u64,
    /// The largest split of a data set accepted, in bytes of pixels (one per pixel and channel).
    #[arg(long, global = true, default_value_t = Limits::DEFAULT.max_dataset_bytes, value_parser = at_least_one_u64)]
    pub max_dataset_bytes: u64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train the tutorial's CNN and save it as a safetensors checkpoint.
    Train(TrainArgs),
    /// Print the test loss and accuracy of a checkpoint.
    Eval(EvalArgs),
    /// Print the top classes of images, converted to the model's input if needed.
    Predict(PredictArgs),
    /// Draw one saliency method's maps for some inputs: a figure per input.
    Saliency(SaliencyArgs),
    /// Draw every saliency method for some inputs, side by side in an HTML report.
    Report(ReportArgs),
    /// Sanity checks: how the maps change when the model is randomised (Adebayo et al.).
    Sanity(trust::SanityArgs),
    /// Faithfulness scores: deletion, insertion, ROAD, infidelity, max-sensitivity, masks.
    Faithfulness(trust::FaithfulnessArgs),
    /// Train a cat/dog model with a planted shortcut and show which methods reveal it.
    Shortcut(shortcut::ShortcutArgs),
    /// Train on the bundled MNIST sample and write the report: the main job.
    Demo(DemoArgs),
    /// Serve a page where you draw a digit and watch the gradient flow back, layer by layer.
    Explore(explore::ExploreArgs),
    /// Import an ONNX model (PyTorch, or Keras via tf2onnx) as a checkpoint.
    Import(import::ImportArgs),
}

/// Runs one parsed command line, with its limits put in force.
pub fn run(cli: Cli) -> Result<()> {
    Limits::set(Limits {
        max_pixels: cli.max_pixels,
        max_params: cli.max_params,
        max_dataset_bytes: cli.max_dataset_bytes,
        ..Limits::current()
    });
    match cli.command {
        Command::Train(args) => train::train(&args).map(drop),
        Command::Eval(args) => train::eval(&args).map(drop),
        Command::Predict(args) => train::predict(&args),
        Command::Saliency(args) => saliency::run(&args).map(drop),
        Command::Report(args) => report::run(&args).map(drop),
        Command::Sanity(args) => trust::sanity(&args).map(drop),
        Command::Faithfulness(args) => trust::faithfulness(&args).map(drop),
        Command::Shortcut(args) => shortcut::run(&args).map(drop),
        Command::Demo(args) => demo::run(&args).map(drop),
        Command::Explore(args) => explore::run(&args),
        Command::Import(args) => import::run(&args).map(drop),
    }
}

/// A class as people read it: its name (`7` for MNIST, `cat` for CIFAR-10), or
/// its index if the model has no name for it.
pub fn class_label(names: &[String], class: usize) -> String {
    names
        .get(class)
        .cloned()
        .unwrap_or_else(|| class.to_string())
}

/// Parses a count that must be at least 1 (`--batch-size`, `--top`, ...).
pub fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// [`at_least_one`] for limits.
pub fn at_least_one_u64(text: &str) -> std::result::Result<u64, String> {
    at_least_one(text).map(|n| n as u64)
}

/// Parses a number that must be finite and above 0 (`--learning-rate`).
pub fn positive_f32(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number above 0, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a number that must be finite (`--fill`, `--baseline`).
pub fn finite_f32(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("must be a finite number, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a number that must be finite and not negative (`--tolerance`).
pub fn non_negative_f64(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number, not negative, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a number that must be finite and not negative (`--noise`).
pub fn non_negative_f32(text: &str) -> std::result::Result<f32, String> {
    match finite_f32(text)? {
        v if v >= 0.0 => Ok(v),
        v => Err(format!("must not be negative, got {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks: no clashing flags, valid defaults, groups that exist.
        Cli::command().debug_assert();
    }

    #[test]
    fn class_labels_are_names_else_indices() {
        let cifar = vec!["airplane".to_string(), "cat".to_string()];
        assert_eq!(class_label(&cifar, 1), "cat");
        assert_eq!(class_label(&cifar, 5), "5");
    }
}
