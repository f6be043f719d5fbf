//! ONNX import: a CNN exported by PyTorch's `torch.onnx.export` or by Keras
//! through `tf2onnx`, as a [`Graph`] that every saliency method explains.
//!
//! The file is decoded by `prost` from the types generated out of ONNX's own
//! schema (`tools/onnx-proto`); nothing is parsed by hand. Each ONNX node
//! becomes at most a few graph nodes, named after it, with the weights in
//! PyTorch's layouts:
//!
//! | ONNX | graph |
//! | --- | --- |
//! | `Conv` (pads, strides, dilations, group, `auto_pad`) | [`Op::Conv2D`] |
//! | `Gemm`; `MatMul` by a constant (with a following `Add` of a bias) | [`Op::Dense`] |
//! | `BatchNormalization` (inference) | [`Op::BatchNorm`] |
//! | `MaxPool`, `AveragePool`, `GlobalAveragePool` | pooling nodes |
//! | `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Gelu`, `Clip`, `Softmax` | [`Op::Activation`] |
//! | `Add`, `Sub`, `Mul`, `Div` (constants broadcast as in NumPy) | arithmetic nodes |
//! | `Concat`, `Flatten`, `Reshape` (constant shape), `Transpose`, `Pad` (constant) | shape nodes |
//! | `Identity`, `Dropout`, `Constant` | nothing: an alias or a stored tensor |
//!
//! Images are always `[N, C, H, W]`. A model whose input is `[N, H, W, C]`
//! (Keras) gets a transpose in front; transposes that cancel (tf2onnx wraps
//! each convolution in a pair) are removed, so no node is added for them.
//!
//! Every size is checked before anything is allocated for it: the file's
//! size against the parameter limit, each tensor's declared dims against the
//! limits and against the data it holds. Weights stored outside the file
//! (`external_data`) are refused with an error saying how to export inline.
//!
//! ```no_run
//! use salient::model::Classifier;
//!
//! let graph = salient::onnx::import(std::path::Path::new("resnet.onnx"))?;
//! println!("{} classes, {} nodes", graph.num_classes(), graph.nodes().len());
//! # Ok::<(), salient::Error>(())
//! ```

#[allow(
    clippy::all,
    missing_docs,
    rustdoc::broken_intra_doc_links,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags
)]
mod proto;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::{product, thousands, Limits, MAX_PARAMS_FLAG};
use crate::model::graph::{Act, Graph, Op};
use crate::ops::{AvgPool2dSpec, Conv2dOptions};
use crate::tensor::Tensor;
use proto::{AttributeProto, NodeProto, TensorProto};

/// The operators [`import`] reads, in the default (`ai.onnx`) domain.
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Tanh",
    "Transpose",
];

/// Reads the ONNX model at `path` as a [`Graph`]. The file may hold at most
/// [`Limits::max_params`] weights (plus room for its structure).
pub fn import(path: &Path) -> Result<Graph> {
    let limits = Limits::current();
    let bytes = fsutil::read_bounded(
        path,
        limits.max_checkpoint_bytes(),
        &format!(
            "an ONNX model of at most {} parameters",
            thousands(limits.max_params)
        ),
    )?;
    import_bytes(&bytes, path)
}

/// [`import`] for a file's bytes already in memory; `path` is only named in
/// errors.
pub fn import_bytes(bytes: &[u8], path: &Path) -> Result<Graph> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| Error::format(path, "protobuf", "an ONNX ModelProto", e.to_string()))?;
    Importer::new(path).run(&model)
}

/// A constant from an initializer or a `Constant` node.
#[derive(Clone, Debug)]
enum Const {
    Float(Tensor),
    Int(Vec<usize>, Vec<i64>),
}

impl Const {
    fn dims(&self) -> &[usize] {
        match self {
            Const::Float(t) => t.shape(),
            Const::Int(dims, _) => dims,
        }
    }
}

/// A computed value: the graph node that holds it, and a transpose of its
/// per-sample axes not yet made a node (output axis `i` is axis `perm[i]`).
#[derive(Clone, Debug)]
struct Value {
    node: String,
    perm: Option<Vec<usize>>,
}

/// What an ONNX node's input is.
enum Input {
    Const(Const),
    Value(Value),
}

struct Importer<'p> {
    path: &'p Path,
    graph: Graph,
    consts: HashMap<String, Const>,
    values: HashMap<String, Value>,
    /// How many nodes read each ONNX value.
    readers: HashMap<String, usize>,
    /// Dense nodes made from a `MatMul`, whose bias a following `Add` may fill.
    open_bias: HashSet<String>,
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

impl<'p> Importer<'p> {
    fn new(path: &'p Path) -> Self {
        Importer {
            path,
            graph: Graph::new([1, 1, 1]),
            consts: HashMap::new(),
            values: HashMap::new(),
            readers: HashMap::new(),
            open_bias: HashSet::new(),
        }
    }

    fn bad(
        &self,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Error {
        Error::format(self.path, field, expected, found)
    }

    fn run(mut self, model: &proto::ModelProto) -> Result<Graph> {
        for opset in &model.opset_import {
            let domain = opset.domain.as_deref().unwrap_or("");
            if !matches!(domain, "" | "ai.onnx")
                && !model
                    .graph
                    .iter()
                    .flat_map(|g| &g.node)
                    .all(|n| n.domain.as_deref().unwrap_or("") != domain)
            {
                return Err(self.bad(
                    "opset_import",
                    "only the default ai.onnx operator set",
                    format!("operators of domain {domain:?}"),
                ));
            }
        }
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| self.bad("graph", "a graph", "none"))?;
        let limits = Limits::current();
        if graph.node.len() > 4 * limits.max_layers {
            return Err(Error::TooLarge {
                subject: self.path.display().to_string(),
                what: format!("{} nodes", thousands(graph.node.len() as u64)),
                limit: format!("{} nodes", thousands(4 * limits.max_layers as u64)),
                raise: None,
            });
        }
        let mut total: u64 = 0;
        for t in &graph.initializer {
            let name = t.name.clone().unwrap_or_default();
            let c = self.tensor(t, &format!("initializer {name:?}"))?;
            total = total.saturating_add(product(c.dims()).unwrap_or(u64::MAX));
            if total > limits.max_params {
                return Err(Error::TooLarge {
                    subject: self.path.display().to_string(),
                    what: format!("initializers of {} values", thousands(total)),
                    limit: format!("{} parameters", thousands(limits.max_params)),
                    raise: Some(MAX_PARAMS_FLAG),
                });
            }
            self.consts.insert(name, c);
        }
        self.input(graph)?;
        let output = match &graph.output[..] {
            [one] => one.name.clone().unwrap_or_default(),
            other => {
                return Err(self.bad(
                    "graph.output",
                    "one output (the class scores)",
                    format!("{} outputs", other.len()),
                ))
            }
        };
        let needed = needed_nodes(&graph.node, &output);
        for node in &graph.node {
            for i in &node.input {
                *self.readers.entry(i.clone()).or_default() += 1;
            }
        }
        for (node, _) in graph.node.iter().zip(&needed).filter(|(_, &n)| n) {
            self.node(node)?;
        }
        let out = match self.values.get(&output).cloned() {
            Some(v) => self.materialise(v, &format!("{output}/transpose"))?,
            None => {
                return Err(self.bad(
                    "graph.output",
                    "a value computed from the input",
                    format!("{output:?}, which is not"),
                ))
            }
        };
        let last = self.graph.nodes().last().map(|n| n.name.clone());
        if last.as_deref() != Some(out.as_str()) {
            return Err(self.bad(
                "graph.output",
                "the value of the last node",
                format!("{out:?}, computed earlier"),
            ));
        }
        if self.graph.output_shape().len() != 1 {
            return Err(self.bad(
                "graph.output",
                "class scores [N, K]",
                format!("per-sample shape {:?}", self.graph.output_shape()),
            ));
        }
        Ok(self.graph)
    }

    /// The image input: `[N, C, H, W]`, or `[N, H, W, C]` behind a pending
    /// transpose.
    fn input(&mut self, graph: &proto::GraphProto) -> Result<()> {
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.consts.contains_key(i.name.as_deref().unwrap_or("")))
            .collect();
        let [input] = inputs[..] else {
            return Err(self.bad(
                "graph.input",
                "one input (the images) besides the initializers",
                format!("{} inputs", inputs.len()),
            ));
        };
        let name = input.name.clone().unwrap_or_default();
        let field = format!("input {name:?}");
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(proto::type_proto::Value::TensorType(t)) => t,
            _ => return Err(self.bad(&field, "a tensor", "another type")),
        };
        if tensor.elem_type != Some(proto::tensor_proto::DataType::Float as i32) {
            return Err(self.bad(
                &field,
                "float32 elements",
                format!("elem_type {:?}", tensor.elem_type),
            ));
        }
        use proto::tensor_shape_proto::dimension::Value as Dim;
        let dims: Vec<Option<usize>> = tensor
            .shape
            .iter()
            .flat_map(|s| &s.dim)
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v > 0 => usize::try_from(v).ok(),
                _ => None,
            })
            .collect();
        let fixed = |d: Option<usize>| {
            d.ok_or_else(|| self.bad(&field, "a fixed image size", format!("dims {dims:?}")))
        };
        let [_, a, b, c] = dims[..] else {
            return Err(self.bad(&field, "a rank-4 image batch", format!("dims {dims:?}")));
        };
        let (a, b, c) = (fixed(a)?, fixed(b)?, fixed(c)?);
        // Channels last if the last axis looks like channels and the second
        // does not (a 28x28x1 or 32x32x3 Keras input).
        let channels_last = matches!(c, 1 | 3 | 4) && !matches!(a, 1 | 3 | 4) && b > 4;
        let (shape, perm) = match channels_last {
            true => ([c, a, b], Some(vec![1, 2, 0])),
            false => ([a, b, c], None),
        };
        Limits::current().check_pixels(&field, shape[2] as u64, shape[1] as u64)?;
        self.graph = Graph::new(shape);
        self.values.insert(
            name,
            Value {
                node: "input".into(),
                perm,
            },
        );
        Ok(())
    }

    /// A tensor's values, after checking its declared size against the
    /// limits and the data it holds.
    fn tensor(&self, t: &TensorProto, field: &str) -> Result<Const> {
        use proto::tensor_proto::{DataLocation, DataType};
        if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
            return Err(self.bad(
                field,
                "weights stored in the .onnx file",
                "external data (export with torch.onnx.export(..., external_data=False), or onnx.save(model, path, save_as_external_data=False))",
            ));
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                self.bad(
                    format!("{field} dims"),
                    "sizes of at least 0",
                    format!("{:?}", t.dims),
                )
            })?;
        let count = product(&dims).unwrap_or(u64::MAX);
        let limits = Limits::current();
        if count > limits.max_params {
            return Err(Error::TooLarge {
                subject: format!("{} {field}", self.path.display()),
                what: format!("dims {dims:?} declare {} values", thousands(count)),
                limit: format!("{} parameters", thousands(limits.max_params)),
                raise: Some(MAX_PARAMS_FLAG),
            });
        }
        let count = count as usize;
        let raw = t.raw_data.as_deref();
        let size_error = |found: usize| {
            self.bad(
                format!("{field} data"),
                format!("{count} values for dims {dims:?}"),
                format!("{found} values"),
            )
        };
        let data_type = t.data_type.unwrap_or(0);
        if data_type == DataType::Float as i32 {
            let values: Vec<f32> = match raw {
                Some(raw) if raw.len() != count * 4 => return Err(size_error(raw.len() / 4)),
                Some(raw) => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                None if t.float_data.len() != count => return Err(size_error(t.float_data.len())),
                None => t.float_data.clone(),
            };
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(self.bad(
                    format!("{field} data"),
                    "finite numbers",
                    format!("{v} at flat index {i}"),
                ));
            }
            let tensor = Tensor::from_shape_vec(dims, values)
                .map_err(|e| self.bad(field, "a tensor", e.to_string()))?;
            Ok(Const::Float(tensor))
        } else if data_type == DataType::Int64 as i32 || data_type == DataType::Int32 as i32 {
            let width = if data_type == DataType::Int64 as i32 {
                8
            } else {
                4
            };
            let values: Vec<i64> = match raw {
                Some(raw) if raw.len() != count * width => {
                    return Err(size_error(raw.len() / width))
                }
                Some(raw) if width == 8 => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
                Some(raw) => raw
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
                None if width == 8 && t.int64_data.len() == count => t.int64_data.clone(),
                None if width == 4 && t.int32_data.len() == count => {
                    t.int32_data.iter().map(|&v| v as i64).collect()
                }
                None => return Err(size_error(t.int64_data.len().max(t.int32_data.len()))),
            };
            Ok(Const::Int(dims, values))
        } else {
            Err(self.bad(
                format!("{field} data_type"),
                "FLOAT (1), INT32 (6) or INT64 (7)",
                format!("{data_type}"),
            ))
        }
    }

    /// One ONNX node, as graph nodes or as an alias.
    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let op_type = node.op_type.clone().unwrap_or_default();
        let label = match node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => node
                .output
                .first()
                .cloned()
                .unwrap_or_else(|| op_type.clone()),
        };
        let field = format!("node {label:?} ({op_type})");
        let domain = node.domain.as_deref().unwrap_or("");
        if !matches!(domain, "" | "ai.onnx") {
            return Err(self.bad(
                &field,
                "an operator of the default ai.onnx domain",
                format!("domain {domain:?}"),
            ));
        }
        let Some(output) = node.output.first().cloned() else {
            return Err(self.bad(&field, "an output", "none"));
        };
        // Outputs past the first (pooling indices, dropout masks, batch-norm
        // statistics) must be unused.
        if let Some(extra) = node
            .output
            .iter()
            .skip(1)
            .find(|o| !o.is_empty() && self.readers.contains_key(*o))
        {
            return Err(self.bad(
                &field,
                "only its first output to be used",
                format!("{extra:?} is read"),
            ));
        }
        let name = self.fresh_name(&label);
        let step = NodeStep {
            node,
            field: field.clone(),
            name,
            output,
        };
        match op_type.as_str() {
            "Identity" | "Dropout" => {
                let value = self.value(&step, 0)?;
                self.values.insert(step.output, value);
                Ok(())
            }
            "Constant" => self.constant(&step),
            "Conv" => self.conv(&step),
            "Gemm" => self.gemm(&step),
            "MatMul" => self.matmul(&step),
            "BatchNormalization" => self.batch_norm(&step),
            "MaxPool" | "AveragePool" => self.pool(&step, op_type == "MaxPool"),
            "GlobalAveragePool" => {
                let x = self.value_node(&step, 0)?;
                let c = self.shape(&x)?[0];
                let pooled = format!("{}/pool", step.name);
                self.graph.add(&pooled, Op::GlobalAvgPool2D, &[&x])?;
                self.emit(
                    &step,
                    Op::Reshape {
                        shape: vec![c, 1, 1],
                    },
                    &[&pooled],
                )
            }
            "Relu" => self.activation(&step, Act::Relu),
            "Sigmoid" => self.activation(&step, Act::Sigmoid),
            "Tanh" => self.activation(&step, Act::Tanh),
            "LeakyRelu" => {
                let alpha = self.float_attr(&step, "alpha", 0.01)?;
                self.activation(&step, Act::LeakyRelu(alpha))
            }
            "Gelu" => match self.string_attr(&step, "approximate")?.as_deref() {
                None | Some("none") => self.activation(&step, Act::Gelu),
                Some(other) => {
                    Err(self.bad(&step.field, "approximate = \"none\"", format!("{other:?}")))
                }
            },
            "Clip" => self.clip(&step),
            "Softmax" => self.softmax(&step),
            "Add" | "Sub" | "Mul" | "Div" => self.arithmetic(&step, &op_type),
            "Concat" => self.concat(&step),
            "Flatten" => self.flatten(&step),
            "Reshape" => self.reshape(&step),
            "Transpose" => self.transpose(&step),
            "Pad" => self.pad(&step),
            other => Err(self.bad(
                &field,
                format!(
                    "one of the supported operators ({})",
                    SUPPORTED_OPERATORS.join(", ")
                ),
                format!("{other:?}, which salient does not import"),
            )),
        }
    }

    /// A graph node name not yet taken, from an ONNX node's name.
    fn fresh_name(&self, label: &str) -> String {
        let base = match label {
            "" | "input" => format!("{label}_node"),
            other => other.to_string(),
        };
        let taken = |n: &str| self.graph.node_index(n).is_ok() || n == "input";
        let mut name = base.clone();
        let mut k = 1;
        while taken(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    }

    fn input_of(&self, step: &NodeStep, k: usize) -> Result<Option<Input>> {
        let Some(name) = step.node.input.get(k).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if let Some(c) = self.consts.get(name) {
            return Ok(Some(Input::Const(c.clone())));
        }
        match self.values.get(name) {
            Some(v) => Ok(Some(Input::Value(v.clone()))),
            None => Err(self.bad(
                &step.field,
                "inputs computed by earlier nodes or stored",
                format!("input {name:?}, which is neither"),
            )),
        }
    }

    /// Input `k`, which must be computed from the image.
    fn value(&self, step: &NodeStep, k: usize) -> Result<Value> {
        match self.input_of(step, k)? {
            Some(Input::Value(v)) => Ok(v),
            Some(Input::Const(_)) => Err(self.bad(
                &step.field,
                format!("input {k} computed from the image"),
                "a constant",
            )),
            None => Err(self.bad(&step.field, format!("an input {k}"), "none")),
        }
    }

    /// Input `k` as a graph node, its pending transpose made a node.
    fn value_node(&mut self, step: &NodeStep, k: usize) -> Result<String> {
        let v = self.value(step, k)?;
        self.materialise(v, &format!("{}/transpose{k}", step.name))
    }

    fn materialise(&mut self, v: Value, name: &str) -> Result<String> {
        match v.perm {
            None => Ok(v.node),
            Some(perm) => {
                let name = self.fresh_name(name);
                self.graph.add(&name, Op::Transpose { perm }, &[&v.node])?;
                Ok(name)
            }
        }
    }

    /// Input `k`, which must be stored (an initializer or a `Constant`).
    fn constant_input(&self, step: &NodeStep, k: usize) -> Result<Option<Const>> {
        match self.input_of(step, k)? {
            Some(Input::Const(c)) => Ok(Some(c)),
            Some(Input::Value(_)) => Err(self.bad(
                &step.field,
                format!("input {k} stored in the file (a weight or a constant)"),
                "a value computed from the image",
            )),
            None => Ok(None),
        }
    }

    fn float_input(&self, step: &NodeStep, k: usize, what: &str) -> Result<Option<Tensor>> {
        match self.constant_input(step, k)? {
            Some(Const::Float(t)) => Ok(Some(t)),
            Some(Const::Int(..)) => {
                Err(self.bad(&step.field, format!("{what} as floats"), "integers"))
            }
            None => Ok(None),
        }
    }

    fn int_input(&self, step: &NodeStep, k: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.constant_input(step, k)? {
            Some(Const::Int(_, v)) => Ok(Some(v)),
            Some(Const::Float(_)) => {
                Err(self.bad(&step.field, format!("{what} as integers"), "floats"))
            }
            None => Ok(None),
        }
    }

    fn shape(&self, node: &str) -> Result<Vec<usize>> {
        match node {
            "input" => Ok(self.graph.input_shape().to_vec()),
            _ => Ok(self.graph.nodes()[self.graph.node_index(node)?]
                .output_shape
                .clone()),
        }
    }

    /// Adds the node for this step and makes its output readable.
    fn emit(&mut self, step: &NodeStep, op: Op, inputs: &[&str]) -> Result<()> {
        self.emit_with(step, op, inputs, None)
    }

    fn emit_with(
        &mut self,
        step: &NodeStep,
        op: Op,
        inputs: &[&str],
        params: Option<Vec<Tensor>>,
    ) -> Result<()> {
        let result = match params {
            Some(p) => self
                .graph
                .add_with_params(&step.name, op, inputs, p)
                .map(drop),
            None => self.graph.add(&step.name, op, inputs).map(drop),
        };
        result.map_err(|e| match e {
            e @ Error::TooLarge { .. } => e,
            other => self.bad(&step.field, "shapes the operator takes", other.to_string()),
        })?;
        self.values.insert(
            step.output.clone(),
            Value {
                node: step.name.clone(),
                perm: None,
            },
        );
        Ok(())
    }

    fn ints_attr(&self, step: &NodeStep, name: &str) -> Result<Option<Vec<usize>>> {
        match attr(step.node, name) {
            None => Ok(None),
            Some(a) => a
                .ints
                .iter()
                .map(|&v| usize::try_from(v).ok())
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    self.bad(
                        format!("{} attribute {name}", step.field),
                        "sizes of at least 0",
                        format!("{:?}", a.ints),
                    )
                }),
        }
    }

    fn int_attr(&self, step: &NodeStep, name: &str, default: i64) -> i64 {
        attr(step.node, name).and_then(|a| a.i).unwrap_or(default)
    }

    fn float_attr(&self, step: &NodeStep, name: &str, default: f32) -> Result<f32> {
        let v = attr(step.node, name).and_then(|a| a.f).unwrap_or(default);
        match v.is_finite() {
            true => Ok(v),
            false => Err(self.bad(
                format!("{} attribute {name}", step.field),
                "a finite number",
                v.to_string(),
            )),
        }
    }

    fn string_attr(&self, step: &NodeStep, name: &str) -> Result<Option<String>> {
        match attr(step.node, name).and_then(|a| a.s.clone()) {
            None => Ok(None),
            Some(s) => String::from_utf8(s).map(Some).map_err(|_| {
                self.bad(
                    format!("{} attribute {name}", step.field),
                    "UTF-8 text",
                    "other bytes",
                )
            }),
        }
    }

    /// Kernel, strides, dilations and pads `(top, left, bottom, right)` of a
    /// convolution or pooling over an `h x w` input.
    fn window(
        &self,
        step: &NodeStep,
        kernel: (usize, usize),
        h: usize,
        w: usize,
    ) -> Result<Window> {
        let pair = |name: &str, default: usize| -> Result<(usize, usize)> {
            match self.ints_attr(step, name)?.as_deref() {
                None => Ok((default, default)),
                Some(&[a, b]) if a > 0 => Ok((a, b)),
                Some(other) => Err(self.bad(
                    format!("{} attribute {name}", step.field),
                    "two sizes of at least 1",
                    format!("{other:?}"),
                )),
            }
        };
        let stride = pair("strides", 1)?;
        let dilation = pair("dilations", 1)?;
        if stride.1 == 0 || dilation.1 == 0 {
            return Err(self.bad(
                &step.field,
                "strides and dilations of at least 1",
                format!("{stride:?}, {dilation:?}"),
            ));
        }
        let auto_pad = self
            .string_attr(step, "auto_pad")?
            .unwrap_or_else(|| "NOTSET".into());
        let pads = match auto_pad.as_str() {
            "NOTSET" => match self.ints_attr(step, "pads")?.as_deref() {
                None => (0, 0, 0, 0),
                Some(&[t, l, b, r]) => (t, l, b, r),
                Some(other) => Err(self.bad(
                    format!("{} attribute pads", step.field),
                    "[top, left, bottom, right]",
                    format!("{other:?}"),
                ))?,
            },
            "VALID" => (0, 0, 0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let options = Conv2dOptions {
                    stride,
                    dilation,
                    ..Conv2dOptions::default()
                };
                let (t, l, b, r) = options.same_pads(h, w, kernel.0, kernel.1);
                match auto_pad.as_str() {
                    "SAME_UPPER" => (t, l, b, r),
                    _ => (b, r, t, l),
                }
            }
            other => {
                return Err(self.bad(
                    format!("{} attribute auto_pad", step.field),
                    "NOTSET, VALID, SAME_UPPER or SAME_LOWER",
                    format!("{other:?}"),
                ))
            }
        };
        Ok(Window {
            stride,
            dilation,
            pads,
        })
    }

    fn conv(&mut self, step: &NodeStep) -> Result<()> {
        let x = self.value_node(step, 0)?;
        let weight = self
            .float_input(step, 1, "the weight")?
            .ok_or_else(|| self.bad(&step.field, "a weight", "none"))?;
        let [filters, _, kh, kw] = weight.shape()[..] else {
            return Err(self.bad(
                &step.field,
                "a 2-D convolution's weight [M, C/group, kh, kw]",
                format!("{:?}", weight.shape()),
            ));
        };
        let bias = self
            .float_input(step, 2, "the bias")?
            .unwrap_or_else(|| Tensor::zeros(vec![filters]));
        let shape = self.shape(&x)?;
        let [_, h, w] = shape[..] else {
            return Err(self.bad(&step.field, "a [C, H, W] input", format!("{shape:?}")));
        };
        let win = self.window(step, (kh, kw), h, w)?;
        let groups = usize::try_from(self.int_attr(step, "group", 1)).unwrap_or(0);
        let options = Conv2dOptions {
            stride: win.stride,
            dilation: win.dilation,
            pads: win.pads,
            groups,
        };
        let op = Op::Conv2D {
            filters,
            kernel: (kh, kw),
            options,
        };
        self.emit_with(step, op, &[&x], Some(vec![weight, bias]))
    }

    /// `Gemm(A, B, C) = α·A·op(B) + β·C` with `A` the `[N, F]` activations.
    fn gemm(&mut self, step: &NodeStep) -> Result<()> {
        if self.int_attr(step, "transA", 0) != 0 {
            return Err(self.bad(&step.field, "transA = 0 (the batch on rows)", "transA = 1"));
        }
        let x = self.value_node(step, 0)?;
        let b = self
            .float_input(step, 1, "B")?
            .ok_or_else(|| self.bad(&step.field, "a weight B", "none"))?;
        let alpha = self.float_attr(step, "alpha", 1.0)?;
        let beta = self.float_attr(step, "beta", 1.0)?;
        if b.ndim() != 2 {
            return Err(self.bad(&step.field, "a 2-D weight", format!("{:?}", b.shape())));
        }
        let weight = match self.int_attr(step, "transB", 0) {
            0 => b.t().to_owned(),
            _ => b,
        }
        .mapv(|v| alpha * v);
        let units = weight.shape()[0];
        let bias = match self.float_input(step, 2, "C")? {
            None => Tensor::zeros(vec![units]),
            Some(c) if c.len() == units || c.len() == 1 => {
                let c: Vec<f32> = c.iter().copied().collect();
                Tensor::from_shape_fn(vec![units], |i| {
                    beta * c[if c.len() == 1 { 0 } else { i[0] }]
                })
            }
            Some(c) => {
                return Err(self.bad(
                    &step.field,
                    format!("a bias C of {units} values"),
                    format!("{:?}", c.shape()),
                ))
            }
        };
        self.emit_with(
            step,
            Op::Dense { units },
            &[&x],
            Some(vec![weight.into_dyn(), bias]),
        )
    }

    /// `MatMul(A, B)` with a stored `B: [F, units]`, as a dense layer whose
    /// bias a following `Add` fills (tf2onnx's Keras `Dense`).
    fn matmul(&mut self, step: &NodeStep) -> Result<()> {
        let x = self.value_node(step, 0)?;
        let b = self
            .float_input(step, 1, "B")?
            .ok_or_else(|| self.bad(&step.field, "a stored weight B", "none"))?;
        if b.ndim() != 2 {
            return Err(self.bad(
                &step.field,
                "a stored 2-D weight B [F, units]",
                format!("{:?}", b.shape()),
            ));
        }
        let weight = b.t().to_owned();
        let units = weight.shape()[0];
        self.emit_with(
            step,
            Op::Dense { units },
            &[&x],
            Some(vec![weight.into_dyn(), Tensor::zeros(vec![units])]),
        )?;
        self.open_bias.insert(step.name.clone());
        Ok(())
    }

    fn batch_norm(&mut self, step: &NodeStep) -> Result<()> {
        if self.int_attr(step, "training_mode", 0) != 0 {
            return Err(self.bad(
                &step.field,
                "inference (training_mode = 0)",
                "training_mode = 1",
            ));
        }
        let x = self.value_node(step, 0)?;
        let c = self.shape(&x)?.first().copied().unwrap_or(0);
        let mut params = Vec::with_capacity(4);
        for (k, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let t = self
                .float_input(step, k, what)?
                .ok_or_else(|| self.bad(&step.field, format!("a stored {what}"), "none"))?;
            if t.len() != c {
                return Err(self.bad(
                    &step.field,
                    format!("{what} of {c} values"),
                    format!("{:?}", t.shape()),
                ));
            }
            params.push(
                t.into_shape_with_order(vec![c])
                    .map_err(|e| self.bad(&step.field, what, e.to_string()))?,
            );
        }
        let eps = self.float_attr(step, "epsilon", 1e-5)?;
        self.emit_with(step, Op::BatchNorm { eps }, &[&x], Some(params))
    }

    fn pool(&mut self, step: &NodeStep, max: bool) -> Result<()> {
        let x = self.value_node(step, 0)?;
        let shape = self.shape(&x)?;
        let [_, h, w] = shape[..] else {
            return Err(self.bad(&step.field, "a [C, H, W] input", format!("{shape:?}")));
        };
        let kernel = match self.ints_attr(step, "kernel_shape")?.as_deref() {
            Some(&[a, b]) => (a, b),
            other => {
                return Err(self.bad(&step.field, "kernel_shape [kh, kw]", format!("{other:?}")))
            }
        };
        let win = self.window(step, kernel, h, w)?;
        if win.dilation != (1, 1) {
            return Err(self.bad(&step.field, "dilations of 1", format!("{:?}", win.dilation)));
        }
        if self.int_attr(step, "ceil_mode", 0) != 0 {
            // With ceil_mode the last window may start in the padding; it
            // agrees with floor mode when the strides divide evenly.
            let (t, l, b, r) = win.pads;
            let fits = |n: usize, k: usize, s: usize| n >= k && (n - k).is_multiple_of(s);
            if !fits(h + t + b, kernel.0, win.stride.0) || !fits(w + l + r, kernel.1, win.stride.1)
            {
                return Err(self.bad(
                    &step.field,
                    "ceil_mode = 0 (or windows that fit exactly)",
                    "ceil_mode = 1",
                ));
            }
        }
        let op = match max {
            true => Op::MaxPool2D {
                pool: kernel,
                stride: win.stride,
                pads: win.pads,
            },
            false => Op::AvgPool2D(AvgPool2dSpec {
                pool: kernel,
                stride: win.stride,
                pads: win.pads,
                count_include_pad: self.int_attr(step, "count_include_pad", 0) != 0,
            }),
        };
        self.emit(step, op, &[&x])
    }

    fn activation(&mut self, step: &NodeStep, act: Act) -> Result<()> {
        let x = self.value(step, 0)?;
        // Elementwise, so a pending transpose can stay pending.
        let perm = x.perm.clone();
        self.emit(step, Op::Activation(act), &[&x.node])?;
        if let Some(v) = self.values.get_mut(&step.output) {
            v.perm = perm;
        }
        Ok(())
    }

    fn clip(&mut self, step: &NodeStep) -> Result<()> {
        let bound = |k: usize, name: &str| -> Result<Option<f32>> {
            let from_input = self.float_input(step, k, name)?;
            let value = match from_input {
                Some(t) if t.len() == 1 => t.iter().next().copied(),
                Some(t) => {
                    return Err(self.bad(
                        &step.field,
                        format!("a scalar {name}"),
                        format!("{:?}", t.shape()),
                    ))
                }
                None => attr(step.node, name).and_then(|a| a.f),
            };
            Ok(value.filter(|v| v.is_finite()))
        };
        let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
        let act = match (lo, hi) {
            (Some(0.0), Some(6.0)) => Act::Relu6,
            (Some(0.0), None) => Act::Relu,
            _ => Act::Clip(lo, hi),
        };
        self.activation(step, act)
    }

    fn softmax(&mut self, step: &NodeStep) -> Result<()> {
        let x = self.value_node(step, 0)?;
        let rank = self.shape(&x)?.len() + 1;
        let axis = self.int_attr(step, "axis", -1);
        if rank != 2 || !(axis == -1 || axis == 1) {
            return Err(self.bad(
                &step.field,
                "a softmax over the classes of [N, K] scores",
                format!("axis {axis} of a rank-{rank} input"),
            ));
        }
        self.emit(step, Op::Activation(Act::Softmax), &[&x])
    }

    /// `Add`, `Sub`, `Mul`, `Div`; a stored operand becomes a constant node
    /// (its leading batch axis of 1 dropped), except a bias added to a
    /// `MatMul`, which fills the dense layer's bias.
    fn arithmetic(&mut self, step: &NodeStep, op_type: &str) -> Result<()> {
        let a = self.input_of(step, 0)?;
        let b = self.input_of(step, 1)?;
        if op_type == "Add" {
            let pair = match (&a, &b) {
                (Some(Input::Value(v)), Some(Input::Const(Const::Float(c))))
                | (Some(Input::Const(Const::Float(c))), Some(Input::Value(v))) => {
                    Some((v.clone(), c.clone()))
                }
                _ => None,
            };
            if let Some((v, c)) = pair {
                let only_reader = step
                    .node
                    .input
                    .iter()
                    .find(|i| self.values.contains_key(*i))
                    .and_then(|i| self.readers.get(i))
                    == Some(&1);
                if v.perm.is_none() && only_reader && self.open_bias.remove(&v.node) {
                    let index = self.graph.node_index(&v.node)?;
                    let dense = &mut self.graph.nodes_mut()[index];
                    let units = dense.output_shape[0];
                    if c.len() == units && c.shape().iter().rev().skip(1).all(|&d| d == 1) {
                        dense.params[1]
                            .iter_mut()
                            .zip(c.iter())
                            .for_each(|(b, &c)| *b += c);
                        self.values.insert(step.output.clone(), v);
                        return Ok(());
                    }
                }
            }
        }
        // The rank of the computed operand, which a constant must not exceed.
        let rank = match (&a, &b) {
            (Some(Input::Value(v)), _) | (_, Some(Input::Value(v))) => self.shape(&v.node)?.len(),
            _ => {
                return Err(self.bad(
                    &step.field,
                    "an operand computed from the image",
                    "only constants",
                ))
            }
        };
        let mut names = Vec::new();
        for (k, input) in [a, b].into_iter().enumerate() {
            match input {
                Some(Input::Value(v)) => {
                    names.push(self.materialise(v, &format!("{}/transpose{k}", step.name))?)
                }
                Some(Input::Const(Const::Float(mut c))) => {
                    while c.ndim() > rank.max(1) && c.shape()[0] == 1 {
                        c = c.index_axis_move(ndarray::Axis(0), 0);
                    }
                    let cname = self.fresh_name(&format!("{}/const{k}", step.name));
                    let shape = c.shape().to_vec();
                    self.graph
                        .add_with_params(&cname, Op::Constant { shape }, &[], vec![c])?;
                    names.push(cname);
                }
                Some(Input::Const(Const::Int(..))) => {
                    return Err(self.bad(&step.field, "float operands", "integers"))
                }
                None => return Err(self.bad(&step.field, "two operands", "fewer")),
            }
        }
        let op = match op_type {
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            "Div" => Op::Div,
            _ => Op::Add,
        };
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        self.emit(step, op, &refs)
    }

    /// The per-sample axis of an ONNX axis over `[N, ...]` of rank `rank`.
    fn sample_axis(&self, step: &NodeStep, axis: i64, rank: usize) -> Result<usize> {
        let full = if axis < 0 { axis + rank as i64 } else { axis };
        match full {
            a if a >= 1 && (a as usize) < rank => Ok(a as usize - 1),
            _ => Err(self.bad(
                &step.field,
                format!("an axis past the batch axis of a rank-{rank} tensor"),
                format!("axis {axis}"),
            )),
        }
    }

    fn concat(&mut self, step: &NodeStep) -> Result<()> {
        let mut names = Vec::new();
        for k in 0..step.node.input.len() {
            names.push(self.value_node(step, k)?);
        }
        let rank = self.shape(&names[0])?.len() + 1;
        let axis = self.sample_axis(step, self.int_attr(step, "axis", 1), rank)?;
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        self.emit(step, Op::Concat { axis }, &refs)
    }

    fn flatten(&mut self, step: &NodeStep) -> Result<()> {
        let x = self.value_node(step, 0)?;
        let rank = self.shape(&x)?.len() + 1;
        let axis = self.int_attr(step, "axis", 1);
        if axis != 1 && axis != 1 - rank as i64 {
            return Err(self.bad(
                &step.field,
                "axis 1 (one row per sample)",
                format!("axis {axis}"),
            ));
        }
        self.emit(step, Op::Flatten, &[&x])
    }

    fn reshape(&mut self, step: &NodeStep) -> Result<()> {
        let v = self.value(step, 0)?;
        let source = self.shape(&v.node)?;
        let from: Vec<usize> = match &v.perm {
            Some(perm) => perm.iter().map(|&a| source[a]).collect(),
            None => source.clone(),
        };
        let target = match self.int_input(step, 1, "the shape")? {
            Some(t) => t,
            None => {
                return Err(self.bad(
                    &step.field,
                    "a stored shape (a constant, not one computed with Shape)",
                    "a computed shape",
                ))
            }
        };
        let Some((&batch, rest)) = target.split_first() else {
            return Err(self.bad(&step.field, "a shape with a batch axis", "[]"));
        };
        if !(-1..=1).contains(&batch) {
            return Err(self.bad(
                &step.field,
                "a shape whose first size is the batch (0, -1 or 1)",
                format!("{target:?}"),
            ));
        }
        let allow_zero = self.int_attr(step, "allowzero", 0) != 0;
        let mut shape = Vec::with_capacity(rest.len());
        let mut infer = None;
        for (i, &d) in rest.iter().enumerate() {
            match d {
                -1 if infer.is_none() => {
                    infer = Some(i);
                    shape.push(1);
                }
                0 if !allow_zero => shape.push(*from.get(i).ok_or_else(|| {
                    self.bad(
                        &step.field,
                        "a 0 that copies an input size",
                        format!("{target:?}"),
                    )
                })?),
                d if d > 0 => shape.push(d as usize),
                _ => {
                    return Err(self.bad(
                        &step.field,
                        "sizes above 0, one -1 at most",
                        format!("{target:?}"),
                    ))
                }
            }
        }
        let total = product(&from).unwrap_or(0);
        if let Some(i) = infer {
            let known = product(&shape).unwrap_or(u64::MAX).max(1);
            shape[i] = (total / known) as usize;
        }
        // A transpose that only moves axes of size 1 keeps the values in
        // order; reshaped back to the source's shape, both vanish (tf2onnx
        // turns a one-channel NHWC input into NCHW so).
        let moved_ones_only = |perm: &[usize]| {
            let kept: Vec<usize> = perm.iter().copied().filter(|&a| source[a] != 1).collect();
            kept.windows(2).all(|w| w[0] < w[1])
        };
        if shape == source && v.perm.as_deref().is_none_or(moved_ones_only) {
            self.values.insert(
                step.output.clone(),
                Value {
                    node: v.node,
                    perm: None,
                },
            );
            return Ok(());
        }
        let x = self.materialise(v, &format!("{}/transpose0", step.name))?;
        self.emit(step, Op::Reshape { shape }, &[&x])
    }

    fn transpose(&mut self, step: &NodeStep) -> Result<()> {
        let x = self.value(step, 0)?;
        let rank = self.shape(&x.node)?.len();
        let perm = self
            .ints_attr(step, "perm")?
            .unwrap_or_else(|| (0..=rank).rev().collect());
        if perm.len() != rank + 1 || perm[0] != 0 {
            return Err(self.bad(
                &step.field,
                format!("a permutation of {} axes keeping the batch first", rank + 1),
                format!("{perm:?}"),
            ));
        }
        let sample: Vec<usize> = perm[1..].iter().map(|&a| a.wrapping_sub(1)).collect();
        let mut seen = vec![false; rank];
        if !sample
            .iter()
            .all(|&a| a < rank && !std::mem::replace(&mut seen[a], true))
        {
            return Err(self.bad(&step.field, "a permutation", format!("{perm:?}")));
        }
        // Compose with the pending transpose: output axis i reads axis
        // sample[i] of x, which is axis pending[sample[i]] of x's node.
        let composed: Vec<usize> = match &x.perm {
            Some(pending) => sample.iter().map(|&a| pending[a]).collect(),
            None => sample,
        };
        let identity = composed.iter().enumerate().all(|(i, &a)| i == a);
        self.values.insert(
            step.output.clone(),
            Value {
                node: x.node,
                perm: (!identity).then_some(composed),
            },
        );
        Ok(())
    }

    fn pad(&mut self, step: &NodeStep) -> Result<()> {
        let mode = self
            .string_attr(step, "mode")?
            .unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(self.bad(&step.field, "mode \"constant\"", format!("{mode:?}")));
        }
        if step.node.input.get(3).is_some_and(|a| !a.is_empty()) {
            return Err(self.bad(
                &step.field,
                "pads for every axis (no axes input)",
                "an axes input",
            ));
        }
        let x = self.value_node(step, 0)?;
        let rank = self.shape(&x)?.len() + 1;
        let pads: Vec<i64> = match self.int_input(step, 1, "the pads")? {
            Some(p) => p,
            None => attr(step.node, "pads")
                .map(|a| a.ints.clone())
                .unwrap_or_default(),
        };
        let value = match self.float_input(step, 2, "the constant value")? {
            Some(t) if t.len() == 1 => t.iter().next().copied().unwrap_or(0.0),
            Some(t) => {
                return Err(self.bad(
                    &step.field,
                    "a scalar constant value",
                    format!("{:?}", t.shape()),
                ))
            }
            None => self.float_attr(step, "value", 0.0)?,
        };
        if pads.len() != 2 * rank || pads.iter().any(|&p| p < 0) || pads[0] != 0 || pads[rank] != 0
        {
            return Err(self.bad(
                &step.field,
                format!("{} pads of at least 0, none on the batch axis", 2 * rank),
                format!("{pads:?}"),
            ));
        }
        let pairs = (1..rank)
            .map(|a| (pads[a] as usize, pads[a + rank] as usize))
            .collect();
        self.emit(step, Op::Pad { pads: pairs, value }, &[&x])
    }

    fn constant(&mut self, step: &NodeStep) -> Result<()> {
        let node = step.node;
        let c = if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
            self.tensor(t, &step.field)?
        } else if let Some(v) = attr(node, "value_float").and_then(|a| a.f) {
            Const::Float(Tensor::from_elem(vec![], v))
        } else if let Some(a) = attr(node, "value_floats") {
            Const::Float(
                Tensor::from_shape_vec(vec![a.floats.len()], a.floats.clone())
                    .map_err(|e| self.bad(&step.field, "floats", e.to_string()))?,
            )
        } else if let Some(v) = attr(node, "value_int").and_then(|a| a.i) {
            Const::Int(vec![], vec![v])
        } else if let Some(a) = attr(node, "value_ints") {
            Const::Int(vec![a.ints.len()], a.ints.clone())
        } else {
            return Err(self.bad(
                &step.field,
                "a value, value_float(s) or value_int(s) attribute",
                "none",
            ));
        };
        self.consts.insert(step.output.clone(), c);
        Ok(())
    }
}

/// One ONNX node being imported: the node, how errors name it, the graph
/// name it gets and the ONNX value it defines.
struct NodeStep<'n> {
    node: &'n NodeProto,
    field: String,
    name: String,
    output: String,
}

struct Window {
    stride: (usize, usize),
    dilation: (usize, usize),
    pads: (usize, usize, usize, usize),
}

/// Which nodes the output depends on (the others are not imported).
fn needed_nodes(nodes: &[NodeProto], output: &str) -> Vec<bool> {
    let mut wanted: HashSet<&str> = HashSet::from([output]);
    let mut needed = vec![false; nodes.len()];
    for (i, node) in nodes.iter().enumerate().rev() {
        if node.output.iter().any(|o| wanted.contains(o.as_str())) {
            needed[i] = true;
            wanted.extend(node.input.iter().map(|s| s.as_str()));
        }
    }
    needed
}
