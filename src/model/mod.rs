//! Sequential models: a stack of named layers, the tutorial's CNN as a preset,
//! batched prediction and evaluation, and checkpoints.
//!
//! ```
//! use salient::layers::Activation;
//! use salient::model::Sequential;
//!
//! // The tutorial's network for MNIST, layer by layer.
//! let model = Sequential::builder([1, 28, 28])
//!     .conv2d(32, 3, Activation::Relu)   // [32, 26, 26]
//!     .max_pooling2d(2)                  // [32, 13, 13]
//!     .dropout(0.25)
//!     .conv2d(64, 3, Activation::Relu)   // [64, 11, 11]
//!     .max_pooling2d(2)                  // [64, 5, 5]
//!     .dropout(0.25)
//!     .flatten()                         // [1600]
//!     .dense(256, Activation::Relu)      // [256]
//!     .dense(10, Activation::Softmax)    // [10]
//!     .name("visualized_layer")
//!     .build(42)
//!     .unwrap();
//! assert_eq!(model.layers()[3].name, "conv2d_1");
//! assert_eq!(model.output_shape(), &[10]);
//! ```

mod checkpoint;
pub mod graph;

use ndarray::{Axis, IxDyn, Slice};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::layers::{glorot_uniform, mix, Activation, Layer, LayerSpec, Mode};
use crate::limits::{product, thousands, Limits, MAX_PARAMS_FLAG};
use crate::ops::{softmax_cross_entropy_forward, Padding};
use crate::tape::{Kernels, Tape, Var};
use crate::tensor::{Pool, Tensor};

pub use checkpoint::{
    load, load_bytes, load_graph_bytes, load_model, save, save_graph, Architecture, GraphRecord,
    LayerRecord, NodeRecord,
};

/// A model read from a file ([`load_model`]): a stack of layers, or a graph
/// (a graph checkpoint, or an ONNX model).
#[derive(Clone, Debug)]
pub enum Model {
    Sequential(Sequential),
    Graph(graph::Graph),
}

impl Model {
    /// The model as the saliency methods see it.
    pub fn classifier(&self) -> &dyn Classifier {
        match self {
            Model::Sequential(m) => m,
            Model::Graph(g) => g,
        }
    }

    /// The stack, if the model is one (training, the sanity checks'
    /// randomisation and the explorer's layer view need one).
    pub fn as_sequential(&self) -> Option<&Sequential> {
        match self {
            Model::Sequential(m) => Some(m),
            Model::Graph(_) => None,
        }
    }

    /// The model as a graph: a graph as it is, a stack converted.
    pub fn to_graph(&self) -> Result<graph::Graph> {
        match self {
            Model::Sequential(m) => m.to_graph(),
            Model::Graph(g) => Ok(g.clone()),
        }
    }

    /// Saves the model as a checkpoint: a stack as [`save`] does, a graph as
    /// [`save_graph`] does.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        match self {
            Model::Sequential(m) => save(m, path),
            Model::Graph(g) => save_graph(g, path),
        }
    }
}

/// Any function built on the tape as a classifier, as Captum's
/// `forward_func`: it maps a batch `[N, C, H, W]` to class scores `[N, K]`,
/// and every method that needs no layer (the gradients, SmoothGrad,
/// integrated gradients, occlusion, ...) explains it. It has no layers, so
/// the CAM methods refuse it.
///
/// ```
/// use salient::model::FnClassifier;
/// use salient::saliency::{attribute, Method, Options};
/// use salient::Tensor;
///
/// // Two classes scored linearly from a 1x2x2 image: y = flatten(x) · W.
/// let w = Tensor::from_shape_vec(vec![4, 2], vec![1., 0., 2., 0., 3., 0., 4., -1.]).unwrap();
/// let model = FnClassifier::new([1, 2, 2], 2, move |tape, x| {
///     let flat = tape.flatten(x)?;
///     let w = tape.constant(w.clone());
///     tape.matmul(flat, w)
/// });
/// let x = Tensor::ones(vec![1, 1, 2, 2]);
/// let map = attribute(&model, &x, Some(&[0]), Method::Vanilla, &Options::default())?;
/// // The gradient of y₀ is W's first column.
/// assert_eq!(map.raw.iter().copied().collect::<Vec<f32>>(), [1., 2., 3., 4.]);
/// # Ok::<(), salient::Error>(())
/// ```
pub struct FnClassifier<F> {
    input_shape: [usize; 3],
    num_classes: usize,
    forward: F,
}

impl<F> FnClassifier<F>
where
    F: for<'t> Fn(&mut Tape<'t>, Var) -> Result<Var> + Sync,
{
    /// A classifier of `[C, H, W]` inputs into `num_classes` scores, computed
    /// by `forward` on the tape.
    pub fn new(input_shape: [usize; 3], num_classes: usize, forward: F) -> Self {
        FnClassifier {
            input_shape,
            num_classes,
            forward,
        }
    }
}

impl<F> Classifier for FnClassifier<F>
where
    F: for<'t> Fn(&mut Tape<'t>, Var) -> Result<Var> + Sync,
{
    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn layer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        Vec::new()
    }

    fn default_cam_layer(&self) -> Option<usize> {
        None
    }

    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)> {
        if keep.is_some() {
            return Err(Error::invalid(
                "model",
                "a function has no layers to keep (the CAM methods need a model with layers)",
            ));
        }
        let scores = (self.forward)(tape, x)?;
        let shape = tape.value(scores)?.shape().to_vec();
        let n = tape.value(x)?.shape()[0];
        if shape != [n, self.num_classes] {
            return Err(Error::invalid(
                "model",
                format!(
                    "the function gave scores of shape {shape:?}, expected [{n}, {}]",
                    self.num_classes
                ),
            ));
        }
        Ok((scores, None))
    }
}

impl From<Sequential> for Model {
    fn from(m: Sequential) -> Self {
        Model::Sequential(m)
    }
}

impl From<graph::Graph> for Model {
    fn from(g: graph::Graph) -> Self {
        Model::Graph(g)
    }
}

impl Classifier for Model {
    fn input_shape(&self) -> [usize; 3] {
        self.classifier().input_shape()
    }

    fn num_classes(&self) -> usize {
        self.classifier().num_classes()
    }

    fn layer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.classifier().layer_shapes()
    }

    fn default_cam_layer(&self) -> Option<usize> {
        self.classifier().default_cam_layer()
    }

    fn class_names(&self) -> &[String] {
        self.classifier().class_names()
    }

    fn num_params(&self) -> usize {
        self.classifier().num_params()
    }

    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)> {
        self.classifier().record_scores(tape, x, keep)
    }

    fn predict_scores(
        &self,
        images: &Tensor,
        batch_size: usize,
        pool: &mut Pool,
    ) -> Result<Tensor> {
        self.classifier().predict_scores(images, batch_size, pool)
    }
}

/// What the saliency methods need of a model: its shapes, and its class
/// scores recorded on a tape with one layer's output kept. [`Sequential`] and
/// [`graph::Graph`] are classifiers; so is any model of your own that records
/// its forward pass on a [`Tape`].
pub trait Classifier: Sync {
    /// Per-sample input shape `[C, H, W]`.
    fn input_shape(&self) -> [usize; 3];

    /// The number of class scores.
    fn num_classes(&self) -> usize;

    /// Name and per-sample output shape of each layer, by index.
    fn layer_shapes(&self) -> Vec<(String, Vec<usize>)>;

    /// The layer a class activation map explains unless told otherwise.
    fn default_cam_layer(&self) -> Option<usize>;

    /// Names of the classes, in label order; empty if the model has none.
    fn class_names(&self) -> &[String] {
        &[]
    }

    /// Trainable values and stored statistics, for descriptions.
    fn num_params(&self) -> usize {
        0
    }

    /// Records the forward pass of the batch `x` on `tape` with the head
    /// linear, weights as constants and dropout off: the class scores
    /// `[N, K]`, and layer `keep`'s output if asked for.
    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)>;

    /// The class scores of `images`, `batch_size` at a time, on inference tapes.
    fn predict_scores(
        &self,
        images: &Tensor,
        batch_size: usize,
        pool: &mut Pool,
    ) -> Result<Tensor> {
        self.check_input(images)?;
        let n = images.shape()[0];
        let mut out = Tensor::zeros(vec![n, self.num_classes()]);
        for start in (0..n).step_by(batch_size.max(1)) {
            let range = start..(start + batch_size.max(1)).min(n);
            let batch = images
                .slice_axis(Axis(0), Slice::from(range.clone()))
                .to_owned();
            let mut tape = Tape::inference_with_pool(std::mem::take(pool));
            let x = tape.constant(batch);
            let result = self.record_scores(&mut tape, x, None).and_then(|(y, _)| {
                let rows = range.len();
                let y = tape.value(y)?;
                let y = y
                    .to_shape(IxDyn(&[rows, self.num_classes()]))
                    .map_err(|e| {
                        Error::invalid(
                            "model",
                            format!("class scores of shape {:?}: {e}", y.shape()),
                        )
                    })?;
                out.slice_axis_mut(Axis(0), Slice::from(range)).assign(&y);
                Ok(())
            });
            *pool = tape.into_pool();
            result?;
        }
        Ok(out)
    }

    /// Checks that `x` is a batch `[N, C, H, W]` of the model's input shape.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let shape = self.input_shape();
        if x.ndim() != 4 || x.shape()[1..] != shape {
            let mut want = vec![x.shape().first().copied().unwrap_or(1)];
            want.extend(shape);
            return Err(crate::tensor::shape_error(
                "model",
                "the input batch must be [N, C, H, W] with the model's input shape",
                "input",
                x.shape(),
                "expected",
                &want,
            ));
        }
        Ok(())
    }
}

impl Classifier for Sequential {
    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn num_classes(&self) -> usize {
        Sequential::num_classes(self)
    }

    fn class_names(&self) -> &[String] {
        Sequential::class_names(self)
    }

    fn num_params(&self) -> usize {
        Sequential::num_params(self)
    }

    fn layer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.layers
            .iter()
            .map(|l| (l.name.clone(), l.output_shape.clone()))
            .collect()
    }

    /// The last Conv2D layer (its post-activation output, as Keras's).
    fn default_cam_layer(&self) -> Option<usize> {
        self.layers
            .iter()
            .rposition(|l| matches!(l.spec, LayerSpec::Conv2D { .. }))
    }

    fn record_scores<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        keep: Option<usize>,
    ) -> Result<(Var, Option<Var>)> {
        let pass = self.forward_keeping(tape, x, Mode::Infer, Head::Linear, keep)?;
        let kept = keep.and_then(|l| pass.outputs.get(l).copied().flatten());
        Ok((pass.last(), kept))
    }

    /// Through [`Sequential::predict_with_pool`]: its fastest kernels.
    fn predict_scores(
        &self,
        images: &Tensor,
        batch_size: usize,
        pool: &mut Pool,
    ) -> Result<Tensor> {
        self.predict_with_pool(images, batch_size, Head::Linear, pool)
    }
}

/// What the model's last layer does in a forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Head {
    /// As built: a softmax head gives probabilities.
    #[default]
    AsBuilt,
    /// A softmax head is made linear, giving the class scores (logits). This is
    /// keras-vis's swap for saliency, done per pass: the model is not changed.
    Linear,
}

/// A stack of layers, each feeding the next.
#[derive(Clone, Debug)]
pub struct Sequential {
    input_shape: [usize; 3],
    layers: Vec<Layer>,
    class_names: Vec<String>,
}

/// The vars of one forward pass: what saliency methods need to reach into.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The input batch.
    pub input: Var,
    /// Each layer's output before its activation (`None` where there is none
    /// to keep: Conv2D + ReLU run as one fused op).
    pub pre_activations: Vec<Option<Var>>,
    /// Each layer's output after its activation (what Keras calls the layer's
    /// output; Grad-CAM's "last convolution layer" is one of these). `None`
    /// for a convolution whose output went straight into the pooling after
    /// it, in one op (see [`Sequential::forward_keeping`]).
    pub outputs: Vec<Option<Var>>,
    /// Each layer's kernel and bias, where it has them.
    pub params: Vec<Option<(Var, Var)>>,
}

impl Forward {
    /// The last layer's output: probabilities or, with [`Head::Linear`], scores.
    pub fn last(&self) -> Var {
        self.outputs
            .iter()
            .rev()
            .flatten()
            .next()
            .copied()
            .unwrap_or(self.input)
    }

    /// Adds the next layer's vars.
    fn push(&mut self, vars: crate::layers::LayerVars) {
        self.pre_activations.push(vars.pre_activation);
        self.outputs.push(Some(vars.output));
        self.params.push(vars.params);
    }
}

impl Sequential {
    /// Starts a model for inputs of shape `[C, H, W]`.
    pub fn builder(input_shape: [usize; 3]) -> SequentialBuilder {
        SequentialBuilder {
            input_shape,
            layers: Vec::new(),
        }
    }

    /// The tutorial's CNN for `[C, H, W]` inputs and `classes` classes: Conv2D 32
    /// 3x3 relu, MaxPool 2, Dropout 0.25, Conv2D 64 3x3 relu, MaxPool 2, Dropout
    /// 0.25, Flatten, Dense 256 relu, Dense `classes` softmax named
    /// `visualized_layer`.
    pub fn tutorial(input_shape: [usize; 3], classes: usize, seed: u64) -> Result<Self> {
        Self::builder(input_shape)
            .conv2d(32, 3, Activation::Relu)
            .max_pooling2d(2)
            .dropout(0.25)
            .conv2d(64, 3, Activation::Relu)
            .max_pooling2d(2)
            .dropout(0.25)
            .flatten()
            .dense(256, Activation::Relu)
            .dense(classes, Activation::Softmax)
            .name("visualized_layer")
            .build(seed)
    }

    /// The model of a checked plan, with the parameters `params(index,
    /// layer)` gives each layer (`None` for layers without any).
    pub(crate) fn from_plan(
        input_shape: [usize; 3],
        plan: Vec<Planned>,
        mut params: impl FnMut(usize, &Planned) -> Result<Option<(Tensor, Tensor)>>,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(plan.len());
        for (i, planned) in plan.into_iter().enumerate() {
            let tensors = params(i, &planned)?;
            layers.push(planned.into_layer(tensors));
        }
        let classes: usize = layers.last().map_or(0, |l| l.output_shape.iter().product());
        Ok(Sequential {
            input_shape,
            layers,
            class_names: (0..classes).map(|i| i.to_string()).collect(),
        })
    }

    /// Per-sample input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Per-sample output shape, e.g. `[10]`.
    pub fn output_shape(&self) -> &[usize] {
        self.layers
            .last()
            .map_or(&self.input_shape[..], |l| &l.output_shape)
    }

    /// Number of classes the last layer scores.
    pub fn num_classes(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Mutable layers (for optimisers and checkpoint loading).
    pub fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// The index of the layer called `name`.
    pub fn layer_index(&self, name: &str) -> Result<usize> {
        self.layers
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
                Error::invalid(
                    "model",
                    format!("no layer named '{name}' (layers: {})", names.join(", ")),
                )
            })
    }

    /// Class names (label `i` is `class_names()[i]`); `"0"`, `"1"`, ... unless set.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Sets the class names, one per output.
    pub fn set_class_names(&mut self, names: Vec<String>) -> Result<()> {
        if names.len() != self.num_classes() {
            return Err(Error::invalid(
                "model",
                format!(
                    "{} class names for {} outputs",
                    names.len(),
                    self.num_classes()
                ),
            ));
        }
        self.class_names = names;
        Ok(())
    }

    /// Every kernel and bias, layer by layer (kernel first).
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.layers
            .iter()
            .filter_map(|l| l.params.as_ref())
            .flat_map(|(w, b)| [w, b])
    }

    /// [`params`](Sequential::params), mutable, in the same order.
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.layers
            .iter_mut()
            .filter_map(|l| l.params.as_mut())
            .flat_map(|(w, b)| [w, b])
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.params().map(Tensor::len).sum()
    }

    /// Checks that a batch is `[N, C, H, W]` with this model's `[C, H, W]`.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        <Self as Classifier>::check_input(self, x)
    }

    /// Records the whole model on `tape`.
    ///
    /// In [`Mode::Train`] the parameters are differentiated and dropout is on;
    /// in [`Mode::Infer`] they are constants read in place and dropout is off.
    /// [`Head::Linear`] turns a softmax head into a linear one for this pass.
    /// A convolution followed by a 2x2 pooling is recorded as one op (unless
    /// the tape runs [`Kernels::Reference`]), so its own output is not on the
    /// tape: use [`forward_keeping`](Self::forward_keeping) to read it.
    pub fn forward<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
        head: Head,
    ) -> Result<Forward> {
        self.forward_keeping(tape, x, mode, head, None)
    }

    /// [`forward`](Self::forward) with layer `keep`'s output on the tape (not
    /// fused into the op after it), for a method that reads it or its
    /// gradient.
    pub fn forward_keeping<'a>(
        &'a self,
        tape: &mut Tape<'a>,
        x: Var,
        mode: Mode,
        head: Head,
        keep: Option<usize>,
    ) -> Result<Forward> {
        self.check_input(tape.value(x)?)?;
        let mut pass = Forward {
            input: x,
            pre_activations: Vec::with_capacity(self.layers.len()),
            outputs: Vec::with_capacity(self.layers.len()),
            params: Vec::with_capacity(self.layers.len()),
        };
        let fuse = tape.kernels() != Kernels::Reference;
        let mut h = x;
        let last = self.layers.len().saturating_sub(1);
        let mut i = 0;
        while i < self.layers.len() {
            let layer = &self.layers[i];
            // A convolution and the pooling after it, as one op.
            match self.layers.get(i + 1) {
                Some(next) if fuse && keep != Some(i) => {
                    if let Some((params, pooled)) = layer.forward_with_pool(next, tape, h, mode)? {
                        pass.pre_activations.extend([None, Some(pooled)]);
                        pass.outputs.extend([None, Some(pooled)]);
                        pass.params.extend([Some(params), None]);
                        h = pooled;
                        i += 2;
                        continue;
                    }
                }
                _ => {}
            }
            let activation = match (head, layer.spec.activation()) {
                (Head::Linear, Some(Activation::Softmax)) if i == last => Some(Activation::Linear),
                _ => None,
            };
            pass.push(layer.forward(tape, h, mode, activation, i)?);
            h = pass.last();
            i += 1;
        }
        Ok(pass)
    }

    /// The last layer's output for a batch, computed `batch_size` images at a
    /// time on an inference tape. With [`Head::AsBuilt`] and a softmax head, the
    /// rows are class probabilities.
    pub fn predict(&self, images: &Tensor, batch_size: usize, head: Head) -> Result<Tensor> {
        self.predict_with_pool(images, batch_size, head, &mut Pool::new())
    }

    /// [`predict`](Self::predict) with buffers from `pool`, left in it for
    /// the next call (evaluating a data set batch by batch).
    pub fn predict_with_pool(
        &self,
        images: &Tensor,
        batch_size: usize,
        head: Head,
        pool: &mut Pool,
    ) -> Result<Tensor> {
        self.check_input(images)?;
        if batch_size == 0 {
            return Err(Error::invalid(
                "predict",
                "the batch size must be at least 1",
            ));
        }
        let n = images.shape()[0];
        let mut out = Tensor::zeros(IxDyn(&[n, self.num_classes()]));
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            let mut tape =
                Tape::inference_with_pool(std::mem::take(pool)).with_kernels(Kernels::Winograd);
            let batch = images
                .slice_axis(Axis(0), Slice::from(start..end))
                .to_owned();
            let x = tape.constant(batch);
            let pass = self.forward(&mut tape, x, Mode::Infer, head)?;
            let y = tape.value(pass.last())?;
            let rows = y
                .view()
                .into_shape_with_order(IxDyn(&[end - start, self.num_classes()]));
            let rows = rows.map_err(|e| Error::invalid("predict", e.to_string()))?;
            out.slice_axis_mut(Axis(0), Slice::from(start..end))
                .assign(&rows);
            *pool = tape.into_pool();
        }
        Ok(out)
    }

    /// Mean categorical cross-entropy and accuracy over a labelled batch, with
    /// dropout off (Keras's `evaluate`).
    pub fn evaluate(
        &self,
        images: &Tensor,
        labels: &[usize],
        batch_size: usize,
    ) -> Result<(f32, f32)> {
        let logits = self.predict(images, batch_size, Head::Linear)?;
        loss_and_accuracy(&logits, labels)
    }
}

/// Mean softmax cross-entropy and accuracy of `logits: [N, K]` against labels.
pub fn loss_and_accuracy(logits: &Tensor, labels: &[usize]) -> Result<(f32, f32)> {
    let &[n, k] = logits.shape() else {
        return Err(Error::invalid(
            "loss_and_accuracy",
            format!("logits must be [N, K], found shape {:?}", logits.shape()),
        ));
    };
    if n != labels.len() {
        return Err(Error::invalid(
            "loss_and_accuracy",
            format!("{n} rows of logits but {} labels", labels.len()),
        ));
    }
    let targets = crate::ops::one_hot(labels, k)?;
    let (loss, _) = softmax_cross_entropy_forward(logits, &targets, &mut Pool::new())?;
    let correct = logits
        .outer_iter()
        .zip(labels)
        .filter(|(row, &label)| argmax(row.iter().copied()) == label)
        .count();
    Ok((loss, correct as f32 / labels.len().max(1) as f32))
}

/// Index of the largest value (the first, on ties).
pub fn argmax(values: impl IntoIterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.into_iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Builds a [`Sequential`] layer by layer, as Keras's `Sequential([...])`.
#[derive(Clone, Debug)]
pub struct SequentialBuilder {
    input_shape: [usize; 3],
    layers: Vec<(LayerSpec, Option<String>)>,
}

impl SequentialBuilder {
    /// Adds any layer.
    pub fn layer(mut self, spec: LayerSpec) -> Self {
        self.layers.push((spec, None));
        self
    }

    /// Names the layer added last (otherwise it gets Keras's automatic name).
    pub fn name(mut self, name: &str) -> Self {
        if let Some(last) = self.layers.last_mut() {
            last.1 = Some(name.to_string());
        }
        self
    }

    /// `Conv2D(filters, (k, k), activation)` with stride 1 and 'valid' padding.
    pub fn conv2d(self, filters: usize, k: usize, activation: Activation) -> Self {
        self.layer(LayerSpec::Conv2D {
            filters,
            kernel_size: [k, k],
            strides: 1,
            padding: Padding::Valid,
            activation,
        })
    }

    /// `MaxPooling2D(pool_size=k)`: a `k × k` window with stride `k`.
    pub fn max_pooling2d(self, k: usize) -> Self {
        self.layer(LayerSpec::MaxPooling2D {
            pool_size: [k, k],
            strides: [k, k],
        })
    }

    /// `Dropout(rate)`.
    pub fn dropout(self, rate: f32) -> Self {
        self.layer(LayerSpec::Dropout { rate })
    }

    /// `Flatten()`.
    pub fn flatten(self) -> Self {
        self.layer(LayerSpec::Flatten)
    }

    /// `Dense(units, activation)`.
    pub fn dense(self, units: usize, activation: Activation) -> Self {
        self.layer(LayerSpec::Dense { units, activation })
    }

    /// Checks every shape, names the layers and initialises the parameters
    /// (Glorot-uniform kernels, zero biases) from `seed`.
    pub fn build(self, seed: u64) -> Result<Sequential> {
        let input_shape = self.input_shape;
        let plan = self.plan()?;
        Sequential::from_plan(input_shape, plan, |i, planned| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64));
            match &planned.param_shapes {
                Some((w, b)) => Ok(Some((
                    glorot_uniform(w, &mut rng)?,
                    Tensor::zeros(b.clone()),
                ))),
                None => Ok(None),
            }
        })
    }

    /// Names the layers and checks every shape against the layers and against
    /// the [`Limits`] in force, allocating nothing for the parameters.
    pub(crate) fn plan(self) -> Result<Vec<Planned>> {
        let limits = Limits::current();
        let names = layer_names(&self.layers)?;
        let [c, h, w] = self.input_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                "model",
                format!("input shape {:?} has a zero size", self.input_shape),
            ));
        }
        if self.layers.is_empty() {
            return Err(Error::invalid("model", "a model needs at least one layer"));
        }
        if self.layers.len() > limits.max_layers {
            return Err(Error::TooLarge {
                subject: "model".into(),
                what: format!("{} layers", thousands(self.layers.len() as u64)),
                limit: format!("{} layers", thousands(limits.max_layers as u64)),
                raise: None,
            });
        }
        limits.check_pixels("model input", w as u64, h as u64)?;
        let mut shape = self.input_shape.to_vec();
        check_values("model input", &shape, &limits)?;
        let mut total: u64 = 0;
        let mut plan = Vec::with_capacity(self.layers.len());
        for ((spec, _), name) in self.layers.into_iter().zip(names) {
            let output_shape = spec.output_shape(&name, &shape)?;
            let param_shapes = spec.param_shapes(&shape)?;
            if let Some((w, b)) = &param_shapes {
                let count = product(w)
                    .zip(product(b))
                    .and_then(|(w, b)| w.checked_add(b))
                    .unwrap_or(u64::MAX);
                total = total.saturating_add(count);
                if total > limits.max_params {
                    return Err(Error::TooLarge {
                        subject: format!("layer {name}"),
                        what: format!(
                            "{} parameters (kernel {w:?}, bias {b:?}) bring the model to {}",
                            thousands(count),
                            thousands(total)
                        ),
                        limit: format!("{} parameters", thousands(limits.max_params)),
                        raise: Some(MAX_PARAMS_FLAG),
                    });
                }
            }
            check_values(&format!("layer {name}"), &output_shape, &limits)?;
            plan.push(Planned {
                name,
                spec,
                input_shape: std::mem::replace(&mut shape, output_shape.clone()),
                output_shape,
                param_shapes,
            });
        }
        Ok(plan)
    }
}

/// One layer of a model before its parameters exist: named, its shapes checked.
pub(crate) struct Planned {
    pub(crate) name: String,
    pub(crate) spec: LayerSpec,
    pub(crate) input_shape: Vec<usize>,
    pub(crate) output_shape: Vec<usize>,
    /// The kernel's and the bias's shapes, for layers that have them.
    pub(crate) param_shapes: Option<(Vec<usize>, Vec<usize>)>,
}

impl Planned {
    fn into_layer(self, params: Option<(Tensor, Tensor)>) -> Layer {
        Layer {
            name: self.name,
            spec: self.spec,
            input_shape: self.input_shape,
            output_shape: self.output_shape,
            params,
        }
    }
}

/// Refuses a per-input shape above [`Limits::max_values_per_input`].
pub(crate) fn check_values(subject: &str, shape: &[usize], limits: &Limits) -> Result<()> {
    let values = product(shape).unwrap_or(u64::MAX);
    if values > limits.max_values_per_input {
        return Err(Error::TooLarge {
            subject: subject.to_string(),
            what: format!(
                "its output for one input, {shape:?}, has {} values",
                thousands(values)
            ),
            limit: format!(
                "{} values per input",
                thousands(limits.max_values_per_input)
            ),
            raise: None,
        });
    }
    Ok(())
}

/// Keras's automatic names: the first of a kind is `conv2d`, then `conv2d_1`,
/// `conv2d_2`, ... Given names are kept; a clash is an error.
fn layer_names(layers: &[(LayerSpec, Option<String>)]) -> Result<Vec<String>> {
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    let mut names: Vec<String> = Vec::with_capacity(layers.len());
    for (spec, given) in layers {
        let name = match given {
            Some(name) => name.clone(),
            None => {
                let base = spec.base_name();
                let count = counts.entry(base).or_default();
                let name = if *count == 0 {
                    base.to_string()
                } else {
                    format!("{base}_{count}")
                };
                *count += 1;
                name
            }
        };
        if name.is_empty() || names.contains(&name) {
            return Err(Error::invalid(
                "model",
                format!("layer name '{name}' is empty or used twice"),
            ));
        }
        names.push(name);
    }
    Ok(names)
}
