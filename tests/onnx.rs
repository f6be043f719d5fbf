//! ONNX import against the exporting frameworks: models exported by PyTorch
//! and by Keras through tf2onnx (`fixtures/make-onnx-*.py`), with the scores
//! and input gradients those frameworks computed on recorded inputs.
#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use ndarray::{Array1, Axis};
use ndarray_npy::read_npy;
use salient::model::graph::{Graph, Op};
use salient::model::{Classifier, Head};
use salient::saliency::{attribute, Method, Options};
use salient::tensor::Tensor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/onnx")
        .join(name)
}

struct Recorded {
    input: Tensor,
    logits: Tensor,
    class: Vec<usize>,
    grad: Tensor,
}

fn recorded(dir: &Path, prefix: &str) -> Recorded {
    let read = |suffix: &str| -> Tensor {
        let a: ndarray::ArrayD<f32> = read_npy(dir.join(format!("{prefix}-{suffix}.npy"))).unwrap();
        a
    };
    let class: Array1<i64> = read_npy(dir.join(format!("{prefix}-class.npy"))).unwrap();
    Recorded {
        input: read("input"),
        logits: read("logits"),
        class: class.iter().map(|&c| c as usize).collect(),
        grad: read("grad"),
    }
}

/// Largest |a − b| over the largest |b|.
fn relative(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// The issue's bounds: logits within 1e-4 relative to the framework's, input
/// gradients within 1e-4 of each map's largest value. Both frameworks and
/// salient compute in f32 with different summation orders; the differences
/// seen are ~1e-6, so 1e-4 leaves room for other CPUs without hiding a wrong
/// formula (a batch norm read without its epsilon moves scores by ~1e-3).
const TOLERANCE: f32 = 1e-4;

/// Checks `graph` against the recorded scores and gradients; returns the
/// worst relative differences `(logits, gradient)`.
fn check(graph: &Graph, rec: &Recorded) -> (f32, f32) {
    let scores = graph
        .predict_scores(&rec.input, 4, &mut Default::default())
        .unwrap();
    let logits = relative(&scores, &rec.logits);
    assert!(logits < TOLERANCE, "logits differ by {logits:e} relative");
    let maps = attribute(
        graph,
        &rec.input,
        Some(&rec.class),
        Method::Vanilla,
        &Options::default(),
    )
    .unwrap();
    let mut worst = 0f32;
    for n in 0..rec.class.len() {
        let got = maps.raw.index_axis(Axis(0), n).to_owned();
        let want = rec.grad.index_axis(Axis(0), n).to_owned();
        let d = relative(&got, &want);
        assert!(
            d < TOLERANCE,
            "input {n}: gradient differs by {d:e} of its largest value"
        );
        worst = worst.max(d);
    }
    (logits, worst)
}

#[test]
fn a_pytorch_resnet_with_batch_norm_gives_pytorchs_scores_and_gradients() {
    let graph = salient::onnx::import(&fixture("resnet-small.onnx")).unwrap();
    let ops: Vec<&Op> = graph.nodes().iter().map(|n| &n.op).collect();
    assert!(ops.iter().any(|op| matches!(op, Op::BatchNorm { .. })));
    assert!(ops
        .iter()
        .any(|op| matches!(op, Op::Conv2D { options, .. } if options.stride == (2, 2))));
    assert!(ops.iter().filter(|op| matches!(op, Op::Add)).count() >= 2);
    let (logits, grad) = check(&graph, &recorded(&fixture(""), "resnet-small"));
    println!("resnet-small: logits {logits:e}, gradients {grad:e}");
}

#[test]
fn a_pytorch_resnet_with_folded_batch_norm_gives_the_same() {
    let graph = salient::onnx::import(&fixture("resnet-small-folded.onnx")).unwrap();
    assert!(!graph
        .nodes()
        .iter()
        .any(|n| matches!(n.op, Op::BatchNorm { .. })));
    let (logits, grad) = check(&graph, &recorded(&fixture(""), "resnet-small"));
    println!("resnet-small-folded: logits {logits:e}, gradients {grad:e}");
}

#[test]
fn a_keras_cnn_through_tf2onnx_gives_tensorflows_scores_and_gradients() {
    let graph = salient::onnx::import(&fixture("keras-cnn.onnx")).unwrap();
    // Images go in as [N, C, H, W]; the transposes around the convolutions
    // cancel, and one is left before the flatten (Keras flattens H, W, C).
    assert_eq!(graph.input_shape(), [1, 28, 28]);
    let transposes = graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Transpose { .. }))
        .count();
    let names: Vec<_> = graph.nodes().iter().map(|n| (&n.name, &n.op)).collect();
    assert_eq!(transposes, 1, "{names:#?}");
    assert!(matches!(
        graph.nodes().last().unwrap().op,
        Op::Activation(_)
    ));
    let rec = recorded(&fixture(""), "keras-cnn");
    let (logits, grad) = check(&graph, &rec);
    println!("keras-cnn: logits {logits:e}, gradients {grad:e}");
    // With the softmax head the scores are probabilities.
    let mut tape = salient::tape::Tape::inference();
    let x = tape.constant(rec.input.clone());
    let pass = graph
        .forward(&mut tape, x, salient::layers::Mode::Infer, Head::AsBuilt)
        .unwrap();
    let probs = tape.value(pass.last()).unwrap();
    for row in probs.outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
#[ignore = "needs out/onnx/resnet18.onnx: fixtures/make-onnx-pytorch.py --resnet18 out/onnx"]
fn torchvisions_resnet18_at_224_gives_pytorchs_scores_and_gradients() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/onnx");
    let graph = salient::onnx::import(&dir.join("resnet18.onnx")).unwrap();
    assert_eq!(graph.input_shape(), [3, 224, 224]);
    let (logits, grad) = check(&graph, &recorded(&dir, "resnet18"));
    println!("resnet18: logits {logits:e}, gradients {grad:e}");
}

#[test]
#[ignore = "needs out/onnx/keras-mnist.onnx: fixtures/make-onnx-keras.py --trained out/onnx"]
fn the_keras_tutorial_model_keeps_its_keras_test_accuracy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/onnx");
    let keras: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("keras-mnist.json")).unwrap())
            .unwrap();
    let graph = salient::onnx::import(&dir.join("keras-mnist.onnx")).unwrap();
    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let test = salient::data::load(
        salient::data::DatasetKind::Mnist,
        &mnist,
        salient::data::Split::Test,
    )
    .unwrap();
    let (loss, accuracy) = salient::train::evaluate(&graph, &test, 500).unwrap();
    println!("salient: loss {loss}, accuracy {accuracy}; Keras: {keras}");
    // The same 10,000 predictions: one flipped prediction would move the
    // accuracy by 1e-4.
    assert!((f64::from(accuracy) - keras["test_accuracy"].as_f64().unwrap()).abs() < 5e-5);
    assert!((f64::from(loss) - keras["test_loss"].as_f64().unwrap()).abs() < 1e-4);
}

// ---------------------------------------------------------------------------
// Bad files: a typed error naming the node or field, never a panic, and no
// allocation for a size before it is checked.

use prost::Message;
use salient::onnx::proto;

fn read_model(name: &str) -> proto::ModelProto {
    proto::ModelProto::decode(&std::fs::read(fixture(name)).unwrap()[..]).unwrap()
}

fn import_model(model: &proto::ModelProto) -> salient::Result<Graph> {
    salient::onnx::import_bytes(&model.encode_to_vec(), Path::new("bad.onnx"))
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let mut model = read_model("resnet-small.onnx");
    let graph = model.graph.as_mut().unwrap();
    let relu = graph
        .node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some("Relu"))
        .unwrap();
    relu.op_type = Some("Erf".into());
    let name = relu.name.clone().unwrap();
    let e = import_model(&model).unwrap_err().to_string();
    assert!(
        e.contains("Erf") && e.contains(&name) && e.contains("bad.onnx"),
        "{e}"
    );
}

#[test]
fn declared_sizes_are_checked_before_anything_is_allocated() {
    // Dims that claim 10^12 floats in a few bytes: refused by the limit.
    let mut model = read_model("resnet-small.onnx");
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    init.dims = vec![1_000_000, 1_000_000];
    let e = import_model(&model).unwrap_err();
    assert!(matches!(e, salient::Error::TooLarge { .. }), "{e}");
    // Dims that disagree with the data held.
    let mut model = read_model("resnet-small.onnx");
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    init.dims[0] += 1;
    let e = import_model(&model).unwrap_err().to_string();
    assert!(e.contains("values for dims"), "{e}");
    // Weights in an external file.
    let mut model = read_model("resnet-small.onnx");
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    init.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
    let e = import_model(&model).unwrap_err().to_string();
    assert!(e.contains("external_data=False"), "{e}");
    // Not NaN weights.
    let mut model = read_model("resnet-small.onnx");
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    let raw = init.raw_data.as_mut().unwrap();
    raw[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = import_model(&model).unwrap_err().to_string();
    assert!(e.contains("finite"), "{e}");
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let bytes = std::fs::read(fixture("keras-cnn.onnx")).unwrap();
    for cut in [1, 100, bytes.len() / 2, bytes.len() - 3] {
        let e = salient::onnx::import_bytes(&bytes[..cut], Path::new("cut.onnx"));
        assert!(e.is_err(), "cut at {cut}");
    }
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    assert!(salient::onnx::import_bytes(png, Path::new("x.onnx")).is_err());
    // A model with no input, or two outputs.
    let mut model = read_model("resnet-small.onnx");
    let g = model.graph.as_mut().unwrap();
    g.output.push(g.output[0].clone());
    let e = import_model(&model).unwrap_err().to_string();
    assert!(e.contains("one output"), "{e}");
}

#[test]
fn an_imported_graph_survives_its_checkpoint_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(&fixture(""), "resnet-small");
    for name in ["resnet-small.onnx", "keras-cnn.onnx"] {
        let mut graph = salient::onnx::import(&fixture(name)).unwrap();
        let names: Vec<String> = (0..graph.num_classes()).map(|c| format!("c{c}")).collect();
        graph.set_class_names(names.clone()).unwrap();
        let path = dir.path().join("g.safetensors");
        salient::model::save_graph(&graph, &path).unwrap();
        let loaded = match salient::model::load_model(&path).unwrap() {
            salient::model::Model::Graph(g) => g,
            other => panic!("a graph checkpoint loaded as {other:?}"),
        };
        assert_eq!(loaded.class_names(), &names[..]);
        let x = match name {
            "keras-cnn.onnx" => recorded(&fixture(""), "keras-cnn").input,
            _ => rec.input.clone(),
        };
        let a = graph
            .predict_scores(&x, 4, &mut Default::default())
            .unwrap();
        let b = loaded
            .predict_scores(&x, 4, &mut Default::default())
            .unwrap();
        assert_eq!(a, b, "{name}");
        // The same bytes when saved again.
        let again = dir.path().join("h.safetensors");
        salient::model::save_graph(&loaded, &again).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}

#[test]
fn a_graph_checkpoint_that_lies_about_its_sizes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let graph = salient::onnx::import(&fixture("resnet-small.onnx")).unwrap();
    let path = dir.path().join("g.safetensors");
    salient::model::save_graph(&graph, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len])
        .unwrap()
        .to_string();
    let rewrite = |from: &str, to: &str| -> Vec<u8> {
        assert!(header.contains(from), "{from}");
        let h = header.replacen(from, to, 1);
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&bytes[8 + header_len..]);
        out
    };
    // The head claims 10^9 units: refused by the parameter limit before the
    // tensors are read (the JSON is escaped inside the header's metadata).
    let huge = rewrite(
        r#"{\"Dense\":{\"units\":10}}"#,
        r#"{\"Dense\":{\"units\":1000000000}}"#,
    );
    let e = salient::model::load_graph_bytes(&huge, &path).unwrap_err();
    assert!(matches!(e, salient::Error::TooLarge { .. }), "{e}");
    // A node reading a node that does not exist.
    let lost = rewrite(r#"\"inputs\":[\"input\"]"#, r#"\"inputs\":[\"nowhere\"]"#);
    let e = salient::model::load_graph_bytes(&lost, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
}
