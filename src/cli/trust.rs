//! `salient sanity` and `salient faithfulness`: the evidence for or against
//! each method's maps, as CSV files, figures and an HTML page; and the trust
//! section that `salient report` shows under its maps.
//!
//! ```text
//! salient sanity --model mnist.safetensors --dataset mnist --data DIR --out out/sanity
//! salient faithfulness --model mnist.safetensors --dataset mnist --data DIR --out out/faith
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::inputs::{self, Inputs};
use super::report::parse_methods;
use super::saliency::{describe_model, MethodArgs};
use crate::data::{self, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::images::plot::{self, LinePlot, Series};
use crate::images::{write_report, Cell, Colormap, Report, RgbImage, Section, Table};
use crate::layers::mix;
use crate::model::{self, Model, Sequential};
use crate::saliency::{Method, Options};
use crate::train::{fit, FitOptions, KerasProgress};
use crate::trust::{
    self, pointing, read_mask, sanity_check, Faithfulness, FaithfulnessOptions, Pointing, Sanity,
    SanityOptions, Spread, StageKind,
};

/// Where the inputs come from, shared by `sanity` and `faithfulness`.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// mnist, cifar10 or folder.
    #[arg(long)]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Which split the inputs come from.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Indices into the split, comma-separated [default: --count images spread evenly over the split].
    #[arg(long, value_delimiter = ',')]
    pub indices: Vec<usize>,
    /// `all`, or a comma-separated list of methods.
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// The folder for the page, its figures and CSV files (created if needed).
    #[arg(long)]
    pub out: PathBuf,
}

impl DataArgs {
    /// The model, the methods, and the inputs with the class to explain for
    /// each (the true class).
    fn load(&self, count: usize) -> Result<(Model, Vec<Method>, Inputs, Vec<usize>)> {
        let methods = parse_methods(&self.methods)?;
        let model = model::load_model(&self.model)?;
        fsutil::check_output_dir(&self.out)?;
        let inputs = if self.indices.is_empty() {
            Inputs::spread_over(&model, self.dataset, &self.data, self.split, count)?
        } else {
            Inputs::from_dataset(&model, self.dataset, &self.data, self.split, &self.indices)?
        };
        let probs = inputs::probabilities(&model, &inputs.images, 250)?;
        let targets = inputs::targets(&inputs.items, &inputs::top_classes(&probs), None);
        Ok((model, methods, inputs, targets))
    }
}

// ---------------------------------------------------------------------------
// salient sanity

/// `salient sanity`.
#[derive(Debug, Clone, Args)]
pub struct SanityArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Inputs to check when no --indices are given, spread evenly over the split.
    #[arg(long, default_value_t = 16, value_parser = super::at_least_one)]
    pub count: usize,
    /// A checkpoint of the same network trained on permuted labels [default: train one].
    #[arg(long)]
    pub labels_model: Option<PathBuf>,
    /// Epochs of training on permuted labels when no --labels-model is given; 0 skips the check.
    #[arg(long, default_value_t = 25)]
    pub label_epochs: usize,
    /// Training images for the permuted-label model (the first N of the train split).
    #[arg(long, default_value_t = 10_000, value_parser = super::at_least_one)]
    pub label_limit: usize,
    /// Skip the independent (one layer at a time) stages.
    #[arg(long)]
    pub no_independent: bool,
    /// Seeds the re-initialised weights and the permutation of the labels.
    #[arg(long, default_value_t = 0)]
    pub sanity_seed: u64,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// Runs the sanity checks and writes `sanity.csv`, `sanity-grid.png` and
/// `index.html`; returns what it found.
pub fn sanity(args: &SanityArgs) -> Result<Sanity> {
    let (model, methods, inputs, targets) = args.data.load(args.count)?;
    args.options.check(&model, &methods)?;
    let options = args.options.options();
    println!(
        "Sanity checks of {} method(s) on {} inputs: {}",
        methods.len(),
        inputs.len(),
        describe_model(&model, &args.data.model)
    );
    let labels_model = match (&args.labels_model, &model) {
        (Some(path), _) => Some(model::load_model(path)?),
        (None, Model::Sequential(stack)) if args.label_epochs > 0 => {
            Some(Model::Sequential(train_on_permuted_labels(args, stack)?.0))
        }
        (None, Model::Graph(_)) if args.label_epochs > 0 => {
            println!(
                "No permuted-label stage: salient trains only its own stacks; give --labels-model \
                 for a graph model"
            );
            None
        }
        _ => None,
    };
    let settings = SanityOptions {
        seed: args.sanity_seed,
        independent: !args.no_independent,
        ..SanityOptions::default()
    };
    let bar = progress_bar(0, "stages");
    let found = sanity_check(
        &model,
        &inputs.images,
        &targets,
        &methods,
        &options,
        &settings,
        labels_model.as_ref(),
        &mut |stage| {
            bar.inc_length(1);
            bar.inc(1);
            bar.set_message(stage.to_string());
        },
    )?;
    bar.finish_and_clear();

    let dir = &args.data.out;
    write_sanity_csv(&dir.join("sanity.csv"), &found, &inputs)?;
    sanity_grid(&found, 0)?.write_png(&dir.join("sanity-grid.png"))?;
    print_sanity(&found, &methods);
    let report = Report {
        title: "Sanity checks: do the maps change when the model is destroyed?".into(),
        details: vec![
            ("Model".into(), describe_model(&model, &args.data.model)),
            ("Inputs".into(), describe_inputs(&args.data, &inputs)),
        ],
        notes: vec![SANITY_INTRO.into()],
        sections: sanity_sections(&found, &methods, Path::new("sanity-grid.png"), &inputs),
        ..Report::default()
    };
    let page = write_report(dir, &report)?;
    println!("Wrote {}, sanity.csv and sanity-grid.png", page.display());
    Ok(found)
}

const SANITY_INTRO: &str = "Adebayo et al. (2018): a map that explains the model must change \
when the model's weights are re-initialised (cascading from the top layer down, or one layer \
at a time) or when the model is trained on permuted labels. High similarity after \
randomisation is the warning sign.";

/// Trains the tutorial's network on the first `label_limit` training images
/// with their labels permuted; returns it and its final training accuracy.
fn train_on_permuted_labels(args: &SanityArgs, model: &Sequential) -> Result<(Sequential, f32)> {
    let d = &args.data;
    let train = data::load(d.dataset, &d.data, Split::Train)?;
    let mut train = super::train::limit(train, args.label_limit, args.sanity_seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(args.sanity_seed, 0x1abe1));
    train.labels.shuffle(&mut rng);
    println!(
        "Training the same network on {} images with permuted labels, {} epochs",
        train.len(),
        args.label_epochs
    );
    let mut random =
        Sequential::tutorial(model.input_shape(), model.num_classes(), args.sanity_seed)?;
    let opts = FitOptions {
        epochs: args.label_epochs,
        batch_size: 250,
        validation_split: 0.0,
        seed: args.sanity_seed,
        learning_rate: 1e-3,
    };
    let history = fit(&mut random, &train, &opts, &mut KerasProgress::new())?;
    let accuracy = history.last().map_or(0.0, |h| h.accuracy);
    Ok((random, accuracy))
}

fn write_sanity_csv(path: &Path, found: &Sanity, inputs: &Inputs) -> Result<()> {
    let mut csv =
        String::from("stage,kind,layer,method,input,spearman_abs,spearman_signed,ssim,top_k\n");
    for r in &found.results {
        for (s, item) in r.similarity.iter().zip(&inputs.items) {
            let _ = writeln!(
                csv,
                "{},{:?},{},{},{},{:.6},{:.6},{:.6},{:.6}",
                r.stage.label(),
                r.stage.kind,
                r.stage.layer,
                r.method,
                item.index,
                s.spearman_abs,
                s.spearman_signed,
                s.ssim,
                s.top_k
            );
        }
    }
    fsutil::write_bytes_atomic(path, csv.as_bytes())
}

fn print_sanity(found: &Sanity, methods: &[Method]) {
    println!("\nMean rank correlation of |map| with the trained model's (1 = unchanged):");
    print!("{:<28}", "stage");
    for m in methods {
        print!(" {:>8}", short(*m));
    }
    println!();
    for (s, stage) in found.stages.iter().enumerate() {
        print!("{:<28}", stage.label());
        for &m in methods {
            let v = found.get(s, m).map_or(f64::NAN, |r| {
                Spread::of(r.similarity.iter().map(|x| x.spearman_abs)).mean
            });
            print!(" {v:>8.3}");
        }
        println!();
    }
}

/// A method's name cut to 8 characters, for terminal tables.
fn short(m: Method) -> String {
    m.name().chars().take(8).collect()
}

/// One table per similarity measure (rows: stages, columns: methods), the
/// grid figure, and the definitions.
pub fn sanity_sections(
    found: &Sanity,
    methods: &[Method],
    grid: &Path,
    inputs: &Inputs,
) -> Vec<Section> {
    type Measure = fn(&trust::Similarity) -> f64;
    let measures: [(&str, Measure); 4] = [
        ("Spearman rank correlation of |map|", |s| s.spearman_abs),
        ("Spearman rank correlation of the signed map", |s| {
            s.spearman_signed
        }),
        ("SSIM of the normalised maps", |s| s.ssim),
        ("Top-10% intersection", |s| s.top_k),
    ];
    let mut header = vec!["stage".to_string()];
    header.extend(methods.iter().map(|m| m.title().to_string()));
    let tables = measures
        .iter()
        .map(|(caption, f)| Table {
            caption: format!("{caption}: mean ± std over {} inputs", inputs.len()),
            header: header.clone(),
            rows: found
                .stages
                .iter()
                .enumerate()
                .map(|(s, stage)| {
                    let mut row = vec![Cell::Text(stage.label())];
                    row.extend(methods.iter().map(|&m| {
                        let spread = found
                            .get(s, m)
                            .map(|r| Spread::of(r.similarity.iter().map(f)))
                            .unwrap_or(Spread::of([]));
                        // Still above 0.5 once the model is destroyed: the map barely changed.
                        Cell::Marked(
                            format!("{spread:.2}"),
                            spread.mean.is_nan() || spread.mean <= 0.5,
                        )
                    }));
                    row
                })
                .collect(),
        })
        .collect();
    let last_cascading = found
        .stages
        .iter()
        .rposition(|s| s.kind == StageKind::Cascading);
    let mut verdicts = Vec::new();
    if let Some(s) = last_cascading {
        for &m in methods {
            if let Some(r) = found.get(s, m) {
                let rho = Spread::of(r.similarity.iter().map(|x| x.spearman_abs)).mean;
                verdicts.push(format!("{} {rho:.2}", m.title()));
            }
        }
    }
    vec![Section {
        heading: "Similarity with the trained model's maps".into(),
        paragraphs: vec![
            "Green: similarity at most 0.5; red: above 0.5, the map barely changed although the model did."
                .into(),
            format!(
                "After every layer is randomised, the rank correlation of |map| is: {}.",
                verdicts.join(", ")
            ),
            PAPER_FINDINGS.into(),
        ],
        tables,
        figures: vec![(
            grid.to_path_buf(),
            format!(
                "Input {}: the trained model's maps (top row), then one row per randomised model; one column per method.",
                inputs.items.first().map_or(0, |i| i.index)
            ),
        )],
        definitions: vec![
            ("Spearman |map|".into(), "rank correlation of max over channels of |attribution|, the map as drawn before normalisation".into()),
            ("Spearman signed".into(), "rank correlation of the sum over channels of the attribution (CAMs and occlusion: their one map)".into()),
            ("SSIM".into(), "mean structural similarity of the two maps min-max normalised to [0, 1], 7x7 uniform window (scikit-image's defaults)".into()),
            ("top-10% intersection".into(), "the share of the tenth of pixels ranked highest in one map that are also in the other's top tenth".into()),
        ],
    }]
}

const PAPER_FINDINGS: &str =
    "The paper's findings (Inception v3 on ImageNet, and MNIST/Fashion-MNIST): \
the gradient, SmoothGrad, integrated gradients and Grad-CAM change markedly under cascading \
randomisation; guided backprop and guided Grad-CAM stay visually and by rank correlation close \
to the trained model's maps, as does gradient ⊙ input, whose maps keep the input's edges.";

/// The grid figure for input `i`: a row per model (trained first), a column
/// per method, with labels.
pub fn sanity_grid(found: &Sanity, i: usize) -> Result<RgbImage> {
    let mut rows: Vec<(String, Vec<&crate::Tensor>)> = vec![(
        "trained".into(),
        found.original.iter().map(|(_, t)| t).collect(),
    )];
    for (s, stage) in found.stages.iter().enumerate() {
        let maps = found
            .original
            .iter()
            .filter_map(|(m, _)| found.get(s, *m).map(|r| &r.maps))
            .collect();
        rows.push((stage.label(), maps));
    }
    let titles: Vec<String> = found
        .original
        .iter()
        .map(|(m, _)| m.name().to_string())
        .collect();
    labelled_grid(&rows, &titles, i)
}

/// Heat maps in a grid with row labels on the left and column titles on top.
fn labelled_grid(
    rows: &[(String, Vec<&crate::Tensor>)],
    titles: &[String],
    i: usize,
) -> Result<RgbImage> {
    let Some(first) = rows.first().and_then(|r| r.1.first()) else {
        return Ok(RgbImage::filled(1, 1, [255, 255, 255]));
    };
    let (h, w) = (first.shape()[1], first.shape()[2]);
    let scale = crate::images::auto_scale(h, w).clamp(1, 4);
    let (cell_w, cell_h) = (w * scale, h * scale);
    let gap = 4;
    let label_w = rows
        .iter()
        .map(|(l, _)| plot::text_width(l, 1))
        .max()
        .unwrap_or(0)
        + 8;
    let title_h = 2 * plot::GLYPH_HEIGHT + 6;
    let column_w = cell_w.max(8 * plot::GLYPH_WIDTH);
    let width = label_w + titles.len() * (column_w + gap);
    let height = title_h + rows.len() * (cell_h + gap);
    let mut image = RgbImage::filled(width, height, [255, 255, 255]);
    for (c, t) in titles.iter().enumerate() {
        let x = label_w + c * (column_w + gap);
        // Long names go on two lines.
        let (a, b) = t.split_at(t.len().min(column_w / plot::GLYPH_WIDTH));
        plot::draw_text(&mut image, x, 2, a, [0, 0, 0], 1);
        plot::draw_text(&mut image, x, 2 + plot::GLYPH_HEIGHT, b, [0, 0, 0], 1);
    }
    for (r, (label, maps)) in rows.iter().enumerate() {
        let y = title_h + r * (cell_h + gap);
        plot::draw_text(&mut image, 2, y + cell_h / 2, label, [0, 0, 0], 1);
        for (c, map) in maps.iter().enumerate() {
            let heat = RgbImage::heat_map(map.index_axis(Axis(0), i), Colormap::Viridis)?
                .upscale(scale)?;
            plot::paste(&mut image, &heat, label_w + c * (column_w + gap), y);
        }
    }
    Ok(image)
}

// ---------------------------------------------------------------------------
// salient faithfulness

/// `salient faithfulness`.
#[derive(Debug, Clone, Args)]
pub struct FaithfulnessArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Inputs to score when no --indices are given, spread evenly over the split.
    #[arg(long, default_value_t = 100, value_parser = super::at_least_one)]
    pub count: usize,
    /// A folder of masks, one PNG per input named by its index (12.png): white marks the object.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Deletion and insertion: the pixels change in this many equal shares.
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    pub curve_steps: usize,
    /// Infidelity: random perturbations per input.
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    pub infidelity_samples: usize,
    /// Max-sensitivity: perturbed copies per input (each runs the method again); 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub sensitivity_samples: usize,
    /// Seeds the perturbations and the order of tied pixels.
    #[arg(long, default_value_t = 0)]
    pub score_seed: u64,
    #[command(flatten)]
    pub options: MethodArgs,
}

impl FaithfulnessArgs {
    fn settings(&self) -> FaithfulnessOptions {
        let mut o = FaithfulnessOptions::default();
        let bs = self.options.batch_size;
        o.curves.steps = self.curve_steps;
        o.curves.seed = self.score_seed;
        o.curves.batch_size = bs;
        o.road.seed = self.score_seed;
        o.road.batch_size = bs;
        o.robustness.infidelity_samples = self.infidelity_samples;
        o.robustness.sensitivity_samples = self.sensitivity_samples;
        o.robustness.seed = self.score_seed;
        o.robustness.batch_size = bs;
        o
    }
}

/// One method's scores, with its pointing game if there were masks.
#[derive(Clone, Debug)]
pub struct MethodScores {
    /// The scores.
    pub faithfulness: Faithfulness,
    /// Per input, against its mask.
    pub pointing: Option<Vec<Pointing>>,
}

/// Scores every method on the inputs, with a progress bar; the random
/// baseline comes first, with no method.
pub fn score_methods(
    inputs: &crate::Tensor,
    targets: &[usize],
    methods: &[Method],
    options: &Options,
    settings: &FaithfulnessOptions,
    masks: Option<&Array3<bool>>,
    explainer: &mut crate::saliency::Explainer<'_>,
) -> Result<(Faithfulness, Vec<MethodScores>)> {
    let bar = progress_bar(methods.len() as u64 + 1, "methods");
    bar.set_message("random baseline");
    let random = trust::random_baseline(explainer, inputs, targets, settings)?;
    bar.inc(1);
    let mut scores = Vec::with_capacity(methods.len());
    for &method in methods {
        bar.set_message(method.name());
        let (faithfulness, maps) =
            trust::faithfulness(explainer, inputs, targets, method, options, settings)?;
        let pointing = masks
            .map(|masks| {
                maps.outer_iter()
                    .zip(masks.outer_iter())
                    .map(|(map, mask)| {
                        pointing(
                            map.into_dimensionality()
                                .map_err(|_| Error::invalid("mask", "map"))?,
                            mask,
                        )
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        scores.push(MethodScores {
            faithfulness,
            pointing,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((random, scores))
}

/// Reads `DIR/<stem>.png` for each input.
pub fn read_masks(dir: &Path, inputs: &Inputs) -> Result<Array3<bool>> {
    let (h, w) = (inputs.images.shape()[2], inputs.images.shape()[3]);
    let mut masks = Array3::from_elem((inputs.len(), h, w), false);
    for (item, mut out) in inputs.items.iter().zip(masks.outer_iter_mut()) {
        let path = dir.join(format!("{}.png", item.stem));
        out.assign(&read_mask(&path, h, w)?);
    }
    Ok(masks)
}

/// Runs every score and writes `faithfulness.csv`, `summary.csv`,
/// `curves.png` and `index.html`.
pub fn faithfulness(args: &FaithfulnessArgs) -> Result<Vec<MethodScores>> {
    let (model, methods, inputs, targets) = args.data.load(args.count)?;
    args.options.check(&model, &methods)?;
    let options = args.options.options();
    let masks = args
        .masks
        .as_deref()
        .map(|d| read_masks(d, &inputs))
        .transpose()?;
    println!(
        "Faithfulness of {} method(s) on {} inputs: {}",
        methods.len(),
        inputs.len(),
        describe_model(&model, &args.data.model)
    );
    let settings = args.settings();
    let mut explainer = args.options.explainer(&model);
    let (random, scores) = score_methods(
        &inputs.images,
        &targets,
        &methods,
        &options,
        &settings,
        masks.as_ref(),
        &mut explainer,
    )?;
    let dir = &args.data.out;
    write_scores_csv(&dir.join("faithfulness.csv"), &scores, &inputs)?;
    write_summary_csv(&dir.join("summary.csv"), &random, &scores)?;
    curve_plots(&random, &scores)?.write_png(&dir.join("curves.png"))?;
    println!("{}", summary_text(&random, &scores));
    let report = Report {
        title: "Faithfulness: do the maps pick the pixels the model uses?".into(),
        details: vec![
            ("Model".into(), describe_model(&model, &args.data.model)),
            ("Inputs".into(), describe_inputs(&args.data, &inputs)),
        ],
        sections: faithfulness_sections(&random, &scores, Some(Path::new("curves.png")), &settings),
        ..Report::default()
    };
    let page = write_report(dir, &report)?;
    println!(
        "Wrote {}, faithfulness.csv, summary.csv and curves.png",
        page.display()
    );
    Ok(scores)
}

fn describe_inputs(args: &DataArgs, inputs: &Inputs) -> String {
    let first = inputs.items.first().map_or(0, |i| i.index);
    let last = inputs.items.last().map_or(0, |i| i.index);
    format!(
        "{} {} split of {}: {} inputs (indices {first} to {last}); the class explained is the true one",
        args.dataset,
        args.split,
        args.data.display(),
        inputs.len()
    )
}

fn method_name(f: &Faithfulness) -> String {
    f.method
        .map_or("random order".into(), |m| m.name().to_string())
}

fn write_scores_csv(path: &Path, scores: &[MethodScores], inputs: &Inputs) -> Result<()> {
    let mut csv = String::from(
        "method,input,deletion_auc,insertion_auc,road_morf,road_lerf,infidelity,infidelity_raw,max_sensitivity,energy_in_mask,pointing_hit\n",
    );
    for s in scores {
        let f = &s.faithfulness;
        let (del, ins) = (f.curves.deletion_auc(), f.curves.insertion_auc());
        let (morf, lerf) = (f.road.morf_mean(), f.road.lerf_mean());
        for (i, item) in inputs.items.iter().enumerate() {
            let sens = f
                .sensitivity
                .get(i)
                .map_or(String::new(), |v| format!("{v:.6}"));
            let (energy, hit) = s
                .pointing
                .as_ref()
                .map_or((String::new(), String::new()), |p| {
                    (
                        format!("{:.6}", p[i].energy),
                        u8::from(p[i].hit).to_string(),
                    )
                });
            let _ = writeln!(
                csv,
                "{},{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.6e},{sens},{energy},{hit}",
                method_name(f),
                item.index,
                del[i],
                ins[i],
                morf[i],
                lerf[i],
                f.infidelity[i].normalized,
                f.infidelity[i].raw,
            );
        }
    }
    fsutil::write_bytes_atomic(path, csv.as_bytes())
}

fn write_summary_csv(path: &Path, random: &Faithfulness, scores: &[MethodScores]) -> Result<()> {
    let mut csv = String::from("method,score,mean,std,n\n");
    for f in std::iter::once(random).chain(scores.iter().map(|s| &s.faithfulness)) {
        for ((name, _), spread) in Faithfulness::SCORES.iter().zip(f.summary()) {
            if spread.n > 0 {
                let _ = writeln!(
                    csv,
                    "{},{name},{:.6},{:.6},{}",
                    method_name(f),
                    spread.mean,
                    spread.std,
                    spread.n
                );
            }
        }
    }
    fsutil::write_bytes_atomic(path, csv.as_bytes())
}

/// The summary as a terminal table.
pub fn summary_text(random: &Faithfulness, scores: &[MethodScores]) -> String {
    let mut t = String::new();
    let _ = write!(t, "{:<22}", "method");
    for (name, higher) in Faithfulness::SCORES {
        let _ = write!(
            t,
            " {:>17}",
            format!("{name} {}", if higher { "↑" } else { "↓" })
        );
    }
    t.push('\n');
    for f in std::iter::once(random).chain(scores.iter().map(|s| &s.faithfulness)) {
        let _ = write!(t, "{:<22}", method_name(f));
        for s in f.summary() {
            let cell = if s.n == 0 {
                "-".to_string()
            } else if s.mean.abs() < 1e-2 && s.mean != 0.0 {
                format!("{:.2e}", s.mean)
            } else {
                format!("{:.3} ± {:.3}", s.mean, s.std)
            };
            let _ = write!(t, " {cell:>17}");
        }
        t.push('\n');
    }
    t
}

/// The page's sections: the summary table (coloured against the random
/// baseline), the curves, and the definitions.
pub fn faithfulness_sections(
    random: &Faithfulness,
    scores: &[MethodScores],
    curves: Option<&Path>,
    settings: &FaithfulnessOptions,
) -> Vec<Section> {
    let base = random.summary();
    let mut header = vec!["method".to_string()];
    for (name, higher) in Faithfulness::SCORES {
        header.push(format!("{name} {}", if higher { "↑" } else { "↓" }));
    }
    let with_masks = scores.iter().any(|s| s.pointing.is_some());
    if with_masks {
        header.push("energy in mask ↑".into());
        header.push("pointing hits ↑".into());
    }
    let mut rows = Vec::new();
    let mut random_row = vec![Cell::Text("random order".into())];
    random_row.extend(base.iter().map(|s| Cell::Text(format_spread(s))));
    if with_masks {
        random_row.extend([Cell::Text("-".into()), Cell::Text("-".into())]);
    }
    rows.push(random_row);
    for s in scores {
        let f = &s.faithfulness;
        let mut row = vec![Cell::Text(f.method.map_or("?", |m| m.title()).to_string())];
        for (((_, higher), spread), b) in Faithfulness::SCORES.iter().zip(f.summary()).zip(&base) {
            let text = format_spread(&spread);
            row.push(if b.n > 0 && spread.n > 0 {
                // Better than the random order on the mean.
                Cell::Marked(text, (spread.mean > b.mean) == *higher)
            } else {
                Cell::Text(text)
            });
        }
        if let Some(p) = &s.pointing {
            row.push(Cell::Text(format_spread(&Spread::of(
                p.iter().map(|p| p.energy),
            ))));
            let hits = p.iter().filter(|p| p.hit).count();
            row.push(Cell::Text(format!("{hits} / {}", p.len())));
        }
        rows.push(row);
    }
    let n = random.curves.deletion.len();
    let mut section = Section {
        heading: "Faithfulness".into(),
        paragraphs: vec![format!(
            "Mean ± standard deviation over {n} inputs. Green: better than the random order on the mean \
             (for deletion, insertion and ROAD); red: not. Infidelity and max-sensitivity have no baseline: lower is better."
        )],
        tables: vec![Table {
            caption: "Scores per method".into(),
            header,
            rows,
        }],
        figures: Vec::new(),
        definitions: faithfulness_definitions(settings),
    };
    if let Some(path) = curves {
        section.figures.push((
            path.to_path_buf(),
            "Mean class probability as pixels are removed (deletion, ROAD MoRF) or put back (insertion); the dashed black line is the random order.".into(),
        ));
    }
    vec![section]
}

fn format_spread(s: &Spread) -> String {
    if s.n == 0 {
        "-".into()
    } else if s.mean != 0.0 && s.mean.abs() < 1e-2 {
        format!("{:.2e} ± {:.1e}", s.mean, s.std)
    } else {
        format!("{s:.3}")
    }
}

/// Every score, defined.
pub fn faithfulness_definitions(settings: &FaithfulnessOptions) -> Vec<(String, String)> {
    let r = &settings.robustness;
    vec![
        ("deletion AUC".into(), format!(
            "pixels ranked by the map (max over channels of |attribution|; CAMs and occlusion: their map) are set to {} in {} equal shares, most relevant first; the area under the class probability (softmax of the class scores) against the share removed. Lower is better. Ties go in a random order, so a constant map scores as the random order (Petsiuk et al. 2018).",
            settings.curves.fill, settings.curves.steps)),
        ("insertion AUC".into(), "the same pixels put back, most relevant first, into a copy blurred with a Gaussian of standard deviation min(H, W)/20 pixels; the area under the class probability. Higher is better.".into()),
        ("ROAD MoRF / LeRF".into(), format!(
            "the mean class probability with 10%, 20%, ..., 90% of the pixels removed, most relevant first (MoRF, lower is better) or least relevant first (LeRF, higher is better); removed pixels are filled by noisy linear imputation from their neighbours (weights 1/6 direct, 1/12 diagonal, noise std {}), so that the shape of the hole does not tell the model what was removed (Rong et al. 2022).",
            settings.road.noise_std)),
        ("infidelity".into(), format!(
            "E[(Iᵀφ − (f(x) − f(x − I)))²] over {} perturbations I ~ N(0, {}²) per value, f the class score and φ the raw attributions scaled by the best factor β (Captum's normalize=True); 0 means the map predicts every score change (Yeh et al. 2019).",
            r.infidelity_samples, r.infidelity_std)),
        ("max-sensitivity".into(), format!(
            "max over {} perturbations δ ~ U(−{r}, {r}) per value of ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖ (Captum's sensitivity_max); lower is steadier.",
            r.sensitivity_samples, r = r.sensitivity_radius)),
        ("energy in mask / pointing hits".into(), "with --masks: the share of the map's positive part inside the object's mask (energy-based pointing game), and how many maps have their maximum inside it (pointing game).".into()),
    ]
}

/// Mean deletion, insertion, ROAD MoRF and ROAD LeRF curves, one line per
/// method and the random order dashed, tiled two by two.
pub fn curve_plots(random: &Faithfulness, scores: &[MethodScores]) -> Result<RgbImage> {
    type Pick = fn(&Faithfulness) -> (&[f64], &[Vec<f64>]);
    let kinds: [(&str, &str, Pick); 4] = [
        (
            "Deletion (lower is better)",
            "share of pixels removed",
            |f| (&f.curves.fractions, &f.curves.deletion),
        ),
        (
            "Insertion (higher is better)",
            "share of pixels put back",
            |f| (&f.curves.fractions, &f.curves.insertion),
        ),
        (
            "ROAD, most relevant first (lower is better)",
            "share of pixels imputed",
            |f| (&f.road.fractions, &f.road.morf),
        ),
        (
            "ROAD, least relevant first (higher is better)",
            "share of pixels imputed",
            |f| (&f.road.fractions, &f.road.lerf),
        ),
    ];
    let plots: Vec<RgbImage> = kinds
        .iter()
        .map(|(title, x_label, pick)| {
            let mut series: Vec<Series> = scores
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let (x, curves) = pick(&s.faithfulness);
                    Series {
                        name: method_name(&s.faithfulness),
                        rgb: plot::palette(k),
                        points: mean_curve(x, curves),
                        band: None,
                        dashed: k >= plot::PALETTE.len(),
                    }
                })
                .collect();
            let (x, curves) = pick(random);
            series.push(Series {
                name: "random order".into(),
                rgb: [0, 0, 0],
                points: mean_curve(x, curves),
                band: None,
                dashed: true,
            });
            LinePlot {
                title: title.to_string(),
                x_label: x_label.to_string(),
                y_label: "class probability".into(),
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                series,
            }
            .render(640, 420)
        })
        .collect();
    Ok(plot::tile(&plots, 2, 12))
}

fn mean_curve(x: &[f64], curves: &[Vec<f64>]) -> Vec<(f64, f64)> {
    x.iter()
        .enumerate()
        .map(|(j, &x)| (x, Spread::of(curves.iter().map(|c| c[j])).mean))
        .collect()
}

/// A progress bar on standard error (hidden when it is not a terminal).
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{bar:30}} {{pos}}/{{len}} {unit} {{elapsed}} {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar
}
