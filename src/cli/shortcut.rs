//! `salient shortcut`: the tutorial's couch-and-lawn story, measured.
//!
//! ```text
//! salient shortcut --data ../shared/data/cifar10 --out out/shortcut
//! ```
//!
//! Takes two classes of a data set (CIFAR-10's cats and dogs by default),
//! trains the tutorial's network twice with its recipe, once on the plain
//! images and once on images that carry a class cue (a small square, red for
//! the first class and blue for the second, at a random place, see
//! [`crate::trust::shortcut`]), and shows on one page:
//!
//! - both models' test accuracy on plain images, with the cue, and with the
//!   cue swapped between the classes (the cue model collapses there: it has
//!   learnt the square, not the animal);
//! - for each saliency method, the share of its map on the square, for both
//!   models, and whether it reveals the shortcut;
//! - the sanity and faithfulness scores of the methods on the cue model;
//! - example rows where the maps catch the square.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ndarray::{Array3, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::report::parse_methods;
use super::saliency::MethodArgs;
use super::trust::{
    curve_plots, faithfulness_sections, progress_bar, sanity_grid, sanity_sections, score_methods,
    summary_text,
};
use super::Inputs;
use crate::data::{self, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::images::{
    write_heatmap_png, write_image_png, write_report, Cell, Colormap, FigureStyle, Report, Scale,
    Section, Table,
};
use crate::model::{self, Sequential};
use crate::saliency::{Explainer, Method};
use crate::train::{evaluate, fit, FitOptions, KerasProgress};
use crate::trust::shortcut::{swapped, two_classes, Cue};
use crate::trust::{drawn_maps, pointing, FaithfulnessOptions, SanityOptions, Spread};
use crate::Tensor;

/// `salient shortcut`.
#[derive(Debug, Clone, Args)]
pub struct ShortcutArgs {
    /// mnist, cifar10 or folder.
    #[arg(long, default_value = "cifar10")]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long)]
    pub data: PathBuf,
    /// The two classes, by name or index, comma-separated.
    #[arg(long, default_value = "cat,dog", value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Side of the cue's square, in pixels.
    #[arg(long, default_value_t = 4, value_parser = super::at_least_one)]
    pub cue_size: usize,
    /// Epochs of training for each model (the tutorial's recipe otherwise).
    #[arg(long, default_value_t = 25, value_parser = super::at_least_one)]
    pub epochs: usize,
    /// Test images whose maps are measured against the cue.
    #[arg(long, default_value_t = 200, value_parser = super::at_least_one)]
    pub count: usize,
    /// Test images for the sanity and faithfulness scores of the cue model.
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    pub score_count: usize,
    /// `all`, or a comma-separated list of methods.
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// Seeds training, the cue's places and the choice of test images.
    #[arg(long, default_value_t = 0)]
    pub shortcut_seed: u64,
    /// The folder for the page, both checkpoints and the figures (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// What one method's maps put on the cue.
#[derive(Clone, Debug)]
pub struct CueShare {
    /// The method.
    pub method: Method,
    /// The cue model: share of positive map on the square, per image.
    pub cue_model: Spread,
    /// The cue model: images whose map peaks on the square.
    pub cue_hits: usize,
    /// The clean model, likewise.
    pub clean_model: Spread,
    /// The clean model: images whose map peaks on the square.
    pub clean_hits: usize,
    /// Images measured.
    pub images: usize,
}

impl CueShare {
    /// Whether the method reveals the shortcut: its map peaks on the square in
    /// at least half the images, and puts at least four times the square's
    /// share of the image on it, for the cue model.
    pub fn reveals(&self, area: f64) -> bool {
        2 * self.cue_hits >= self.images && self.cue_model.mean >= 4.0 * area
    }
}

/// What `salient shortcut` measured.
#[derive(Clone, Debug)]
pub struct ShortcutOutput {
    /// `[plain, with cue, cue swapped]` test accuracy of the clean model.
    pub clean_accuracy: [f32; 3],
    /// The same for the cue model.
    pub cue_accuracy: [f32; 3],
    /// Per method.
    pub shares: Vec<CueShare>,
    /// The square's share of the image.
    pub area: f64,
    /// The page.
    pub page: PathBuf,
}

/// Runs the whole story and writes `DIR/index.html`.
pub fn run(args: &ShortcutArgs) -> Result<ShortcutOutput> {
    let start = Instant::now();
    let methods = parse_methods(&args.methods)?;
    if args.classes.len() != 2 {
        return Err(Error::invalid(
            "classes",
            format!("give two classes, e.g. cat,dog; got {}", args.classes.len()),
        ));
    }
    let dir = &args.out;
    fsutil::check_output_dir(dir)?;

    // The data: two classes, with and without the cue.
    // The full training split is dropped as soon as its two classes are taken.
    let (train, a, b) = {
        let all = data::load(args.dataset, &args.data, Split::Train)?;
        let (a, b) = (
            class_index(&all, &args.classes[0])?,
            class_index(&all, &args.classes[1])?,
        );
        (two_classes(&all, a, b)?, a, b)
    };
    let test = two_classes(&data::load(args.dataset, &args.data, Split::Test)?, a, b)?;
    let cue = Cue {
        size: args.cue_size,
        ..Cue::default_for(2)
    };
    let [c, h, w] = train.shape();
    let area = (cue.size * cue.size) as f64 / (h * w) as f64;
    let names = train.class_names.clone();
    println!(
        "{} against {}: {} training and {} test images of {c}x{h}x{w}; the cue is a {s}x{s} square, red for {}, blue for {}, at a random place",
        names[0], names[1], train.len(), test.len(), names[0], names[1], s = cue.size
    );
    let (cue_images, _) =
        crate::trust::shortcut::with_cue(&train, &cue, &train.labels, args.shortcut_seed)?;
    let cue_train = Dataset::new(cue_images, train.labels.clone(), names.clone())?;

    // Two models, the tutorial's recipe.
    let opts = FitOptions {
        epochs: args.epochs,
        batch_size: 250,
        validation_split: 0.2,
        seed: args.shortcut_seed,
        learning_rate: 1e-3,
    };
    let mut models = Vec::new();
    for (label, data) in [("clean", &train), ("cue", &cue_train)] {
        println!("\n== Training the {label} model");
        let mut m = Sequential::tutorial([c, h, w], 2, args.shortcut_seed)?;
        m.set_class_names(names.clone())?;
        fit(&mut m, data, &opts, &mut KerasProgress::new())?;
        model::save(&m, &dir.join(format!("{label}.safetensors")))?;
        models.push(m);
    }
    drop((train, cue_train));
    let (clean, cued) = (&models[0], &models[1]);
    args.options.check(cued, &methods)?;

    // Test accuracy: plain, with the cue of the true class, with the other class's cue.
    let test_seed = args.shortcut_seed ^ 0x7e57;
    let (with_cue, masks) = crate::trust::shortcut::with_cue(&test, &cue, &test.labels, test_seed)?;
    let (swapped_cue, _) =
        crate::trust::shortcut::with_cue(&test, &cue, &swapped(&test.labels, 2), test_seed)?;
    let with_cue = Dataset::new(with_cue, test.labels.clone(), names.clone())?;
    let swapped_cue = Dataset::new(swapped_cue, test.labels.clone(), names.clone())?;
    let accuracy = |m: &Sequential| -> Result<[f32; 3]> {
        Ok([
            evaluate(m, &test, 250)?.1,
            evaluate(m, &with_cue, 250)?.1,
            evaluate(m, &swapped_cue, 250)?.1,
        ])
    };
    let (clean_accuracy, cue_accuracy) = (accuracy(clean)?, accuracy(cued)?);
    println!("\nTest accuracy      plain  with cue  cue swapped");
    for (label, acc) in [("clean model", clean_accuracy), ("cue model", cue_accuracy)] {
        println!(
            "{label:<16} {:>7.4} {:>9.4} {:>12.4}",
            acc[0], acc[1], acc[2]
        );
    }

    // The maps of both models on test images with the cue.
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(test_seed));
    order.truncate(args.count.min(test.len()));
    let images = with_cue.batch(&order)?;
    let labels: Vec<usize> = order.iter().map(|&i| test.labels[i]).collect();
    let cue_masks = select_masks(&masks, &order);
    let options = args.options.options();
    let bar = progress_bar(2 * methods.len() as u64, "maps");
    let mut shares = Vec::new();
    let mut maps_of = [Vec::new(), Vec::new()];
    let mut explainers: Vec<Explainer> = models.iter().map(|m| Explainer::new(m)).collect();
    for &method in &methods {
        let mut found = Vec::new();
        for (k, explainer) in explainers.iter_mut().enumerate() {
            bar.set_message(format!("{method} ({})", ["clean", "cue"][k]));
            let raw = explainer
                .attribute(&images, Some(&labels), method, &options)?
                .raw;
            let maps = drawn_maps(method, &raw)?;
            let p = maps
                .outer_iter()
                .zip(cue_masks.outer_iter())
                .map(|(map, mask)| {
                    pointing(
                        map.into_dimensionality()
                            .map_err(|_| Error::invalid("maps", "shape"))?,
                        mask,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            found.push((
                Spread::of(p.iter().map(|p| p.energy)),
                p.iter().filter(|p| p.hit).count(),
            ));
            maps_of[k].push(maps);
            bar.inc(1);
        }
        shares.push(CueShare {
            method,
            clean_model: found[0].0,
            clean_hits: found[0].1,
            cue_model: found[1].0,
            cue_hits: found[1].1,
            images: order.len(),
        });
    }
    bar.finish_and_clear();
    println!(
        "\nShare of each map on the cue (the square is {:.1}% of the image):",
        100.0 * area
    );
    println!(
        "{:<22} {:>16} {:>10} {:>16} {:>10}  reveals",
        "method", "cue model", "peaks", "clean model", "peaks"
    );
    for s in &shares {
        println!(
            "{:<22} {:>16} {:>10} {:>16} {:>10}  {}",
            s.method.name(),
            format!("{:.3}", s.cue_model),
            format!("{}/{}", s.cue_hits, s.images),
            format!("{:.3}", s.clean_model),
            format!("{}/{}", s.clean_hits, s.images),
            if s.reveals(area) { "yes" } else { "no" }
        );
    }

    // Sanity and faithfulness of the methods on the cue model.
    let n = args.score_count.min(order.len());
    let few = images
        .slice_axis(Axis(0), ndarray::Slice::from(0..n))
        .to_owned();
    let few_targets = &labels[..n];
    let few_inputs = Inputs {
        images: few.clone(),
        items: order[..n]
            .iter()
            .map(|&i| super::Item {
                index: i,
                stem: i.to_string(),
                name: format!("test image {i}"),
                true_class: Some(test.labels[i]),
                notes: Vec::new(),
            })
            .collect(),
    };
    println!("\n== Sanity checks of the cue model (cascading) on {n} images");
    let sanity = crate::trust::sanity_check(
        cued,
        &few,
        few_targets,
        &methods,
        &options,
        &SanityOptions {
            seed: args.shortcut_seed,
            independent: false,
            ..SanityOptions::default()
        },
        None,
        &mut |_| {},
    )?;
    sanity_grid(&sanity, 0)?.write_png(&dir.join("sanity-grid.png"))?;
    println!("== Faithfulness of the cue model on {n} images");
    let mut settings = FaithfulnessOptions::default();
    settings.curves.seed = args.shortcut_seed;
    settings.road.seed = args.shortcut_seed;
    settings.robustness.seed = args.shortcut_seed;
    let (random, scores) = score_methods(
        &few,
        few_targets,
        &methods,
        &options,
        &settings,
        Some(&select_masks(&cue_masks, &(0..n).collect::<Vec<_>>())),
        &mut explainers[1],
    )?;
    println!("{}", summary_text(&random, &scores));
    curve_plots(&random, &scores)?.write_png(&dir.join("curves.png"))?;

    // Example rows: per class, the images where the cue model's maps put most on the square.
    let examples = examples(&maps_of[1], &cue_masks, &labels, 2);
    let style = FigureStyle {
        colormap: Colormap::Viridis,
        scale: Scale::Factor(1),
        ..FigureStyle::default()
    };
    let mut rows = Vec::new();
    for &e in &examples {
        let input = PathBuf::from(format!("{}-input.png", order[e]));
        write_image_png(
            &dir.join(&input),
            images.index_axis(Axis(0), e),
            Scale::Factor(1),
        )?;
        for (k, model_name) in ["cue model", "clean model"].iter().enumerate() {
            let maps = &maps_of[1 - k];
            let mut row = vec![
                Cell::Text(format!("{} ({}), {model_name}", order[e], names[labels[e]])),
                Cell::Picture(input.clone(), None),
            ];
            for (j, &method) in methods.iter().enumerate() {
                let path =
                    PathBuf::from(format!("{}-{}-{method}.png", order[e], ["cue", "clean"][k]));
                let normalized = crate::images::normalize_maps(
                    &maps[j]
                        .slice_axis(Axis(0), ndarray::Slice::from(e..e + 1))
                        .to_owned(),
                    crate::images::Normalize::PerInput,
                )?;
                write_heatmap_png(&dir.join(&path), normalized.index_axis(Axis(0), 0), &style)?;
                let p = pointing(
                    maps[j]
                        .index_axis(Axis(0), e)
                        .into_dimensionality()
                        .map_err(|_| Error::invalid("maps", "shape"))?,
                    cue_masks.index_axis(Axis(0), e),
                )?;
                row.push(Cell::Picture(
                    path,
                    Some(format!("on cue {:.0}%", 100.0 * p.energy)),
                ));
            }
            rows.push(row);
        }
    }

    let revealing: Vec<&str> = shares
        .iter()
        .filter(|s| s.reveals(area))
        .map(|s| s.method.title())
        .collect();
    let hiding: Vec<&str> = shares
        .iter()
        .filter(|s| !s.reveals(area))
        .map(|s| s.method.title())
        .collect();
    let mut header = vec!["image".to_string(), "input".to_string()];
    header.extend(methods.iter().map(|m| m.title().to_string()));
    let acc_row = |label: &str, acc: [f32; 3]| {
        vec![
            Cell::Text(label.into()),
            Cell::Text(format!("{:.4}", acc[0])),
            Cell::Text(format!("{:.4}", acc[1])),
            Cell::Text(format!("{:.4}", acc[2])),
        ]
    };
    let share_rows = shares
        .iter()
        .map(|s| {
            vec![
                Cell::Text(s.method.title().into()),
                Cell::Text(format!("{:.3}", s.cue_model)),
                Cell::Text(format!("{} / {}", s.cue_hits, s.images)),
                Cell::Text(format!("{:.3}", s.clean_model)),
                Cell::Text(format!("{} / {}", s.clean_hits, s.images)),
                Cell::Marked(
                    if s.reveals(area) { "yes" } else { "no" }.into(),
                    s.reveals(area),
                ),
            ]
        })
        .collect();
    let mut sections = vec![
        Section {
            heading: "Has the cue model learnt the shortcut?".into(),
            paragraphs: vec![format!(
                "Test accuracy on the {} test images of the two classes: plain, with the cue of the true class, and with the cue of the other class. \
                 A model that relies on the square falls far below chance when the squares are swapped.",
                test.len()
            )],
            tables: vec![Table {
                caption: "Test accuracy".into(),
                header: vec!["model".into(), "plain".into(), "with cue".into(), "cue swapped".into()],
                rows: vec![acc_row("clean model", clean_accuracy), acc_row("cue model", cue_accuracy)],
            }],
            ..Section::default()
        },
        Section {
            heading: "Which methods reveal the shortcut?".into(),
            paragraphs: vec![
                format!(
                    "On {} test images with the cue, explaining the true class: the share of each map's positive part on the square \
                     (energy-based pointing game; the square is {:.1}% of the image, so a map that ignores it puts about that much there), \
                     and how many maps peak on the square (pointing game). A method reveals the shortcut here if, for the cue model, \
                     its map peaks on the square in at least half the images and puts at least four times the square's share on it.",
                    order.len(),
                    100.0 * area
                ),
                format!(
                    "Measured: {} reveal the shortcut; {} do not.",
                    if revealing.is_empty() { "none".to_string() } else { revealing.join(", ") },
                    if hiding.is_empty() { "none".to_string() } else { hiding.join(", ") }
                ),
            ],
            tables: vec![Table {
                caption: "Share of the map on the cue (mean ± std) and maps peaking on it".into(),
                header: vec![
                    "method".into(),
                    "cue model: share".into(),
                    "cue model: peaks".into(),
                    "clean model: share".into(),
                    "clean model: peaks".into(),
                    "reveals".into(),
                ],
                rows: share_rows,
            }],
            ..Section::default()
        },
        Section {
            heading: "Examples".into(),
            paragraphs: vec!["For each class, the two test images on which the cue model's maps put the most on the square; each image twice, explained by the cue model and by the clean model.".into()],
            tables: vec![Table {
                caption: "Maps (viridis, normalised per map)".into(),
                header,
                rows,
            }],
            ..Section::default()
        },
    ];
    let mut sanity_part = sanity_sections(
        &sanity,
        &methods,
        std::path::Path::new("sanity-grid.png"),
        &few_inputs,
    );
    for s in &mut sanity_part {
        s.heading = format!(
            "Sanity checks on the cue model: {}",
            s.heading.to_lowercase()
        );
    }
    sections.extend(sanity_part);
    let mut faith = faithfulness_sections(
        &random,
        &scores,
        Some(std::path::Path::new("curves.png")),
        &settings,
    );
    for s in &mut faith {
        s.heading = "Faithfulness on the cue model (masks: the cue)".into();
    }
    sections.extend(faith);
    let report = Report {
        title: format!("A planted shortcut: {} against {}", names[0], names[1]),
        details: vec![
            ("Data".into(), format!("{} in {}: classes {} and {}", args.dataset, args.data.display(), names[0], names[1])),
            ("Cue".into(), format!("a {s}x{s} square at a random place, red for {}, blue for {}", names[0], names[1], s = cue.size)),
            ("Training".into(), format!("the tutorial's CNN and recipe: Adam 1e-3, batch 250, {} epochs, 20% validation, seed {}", args.epochs, args.shortcut_seed)),
            ("Checkpoints".into(), "clean.safetensors and cue.safetensors, beside this page".into()),
        ],
        notes: vec!["A classifier that tells cats from dogs may really be telling couches from lawns. Here the shortcut is planted, so the right answer is known: the cue model's maps should fall on the square.".into()],
        sections,
        ..Report::default()
    };
    let page = write_report(dir, &report)?;
    println!(
        "\nWrote {} in {:.0} s",
        page.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(ShortcutOutput {
        clean_accuracy,
        cue_accuracy,
        shares,
        area,
        page,
    })
}

/// A class given by name or index.
fn class_index(data: &Dataset, text: &str) -> Result<usize> {
    let text = text.trim();
    if let Some(k) = data.class_names.iter().position(|n| n == text) {
        return Ok(k);
    }
    match text.parse::<usize>() {
        Ok(k) if k < data.num_classes() => Ok(k),
        _ => Err(Error::invalid(
            "classes",
            format!(
                "no class {text:?}; the classes are {}",
                data.class_names.join(", ")
            ),
        )),
    }
}

fn select_masks(masks: &Array3<bool>, order: &[usize]) -> Array3<bool> {
    masks.select(Axis(0), order)
}

/// For each class, the `per_class` images whose maps, summed over methods,
/// put the most on the cue.
fn examples(
    maps: &[Tensor],
    masks: &Array3<bool>,
    labels: &[usize],
    per_class: usize,
) -> Vec<usize> {
    let mut score: Vec<(f64, usize)> = (0..masks.shape()[0])
        .map(|i| {
            let total: f64 = maps
                .iter()
                .filter_map(|m| {
                    let map = m.index_axis(Axis(0), i).into_dimensionality().ok()?;
                    pointing(map, masks.index_axis(Axis(0), i)).ok()
                })
                .map(|p| if p.energy.is_finite() { p.energy } else { 0.0 })
                .sum();
            (total, i)
        })
        .collect();
    score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen = Vec::new();
    for class in 0..=labels.iter().copied().max().unwrap_or(0) {
        chosen.extend(
            score
                .iter()
                .filter(|(_, i)| labels[*i] == class)
                .take(per_class)
                .map(|(_, i)| *i),
        );
    }
    chosen
}
