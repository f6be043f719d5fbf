//! The `salient` binary, run as a user would: train, eval, predict, saliency,
//! report and demo on the bundled MNIST sample, and its error messages.
//!
//! One small model is trained once (500 digits, one epoch, about a second) and
//! shared; each test works in its own temporary folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use ndarray::Axis;
use salient::data::{self, DatasetKind, Split};
use salient::images::{read_npy, read_png_rgb, write_image_png, Colormap, Normalize, Scale};
use salient::model;
use salient::saliency::{self, attribute, Method, Options};
use tempfile::TempDir;

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample")
}

/// Runs `salient` with `args` in `dir`.
fn salient(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_salient"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the salient binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `salient` and insists that it succeeds; returns its standard output.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = salient(dir, args);
    assert!(
        out.status.success(),
        "salient {args:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `salient`, insists that it fails with `code` and one line on standard
/// error that contains every one of `needles`, and no panic.
fn fails(dir: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let out = salient(dir, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "salient {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line, got:\n{err}");
    assert!(err.starts_with("salient: error: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} is not in: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
}

/// The model every test shares, trained once by `salient train`:
/// `(checkpoint, what train printed)`.
fn trained() -> &'static (PathBuf, String) {
    static MODEL: OnceLock<(PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("model-{}.safetensors", std::process::id()));
        let data = sample_dir();
        let printed = ok(
            &dir,
            &[
                "train",
                "--dataset",
                "mnist",
                "--data",
                data.to_str().unwrap(),
                "--limit",
                "500",
                "--epochs",
                "1",
                "--out",
                path.to_str().unwrap(),
            ],
        );
        (path, printed)
    })
}

fn model_arg() -> &'static str {
    trained().0.to_str().unwrap()
}

fn tmp() -> TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Every `src="..."` of a page, percent-decoded (`grad-cam%2B%2B` is `grad-cam++`).
fn sources(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .map(|rest| {
            let url = &rest[..rest.find('"').unwrap()];
            let mut bytes = Vec::new();
            let mut i = 0;
            while i < url.len() {
                if url.as_bytes()[i] == b'%' {
                    bytes.push(u8::from_str_radix(&url[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    bytes.push(url.as_bytes()[i]);
                    i += 1;
                }
            }
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

#[test]
fn train_prints_keras_lines_and_eval_agrees_with_the_library() {
    let (path, printed) = trained();
    assert!(
        printed.contains("Loaded 500 training images of 1x28x28"),
        "{printed}"
    );
    assert!(printed.contains("Epoch 1/1 - "), "{printed}");
    assert!(printed.contains("Test loss: "), "{printed}");
    assert!(path.is_file());

    let dir = tmp();
    let data = sample_dir();
    let printed = ok(
        dir.path(),
        &[
            "eval",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let model = model::load(path).unwrap();
    let test = data::load(DatasetKind::Mnist, &data, Split::Test).unwrap();
    let (loss, accuracy) = model.evaluate(&test.images(), &test.labels, 250).unwrap();
    assert_eq!(
        printed.trim(),
        format!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}")
    );
}

#[test]
fn predict_converts_an_image_of_another_size_and_says_so() {
    let dir = tmp();
    // A test digit as a 56x56 RGB PNG: twice the size, three channels.
    let test = data::load(DatasetKind::Mnist, &sample_dir(), Split::Test).unwrap();
    let images = test.images();
    let digit = images.index_axis(Axis(0), 0);
    let rgb = ndarray::concatenate(Axis(0), &[digit.view(), digit.view(), digit.view()]).unwrap();
    let png = dir.path().join("digit.png");
    write_image_png(&png, rgb.view(), Scale::Factor(2)).unwrap();

    let printed = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            model_arg(),
            "--image",
            "digit.png",
            "--top",
            "2",
        ],
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "digit.png", "{printed}");
    assert!(printed.contains("note: converted RGB to grey"), "{printed}");
    assert!(
        printed.contains("note: resized 56x56 to 28x28"),
        "{printed}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with('%') || l.contains("%  "))
            .count(),
        2
    );
}

#[test]
fn saliency_raw_files_match_the_library_and_the_figures() {
    let dir = tmp();
    let data = sample_dir();
    let printed = ok(
        dir.path(),
        &[
            "saliency",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--indices",
            "12,0",
            "--method",
            "vanilla",
            "--out",
            "out",
            "--raw",
        ],
    );
    assert!(printed.contains("softmax head is made linear"), "{printed}");
    let out = dir.path().join("out");

    // The same computation through the library: the true classes of images 12 and 0.
    let model = model::load(&trained().0).unwrap();
    let test = data::load(DatasetKind::Mnist, &data, Split::Test)
        .unwrap()
        .select(&[12, 0])
        .unwrap();
    let expected = attribute(
        &model,
        &test.images(),
        Some(&test.labels),
        Method::Vanilla,
        &Options::default(),
    )
    .unwrap();
    for (i, index) in [12, 0].into_iter().enumerate() {
        let line = printed
            .lines()
            .find(|l| l.starts_with(&format!("test image {index}:")))
            .unwrap_or_else(|| panic!("no line for image {index}:\n{printed}"));
        assert!(line.contains(&format!("true {}", test.labels[i])), "{line}");
        assert!(
            line.contains(&format!("target {}", test.labels[i])),
            "{line}"
        );
        assert!(line.contains("predicted ") && line.contains('%'), "{line}");
        assert!(line.ends_with(&format!("{index}-vanilla.png")), "{line}");
    }

    let raw = read_npy(&out.join("raw.npy")).unwrap();
    assert_eq!(raw.shape(), &[2, 1, 28, 28]);
    assert_eq!(raw, expected.raw, "raw.npy is the library's attribution");

    let maps = read_npy(&out.join("maps.npy")).unwrap();
    assert_eq!(maps.shape(), &[2, 28, 28]);
    assert_eq!(
        maps,
        saliency::maps(Method::Vanilla, &raw, Normalize::PerInput).unwrap()
    );
    for map in maps.outer_iter() {
        assert!(map.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(map.iter().copied().fold(f32::INFINITY, f32::min), 0.0);
        assert!(map.iter().copied().fold(0.0, f32::max) > 0.999);
    }

    // The figure: input, heat map and overlay, each 28 px enlarged 8 times,
    // 8 px apart. The heat map's pixels are viridis of the map.
    let (w, h, px) = read_png_rgb(&out.join("12-vanilla.png")).unwrap();
    assert_eq!((w, h), (3 * 224 + 2 * 8, 224));
    let map = maps.index_axis(Axis(0), 0);
    for (y, x) in [(0, 0), (10, 14), (14, 10), (27, 27)] {
        let (fx, fy) = (224 + 8 + 8 * x + 3, 8 * y + 3);
        let at = 3 * (fy * w as usize + fx);
        assert_eq!(
            px[at..at + 3],
            Colormap::Viridis.rgb(map[[y, x]]),
            "heat map pixel ({x}, {y})"
        );
    }
    assert!(out.join("0-vanilla.png").is_file());
}

#[test]
fn saliency_of_spatial_methods_only_normalises_and_batch_mode_spans_the_batch() {
    let dir = tmp();
    let data = sample_dir();
    let printed = ok(
        dir.path(),
        &[
            "saliency",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--indices",
            "0,1,2",
            "--method",
            "grad-cam",
            "--class",
            "3",
            "--normalize",
            "batch",
            "--colormap",
            "jet",
            "--out",
            "out",
            "--raw",
        ],
    );
    assert_eq!(printed.matches("target 3 ->").count(), 3, "{printed}");
    assert!(
        printed.contains("Note: grad-cam: layer conv2d_1"),
        "{printed}"
    );
    let raw = read_npy(&dir.path().join("out/raw.npy")).unwrap();
    let maps = read_npy(&dir.path().join("out/maps.npy")).unwrap();
    // Grad-CAM's map, non-negative, with no absolute value taken.
    assert!(raw.iter().all(|&v| v >= 0.0));
    let lo = raw.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let first = raw.index_axis(Axis(1), 0);
    let want = first.mapv(|v| (v - lo) / (hi - lo + 1e-7));
    let diff = (&maps - &want).iter().fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(diff < 1e-6, "batch-normalised maps differ by {diff}");
}

/// `--reference` computes the maps through the reference ops, says so, and
/// gives the fast paths' maps within 1e-4 of each map's largest value.
#[test]
fn saliency_through_the_reference_ops_matches_the_fast_maps() {
    let dir = tmp();
    let data = sample_dir();
    let run = |out: &str, reference: bool| {
        let mut args = vec![
            "saliency",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--indices",
            "0,12,38",
            "--method",
            "guided",
            "--out",
            out,
            "--raw",
        ];
        if reference {
            args.push("--reference");
        }
        let printed = ok(dir.path(), &args);
        (
            printed,
            read_npy(&dir.path().join(out).join("raw.npy")).unwrap(),
        )
    };
    let (fast_printed, fast) = run("fast", false);
    let (printed, reference) = run("reference", true);
    assert!(printed.contains("reference ops"), "{printed}");
    assert!(!fast_printed.contains("reference ops"), "{fast_printed}");
    for (f, r) in fast.outer_iter().zip(reference.outer_iter()) {
        let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = (&f - &r).iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(scale > 0.0 && diff <= 1e-4 * scale, "{diff} of {scale}");
    }
}

#[test]
fn saliency_on_own_image_explains_the_predicted_class_with_completeness() {
    let dir = tmp();
    let test = data::load(DatasetKind::Mnist, &sample_dir(), Split::Test).unwrap();
    let png = dir.path().join("my digit.png");
    write_image_png(&png, test.images().index_axis(Axis(0), 7), Scale::Factor(3)).unwrap();
    let printed = ok(
        dir.path(),
        &[
            "saliency",
            "--model",
            model_arg(),
            "--image",
            "my digit.png",
            "--method",
            "integrated-gradients",
            "--steps",
            "20",
            "--out",
            "figs",
        ],
    );
    let line = printed
        .lines()
        .find(|l| l.starts_with("my digit.png: "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(!line.contains("true "), "{line}");
    // Unlabelled: the target is the predicted class.
    let predicted = line
        .split("predicted ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(line.contains(&format!("target {predicted} ->")), "{line}");
    assert!(
        printed.contains("note: resized 84x84 to 28x28"),
        "{printed}"
    );
    assert!(printed.contains("completeness error "), "{printed}");
    let (w, h, _) =
        read_png_rgb(&dir.path().join("figs/my digit-integrated-gradients.png")).unwrap();
    assert_eq!((w, h), (688, 224));
    assert!(
        !dir.path().join("figs/raw.npy").exists(),
        "no .npy without --raw"
    );
}

#[test]
fn report_links_existing_pictures_of_each_method() {
    let dir = tmp();
    let data = sample_dir();
    let printed = ok(
        dir.path(),
        &[
            "report",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--indices",
            "0,12",
            "--methods",
            "vanilla,grad-cam,integrated-gradients",
            "--no-trust",
            "--out",
            "report",
        ],
    );
    assert!(printed.contains("Wrote report/index.html"), "{printed}");
    assert!(!printed.contains("trust scores"), "{printed}");
    let html = std::fs::read_to_string(dir.path().join("report/index.html")).unwrap();
    let srcs = sources(&html);
    assert_eq!(srcs.len(), 2 * (1 + 3), "an input and three maps per row");
    for src in &srcs {
        let (w, h, _) = read_png_rgb(&dir.path().join("report").join(src)).unwrap();
        assert_eq!((w, h), (28, 28), "{src} is written at the input's size");
    }
    for text in [
        "<th class=\"method\">Gradient</th>",
        "<th class=\"method\">Grad-CAM</th>",
        "<th class=\"method\">Integrated gradients</th>",
        "id=\"input-0\"",
        "id=\"input-12\"",
        "the softmax head is made linear for the backward pass",
        "completeness error at most",
        "min-max normalisation per input",
    ] {
        assert!(html.contains(text), "{text:?} is not in the page");
    }
}

#[test]
fn report_defaults_to_every_method_on_the_tutorials_digits() {
    let dir = tmp();
    let data = sample_dir();
    ok(
        dir.path(),
        &[
            "report",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--out",
            "r",
        ],
    );
    let html = std::fs::read_to_string(dir.path().join("r/index.html")).unwrap();
    assert_eq!(
        html.matches("<th class=\"method\">").count(),
        Method::ALL.len()
    );
    for index in [0, 12, 38, 83, 112, 74, 190] {
        assert!(
            html.contains(&format!("id=\"input-{index}\"")),
            "row {index}"
        );
    }
    for src in sources(&html) {
        assert!(dir.path().join("r").join(&src).is_file(), "{src}");
    }
    // The trust section: a row per method and the random order, the curves
    // and the sanity grid.
    for text in [
        "Trust: faithfulness of each method on these inputs",
        "<td>random order</td>",
        "Trust: sanity check, cascading randomisation of the weights",
        "src=\"curves.png\"",
        "src=\"sanity-grid.png\"",
        "deletion AUC",
    ] {
        assert!(html.contains(text), "{text:?} is not in the page");
    }
    assert_eq!(html.matches("<td>Integrated gradients</td>").count(), 1);
}

/// Masks of the digits' own strokes (pixels above one half), as `<index>.png`.
fn digit_masks(dir: &Path, indices: &[usize]) {
    let test = data::load(DatasetKind::Mnist, &sample_dir(), Split::Test).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for &i in indices {
        let image = test.batch(&[i]).unwrap();
        let mut png = salient::images::RgbImage::filled(28, 28, [0, 0, 0]);
        for (k, &v) in image.iter().enumerate() {
            if v > 0.5 {
                png.pixels[3 * k..3 * k + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        png.write_png(&dir.join(format!("{i}.png"))).unwrap();
    }
}

#[test]
fn sanity_and_faithfulness_write_their_pages_and_tables() {
    let dir = tmp();
    let data = sample_dir();
    let data = data.to_str().unwrap();
    let printed = ok(
        dir.path(),
        &[
            "sanity",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data,
            "--count",
            "3",
            "--methods",
            "vanilla,guided",
            "--label-epochs",
            "1",
            "--label-limit",
            "300",
            "--out",
            "sanity",
        ],
    );
    assert!(printed.contains("Mean rank correlation"), "{printed}");
    let csv = std::fs::read_to_string(dir.path().join("sanity/sanity.csv")).unwrap();
    // 4 cascading + 4 independent + 1 label stage, 2 methods, 3 inputs.
    assert_eq!(csv.lines().count(), 1 + 9 * 2 * 3, "{csv}");
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("cascading to visualized_layer,Cascading,"));
    let html = std::fs::read_to_string(dir.path().join("sanity/index.html")).unwrap();
    assert!(html.contains("permuted labels") && html.contains("src=\"sanity-grid.png\""));

    digit_masks(&dir.path().join("masks"), &[0, 1, 2, 3]);
    // The four digits with their masks; each run adds its methods and output.
    let faithfulness = |more: &[&str]| -> Vec<String> {
        let common = [
            "faithfulness",
            "--model",
            model_arg(),
            "--dataset",
            "mnist",
            "--data",
            data,
            "--indices",
            "0,1,2,3",
            "--masks",
            "masks",
        ];
        common.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let args = faithfulness(&[
        "--methods",
        "vanilla,occlusion",
        "--sensitivity-samples",
        "2",
        "--out",
        "faith",
    ]);
    let printed = ok(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(printed.contains("random order"), "{printed}");
    let csv = std::fs::read_to_string(dir.path().join("faith/faithfulness.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 4, "{csv}");
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 11, "{line}");
        let energy: f64 = fields[9].parse().unwrap();
        assert!((0.0..=1.0).contains(&energy), "{line}");
        assert!(fields[10] == "0" || fields[10] == "1", "{line}");
    }
    let summary = std::fs::read_to_string(dir.path().join("faith/summary.csv")).unwrap();
    assert!(summary.contains("random order,deletion AUC,"), "{summary}");
    let (w, h, _) = read_png_rgb(&dir.path().join("faith/curves.png")).unwrap();
    assert!(w > 600 && h > 400);
    // A missing mask is one clear error naming the file.
    std::fs::remove_file(dir.path().join("masks/3.png")).unwrap();
    let args = faithfulness(&["--methods", "vanilla", "--out", "faith2"]);
    fails(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        1,
        &["3.png"],
    );
}

#[test]
fn demo_trains_and_writes_the_report_and_explore_serves_its_model() {
    let dir = tmp();
    // Before the demo, explore has no model and says how to make one.
    fails(
        dir.path(),
        &["explore", "--port", "0"],
        1,
        &["salient demo", "--model"],
    );
    let data = sample_dir();
    let printed = ok(
        dir.path(),
        &[
            "demo",
            "--out",
            "out/demo",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--limit",
            "300",
            "--methods",
            "guided,occlusion",
        ],
    );
    assert!(printed.contains("Epoch 1/1"), "{printed}");
    assert!(
        printed
            .trim_end()
            .ends_with("Open out/demo/report/index.html in a browser."),
        "{printed}"
    );
    assert!(dir
        .path()
        .join("out/demo/mnist-sample.safetensors")
        .is_file());
    let html = std::fs::read_to_string(dir.path().join("out/demo/report/index.html")).unwrap();
    // Seven rows of an input and two maps, then the trust section's curves and sanity grid.
    assert_eq!(sources(&html).len(), 7 * 3 + 2);

    // Then `salient explore` finds the demo's model and the bundled test digits.
    let mut child = Command::new(env!("CARGO_BIN_EXE_salient"))
        .args(["explore", "--port", "0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    assert!(
        first.starts_with("Exploring mnist-sample.safetensors at "),
        "{first}"
    );
    let body = ureq::get(format!("{url}api/model"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info["model"], "mnist-sample.safetensors");
    assert_eq!(info["samples"]["count"], 1000);
}

#[test]
fn errors_are_one_line_naming_the_problem() {
    let dir = tmp();
    let data = sample_dir();
    let data = data.to_str().unwrap();
    let saliency = |model: &str, indices: &str, method: &str| {
        vec![
            "saliency".to_string(),
            "--model".into(),
            model.into(),
            "--dataset".into(),
            "mnist".into(),
            "--data".into(),
            data.into(),
            "--indices".into(),
            indices.into(),
            "--method".into(),
            method.into(),
            "--out".into(),
            "out".into(),
        ]
    };
    let run = |args: Vec<String>, code: i32, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(dir.path(), &args, code, needles);
    };

    run(
        saliency("missing.safetensors", "0", "vanilla"),
        1,
        &["missing.safetensors", "No such file"],
    );
    run(
        saliency(model_arg(), "0,1000", "vanilla"),
        1,
        &["index 1000 is out of range", "1000 images (0 to 999)"],
    );
    run(
        saliency(model_arg(), "0", "saliency"),
        2,
        &["unknown method \"saliency\"", "vanilla", "occlusion"],
    );
    run(
        saliency(model_arg(), "0,x", "vanilla"),
        2,
        &["'x'", "--indices"],
    );
    let mut class = saliency(model_arg(), "0", "vanilla");
    class.extend(["--class".into(), "10".into()]);
    run(class, 1, &["\"10\"", "0 to 9"]);
    let mut layer = saliency(model_arg(), "0", "grad-cam");
    layer.extend(["--layer".into(), "conv9".into()]);
    run(layer, 1, &["conv9"]);
    run(
        vec!["saliency".into(), "--model".into(), model_arg().into()],
        2,
        &["--method", "--out"],
    );
    let explore = |extra: &[&str]| -> Vec<String> {
        ["explore", "--port", "0"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    run(
        explore(&["--model", "missing.safetensors"]),
        1,
        &["missing.safetensors", "No such file"],
    );
    run(explore(&["--dataset", "mnist"]), 2, &["--data"]);
    run(
        explore(&["--bind", "localhost"]),
        2,
        &["--bind", "IP address"],
    );
    // A data folder that is not there.
    run(
        explore(&[
            "--model",
            model_arg(),
            "--dataset",
            "folder",
            "--data",
            "nowhere",
        ]),
        1,
        &["nowhere"],
    );
    run(
        vec![
            "report".into(),
            "--model".into(),
            model_arg().into(),
            "--dataset".into(),
            "mnist".into(),
            "--data".into(),
            data.into(),
            "--methods".into(),
            "vanilla,gradcam".into(),
            "--out".into(),
            "r".into(),
        ],
        1,
        &["unknown method \"gradcam\""],
    );
    run(
        vec![
            "eval".into(),
            "--model".into(),
            model_arg().into(),
            "--dataset".into(),
            "mnist".into(),
            "--data".into(),
            "no-such-folder".into(),
        ],
        1,
        &["no-such-folder"],
    );
    assert!(!dir.path().join("out").exists(), "nothing written on error");

    // Help is not an error.
    let help = salient(dir.path(), &["saliency", "--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("--samples"));
}

/// `train` with the same seed twice, in two processes (whose hash maps are
/// seeded differently): the same bytes. The file's mode follows the umask, and
/// a symlink given as `--out` is written through.
#[test]
fn checkpoints_are_reproducible_follow_the_umask_and_keep_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp();
    let data = sample_dir();
    let train = |out: &str, umask: &str| {
        let script = format!("umask {umask}; exec \"$0\" \"$@\"");
        let status = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_salient")])
            .args(["train", "--dataset", "mnist", "--data"])
            .arg(&data)
            .args([
                "--limit", "100", "--epochs", "1", "--seed", "9", "--out", out,
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    train("a.safetensors", "022");
    std::os::unix::fs::symlink("real.safetensors", dir.path().join("link.safetensors")).unwrap();
    train("link.safetensors", "027");
    let a = std::fs::read(dir.path().join("a.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("real.safetensors")).unwrap();
    assert!(a == b, "the same seed gave different checkpoints");
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("a.safetensors"), 0o644);
    assert_eq!(mode("real.safetensors"), 0o640);
    let link = std::fs::symlink_metadata(dir.path().join("link.safetensors")).unwrap();
    assert!(link.file_type().is_symlink(), "--out replaced the symlink");
}

/// Output read by a program that stops reading (`salient ... | head`): no
/// "internal error", and the status of a process ended by SIGPIPE (141).
#[test]
fn a_closed_output_pipe_ends_quietly() {
    let dir = tmp();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/keras-cnn.onnx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_salient"))
        .arg("import")
        .arg(&model)
        .args(["--out", "m.safetensors"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before salient prints its summary.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("internal error"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
    // It stopped where it was: no checkpoint half written, no temporary file.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "m.safetensors")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let written = dir.path().join("m.safetensors");
    if written.exists() {
        assert!(salient::model::load_model(&written).is_ok());
    }
}

/// A new user's path with a model of their own: an ONNX file from Keras
/// imported, then explained with every method (the trust section included),
/// evaluated and predicted from; a PyTorch ResNet given as `.onnx` directly.
#[test]
fn onnx_models_go_through_import_report_and_eval() {
    let dir = tmp();
    let data = sample_dir();
    let onnx = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/onnx")
            .join(name)
            .display()
            .to_string()
    };
    let printed = ok(
        dir.path(),
        &[
            "import",
            &onnx("keras-cnn.onnx"),
            "--out",
            "keras.safetensors",
        ],
    );
    assert!(printed.contains("input 1x28x28, 10 classes"), "{printed}");
    assert!(printed.contains("Wrote keras.safetensors"), "{printed}");
    let printed = ok(
        dir.path(),
        &[
            "report",
            "--model",
            "keras.safetensors",
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--indices",
            "0,12",
            "--out",
            "report",
        ],
    );
    assert!(printed.contains("(13 methods in"), "{printed}");
    assert!(printed.contains("trust scores"), "{printed}");
    let html = std::fs::read_to_string(dir.path().join("report/index.html")).unwrap();
    for src in sources(&html) {
        assert!(dir.path().join("report").join(&src).is_file(), "{src}");
    }
    let printed = ok(
        dir.path(),
        &[
            "eval",
            "--model",
            &onnx("keras-cnn.onnx"),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    assert!(printed.contains("Test accuracy:"), "{printed}");
    // A model for 3x32x32 images shown 1x28x28 digits: said, not crashed.
    fails(
        dir.path(),
        &[
            "report",
            "--model",
            &onnx("resnet-small.onnx"),
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--out",
            "r2",
        ],
        1,
        &["3x32x32"],
    );
    if let Some(cifar) = shared_cifar() {
        let printed = ok(
            dir.path(),
            &[
                "report",
                "--model",
                &onnx("resnet-small.onnx"),
                "--dataset",
                "cifar10",
                "--data",
                cifar.to_str().unwrap(),
                "--indices",
                "0,1",
                "--no-trust",
                "--out",
                "r3",
            ],
        );
        assert!(printed.contains("(13 methods in"), "{printed}");
    }
}

fn shared_cifar() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10");
    dir.is_dir().then_some(dir)
}
