//! The explorer's JSON endpoints, as plain functions of a request: the
//! server ([`super::Server`]) only moves bytes between them and the socket.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /api/model` | the model: input shape, classes, layers, methods, rules, samples |
//! | `GET /api/sample/<i>` | test image `i` of the data set, as the model's input |
//! | `POST /api/image` (an image file) | the file converted to the model's input, with notes |
//! | `POST /api/explain` (JSON) | scores, maps of the chosen methods, the layer-by-layer trace |
//!
//! Every failure is an answer with a status and `{"error": "..."}`; nothing a
//! request sends can make the server panic or read a file.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::model::{argmax, Classifier, Model, Sequential};
use crate::ops::{softmax_rows, ReluRule};
use crate::saliency::trace::{trace, Trace};
use crate::saliency::{self, Explainer, Method, Options};
use crate::tensor::Tensor;

/// The page, with its styles and script inline: it needs nothing from the network.
pub const PAGE: &str = include_str!("page.html");

/// The largest request body accepted for `/api/explain`, in bytes: a
/// 3x224x224 image of floats written as JSON fits with room to spare.
pub const MAX_JSON_BYTES: usize = 8 << 20;

/// The largest image file accepted by `/api/image`, in bytes. The decoded
/// size is bounded separately, by `--max-pixels`.
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;

/// The methods the page shows until the user picks others: every method
/// that costs at most one batched backward pass.
pub const DEFAULT_METHODS: [Method; 8] = [
    Method::Vanilla,
    Method::Rectified,
    Method::Guided,
    Method::GradientXInput,
    Method::SmoothGrad,
    Method::IntegratedGradients,
    Method::GradCam,
    Method::GuidedGradCam,
];

/// The test images the page can pick from.
pub struct Samples {
    /// Where they came from, for the page (`fixtures/mnist-sample, test split`).
    pub source: String,
    /// The test split.
    pub set: Dataset,
}

/// What the server knows: the model, its name and the test images.
pub struct Explorer {
    model: Model,
    model_name: String,
    samples: Option<Samples>,
    options: Options,
    page: Option<std::path::PathBuf>,
}

/// An answer: status, content type and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(e) => Reply::error(500, &format!("cannot write the answer as JSON: {e}")),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Reply {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn from_result<T: Serialize>(result: Result<T>) -> Reply {
        match result {
            Ok(value) => Reply::json(&value),
            Err(e) => Reply::error(400, &e.to_string()),
        }
    }
}

/// `GET /api/model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The checkpoint's file name.
    pub model: String,
    /// `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Class names, one per class.
    pub classes: Vec<String>,
    /// Every layer: name, Keras type and per-sample output shape.
    pub layers: Vec<LayerInfo>,
    /// Every saliency method.
    pub methods: Vec<MethodInfo>,
    /// The three ReLU rules of the backward pass.
    pub rules: Vec<RuleInfo>,
    /// The test images, if a data set was given.
    pub samples: Option<SamplesInfo>,
    /// The largest image file `/api/image` takes, in bytes.
    pub max_upload_bytes: usize,
}

/// One layer, for the page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    pub kind: String,
    pub output_shape: Vec<usize>,
}

/// One method, for the page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodInfo {
    /// The command-line name.
    pub name: String,
    /// The name in prose.
    pub title: String,
    /// One map per input, the same in every channel (CAMs, occlusion).
    pub spatial: bool,
    /// Shown until the user picks otherwise.
    pub default: bool,
}

/// One ReLU rule, for the page's switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleInfo {
    /// `gradient`, `rectified` or `guided`.
    pub name: String,
    /// The method it gives.
    pub title: String,
    /// The ReLU backward, with `x` the input and `g` the incoming gradient.
    pub formula: String,
}

/// The test images, for the page's picker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplesInfo {
    pub source: String,
    pub count: usize,
}

/// `GET /api/sample/<i>` and `POST /api/image`: an image as the model's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageAnswer {
    /// `C·H·W` values in `[0, 1]`, channel by channel, row by row.
    pub pixels: Vec<f32>,
    /// The labelled class, for a test image.
    pub label: Option<usize>,
    /// How the image was fitted to the model's input.
    pub notes: Vec<String>,
}

/// `POST /api/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// `C·H·W` values in `[0, 1]`, channel by channel, row by row.
    pub pixels: Vec<f32>,
    /// The class to explain; `None`: the predicted one.
    #[serde(default)]
    pub class: Option<usize>,
    /// Method names (`vanilla`, `grad-cam`, ...), each at most once.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The ReLU rule of the traced backward pass: `gradient`, `rectified` or
    /// `guided`; no trace without one.
    #[serde(default)]
    pub rule: Option<String>,
}

/// The answer to `POST /api/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainAnswer {
    /// The linear class scores.
    pub logits: Vec<f32>,
    /// Their softmax.
    pub probabilities: Vec<f32>,
    /// The class with the highest score.
    pub predicted: usize,
    /// The class explained.
    pub target: usize,
    /// One per method asked for, in the order asked.
    pub maps: Vec<MapAnswer>,
    /// The backward pass node by node, if a rule was given.
    pub trace: Option<TraceAnswer>,
    /// Milliseconds spent on the maps, the trace, and in all.
    pub timing_ms: Timing,
}

/// Where the time of one answer went, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub maps: f64,
    pub trace: f64,
    pub total: f64,
}

/// One method's attribution of the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapAnswer {
    pub method: String,
    pub title: String,
    pub spatial: bool,
    /// Raw, signed attributions, `C·H·W`.
    pub raw: Vec<f32>,
    /// The map `salient` draws (`saliency::maps`, per input), `H·W` in `[0, 1]`.
    pub map: Vec<f32>,
    /// The method's notes (IG's completeness, a CAM's layer, ...).
    pub notes: Vec<String>,
    /// Milliseconds this method took.
    pub ms: f64,
}

/// The traced backward pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceAnswer {
    /// The ReLU rule.
    pub rule: String,
    /// From the input (first) to the class scores (last).
    pub nodes: Vec<NodeAnswer>,
    /// For each pixel of the input, row by row: the path of its largest
    /// contributions, one flat unit index per node from the input up.
    pub paths: Vec<Vec<usize>>,
}

/// One tape node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAnswer {
    pub name: String,
    pub op: String,
    /// Per-sample shape.
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    /// `∂y_c/∂value`, as it arrived at the node.
    pub gradient: Vec<f32>,
    /// ReLU nodes: 0 open, 1 closed by `x ≤ 0`, 2 by `g ≤ 0`, 3 by both.
    pub gates: Option<Vec<u8>>,
    /// Max pooling: per output unit, the flat index of its winner in the
    /// previous node.
    pub winners: Option<Vec<usize>>,
}

/// A rule by its name in requests.
pub fn parse_rule(name: &str) -> Result<ReluRule> {
    match name {
        "gradient" => Ok(ReluRule::Gradient),
        "rectified" => Ok(ReluRule::Rectified),
        "guided" => Ok(ReluRule::Guided),
        other => Err(Error::invalid(
            "rule",
            format!("unknown ReLU rule {other:?}; expected gradient, rectified or guided"),
        )),
    }
}

fn rule_name(rule: ReluRule) -> &'static str {
    match rule {
        ReluRule::Gradient => "gradient",
        ReluRule::Rectified => "rectified",
        ReluRule::Guided => "guided",
    }
}

impl Explorer {
    /// An explorer of `model` (named `model_name` on the page), with test
    /// images from `samples` if given.
    pub fn new(
        model: impl Into<Model>,
        model_name: String,
        samples: Option<Samples>,
    ) -> Result<Self> {
        let model = model.into();
        if let Some(s) = &samples {
            if s.set.shape() != model.input_shape() || s.set.num_classes() != model.num_classes() {
                return Err(Error::invalid(
                    "data",
                    format!(
                        "the model takes {:?} images in {} classes, but {} holds {:?} images in {} classes",
                        model.input_shape(),
                        model.num_classes(),
                        s.source,
                        s.set.shape(),
                        s.set.num_classes()
                    ),
                ));
            }
        }
        Ok(Explorer {
            model,
            model_name,
            samples,
            options: Options::default(),
            page: None,
        })
    }

    /// Serves the page from `path`, read at every request, instead of the
    /// built-in one: for working on the page without rebuilding.
    pub fn with_page_file(mut self, path: std::path::PathBuf) -> Self {
        self.page = Some(path);
        self
    }

    /// The model explained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Answers one request. `body` has already been bounded by the server.
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let path = path.split(['?', '#']).next().unwrap_or("");
        match (method, path) {
            ("GET", "/" | "/index.html") => self.page(),
            ("GET", "/api/model") => Reply::json(&self.info()),
            ("GET", p) if p.starts_with("/api/sample/") => {
                Reply::from_result(self.sample(&p["/api/sample/".len()..]))
            }
            ("POST", "/api/image") => Reply::from_result(self.image(body)),
            ("POST", "/api/explain") => match serde_json::from_slice::<ExplainRequest>(body) {
                Ok(request) => Reply::from_result(self.explain(&request)),
                Err(e) => Reply::error(
                    400,
                    &format!("the request is not valid JSON for /api/explain: {e}"),
                ),
            },
            (_, "/" | "/index.html" | "/api/model" | "/api/image" | "/api/explain") => {
                Reply::error(405, &format!("{method} is not allowed on {path}"))
            }
            _ => Reply::error(404, &format!("nothing here: {path}")),
        }
    }

    fn page(&self) -> Reply {
        let body = match &self.page {
            Some(file) => match std::fs::read(file) {
                Ok(bytes) => bytes,
                Err(e) => return Reply::error(500, &format!("{}: {e}", file.display())),
            },
            None => PAGE.as_bytes().to_vec(),
        };
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    /// `GET /api/model`.
    pub fn info(&self) -> ModelInfo {
        let model = &self.model;
        let k = model.num_classes();
        ModelInfo {
            model: self.model_name.clone(),
            input_shape: model.input_shape(),
            classes: (0..k)
                .map(|c| crate::cli::class_label(model.class_names(), c))
                .collect(),
            layers: match model {
                Model::Sequential(m) => m
                    .layers()
                    .iter()
                    .map(|l| LayerInfo {
                        name: l.name.clone(),
                        kind: keras_type(&l.spec).into(),
                        output_shape: l.output_shape.clone(),
                    })
                    .collect(),
                Model::Graph(g) => g
                    .nodes()
                    .iter()
                    .map(|n| LayerInfo {
                        name: n.name.clone(),
                        kind: n.op.kind().into(),
                        output_shape: n.output_shape.clone(),
                    })
                    .collect(),
            },
            methods: Method::ALL
                .iter()
                .map(|&m| MethodInfo {
                    name: m.name().into(),
                    title: m.title().into(),
                    spatial: m.is_spatial(),
                    default: DEFAULT_METHODS.contains(&m),
                })
                .collect(),
            rules: [
                ("gradient", "Gradient", "1[x > 0] · g"),
                ("rectified", "Deconvnet", "1[g > 0] · g"),
                ("guided", "Guided backprop", "1[x > 0] · 1[g > 0] · g"),
            ]
            .into_iter()
            .map(|(name, title, formula)| RuleInfo {
                name: name.into(),
                title: title.into(),
                formula: formula.into(),
            })
            .collect(),
            samples: self.samples.as_ref().map(|s| SamplesInfo {
                source: s.source.clone(),
                count: s.set.len(),
            }),
            max_upload_bytes: MAX_UPLOAD_BYTES,
        }
    }

    /// `GET /api/sample/<index>`.
    pub fn sample(&self, index: &str) -> Result<ImageAnswer> {
        let Some(samples) = &self.samples else {
            return Err(Error::invalid(
                "sample",
                "no data set was given: start explore with --dataset and --data",
            ));
        };
        let n = samples.set.len();
        let i: usize = index.parse().map_err(|_| {
            Error::invalid(
                "sample",
                format!(
                    "{index:?} is not an image index; expected 0 to {}",
                    n.saturating_sub(1)
                ),
            )
        })?;
        if i >= n {
            return Err(Error::invalid(
                "sample",
                format!(
                    "image {i} is out of range: the test split has {n} images (0 to {})",
                    n.saturating_sub(1)
                ),
            ));
        }
        let image = samples.set.batch(&[i])?;
        Ok(ImageAnswer {
            pixels: image.iter().copied().collect(),
            label: Some(samples.set.labels[i]),
            notes: Vec::new(),
        })
    }

    /// `POST /api/image`: a PNG or JPEG file, fitted to the model's input as
    /// `salient predict` fits it.
    pub fn image(&self, bytes: &[u8]) -> Result<ImageAnswer> {
        if bytes.is_empty() {
            return Err(Error::invalid(
                "image",
                "the upload is empty: send a PNG or JPEG file",
            ));
        }
        let name = Path::new("upload");
        let decoded = data::decode::decode_image(bytes, name)?;
        let [c, h, w] = self.model.input_shape();
        let (input, notes) = data::convert::fit_decoded(&decoded, c, h, w)?;
        Ok(ImageAnswer {
            pixels: input.iter().copied().collect(),
            label: None,
            notes,
        })
    }

    /// `POST /api/explain`.
    pub fn explain(&self, request: &ExplainRequest) -> Result<ExplainAnswer> {
        let start = Instant::now();
        let model = &self.model;
        let [c, h, w] = model.input_shape();
        if request.pixels.len() != c * h * w {
            return Err(Error::invalid(
                "pixels",
                format!(
                    "expected {} values ({c}x{h}x{w}), got {}",
                    c * h * w,
                    request.pixels.len()
                ),
            ));
        }
        if let Some((i, v)) = request
            .pixels
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(Error::invalid(
                "pixels",
                format!("value {i} is {v}; pixels must lie in [0, 1]"),
            ));
        }
        let k = model.num_classes();
        if let Some(class) = request.class.filter(|&c| c >= k) {
            return Err(Error::invalid(
                "class",
                format!(
                    "class {class} is out of range: the model has {k} classes (0 to {})",
                    k - 1
                ),
            ));
        }
        let mut methods: Vec<Method> = Vec::new();
        for name in &request.methods {
            let m: Method = name.parse()?;
            if methods.contains(&m) {
                return Err(Error::invalid(
                    "methods",
                    format!("{name} is asked for twice"),
                ));
            }
            methods.push(m);
        }
        let rule = request.rule.as_deref().map(parse_rule).transpose()?;

        let image = Tensor::from_shape_vec(vec![1, c, h, w], request.pixels.clone())
            .map_err(|e| Error::invalid("pixels", e.to_string()))?;
        let logits = model.predict_scores(&image, 1, &mut Default::default())?;
        let mut probs = Tensor::zeros(logits.raw_dim());
        softmax_rows(&logits, &mut probs);
        let logits: Vec<f32> = logits.iter().copied().collect();
        let predicted = argmax(logits.iter().copied());
        let target = request.class.unwrap_or(predicted);

        let maps_start = Instant::now();
        let mut explainer = Explainer::new(model);
        let mut maps = Vec::with_capacity(methods.len());
        for method in methods {
            let t = Instant::now();
            let a = explainer.attribute(&image, Some(&[target]), method, &self.options)?;
            let drawn = saliency::maps(method, &a.raw, crate::images::Normalize::PerInput)?;
            maps.push(MapAnswer {
                method: method.name().into(),
                title: method.title().into(),
                spatial: method.is_spatial(),
                raw: a.raw.iter().copied().collect(),
                map: drawn.iter().copied().collect(),
                notes: a.notes,
                ms: t.elapsed().as_secs_f64() * 1e3,
            });
        }
        let maps_ms = maps_start.elapsed().as_secs_f64() * 1e3;

        let trace_start = Instant::now();
        // The layer view follows a stack's layers; a graph shows maps only.
        let trace = match (rule, model.as_sequential()) {
            (Some(rule), Some(stack)) => Some(trace_answer(
                stack,
                &trace(stack, &image, Some(target), rule)?,
            )?),
            _ => None,
        };
        Ok(ExplainAnswer {
            logits,
            probabilities: probs.iter().copied().collect(),
            predicted,
            target,
            maps,
            trace,
            timing_ms: Timing {
                maps: maps_ms,
                trace: trace_start.elapsed().as_secs_f64() * 1e3,
                total: start.elapsed().as_secs_f64() * 1e3,
            },
        })
    }
}

/// A trace as the page reads it.
pub fn trace_answer(model: &Sequential, trace: &Trace) -> Result<TraceAnswer> {
    let nodes = trace
        .nodes
        .iter()
        .map(|n| NodeAnswer {
            name: n.name.clone(),
            op: n.op.name().into(),
            shape: n.value.shape().to_vec(),
            value: n.value.iter().copied().collect(),
            gradient: n.gradient.iter().copied().collect(),
            gates: n
                .gates
                .as_ref()
                .map(|g| g.iter().map(|g| g.code()).collect()),
            winners: n.winners.clone(),
        })
        .collect();
    Ok(TraceAnswer {
        rule: rule_name(trace.rule).into(),
        nodes,
        paths: trace.pixel_paths(model)?,
    })
}

/// Keras's class name for a layer.
fn keras_type(spec: &crate::layers::LayerSpec) -> &'static str {
    use crate::layers::LayerSpec::*;
    match spec {
        Conv2D { .. } => "Conv2D",
        MaxPooling2D { .. } => "MaxPooling2D",
        Dropout { .. } => "Dropout",
        Flatten => "Flatten",
        Dense { .. } => "Dense",
    }
}
