//! `salient explore`'s JSON endpoints, over real HTTP: each answer equals the
//! library's own result for the same input, and every bad request gets a
//! status and a message while the server goes on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use salient::explore::api::{ExplainAnswer, Explorer, ImageAnswer, ModelInfo, Samples};
use salient::explore::{Running, Server};
use salient::images::Normalize;
use salient::model::Head;
use salient::ops::ReluRule;
use salient::saliency::trace::trace;
use salient::saliency::{self, attribute, Method, Options};
use salient::Tensor;

fn start() -> Running {
    let (model, test) = common::small_trained_mnist();
    let samples = Samples {
        source: "fixtures/mnist-sample, test split".into(),
        set: test.clone(),
    };
    let explorer = Explorer::new(model.clone(), "small.safetensors".into(), Some(samples)).unwrap();
    Server::bind("127.0.0.1:0", explorer).unwrap().spawn()
}

/// Status and body of a request.
fn get(server: &Running, path: &str) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", server.addr());
    common::http_answer(common::http_agent().get(&url).call().unwrap())
}

fn post(server: &Running, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", server.addr());
    let request = common::http_agent()
        .post(&url)
        .header("Content-Type", "application/octet-stream");
    common::http_answer(request.send(body).unwrap())
}

fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

fn explain(server: &Running, request: serde_json::Value) -> (u16, Vec<u8>) {
    post(
        server,
        "/api/explain",
        &serde_json::to_vec(&request).unwrap(),
    )
}

#[test]
fn the_page_and_the_model_are_served() {
    let server = start();
    let (status, page) = get(&server, "/");
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<canvas") && page.contains("/api/explain"));
    // Offline: nothing is fetched from another origin.
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(external), "the page refers to {external}");
    }

    let (status, body) = get(&server, "/api/model");
    assert_eq!(status, 200);
    let info: ModelInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(info.input_shape, [1, 28, 28]);
    assert_eq!(info.classes.len(), 10);
    assert_eq!(info.methods.len(), Method::ALL.len());
    assert_eq!(info.methods.iter().filter(|m| m.default).count(), 8);
    assert_eq!(info.rules.len(), 3);
    assert_eq!(info.samples.unwrap().count, 200);
    assert_eq!(info.layers[0].name, "conv2d");
    assert_eq!(info.layers[0].output_shape, [8, 26, 26]);
}

#[test]
fn samples_are_the_data_sets_images() {
    let server = start();
    let (_, test) = common::small_trained_mnist();
    let (status, body) = get(&server, "/api/sample/5");
    assert_eq!(status, 200);
    let sample: ImageAnswer = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sample.pixels,
        test.batch(&[5]).unwrap().into_raw_vec_and_offset().0
    );
    assert_eq!(sample.label, Some(test.labels[5]));

    let (status, body) = get(&server, "/api/sample/200");
    assert_eq!(status, 400);
    assert!(
        error_of(&body).contains("out of range"),
        "{}",
        error_of(&body)
    );
    let (status, body) = get(&server, "/api/sample/-1");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("not an image index"));
}

#[test]
fn explain_answers_what_the_library_computes() {
    let server = start();
    let (model, test) = common::small_trained_mnist();
    let x = test.batch(&[3]).unwrap();
    let pixels: Vec<f32> = x.iter().copied().collect();
    let methods: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
    let (status, body) = explain(
        &server,
        serde_json::json!({ "pixels": pixels, "methods": methods, "rule": "guided", "class": 2 }),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: ExplainAnswer = serde_json::from_slice(&body).unwrap();

    let logits = model.predict(&x, 1, Head::Linear).unwrap();
    assert_eq!(answer.logits, logits.iter().copied().collect::<Vec<_>>());
    let total: f32 = answer.probabilities.iter().sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert_eq!(answer.target, 2);
    assert_eq!(answer.maps.len(), Method::ALL.len());
    // Every map: the library's attribution and drawn map for the same input
    // and class, to the bit (JSON carries f32 exactly).
    for (m, method) in answer.maps.iter().zip(Method::ALL) {
        assert_eq!(m.method, method.name());
        let a = attribute(model, &x, Some(&[2]), method, &Options::default()).unwrap();
        assert_eq!(m.raw, a.raw.iter().copied().collect::<Vec<_>>(), "{method}");
        let drawn = saliency::maps(method, &a.raw, Normalize::PerInput).unwrap();
        assert_eq!(m.map, drawn.iter().copied().collect::<Vec<_>>(), "{method}");
        assert_eq!(m.notes, a.notes);
    }
    // The trace: every node of the library's trace, and a path per pixel.
    let traced = trace(model, &x, Some(2), ReluRule::Guided).unwrap();
    let t = answer.trace.unwrap();
    assert_eq!(t.rule, "guided");
    assert_eq!(t.nodes.len(), traced.nodes.len());
    for (got, want) in t.nodes.iter().zip(&traced.nodes) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.shape, want.value.shape());
        assert_eq!(
            got.gradient,
            want.gradient.iter().copied().collect::<Vec<_>>()
        );
        assert_eq!(got.winners, want.winners);
        assert_eq!(got.gates.is_some(), want.gates.is_some());
    }
    assert_eq!(t.paths, traced.pixel_paths(model).unwrap());
    // The guided map is the trace's input node under the guided rule.
    let guided = &answer.maps[2];
    assert_eq!(guided.method, "guided");
    let scale = guided.raw.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in guided.raw.iter().zip(&t.nodes[0].gradient) {
        assert!((a - b).abs() <= 1e-4 * scale);
    }
    assert!(answer.timing_ms.total >= answer.timing_ms.maps);
}

#[test]
fn a_predicted_class_is_explained_when_none_is_given_and_no_trace_without_a_rule() {
    let server = start();
    let (model, test) = common::small_trained_mnist();
    let x = test.batch(&[0]).unwrap();
    let pixels: Vec<f32> = x.iter().copied().collect();
    let (status, body) = explain(
        &server,
        serde_json::json!({ "pixels": pixels, "methods": ["vanilla"] }),
    );
    assert_eq!(status, 200);
    let answer: ExplainAnswer = serde_json::from_slice(&body).unwrap();
    let logits = model.predict(&x, 1, Head::Linear).unwrap();
    let predicted = salient::model::argmax(logits.iter().copied());
    assert_eq!((answer.predicted, answer.target), (predicted, predicted));
    assert!(answer.trace.is_none());
}

/// A PNG of `width x height` RGB pixels.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let data: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    bytes
}

#[test]
fn uploads_are_fitted_as_predict_fits_them() {
    let server = start();
    let (status, body) = post(&server, "/api/image", &png(40, 30));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let image: ImageAnswer = serde_json::from_slice(&body).unwrap();
    assert_eq!(image.pixels.len(), 28 * 28);
    assert!(image.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(image.notes.len(), 2, "{:?}", image.notes);
    assert!(image.notes[0].contains("RGB to grey"));
    assert!(image.notes[1].contains("resized 40x30 to 28x28"));

    let (status, body) = post(&server, "/api/image", b"not an image at all");
    assert_eq!(status, 400);
    assert!(!error_of(&body).is_empty());
    let (status, body) = post(&server, "/api/image", b"");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("empty"));
    // A PNG header declaring 100000 x 100000 pixels: refused before decoding.
    let mut bomb = png(1, 1);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let (status, body) = post(&server, "/api/image", &bomb);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn bad_requests_get_a_status_and_a_message_and_the_server_goes_on() {
    let server = start();
    let ok: Vec<f32> = vec![0.0; 784];
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({ "pixels": [0.0, 1.0] }),
            "expected 784 values",
        ),
        (
            serde_json::json!({ "pixels": vec![2.0; 784] }),
            "must lie in [0, 1]",
        ),
        (
            serde_json::json!({ "pixels": ok, "class": 10 }),
            "out of range",
        ),
        (
            serde_json::json!({ "pixels": ok, "methods": ["magic"] }),
            "unknown method",
        ),
        (
            serde_json::json!({ "pixels": ok, "methods": ["vanilla", "vanilla"] }),
            "twice",
        ),
        (
            serde_json::json!({ "pixels": ok, "rule": "sideways" }),
            "unknown ReLU rule",
        ),
        (
            serde_json::json!({ "pixels": ok, "colour": "red" }),
            "unknown field",
        ),
        (serde_json::json!([1, 2, 3]), "not valid JSON"),
    ];
    for (request, message) in cases {
        let (status, body) = explain(&server, request.clone());
        assert_eq!(status, 400, "{request}");
        assert!(
            error_of(&body).contains(message),
            "{request}: {}",
            error_of(&body)
        );
    }
    let (status, body) = post(&server, "/api/explain", b"{\"pixels\": [0.0, ");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("not valid JSON"));

    // Bodies are bounded before they are read.
    let huge = vec![b' '; (8 << 20) + 1];
    let (status, body) = post(&server, "/api/explain", &huge);
    assert_eq!(status, 413);
    assert!(error_of(&body).contains("larger than 8 MiB"));

    // Fixed routes: no path reaches a file.
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/api/../../etc/passwd",
        "/src/explore/page.html",
        "/api/sample/",
    ] {
        let (status, _) = get(&server, path);
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    let (status, _) = get(&server, "/api/explain");
    assert_eq!(status, 405);

    // A request addressed to another host (DNS rebinding) is refused.
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "GET /api/model HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        server.addr().port()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // Still answering.
    let (status, _) = get(&server, "/api/model");
    assert_eq!(status, 200);
    let x: Tensor = Tensor::zeros(vec![1, 1, 28, 28]);
    let (status, _) = explain(
        &server,
        serde_json::json!({ "pixels": x.iter().collect::<Vec<_>>() }),
    );
    assert_eq!(status, 200);
    server.stop();
}

/// A graph model (a PyTorch ResNet from ONNX) in the explorer: every method's
/// map, equal to the library's, and no layer view (that follows stacks).
#[test]
fn the_explorer_explains_an_imported_graph() {
    use salient::explore::api::ExplainRequest;
    use salient::saliency::{attribute, Method, Options};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/resnet-small.onnx");
    let graph = salient::onnx::import(&path).unwrap();
    let explorer = Explorer::new(graph.clone(), "resnet-small.onnx".into(), None).unwrap();
    let info = explorer.info();
    assert_eq!(info.layers.len(), graph.nodes().len());
    let x = salient::Tensor::from_shape_fn(ndarray::IxDyn(&[1, 3, 32, 32]), |i| {
        ((i[1] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 10.0
    });
    let request = ExplainRequest {
        pixels: x.iter().copied().collect(),
        class: Some(3),
        methods: Method::ALL.iter().map(|m| m.name().to_string()).collect(),
        rule: Some("gradient".into()),
    };
    let answer = explorer.explain(&request).unwrap();
    assert!(answer.trace.is_none());
    assert_eq!(answer.maps.len(), Method::ALL.len());
    let vanilla = attribute(&graph, &x, Some(&[3]), Method::Vanilla, &Options::default()).unwrap();
    let got = &answer
        .maps
        .iter()
        .find(|m| m.method == "vanilla")
        .unwrap()
        .raw;
    assert_eq!(got, &vanilla.raw.iter().copied().collect::<Vec<_>>());
}
