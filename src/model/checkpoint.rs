//! Checkpoints in the `safetensors` format.
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

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::Sequential;
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
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    let metadata = HashMap::from([(ARCHITECTURE_KEY.to_string(), architecture)]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    fsutil::write_bytes_atomic(path, &bytes)
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
    let limits = Limits::current();
    let bytes = fsutil::read_bounded(
        path,
        limits.max_checkpoint_bytes(),
        &format!(
            "a checkpoint of at most {} parameters",
            thousands(limits.max_params)
        ),
    )?;
    load_bytes(&bytes, path)
}

/// [`load`] for a checkpoint's bytes already in memory; `path` is only used
/// in errors.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Sequential> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    // The first 8 bytes are the header's length (little-endian u64).
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
        .and_then(|m| m.get(ARCHITECTURE_KEY))
        .ok_or_else(|| {
            bad(
                "metadata",
                "an 'architecture' entry (a salient checkpoint)",
                "none".into(),
            )
        })?;
    if json.len() > MAX_ARCHITECTURE_BYTES {
        return Err(bad(
            "metadata.architecture",
            &format!(
                "at most {} bytes of JSON",
                thousands(MAX_ARCHITECTURE_BYTES as u64)
            ),
            format!("{} bytes", thousands(json.len() as u64)),
        ));
    }
    let arch: Architecture = serde_json::from_str(json).map_err(|e| {
        bad(
            "metadata.architecture",
            "the architecture JSON described in the README",
            e.to_string(),
        )
    })?;
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| bad("tensors", "valid safetensors data", e.to_string()))?;

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
    let read = |name: String, shape: &[usize]| -> Result<Tensor> {
        let view = tensors
            .tensor(&name)
            .map_err(|e| bad(&name, "a readable tensor", e.to_string()))?;
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(
                &name,
                "finite weights",
                format!("{v} at flat index {i}"),
            ));
        }
        Tensor::from_shape_vec(shape.to_vec(), values)
            .map_err(|e| Error::invalid("checkpoint", e.to_string()))
    };
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
