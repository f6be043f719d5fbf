//! `salient saliency`: one method's maps for some inputs, a figure per input.
//!
//! ```text
//! salient saliency --model mnist.safetensors --dataset mnist --data DIR \
//!     --indices 0,12,38 --method guided --out out/guided --raw
//! ```
//!
//! For each input it writes `DIR/<index>-<method>.png` (or `<file stem>-<method>.png`
//! for `--image` files): the input, the map as a heat map, and the two overlaid. With
//! `--raw` it also writes `raw.npy` (float32 `[N, C, H, W]`, the attributions before
//! post-processing) and `maps.npy` (float32 `[N, H, W]`, the maps as drawn).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{ArgGroup, Args};
use ndarray::Axis;

use super::class_label;
use super::inputs::{self, Inputs, Item, TUTORIAL_INDICES};
use crate::data::{DatasetKind, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::images::{
    write_attributions, write_figure, write_maps, Colormap, FigureStyle, Normalize,
};
use crate::model::{self, Classifier};
use crate::saliency::{self, Attribution, Baseline, Explainer, Method, Options};
use crate::tape::Kernels;
use crate::tensor::Tensor;

/// The settings of the saliency methods, with the library's defaults
/// ([`Options::default`]). Each method reads only its own.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Method options")]
pub struct MethodArgs {
    /// smoothgrad, smoothgrad-sq, vargrad: noisy copies per input.
    #[arg(long, default_value_t = Options::default().samples, value_parser = super::at_least_one)]
    pub samples: usize,
    /// smoothgrad, smoothgrad-sq, vargrad: noise standard deviation, as a fraction of each input's max - min.
    #[arg(long, default_value_t = Options::default().noise_level, value_parser = super::non_negative_f32)]
    pub noise: f32,
    /// smoothgrad, smoothgrad-sq, vargrad: seed of the noise.
    #[arg(long, default_value_t = Options::default().seed)]
    pub seed: u64,
    /// integrated-gradients: points on the path from the baseline.
    #[arg(long, default_value_t = Options::default().steps, value_parser = super::at_least_one)]
    pub steps: usize,
    /// integrated-gradients: the relative completeness error each input must reach by doubling its steps; 0 keeps --steps.
    #[arg(long, default_value_t = 0.01, value_parser = super::non_negative_f64)]
    pub tolerance: f64,
    /// integrated-gradients: the most steps one input may take.
    #[arg(long, default_value_t = Options::default().max_steps, value_parser = super::at_least_one)]
    pub max_steps: usize,
    /// integrated-gradients: the baseline's value in every pixel [default: 0, black].
    #[arg(long, value_parser = super::finite_f32)]
    pub baseline: Option<f32>,
    /// grad-cam, grad-cam++, score-cam, guided-grad-cam: the layer to explain [default: the last Conv2D].
    #[arg(long)]
    pub layer: Option<String>,
    /// occlusion: side of the square patch in pixels [default: round(min(H, W) / 7), 4 for MNIST].
    #[arg(long, value_parser = super::at_least_one)]
    pub patch: Option<usize>,
    /// occlusion: pixels between patch positions [default: patch / 2].
    #[arg(long, value_parser = super::at_least_one)]
    pub stride: Option<usize>,
    /// occlusion: the value written into the patch.
    #[arg(long, default_value_t = Options::default().fill, value_parser = super::finite_f32)]
    pub fill: f32,
    /// Images per forward pass (bounds memory).
    #[arg(long, default_value_t = Options::default().batch_size, value_parser = super::at_least_one)]
    pub batch_size: usize,
    /// Compute the maps through the reference ops (plain loops and one
    /// matrix product per image: slower) instead of the fast paths, to check
    /// them; the two agree to about 1e-6 of each map's largest value.
    #[arg(long)]
    pub reference: bool,
}

impl MethodArgs {
    /// The library's options these arguments stand for.
    pub fn options(&self) -> Options {
        Options {
            batch_size: self.batch_size,
            samples: self.samples,
            noise_level: self.noise,
            seed: self.seed,
            steps: self.steps,
            tolerance: (self.tolerance > 0.0).then_some(self.tolerance),
            max_steps: self.max_steps,
            baseline: self.baseline.map_or(Baseline::Black, Baseline::Constant),
            layer: self.layer.clone(),
            patch: self.patch,
            stride: self.stride,
            fill: self.fill,
        }
    }

    /// Checks, before any method runs, every setting that `methods` will read
    /// on `model`: counts at least 1, finite values, an occlusion patch that
    /// fits the image, a CAM layer that exists.
    pub fn check(&self, model: &dyn Classifier, methods: &[Method]) -> Result<()> {
        if self.samples == 0 || self.steps == 0 || self.batch_size == 0 || self.max_steps == 0 {
            return Err(Error::invalid(
                "options",
                "--samples, --steps, --max-steps and --batch-size must be at least 1",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(Error::invalid(
                "options",
                format!(
                    "--tolerance must be finite and not negative, got {}",
                    self.tolerance
                ),
            ));
        }
        let finite = self.noise.is_finite()
            && self.noise >= 0.0
            && self.fill.is_finite()
            && self.baseline.is_none_or(f32::is_finite);
        if !finite {
            return Err(Error::invalid(
                "options",
                "--noise must be finite and not negative, --fill and --baseline finite",
            ));
        }
        if methods.contains(&Method::Occlusion) {
            let [_, h, w] = model.input_shape();
            saliency::occlusion::patch_geometry(h, w, self.patch, self.stride)?;
        }
        if methods.iter().any(|m| m.uses_layer()) {
            saliency::cam::cam_layer(model, self.layer.as_deref())?;
        }
        Ok(())
    }

    /// An explainer of `model` on the kernels these arguments ask for.
    pub fn explainer<'m>(&self, model: &'m dyn Classifier) -> Explainer<'m> {
        let kernels = match self.reference {
            true => Kernels::Reference,
            false => Kernels::Fast,
        };
        Explainer::new(model).with_kernels(kernels)
    }
}

impl Default for MethodArgs {
    /// The library's defaults.
    fn default() -> Self {
        let o = Options::default();
        MethodArgs {
            samples: o.samples,
            noise: o.noise_level,
            seed: o.seed,
            steps: o.steps,
            tolerance: o.tolerance.unwrap_or(0.0),
            max_steps: o.max_steps,
            baseline: None,
            layer: o.layer,
            patch: o.patch,
            stride: o.stride,
            fill: o.fill,
            batch_size: o.batch_size,
            reference: false,
        }
    }
}

/// `salient saliency`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["dataset", "image"])))]
pub struct SaliencyArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// Explain images of a data set: mnist, cifar10 or folder.
    #[arg(long, requires = "data")]
    pub dataset: Option<DatasetKind>,
    /// The data set's folder.
    #[arg(long, requires = "dataset")]
    pub data: Option<PathBuf>,
    /// Which split the indices refer to.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Indices into the split, comma-separated [default: the tutorial's 0,12,38,83,112,74,190].
    #[arg(long, value_delimiter = ',', requires = "dataset")]
    pub indices: Vec<usize>,
    /// Explain your own PNG or JPEG files instead, converted and resized to the model's input.
    #[arg(long, num_args = 1.., conflicts_with = "dataset")]
    pub image: Vec<PathBuf>,
    /// vanilla, rectified, guided, gradient-x-input, smoothgrad, smoothgrad-sq, vargrad,
    /// integrated-gradients, grad-cam, grad-cam++, score-cam, guided-grad-cam or occlusion.
    #[arg(long)]
    pub method: Method,
    /// The class to explain for every input, by name or index [default: the true class where known, else the predicted one].
    #[arg(long)]
    pub class: Option<String>,
    /// Colour map of the heat maps: viridis, jet or gray.
    #[arg(long, default_value = "viridis")]
    pub colormap: Colormap,
    /// Min-max normalisation per-input, or over the whole batch (keras-vis) so maps can be compared.
    #[arg(long, default_value = "per-input")]
    pub normalize: Normalize,
    /// The folder for the figures (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write raw.npy (attributions [N, C, H, W]) and maps.npy (maps [N, H, W]).
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// What `salient saliency` computed and wrote.
#[derive(Debug, Clone)]
pub struct SaliencyOutput {
    /// The inputs, as the model saw them.
    pub inputs: Inputs,
    /// Each input's predicted class and its probability.
    pub predicted: Vec<(usize, f32)>,
    /// The method's raw attributions and notes.
    pub attribution: Attribution,
    /// The post-processed maps `[N, H, W]` in `[0, 1]`.
    pub maps: Tensor,
    /// One figure per input, in order.
    pub figures: Vec<PathBuf>,
}

/// Loads the model and the inputs, runs the method, writes the figures (and the
/// `.npy` files with `--raw`) and prints a line per input.
pub fn run(args: &SaliencyArgs) -> Result<SaliencyOutput> {
    let loaded = model::load_model(&args.model)?;
    let model = loaded.classifier();
    args.options.check(model, &[args.method])?;
    let inputs = load_inputs(
        model,
        args.dataset.zip(args.data.as_deref()),
        args.split,
        &args.indices,
        &args.image,
    )?;
    let class = args
        .class
        .as_deref()
        .map(|c| inputs::parse_class(model, c))
        .transpose()?;
    let options = args.options.options();
    let method = args.method;
    // Between loading the inputs and running the method: a bad input makes no
    // folder, and a folder that cannot be written costs no method run.
    fsutil::check_output_dir(&args.out)?;

    let probs = inputs::probabilities(model, &inputs.images, options.batch_size)?;
    let predicted = inputs::top_classes(&probs);
    let targets = inputs::targets(&inputs.items, &predicted, class);
    let start = Instant::now();
    let mut explainer = args.options.explainer(model);
    let attribution = explainer.attribute(&inputs.images, Some(&targets), method, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    let maps = saliency::maps(method, &attribution.raw, args.normalize)?;

    let style = FigureStyle {
        colormap: args.colormap,
        ..FigureStyle::default()
    };
    let mut figures = Vec::with_capacity(inputs.len());
    for (i, item) in inputs.items.iter().enumerate() {
        let path = args.out.join(format!("{}-{method}.png", item.stem));
        let image = inputs.images.index_axis(Axis(0), i);
        write_figure(&path, image, maps.index_axis(Axis(0), i), &style)?;
        figures.push(path);
    }

    println!("Model: {}", describe_model(model, &args.model));
    println!(
        "Method: {method} ({seconds:.2} s), on the linear class scores: the softmax head is made \
         linear for the backward pass (the model is unchanged)"
    );
    println!(
        "Maps: {}; colour map {}",
        saliency::describe_maps(method, args.normalize),
        args.colormap
    );
    let (general, per_input) = split_notes(&attribution.notes, inputs.len());
    for (i, item) in inputs.items.iter().enumerate() {
        println!(
            "{} -> {}",
            describe_input(model, item, predicted[i], attribution.targets[i]),
            figures[i].display()
        );
        for note in &item.notes {
            println!("  note: {note}");
        }
        if let Some(c) = attribution.completeness.as_ref().and_then(|c| c.get(i)) {
            // Integrated gradients: the per-input notes say the same at length.
            println!(
                "  completeness error {:.2}% with {} steps (sum of attributions {:.4}, f(x) - f(baseline) = {:.4})",
                100.0 * c.rel_error,
                c.steps,
                c.attribution_sum,
                f64::from(c.score) - f64::from(c.baseline_score)
            );
        } else {
            for note in &per_input[i] {
                println!("  note: {note}");
            }
        }
    }
    for note in &general {
        println!("Note: {note}");
    }
    if args.raw {
        let raw_path = args.out.join("raw.npy");
        let maps_path = args.out.join("maps.npy");
        write_attributions(&raw_path, &attribution.raw)?;
        write_maps(&maps_path, &maps)?;
        println!(
            "Wrote {} (float32 {:?}, before post-processing) and {} (float32 {:?}, as drawn)",
            raw_path.display(),
            attribution.raw.shape(),
            maps_path.display(),
            maps.shape()
        );
    }
    Ok(SaliencyOutput {
        inputs,
        predicted,
        attribution,
        maps,
        figures,
    })
}

/// Data set images at `indices` (the tutorial's when empty), or the `images` files.
pub fn load_inputs(
    model: &dyn Classifier,
    dataset: Option<(DatasetKind, &Path)>,
    split: Split,
    indices: &[usize],
    images: &[PathBuf],
) -> Result<Inputs> {
    match dataset {
        Some((kind, dir)) => {
            let indices = if indices.is_empty() {
                &TUTORIAL_INDICES[..]
            } else {
                indices
            };
            Inputs::from_dataset(model, kind, dir, split, indices)
        }
        None => Inputs::from_files(model, images),
    }
}

/// `m.safetensors (input 1x28x28, 10 classes, 431242 parameters)`.
pub fn describe_model(model: &dyn Classifier, path: &Path) -> String {
    let [c, h, w] = model.input_shape();
    format!(
        "{} (input {c}x{h}x{w}, {} classes, {} parameters)",
        path.display(),
        model.num_classes(),
        model.num_params()
    )
}

/// `test image 12: true 9, predicted 9 (99.1%), target 9`.
pub fn describe_input(
    model: &dyn Classifier,
    item: &Item,
    (predicted, confidence): (usize, f32),
    target: usize,
) -> String {
    let names = model.class_names();
    let truth = item
        .true_class
        .map(|t| format!("true {}, ", class_label(names, t)))
        .unwrap_or_default();
    format!(
        "{}: {truth}predicted {} ({:.1}%), target {}",
        item.name,
        class_label(names, predicted),
        100.0 * confidence,
        class_label(names, target)
    )
}

/// Sorts a method's notes into general ones and those about one input.
///
/// The library numbers inputs by their place in the batch (`input 2: ...`); a
/// note of that form goes to `per_input[2]`, without the prefix.
pub fn split_notes(notes: &[String], n: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let mut general = Vec::new();
    let mut per_input = vec![Vec::new(); n];
    for note in notes {
        let about = note.strip_prefix("input ").and_then(|rest| {
            let (i, text) = rest.split_once(": ")?;
            let i: usize = i.parse().ok()?;
            (i < n).then_some((i, text))
        });
        match about {
            Some((i, text)) => per_input[i].push(text.to_string()),
            None => general.push(note.clone()),
        }
    }
    (general, per_input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_about_one_input_are_sorted_out() {
        let notes = [
            "grad-cam: layer conv2d_1".to_string(),
            "input 1: the map is zero everywhere".to_string(),
            "input 7: out of range stays general".to_string(),
        ];
        let (general, per_input) = split_notes(&notes, 2);
        assert_eq!(general, [notes[0].clone(), notes[2].clone()]);
        assert!(per_input[0].is_empty());
        assert_eq!(per_input[1], ["the map is zero everywhere"]);
    }

    #[test]
    fn method_args_default_to_the_library_defaults() {
        assert_eq!(MethodArgs::default().options(), Options::default());
    }
}
