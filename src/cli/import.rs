//! `salient import`: an ONNX model (from PyTorch or from Keras through
//! tf2onnx) as a salient checkpoint.
//!
//! ```text
//! salient import resnet.onnx --out resnet.safetensors
//! salient report --model resnet.safetensors ...      # or --model resnet.onnx
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::error::Result;
use crate::model::graph::Graph;
use crate::model::{self, Classifier};

/// `salient import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The ONNX file (weights inside it, not in an external .data file).
    pub onnx: PathBuf,
    /// Where to write the checkpoint (safetensors, the graph in its metadata).
    #[arg(long)]
    pub out: PathBuf,
    /// Names of the classes in label order, comma-separated (`cat,dog`).
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
}

/// Imports the model, prints what it holds, writes the checkpoint.
pub fn run(args: &ImportArgs) -> Result<Graph> {
    let mut graph = crate::onnx::import(&args.onnx)?;
    if !args.class_names.is_empty() {
        graph.set_class_names(args.class_names.clone())?;
    }
    println!("{}", summary(&graph));
    model::save_graph(&graph, &args.out)?;
    println!("Wrote {}", args.out.display());
    Ok(graph)
}

/// `input 3x32x32, 10 classes, 5,482 parameters; 23 nodes: 2 Add, 6 BatchNormalization, ...`.
pub fn summary(graph: &Graph) -> String {
    let [c, h, w] = graph.input_shape();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for node in graph.nodes() {
        *kinds.entry(node.op.kind()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "input {c}x{h}x{w}, {} classes, {} parameters; {} nodes: {}",
        graph.num_classes(),
        crate::limits::thousands(graph.num_params() as u64),
        graph.nodes().len(),
        kinds.join(", ")
    )
}
