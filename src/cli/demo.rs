//! `salient demo`: the main job in one command. Trains the tutorial's CNN on the
//! MNIST sample bundled in `fixtures/mnist-sample`, saves the checkpoint, and
//! writes the report of every saliency method on the tutorial's test digits.
//!
//! ```text
//! cargo run --release -- demo --out out/demo
//! ```
//!
//! leaves `out/demo/mnist-sample.safetensors` and `out/demo/report/index.html`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::report::{self, ReportArgs};
use super::train::{self, TrainArgs};
use crate::data::DatasetKind;
use crate::error::{Error, Result};

/// Where the bundled sample lives, relative to the repository.
pub const SAMPLE_DIR: &str = "fixtures/mnist-sample";

/// `salient demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The folder for the checkpoint and the report (created if needed).
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// The MNIST sample [default: fixtures/mnist-sample of this repository].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Passes over the training digits, as in the tutorial; its other settings are kept too.
    #[arg(long, default_value_t = 25)]
    pub epochs: usize,
    /// Train on the first N training digits only (a quicker, worse model).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Fixes initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `all`, or a comma-separated list of saliency methods for the report.
    #[arg(long, default_value = "all")]
    pub methods: String,
}

/// What the demo wrote.
#[derive(Debug, Clone)]
pub struct DemoOutput {
    /// The trained model's checkpoint.
    pub checkpoint: PathBuf,
    /// The report's `index.html`.
    pub report: PathBuf,
}

/// Trains, saves, reports, and says where to look.
pub fn run(args: &DemoArgs) -> Result<DemoOutput> {
    let start = Instant::now();
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => sample_dir()?,
    };
    // Checked before training, so that a typo costs no minutes.
    report::parse_methods(&args.methods)?;
    let checkpoint = args.out.join("mnist-sample.safetensors");
    crate::fsutil::check_output_dir(&args.out)?;

    println!(
        "== 1/2: train the tutorial's CNN on the MNIST sample in {}",
        data.display()
    );
    let train_args = TrainArgs {
        dataset: DatasetKind::Mnist,
        data: data.clone(),
        epochs: args.epochs,
        batch_size: 250,
        validation_split: 0.2,
        seed: args.seed,
        learning_rate: 1e-3,
        limit: args.limit,
        out: checkpoint.clone(),
    };
    train::train(&train_args)?;

    println!("\n== 2/2: every saliency method on the tutorial's test digits");
    let mut report_args = ReportArgs::new(
        checkpoint.clone(),
        DatasetKind::Mnist,
        data,
        args.out.join("report"),
    );
    report_args.methods = args.methods.clone();
    let report = report::run(&report_args)?;

    println!(
        "\nDone in {:.0} s. Open {} in a browser.",
        start.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(DemoOutput { checkpoint, report })
}

/// `fixtures/mnist-sample` under the working folder, else in the source tree
/// this binary was built from.
pub(crate) fn sample_dir() -> Result<PathBuf> {
    let here = Path::new(SAMPLE_DIR);
    if here.is_dir() {
        return Ok(here.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_DIR);
    if built.is_dir() {
        return Ok(built);
    }
    Err(Error::invalid(
        "demo",
        format!(
            "cannot find the bundled MNIST sample in ./{SAMPLE_DIR} or {}; pass --data DIR",
            built.display()
        ),
    ))
}
