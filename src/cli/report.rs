//! `salient report`: every saliency method side by side, one row per input, in
//! `DIR/index.html` beside its PNGs.
//!
//! ```text
//! salient report --model mnist.safetensors --dataset mnist --data DIR --out out/report
//! ```
//!
//! The folder holds `<index>-input.png` (the input as the model saw it) and
//! `<index>-<method>.png` (the overlay or heat map of each method), all at the
//! input's own size: the page enlarges them with every pixel kept square.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use ndarray::Axis;

use super::class_label;
use super::inputs::{self, Inputs, TUTORIAL_INDICES};
use super::saliency::{describe_model, split_notes, MethodArgs};
use super::trust;
use crate::data::{DatasetKind, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::images::{
    write_heatmap_png, write_image_png, write_overlay_png, write_report, Colormap, FigureStyle,
    Normalize, Prediction, Report, ReportCell, ReportMethod, ReportRow, Scale, Section,
};
use crate::model::{self, Classifier};
use crate::saliency::{self, Attribution, Method, Options};
use crate::trust::{sanity_check, FaithfulnessOptions, SanityOptions};

/// The longest note about one input shown under its picture, in characters.
pub const MAX_CAPTION_CHARS: usize = 40;

/// What each cell of the report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Panel {
    /// The heat map alone: the clearest view of how the methods differ.
    #[default]
    Heatmap,
    /// The heat map laid over the input (alpha 0.5): where on the input the map is.
    Overlay,
}

/// `salient report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// mnist, cifar10 or folder.
    #[arg(long)]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Which split the indices refer to.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Indices into the split, comma-separated [default: the tutorial's 0,12,38,83,112,74,190].
    #[arg(long, value_delimiter = ',')]
    pub indices: Vec<usize>,
    /// `all`, or a comma-separated list of methods (see `salient saliency --help`).
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// The class to explain for every input, by name or index [default: the true class].
    #[arg(long)]
    pub class: Option<String>,
    /// Colour map of the heat maps: viridis, jet or gray.
    #[arg(long, default_value = "viridis")]
    pub colormap: Colormap,
    /// Min-max normalisation per-input, or over the whole batch (keras-vis).
    #[arg(long, default_value = "per-input")]
    pub normalize: Normalize,
    /// What each cell shows: heatmap (the map alone) or overlay (the map over the input, alpha 0.5).
    #[arg(long, value_enum, default_value_t = Panel::Heatmap, hide_possible_values = true)]
    pub panel: Panel,
    /// The folder for index.html and its PNGs (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Leave out the trust section (sanity and faithfulness scores of each method).
    #[arg(long)]
    pub no_trust: bool,
    /// A folder of object masks, one PNG per input named by its index (12.png): the trust
    /// section then says how much of each map falls on the object.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    #[command(flatten)]
    pub options: MethodArgs,
}

impl ReportArgs {
    /// A report of every method on the tutorial's test images, with the defaults.
    pub fn new(model: PathBuf, dataset: DatasetKind, data: PathBuf, out: PathBuf) -> Self {
        ReportArgs {
            model,
            dataset,
            data,
            split: Split::Test,
            indices: Vec::new(),
            methods: "all".into(),
            class: None,
            colormap: Colormap::default(),
            normalize: Normalize::default(),
            panel: Panel::default(),
            out,
            no_trust: false,
            masks: None,
            options: MethodArgs::default(),
        }
    }
}

/// Reads `--methods`: `all`, or method names separated by commas.
pub fn parse_methods(text: &str) -> Result<Vec<Method>> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(Method::ALL.to_vec());
    }
    let mut methods = Vec::new();
    for name in text.split(',').filter(|s| !s.trim().is_empty()) {
        let method: Method = name.parse()?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    if methods.is_empty() {
        return Err(Error::invalid(
            "methods",
            "no method given; use `all` or names such as vanilla,guided,grad-cam",
        ));
    }
    Ok(methods)
}

/// Runs every requested method on the inputs, writes the PNGs and the page, and
/// returns the path of `index.html`.
pub fn run(args: &ReportArgs) -> Result<PathBuf> {
    let methods = parse_methods(&args.methods)?;
    let loaded = model::load_model(&args.model)?;
    let model = loaded.classifier();
    args.options.check(model, &methods)?;
    let indices = if args.indices.is_empty() {
        &TUTORIAL_INDICES[..]
    } else {
        &args.indices[..]
    };
    let inputs = Inputs::from_dataset(model, args.dataset, &args.data, args.split, indices)?;
    let class = args
        .class
        .as_deref()
        .map(|c| inputs::parse_class(model, c))
        .transpose()?;
    let options = args.options.options();
    let probs = inputs::probabilities(model, &inputs.images, options.batch_size)?;
    let predicted = inputs::top_classes(&probs);
    let targets = inputs::targets(&inputs.items, &predicted, class);

    let dir = &args.out;
    fsutil::check_output_dir(dir)?;
    let names = model.class_names();
    let mut rows = Vec::with_capacity(inputs.len());
    for (i, item) in inputs.items.iter().enumerate() {
        let image = PathBuf::from(format!("{}-input.png", item.stem));
        let pixels = inputs.images.index_axis(Axis(0), i);
        write_image_png(&dir.join(&image), pixels, Scale::Factor(1))?;
        let (class, confidence) = predicted[i];
        rows.push(ReportRow {
            index: item.index,
            image,
            true_class: item.true_class.map(|t| class_label(names, t)),
            predicted: Prediction {
                class: class_label(names, class),
                confidence,
            },
            cells: Vec::with_capacity(methods.len()),
        });
    }

    println!(
        "Report on {} inputs: {}",
        inputs.len(),
        describe_model(model, &args.model)
    );
    let style = FigureStyle {
        colormap: args.colormap,
        scale: Scale::Factor(1),
        ..FigureStyle::default()
    };
    let mut columns = Vec::with_capacity(methods.len());
    let total = Instant::now();
    // One explainer for every method: the passes reuse each other's buffers.
    let mut explainer = args.options.explainer(model);
    for &method in &methods {
        let start = Instant::now();
        let attribution = explainer.attribute(&inputs.images, Some(&targets), method, &options)?;
        let maps = saliency::maps(method, &attribution.raw, args.normalize)?;
        let (note, captions) = describe_attribution(method, &attribution, &options, &inputs);
        for (i, (item, row)) in inputs.items.iter().zip(&mut rows).enumerate() {
            let image = PathBuf::from(format!("{}-{method}.png", item.stem));
            let path = dir.join(&image);
            let map = maps.index_axis(Axis(0), i);
            match args.panel {
                Panel::Overlay => {
                    write_overlay_png(&path, inputs.images.index_axis(Axis(0), i), map, &style)?
                }
                Panel::Heatmap => write_heatmap_png(&path, map, &style)?,
            }
            row.cells.push(ReportCell {
                image,
                caption: captions[i].clone(),
            });
        }
        println!("  {method:<22} {:>6.2} s", start.elapsed().as_secs_f64());
        columns.push(ReportMethod {
            name: method.title().to_string(),
            note: Some(format!("{method}: {note}")),
        });
    }

    let sections = if args.no_trust {
        Vec::new()
    } else {
        trust_sections(
            args,
            &loaded,
            &inputs,
            &targets,
            &methods,
            &options,
            &mut explainer,
        )?
    };
    let report = Report {
        title: format!(
            "Where the model looks: {} {} images",
            dataset_title(args.dataset),
            args.split
        ),
        details: details(args, model, &inputs, class, &methods),
        notes: vec![
            "Each picture is enlarged with every input pixel drawn as a square. \
             A prediction that differs from the true class is marked in red."
                .into(),
        ],
        colormap: Some(args.colormap),
        methods: columns,
        rows,
        sections,
    };
    let path = write_report(dir, &report)?;
    println!(
        "Wrote {} ({} method{} in {:.1} s)",
        path.display(),
        methods.len(),
        if methods.len() == 1 { "" } else { "s" },
        total.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The trust section: every method's faithfulness scores on the report's
/// inputs, and its cascading sanity check; writes `curves.png` and
/// `sanity-grid.png`.
fn trust_sections(
    args: &ReportArgs,
    model: &model::Model,
    inputs: &Inputs,
    targets: &[usize],
    methods: &[Method],
    options: &Options,
    explainer: &mut crate::saliency::Explainer<'_>,
) -> Result<Vec<Section>> {
    let start = Instant::now();
    let masks = args
        .masks
        .as_deref()
        .map(|d| trust::read_masks(d, inputs))
        .transpose()?;
    let mut settings = FaithfulnessOptions::default();
    settings.curves.batch_size = options.batch_size;
    settings.road.batch_size = options.batch_size;
    settings.robustness.batch_size = options.batch_size;
    let (random, scores) = trust::score_methods(
        &inputs.images,
        targets,
        methods,
        options,
        &settings,
        masks.as_ref(),
        explainer,
    )?;
    trust::curve_plots(&random, &scores)?.write_png(&args.out.join("curves.png"))?;
    let sanity = sanity_check(
        model,
        &inputs.images,
        targets,
        methods,
        options,
        &SanityOptions {
            independent: false,
            ..SanityOptions::default()
        },
        None,
        &mut |_| {},
    )?;
    trust::sanity_grid(&sanity, 0)?.write_png(&args.out.join("sanity-grid.png"))?;
    let mut sections =
        trust::faithfulness_sections(&random, &scores, Some(Path::new("curves.png")), &settings);
    for s in &mut sections {
        s.heading = "Trust: faithfulness of each method on these inputs".into();
    }
    let mut sanity_part =
        trust::sanity_sections(&sanity, methods, Path::new("sanity-grid.png"), inputs);
    for s in &mut sanity_part {
        s.heading = "Trust: sanity check, cascading randomisation of the weights".into();
        s.paragraphs.push(
            "salient sanity adds the independent (one layer at a time) and permuted-label checks."
                .into(),
        );
    }
    sections.extend(sanity_part);
    println!(
        "  {:<22} {:>6.2} s",
        "trust scores",
        start.elapsed().as_secs_f64()
    );
    Ok(sections)
}

/// The facts at the top of the page.
fn details(
    args: &ReportArgs,
    model: &dyn Classifier,
    inputs: &Inputs,
    class: Option<usize>,
    methods: &[Method],
) -> Vec<(String, String)> {
    let indices: Vec<String> = inputs.items.iter().map(|i| i.index.to_string()).collect();
    let target = match class {
        Some(k) => format!(
            "class {} for every input",
            class_label(model.class_names(), k)
        ),
        None => "the true class of each input".to_string(),
    };
    let mut post = args.normalize.describe().to_string();
    let spatial: Vec<&str> = methods
        .iter()
        .filter(|m| m.is_spatial() && **m != Method::Occlusion)
        .map(|m| m.name())
        .collect();
    if !spatial.is_empty() {
        let _ = write!(
            post,
            "; {}: one non-negative map already, only normalised",
            spatial.join(", ")
        );
    }
    if methods.contains(&Method::Occlusion) {
        post.push_str("; occlusion: the signed score drop, only normalised");
    }
    let panel = match args.panel {
        Panel::Overlay => format!(
            "the heat map ({}) laid over the input, alpha 0.5",
            args.colormap
        ),
        Panel::Heatmap => format!("the heat map ({})", args.colormap),
    };
    vec![
        ("Model".into(), describe_model(model, &args.model)),
        (
            "Data".into(),
            format!(
                "{}, {} split of {}: inputs {}",
                args.dataset,
                args.split,
                args.data.display(),
                indices.join(", ")
            ),
        ),
        ("Class explained".into(), target),
        (
            "Class scores".into(),
            "the softmax head is made linear for the backward pass; the model itself is unchanged"
                .into(),
        ),
        ("Post-processing".into(), post),
        ("Pictures".into(), panel),
    ]
}

/// A method's note for the page header, and a caption per input (or `None`).
///
/// Every note about one input goes to the header; cut before any parenthesis,
/// it also becomes the input's caption if it is short enough to sit under the
/// picture ([`MAX_CAPTION_CHARS`]), such as "the map is zero everywhere".
fn describe_attribution(
    method: Method,
    attribution: &Attribution,
    options: &Options,
    inputs: &Inputs,
) -> (String, Vec<Option<String>>) {
    let n = inputs.len();
    let (general, per_input) = split_notes(&attribution.notes, n);
    let prefix = format!("{method}: ");
    let mut parts: Vec<String> = match method {
        Method::Vanilla => vec!["gradient of the class score; ReLU backward 1[x > 0]·g".into()],
        Method::Rectified => vec!["deconvnet; ReLU backward 1[g > 0]·g".into()],
        Method::Guided => vec!["guided backprop; ReLU backward 1[x > 0]·1[g > 0]·g".into()],
        Method::GradientXInput => vec!["input ⊙ gradient".into()],
        _ => Vec::new(),
    };
    parts.extend(
        general
            .iter()
            .map(|g| g.strip_prefix(&prefix).unwrap_or(g).to_string()),
    );
    let captions = match &attribution.completeness {
        Some(report) => {
            let worst = report.iter().map(|c| c.rel_error).fold(0.0, f64::max);
            parts.insert(
                0,
                format!(
                    "{} to {} steps from a {} baseline (starting at {}, doubled until within {}); completeness error at most {:.2}%",
                    report.iter().map(|c| c.steps).min().unwrap_or(options.steps),
                    report.iter().map(|c| c.steps).max().unwrap_or(options.steps),
                    match options.baseline {
                        saliency::Baseline::Black => "black".to_string(),
                        saliency::Baseline::Constant(v) => format!("constant {v}"),
                        saliency::Baseline::Image(_) => "given".to_string(),
                    },
                    options.steps,
                    options
                        .tolerance
                        .map_or("no tolerance".to_string(), |t| format!("{}%", 100.0 * t)),
                    100.0 * worst
                ),
            );
            report
                .iter()
                .map(|c| {
                    Some(format!(
                        "error {:.2}%, {} steps",
                        100.0 * c.rel_error,
                        c.steps
                    ))
                })
                .collect()
        }
        None => {
            for (item, notes) in inputs.items.iter().zip(&per_input) {
                parts.extend(notes.iter().map(|note| format!("{}: {note}", item.name)));
            }
            per_input
                .iter()
                .map(|notes| {
                    let short: Vec<&str> = notes
                        .iter()
                        .map(|note| note.split(" (").next().unwrap_or(note))
                        .filter(|note| note.chars().count() <= MAX_CAPTION_CHARS)
                        .collect();
                    (!short.is_empty()).then(|| short.join("; "))
                })
                .collect()
        }
    };
    (parts.join("; "), captions)
}

/// `MNIST`, `CIFAR-10` or `folder`.
fn dataset_title(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Mnist => "MNIST",
        DatasetKind::Cifar10 => "CIFAR-10",
        DatasetKind::Folder => "folder",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_as_all_or_a_list() {
        assert_eq!(parse_methods("all").unwrap(), Method::ALL.to_vec());
        assert_eq!(
            parse_methods("guided, grad-cam++,guided").unwrap(),
            [Method::Guided, Method::GradCamPlusPlus]
        );
        let err = parse_methods("vanilla,saliency").unwrap_err().to_string();
        assert!(err.contains("\"saliency\""), "{err}");
        assert!(parse_methods(" , ").is_err());
    }
}
