//! The sanity checks of Adebayo et al. (2018): does the map change when the
//! model is destroyed?
//!
//! A saliency method that explains the *model* must give different maps for a
//! different model. Three ways to destroy it, each a [`StageKind`]:
//!
//! - **cascading**: re-initialise the layers' weights from the top (output)
//!   layer down, one more layer each stage;
//! - **independent**: re-initialise one layer at a time, the others trained;
//! - **labels** (data randomisation): the same architecture trained on
//!   permuted labels, so that it has learnt nothing about the images.
//!
//! A layer is re-initialised as at build time: Glorot-uniform kernel, zero
//! bias. The classes explained stay those of the original model. Each stage's
//! maps are compared with the original ones, per input, by four
//! [`Similarity`] measures; high similarity after randomisation is the
//! warning sign. The paper's finding: the gradient and Grad-CAM decorrelate
//! quickly, guided backprop and guided Grad-CAM barely change.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::images::{normalize_maps, Normalize};
use crate::layers::{glorot_uniform, mix};
use crate::model::graph::{Graph, Op};
use crate::model::{Classifier, Model, Sequential};
use crate::saliency::{Explainer, Method, Options};
use crate::tensor::Tensor;

use super::similarity::{ssim, top_k_intersection};
use super::{drawn_maps, signed_maps};

/// How the model was destroyed at one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Every layer from the top down to this one re-initialised.
    Cascading,
    /// Only this layer re-initialised.
    Independent,
    /// The model trained on permuted labels.
    Labels,
}

/// One randomised model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// How it was randomised.
    pub kind: StageKind,
    /// The lowest layer randomised (cascading), the one layer randomised
    /// (independent), or empty (labels).
    pub layer: String,
}

impl Stage {
    /// A short label, e.g. `cascading to conv2d_1`, `only dense`, `permuted labels`.
    pub fn label(&self) -> String {
        match self.kind {
            StageKind::Cascading => format!("cascading to {}", self.layer),
            StageKind::Independent => format!("only {}", self.layer),
            StageKind::Labels => "permuted labels".into(),
        }
    }
}

/// How alike two maps of one input are; each is 1 for identical maps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    /// Spearman's rank correlation of the drawn maps' absolute values
    /// (`max_c |a|`). NaN if either map is constant.
    pub spearman_abs: f64,
    /// Spearman's rank correlation of the signed maps (`Σ_c a`).
    pub spearman_signed: f64,
    /// Mean SSIM of the drawn maps, each min-max normalised to `[0, 1]`.
    pub ssim: f64,
    /// The share of the top-k pixels of the drawn maps that the two share,
    /// with k = [`SanityOptions::top_k_fraction`] of the pixels.
    pub top_k: f64,
}

/// Settings of [`sanity_check`].
#[derive(Clone, Debug, PartialEq)]
pub struct SanityOptions {
    /// Seeds the re-initialised weights (0).
    pub seed: u64,
    /// The share of pixels in the top-k intersection (0.1, a tenth).
    pub top_k_fraction: f64,
    /// Run the cascading stages (true).
    pub cascading: bool,
    /// Run the independent stages (true).
    pub independent: bool,
}

impl Default for SanityOptions {
    fn default() -> Self {
        SanityOptions {
            seed: 0,
            top_k_fraction: 0.1,
            cascading: true,
            independent: true,
        }
    }
}

/// One method at one stage.
#[derive(Clone, Debug)]
pub struct StageResult {
    /// The saliency method.
    pub method: Method,
    /// The randomised model.
    pub stage: Stage,
    /// Per input: the similarity with the original map.
    pub similarity: Vec<Similarity>,
    /// The maps as drawn, min-max normalised per input, `[N, H, W]`.
    pub maps: Tensor,
}

/// Everything [`sanity_check`] found.
#[derive(Clone, Debug)]
pub struct Sanity {
    /// The stages, in order: cascading from the top, independent from the
    /// top, then labels.
    pub stages: Vec<Stage>,
    /// Per method, the original model's maps as drawn, normalised `[N, H, W]`.
    pub original: Vec<(Method, Tensor)>,
    /// Per stage (outer, as [`Sanity::stages`]) and method (inner), the result.
    pub results: Vec<StageResult>,
}

impl Sanity {
    /// The result of `method` at stage `s`.
    pub fn get(&self, s: usize, method: Method) -> Option<&StageResult> {
        self.results
            .iter()
            .filter(|r| r.stage == self.stages[s])
            .find(|r| r.method == method)
    }
}

/// A model whose weighted layers can be re-initialised: what the sanity
/// checks destroy. Stacks, graphs and loaded models are.
pub trait Randomizable: Classifier + Clone {
    /// Indices of the layers (nodes) with a kernel, from the output down, and
    /// their names.
    fn weighted_layers(&self) -> Vec<(usize, String)>;

    /// Re-initialises layer `l` as at build time (Glorot-uniform kernel, zero
    /// bias), drawing from `rng`.
    fn reinitialize(&mut self, l: usize, rng: &mut ChaCha8Rng) -> Result<()>;
}

impl Randomizable for Sequential {
    fn weighted_layers(&self) -> Vec<(usize, String)> {
        let layers = self.layers();
        (0..layers.len())
            .rev()
            .filter(|&l| layers[l].params.is_some())
            .map(|l| (l, layers[l].name.clone()))
            .collect()
    }

    fn reinitialize(&mut self, l: usize, rng: &mut ChaCha8Rng) -> Result<()> {
        if let Some((w, b)) = self.layers_mut()[l].params.as_mut() {
            *w = glorot_uniform(w.shape(), rng)?;
            b.fill(0.0);
        }
        Ok(())
    }
}

impl Randomizable for Graph {
    fn weighted_layers(&self) -> Vec<(usize, String)> {
        let nodes = self.nodes();
        (0..nodes.len())
            .rev()
            .filter(|&l| matches!(nodes[l].op, Op::Conv2D { .. } | Op::Dense { .. }))
            .map(|l| (l, nodes[l].name.clone()))
            .collect()
    }

    fn reinitialize(&mut self, l: usize, rng: &mut ChaCha8Rng) -> Result<()> {
        let node = &mut self.nodes_mut()[l];
        if let [w, b] = &mut node.params[..] {
            *w = glorot_uniform(w.shape(), rng)?;
            b.fill(0.0);
        }
        Ok(())
    }
}

impl Randomizable for Model {
    fn weighted_layers(&self) -> Vec<(usize, String)> {
        match self {
            Model::Sequential(m) => m.weighted_layers(),
            Model::Graph(g) => g.weighted_layers(),
        }
    }

    fn reinitialize(&mut self, l: usize, rng: &mut ChaCha8Rng) -> Result<()> {
        match self {
            Model::Sequential(m) => m.reinitialize(l, rng),
            Model::Graph(g) => g.reinitialize(l, rng),
        }
    }
}

/// The randomised models of the chosen stages, in order.
pub fn randomized_models<M: Randomizable>(
    model: &M,
    options: &SanityOptions,
    labels_model: Option<&M>,
) -> Result<Vec<(Stage, M)>> {
    let with_weights = model.weighted_layers();
    let mut out = Vec::new();
    if options.cascading {
        let mut m = model.clone();
        for (l, name) in &with_weights {
            reinitialize(&mut m, *l, options.seed)?;
            let stage = Stage {
                kind: StageKind::Cascading,
                layer: name.clone(),
            };
            out.push((stage, m.clone()));
        }
    }
    if options.independent {
        for (l, name) in &with_weights {
            let mut m = model.clone();
            reinitialize(&mut m, *l, options.seed)?;
            let stage = Stage {
                kind: StageKind::Independent,
                layer: name.clone(),
            };
            out.push((stage, m));
        }
    }
    if let Some(labels) = labels_model {
        check_same_architecture(model, labels)?;
        let stage = Stage {
            kind: StageKind::Labels,
            layer: String::new(),
        };
        out.push((stage, labels.clone()));
    }
    Ok(out)
}

/// The label-randomised model must be the same network, trained differently.
fn check_same_architecture(model: &dyn Classifier, other: &dyn Classifier) -> Result<()> {
    if model.input_shape() != other.input_shape() || model.layer_shapes() != other.layer_shapes() {
        return Err(Error::invalid(
            "sanity",
            "the model trained on permuted labels must have the same layers as the model checked",
        ));
    }
    Ok(())
}

/// Re-initialises layer `l` from a stream seeded by `(seed, l)`: the same
/// layer gets the same weights in the cascading and independent stages. The
/// stream is not the one a build with the same seed draws from, or a briefly
/// trained layer would get back nearly its own weights.
fn reinitialize<M: Randomizable>(model: &mut M, l: usize, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(seed, 0x5a41_7e5d), l as u64));
    model.reinitialize(l, &mut rng)
}

/// Runs the sanity checks of `methods` on `inputs` for `targets` (one class
/// per input, the original model's). `progress` hears the label of each
/// stage as it starts. The model itself is not changed.
#[allow(clippy::too_many_arguments)]
pub fn sanity_check<M: Randomizable>(
    model: &M,
    inputs: &Tensor,
    targets: &[usize],
    methods: &[Method],
    options: &Options,
    sanity: &SanityOptions,
    labels_model: Option<&M>,
    progress: &mut dyn FnMut(&str),
) -> Result<Sanity> {
    let mut originals = Vec::with_capacity(methods.len());
    let mut explainer = Explainer::new(model);
    for &method in methods {
        let raw = explainer
            .attribute(inputs, Some(targets), method, options)?
            .raw;
        originals.push((method, raw));
    }
    let models = randomized_models(model, sanity, labels_model)?;
    let mut results = Vec::with_capacity(models.len() * methods.len());
    for (stage, randomized) in &models {
        progress(&stage.label());
        let mut explainer = Explainer::new(randomized);
        for (method, original) in &originals {
            let raw = explainer
                .attribute(inputs, Some(targets), *method, options)?
                .raw;
            results.push(StageResult {
                method: *method,
                stage: stage.clone(),
                similarity: compare(*method, original, &raw, sanity.top_k_fraction)?,
                maps: normalized(*method, &raw)?,
            });
        }
    }
    let original = originals
        .iter()
        .map(|(m, raw)| Ok((*m, normalized(*m, raw)?)))
        .collect::<Result<_>>()?;
    Ok(Sanity {
        stages: models.into_iter().map(|(s, _)| s).collect(),
        original,
        results,
    })
}

fn normalized(method: Method, raw: &Tensor) -> Result<Tensor> {
    normalize_maps(&drawn_maps(method, raw)?, Normalize::PerInput)
}

/// The [`Similarity`] of each input's maps in two attributions `[N, C, H, W]`
/// of `method`.
pub fn compare(
    method: Method,
    a: &Tensor,
    b: &Tensor,
    top_k_fraction: f64,
) -> Result<Vec<Similarity>> {
    let abs = |t: &Tensor| drawn_maps(method, t).map(|m| m.mapv(f32::abs));
    let (abs_a, abs_b) = (abs(a)?, abs(b)?);
    let (signed_a, signed_b) = (signed_maps(method, a)?, signed_maps(method, b)?);
    let norm_a = normalize_maps(&abs_a, Normalize::PerInput)?;
    let norm_b = normalize_maps(&abs_b, Normalize::PerInput)?;
    let (h, w) = (abs_a.shape()[1], abs_a.shape()[2]);
    let k = ((top_k_fraction * (h * w) as f64).ceil() as usize).clamp(1, h * w);
    let flat = |t: &Tensor, i: usize| -> Vec<f32> {
        t.index_axis(ndarray::Axis(0), i).iter().copied().collect()
    };
    Ok((0..abs_a.shape()[0])
        .map(|i| Similarity {
            spearman_abs: spearman(&flat(&abs_a, i), &flat(&abs_b, i)),
            spearman_signed: spearman(&flat(&signed_a, i), &flat(&signed_b, i)),
            ssim: ssim(&flat(&norm_a, i), &flat(&norm_b, i), h, w, 1.0),
            top_k: top_k_intersection(&flat(&abs_a, i), &flat(&abs_b, i), k),
        })
        .collect())
}

/// How the maps changed once the layers down to `layer` were randomised.
#[derive(Clone, Debug, PartialEq)]
pub struct Randomized {
    /// The lowest layer randomised at this step (all layers above it are too).
    pub layer: String,
    /// Spearman's rank correlation of the absolute maps with the original
    /// ones, per input (NaN if either map is constant).
    pub spearman: Vec<f64>,
}

impl Randomized {
    /// The mean correlation over inputs, leaving out NaNs.
    pub fn mean(&self) -> f64 {
        super::Spread::of(self.spearman.iter().copied()).mean
    }
}

/// The cascading randomisation of one method, with the predicted classes
/// explained (`targets: None`) or the given ones: one entry per layer with
/// weights, from the top down. [`sanity_check`] runs every stage and measure.
pub fn cascading_randomization<M: Randomizable>(
    model: &M,
    inputs: &Tensor,
    targets: Option<&[usize]>,
    method: Method,
    options: &Options,
    seed: u64,
) -> Result<Vec<Randomized>> {
    let targets = match targets {
        Some(t) => t.to_vec(),
        None => crate::saliency::targets_and_scores(model, inputs, None, options.batch_size)?.0,
    };
    let sanity = SanityOptions {
        seed,
        independent: false,
        ..SanityOptions::default()
    };
    let found = sanity_check(
        model,
        inputs,
        &targets,
        &[method],
        options,
        &sanity,
        None,
        &mut |_| {},
    )?;
    Ok(found
        .results
        .into_iter()
        .map(|r| Randomized {
            layer: r.stage.layer,
            spearman: r.similarity.iter().map(|s| s.spearman_abs).collect(),
        })
        .collect())
}

/// Spearman's rank correlation: the Pearson correlation of the ranks, tied
/// values sharing their mean rank. NaN if either side is constant or the
/// lengths differ.
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        return f64::NAN;
    }
    cov / (va * vb).sqrt()
}

/// 1-based ranks, ties given the mean of the ranks they span.
fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) are ranks start+1..=end: mean (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            ranks[k] = rank;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn spearman_of_monotone_maps() {
        let a = [0.1f32, 0.5, 0.2, 0.9];
        let b: Vec<f32> = a.iter().map(|v| v * v * 10.0).collect();
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        let c: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0; 4]).is_nan());
    }

    #[test]
    fn identical_maps_are_similar_in_every_measure() {
        let a = Tensor::from_shape_fn(vec![2, 3, 8, 8], |ix| {
            ((ix[0] * 7 + ix[1] * 5 + ix[2] * 3 + ix[3]) % 11) as f32 - 5.0
        });
        for s in compare(Method::Vanilla, &a, &a, 0.1).unwrap() {
            assert!((s.spearman_abs - 1.0).abs() < 1e-12, "{s:?}");
            assert!((s.spearman_signed - 1.0).abs() < 1e-12, "{s:?}");
            assert!((s.ssim - 1.0).abs() < 1e-9, "{s:?}");
            assert_eq!(s.top_k, 1.0);
        }
        // The negated map has the same magnitude but the opposite sign.
        let s = compare(Method::Vanilla, &a, &(-&a), 0.1).unwrap()[0];
        assert!((s.spearman_abs - 1.0).abs() < 1e-12);
        assert!((s.spearman_signed + 1.0).abs() < 1e-12);
    }
}
