//! Checkpoints in the `safetensors` format, of a [`Sequential`] stack or of a
//! [`Graph`].
//!
//! Tensors are named `<layer>.weight` and `<layer>.bias`, `f32`, in PyTorch's
//! layouts (conv `[out, in, kh, kw]`, dense `[out, in]`, with dense inputs
//! flattened in C, H, W order), so a file loads into PyTorch as it is. The
//! architecture is JSON in the header's metadata under `architecture`:
//!
//! ```json
//! {"input_shape": [1, 28, 28], "class_names": ["0", "1", ...],
//!  "layers": [{"name": "conv2d", "type": "Conv2D", "filters": 32, "kernel_size": [3, 3],
//!              "strides": 1, "padding": "valid", "activation": "relu", "output_shape": [32, 26, 26]},
//!             ...]}
//! ```
//!
//! A graph is stored under `graph` instead ([`save_graph`]): its input shape,
//! class names and nodes, each with its op, its inputs and its output shape;
//! tensors are `<node>.weight`, `.bias`, `.running_mean`, `.running_var` (batch
//! normalisation) and `.value` (a constant). [`load_model`] reads either, or
//! an ONNX file.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::graph::{Graph, Op};
use super::{Model, Sequential};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layers::LayerSpec;
use crate::limits::{thousands, Limits, MAX_ARCHITECTURE_BYTES, MAX_HEADER_BYTES};
use crate::tensor::Tensor;

/// One layer as the checkpoint's metadata records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer's name, also the prefix of its tensors.
    pub name: String,
    /// The layer's type and settings.
    #[serde(flatten)]
    pub spec: LayerSpec,
    /// Per-sample output shape, as a check on reading.
    pub output_shape: Vec<usize>,
}

/// The architecture stored in a checkpoint's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// Per-sample input shape `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Name of each class, in label order.
    pub class_names: Vec<String>,
    /// The layers in order.
    pub layers: Vec<LayerRecord>,
}

impl Sequential {
    /// The model's architecture, as stored in checkpoints.
    pub fn architecture(&self) -> Architecture {
        Architecture {
            input_shape: self.input_shape,
            class_names: self.class_names.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerRecord {
                    name: l.name.clone(),
                    spec: l.spec.clone(),
                    output_shape: l.output_shape.clone(),
                })
                .collect(),
        }
    }
}

fn to_le_bytes(t: &Tensor) -> Vec<u8> {
    t.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `model` to `path` atomically (see [`fsutil::write_atomic`]), so an
/// interrupted save never destroys an earlier checkpoint. The same model gives
/// the same bytes: the tensors are in name order and the metadata has one
/// entry, so no hash map's order can differ from run to run.
pub fn save(model: &Sequential, path: &Path) -> Result<()> {
    let architecture = serde_json::to_string(&model.architecture()).map_err(|e| {
        Error::invalid("checkpoint", format!("cannot encode the architecture: {e}"))
    })?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in model.layers() {
        if let Some((w, b)) = &layer.params {
            tensors.push((
                format!("{}.weight", layer.name),
                w.shape().to_vec(),
                to_le_bytes(w),
            ));
            tensors.push((
                format!("{}.bias", layer.name),
                b.shape().to_vec(),
                to_le_bytes(b),
            ));
        }
    }
    write_tensors(&tensors, ARCHITECTURE_KEY, architecture, path)
}

/// The metadata entry that holds the architecture.
const ARCHITECTURE_KEY: &str = "architecture";

/// Reads a checkpoint written by [`save`].
///
/// Nothing is allocated for a size the file declares before it is checked:
/// the file's size and its header's against the [`Limits`] in force, then the
/// architecture's layer sizes (parameters, outputs) against the limits and
/// against the stored tensors' shapes, before any layer is built. The weights
/// are the stored ones, each checked to be finite; nothing is initialised at
/// random.
pub fn load(path: &Path) -> Result<Sequential> {
    let bytes = Limits::current().read_model_file(path, "a checkpoint")?;
    load_bytes(&bytes, path)
}

/// [`load`] for a checkpoint's bytes already in memory; `path` is only used
/// in errors.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Sequential> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    let (json, tensors) = header(bytes, path, ARCHITECTURE_KEY)?;
    let arch: Architecture = serde_json::from_str(&json).map_err(|e| {
        bad(
            "metadata.architecture",
            "the architecture JSON described in the README",
            e.to_string(),
        )
    })?;

    let mut builder = Sequential::builder(arch.input_shape);
    for record in &arch.layers {
        builder = builder.layer(record.spec.clone()).name(&record.name);
    }
    // Every shape and limit, then every stored tensor's name, type and shape,
    // before anything is allocated for a layer.
    let plan = builder.plan().map_err(|e| match e {
        e @ Error::TooLarge { .. } => e,
        other => bad(
            "metadata.architecture",
            "a consistent architecture",
            other.to_string(),
        ),
    })?;
    let mut expected_names = Vec::new();
    for (planned, record) in plan.iter().zip(&arch.layers) {
        if planned.output_shape != record.output_shape {
            return Err(bad(
                &format!("layer {} output_shape", record.name),
                &format!(
                    "{:?} (computed from the architecture)",
                    planned.output_shape
                ),
                format!("{:?}", record.output_shape),
            ));
        }
        let Some((w, b)) = &planned.param_shapes else {
            continue;
        };
        for (suffix, shape) in [("weight", w), ("bias", b)] {
            let name = format!("{}.{suffix}", planned.name);
            let view = tensors.tensor(&name).map_err(|_| {
                bad(
                    &name,
                    &format!("an f32 tensor of shape {shape:?}"),
                    "no such tensor".into(),
                )
            })?;
            if view.dtype() != Dtype::F32 || view.shape() != &shape[..] {
                return Err(bad(
                    &name,
                    &format!("F32 of shape {shape:?}"),
                    format!("{:?} of shape {:?}", view.dtype(), view.shape()),
                ));
            }
            expected_names.push(name);
        }
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !expected_names.iter().any(|e| e == *n))
    {
        return Err(bad(
            extra,
            "only tensors of the architecture's layers",
            "a tensor no layer owns".into(),
        ));
    }
    // The weights as stored, each checked to be a number.
    let read = |name: String, shape: &[usize]| read_tensor(&tensors, &name, shape, path);
    let mut model = Sequential::from_plan(arch.input_shape, plan, |_, planned| {
        let Some((w, b)) = &planned.param_shapes else {
            return Ok(None);
        };
        Ok(Some((
            read(format!("{}.weight", planned.name), w)?,
            read(format!("{}.bias", planned.name), b)?,
        )))
    })?;
    if !arch.class_names.is_empty() {
        model.set_class_names(arch.class_names).map_err(|e| {
            bad(
                "metadata.architecture class_names",
                "one name per output",
                e.to_string(),
            )
        })?;
    }
    Ok(model)
}

/// One graph node as a checkpoint's metadata records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name, also the prefix of its tensors.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// The nodes it reads (`input` is the image).
    pub inputs: Vec<String>,
    /// Per-sample output shape, as a check on reading.
    pub output_shape: Vec<usize>,
}

/// A graph model as stored in a checkpoint's metadata under `graph`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphRecord {
    /// Per-sample input shape `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Name of each class, in label order (may be empty).
    pub class_names: Vec<String>,
    /// The nodes in the order they run.
    pub nodes: Vec<NodeRecord>,
}

/// The metadata entry that holds a graph.
const GRAPH_KEY: &str = "graph";

/// Writes `graph` to `path` atomically, as [`save`] writes a stack: tensors
/// `<node>.<param>` in PyTorch's names and layouts (`weight`, `bias`,
/// `running_mean`, `running_var`; a constant's `value`), the graph as JSON in
/// the metadata under `graph`.
pub fn save_graph(graph: &Graph, path: &Path) -> Result<()> {
    let record = GraphRecord {
        input_shape: graph.input_shape(),
        class_names: graph.class_names().to_vec(),
        nodes: graph
            .nodes()
            .iter()
            .map(|n| NodeRecord {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n.inputs.clone(),
                output_shape: n.output_shape.clone(),
            })
            .collect(),
    };
    let json = serde_json::to_string(&record)
        .map_err(|e| Error::invalid("checkpoint", format!("cannot encode the graph: {e}")))?;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = graph
        .nodes()
        .iter()
        .flat_map(|n| {
            n.op.param_names().iter().zip(&n.params).map(|(suffix, t)| {
                (
                    format!("{}.{suffix}", n.name),
                    t.shape().to_vec(),
                    to_le_bytes(t),
                )
            })
        })
        .collect();
    write_tensors(&tensors, GRAPH_KEY, json, path)
}

fn write_tensors(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    key: &str,
    json: String,
    path: &Path,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    let metadata = HashMap::from([(key.to_string(), json)]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    fsutil::write_bytes_atomic(path, &bytes)
}

/// Reads a graph checkpoint written by [`save_graph`], with the same checks
/// as [`load_bytes`]: each node is planned (shapes, limits) before its stored
/// tensors are read, and the tensors must be exactly the nodes' parameters.
pub fn load_graph_bytes(bytes: &[u8], path: &Path) -> Result<Graph> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    let (json, tensors) = header(bytes, path, GRAPH_KEY)?;
    let record: GraphRecord = serde_json::from_str(&json).map_err(|e| {
        bad(
            "metadata.graph",
            "the graph JSON described in the README",
            e.to_string(),
        )
    })?;
    let mut graph = Graph::new(record.input_shape);
    let mut owned = Vec::new();
    for node in &record.nodes {
        let inputs: Vec<&str> = node.inputs.iter().map(|s| s.as_str()).collect();
        let (output_shape, shapes) =
            graph
                .plan(&node.name, &node.op, &inputs)
                .map_err(|e| match e {
                    e @ Error::TooLarge { .. } => e,
                    other => bad(
                        &format!("node {}", node.name),
                        "a consistent graph",
                        other.to_string(),
                    ),
                })?;
        if output_shape != node.output_shape {
            return Err(bad(
                &format!("node {} output_shape", node.name),
                &format!("{output_shape:?} (computed from the graph)"),
                format!("{:?}", node.output_shape),
            ));
        }
        let mut params = Vec::with_capacity(shapes.len());
        for (suffix, shape) in node.op.param_names().iter().zip(&shapes) {
            let name = format!("{}.{suffix}", node.name);
            params.push(read_tensor(&tensors, &name, shape, path)?);
            owned.push(name);
        }
        graph.push(&node.name, node.op.clone(), &inputs, output_shape, params);
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !owned.iter().any(|o| o == *n))
    {
        return Err(bad(
            extra,
            "only tensors of the graph's nodes",
            "a tensor no node owns".into(),
        ));
    }
    if graph.nodes().is_empty() {
        return Err(bad(
            "metadata.graph nodes",
            "at least one node",
            "none".into(),
        ));
    }
    if !record.class_names.is_empty() {
        graph.set_class_names(record.class_names).map_err(|e| {
            bad(
                "metadata.graph class_names",
                "one name per output",
                e.to_string(),
            )
        })?;
    }
    Ok(graph)
}

/// The metadata entry `key` of a safetensors file, after checking the
/// header's size, and the file's tensors.
fn header<'b>(bytes: &'b [u8], path: &Path, key: &str) -> Result<(String, SafeTensors<'b>)> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    if let Some(n) = header_len.filter(|&n| n > MAX_HEADER_BYTES) {
        return Err(bad(
            "header length",
            &format!("at most {} bytes", thousands(MAX_HEADER_BYTES)),
            format!("{} bytes", thousands(n)),
        ));
    }
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad("header", "a safetensors file", e.to_string()))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| {
            bad(
                "metadata",
                &format!("a '{key}' entry (a salient checkpoint)"),
                "none".into(),
            )
        })?;
    if json.len() > MAX_ARCHITECTURE_BYTES {
        return Err(bad(
            &format!("metadata.{key}"),
            &format!(
                "at most {} bytes of JSON",
                thousands(MAX_ARCHITECTURE_BYTES as u64)
            ),
            format!("{} bytes", thousands(json.len() as u64)),
        ));
    }
    let json = json.clone();
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| bad("tensors", "valid safetensors data", e.to_string()))?;
    Ok((json, tensors))
}

/// Stored tensor `name`, which must be `f32` of `shape` with finite values.
fn read_tensor(tensors: &SafeTensors, name: &str, shape: &[usize], path: &Path) -> Result<Tensor> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    let view = tensors.tensor(name).map_err(|_| {
        bad(
            name,
            &format!("an f32 tensor of shape {shape:?}"),
            "no such tensor".into(),
        )
    })?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(bad(
            name,
            &format!("F32 of shape {shape:?}"),
            format!("{:?} of shape {:?}", view.dtype(), view.shape()),
        ));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(
            name,
            "finite weights",
            format!("{v} at flat index {i}"),
        ));
    }
    Tensor::from_shape_vec(shape.to_vec(), values)
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))
}

/// A model read from any file salient takes: a checkpoint of a stack
/// (`architecture` in its metadata) or of a graph (`graph`), or, with the
/// `onnx` feature, an ONNX model (a `.onnx` file).
pub fn load_model(path: &Path) -> Result<Model> {
    #[cfg(feature = "onnx")]
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return crate::onnx::import(path).map(Model::Graph);
    }
    let bytes = Limits::current().read_model_file(path, "a checkpoint")?;
    let is_graph = SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref().map(|m| m.contains_key(GRAPH_KEY)))
        .unwrap_or(false);
    match is_graph {
        true => load_graph_bytes(&bytes, path).map(Model::Graph),
        false => load_bytes(&bytes, path).map(Model::Sequential),
    }
}
