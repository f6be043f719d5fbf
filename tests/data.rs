//! Data loaders on files made here (every format, every kind of damage), on the
//! bundled MNIST sample, and on the real data sets in `../shared/data` when present.

use std::fs;
use std::path::{Path, PathBuf};

use salient::data::cifar::{self, CifarBatch, IMAGE_BYTES};
use salient::data::idx::{write_idx_images, write_idx_labels};
use salient::data::{folder, load, load_image, to_model_input, Dataset, DatasetKind, Split};
use salient::Result;

mod common;
use common::shared_data;

// ---------------------------------------------------------------- helpers

/// The message of an error that must happen.
fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

/// Asserts that `msg` contains every one of `parts`.
fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "error {msg:?} should mention {part:?}");
    }
}

fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

/// A grey PNG of `width x height` filled with `value`.
fn grey_png(path: &Path, width: u32, height: u32, value: u8) {
    let data = vec![value; (width * height) as usize];
    write_png(path, width, height, png::ColorType::Grayscale, &data);
}

/// Writes an MNIST-style pair of IDX files: images `i` filled with `i * 10`.
fn write_mnist(dir: &Path, prefix: &str, labels: &[u8], suffix: &str) -> (PathBuf, PathBuf) {
    let pixels: Vec<u8> = (0..labels.len())
        .flat_map(|i| vec![(i * 10) as u8; 4 * 3])
        .collect();
    let images = dir.join(format!("{prefix}-images-idx3-ubyte{suffix}"));
    let label_file = dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}"));
    write_idx_images(&images, 4, 3, &pixels).unwrap();
    write_idx_labels(&label_file, labels).unwrap();
    (images, label_file)
}

/// A batch of `n` CIFAR images whose pixel `(c, y, x)` of image `i` is
/// `(i + 3c + y + x) % 256`, with labels `i % 10`.
fn cifar_batch(n: usize) -> CifarBatch {
    let mut batch = CifarBatch::default();
    for i in 0..n {
        batch.labels.push((i % 10) as u8);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    batch.pixels.push(((i + 3 * c + y + x) % 256) as u8);
                }
            }
        }
    }
    batch
}

// ---------------------------------------------------------------- MNIST / IDX

#[test]
fn mnist_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", &[3, 1, 4], "");
    write_mnist(dir.path(), "t10k", &[9, 0], ".gz");

    let train = load(DatasetKind::Mnist, dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(train.images().shape(), &[3, 1, 4, 3]);
    assert_eq!(train.labels, vec![3, 1, 4]);
    assert_eq!(
        train.class_names,
        (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(train.images()[[2, 0, 3, 2]], 20.0 / 255.0);

    let test = load(DatasetKind::Mnist, dir.path(), Split::Test).unwrap();
    assert_eq!(test.labels, vec![9, 0]);
    assert_eq!(test.shape(), [1, 4, 3]);
}

#[test]
fn mnist_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Train));
    assert_mentions(&msg, &["train-images-idx3-ubyte", ".gz"]);
}

#[test]
fn mnist_truncated_file_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = write_mnist(dir.path(), "train", &[1, 2], "");
    let bytes = fs::read(&images).unwrap();
    fs::write(&images, &bytes[..bytes.len() - 5]).unwrap();
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &[
            "train-images-idx3-ubyte",
            "24 bytes",
            "2 images of 4x3",
            "found 19 bytes",
            "truncated",
        ],
    );
}

#[test]
fn mnist_truncated_gzip_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = write_mnist(dir.path(), "t10k", &[1, 2], ".gz");
    let bytes = fs::read(&images).unwrap();
    fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Test));
    assert_mentions(&msg, &["t10k-images-idx3-ubyte.gz", "gzip data"]);
}

#[test]
fn mnist_wrong_magic_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", &[1, 2], "");
    let images = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = fs::read(&images).unwrap();
    bytes[3] = 0x0d; // 0x0000080d: a "float" IDX file
    fs::write(&images, bytes).unwrap();
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &[
            "train-images-idx3-ubyte",
            "magic number",
            "0x00000803",
            "0x0000080d",
        ],
    );
}

#[test]
fn mnist_count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", &[1, 2, 3], "");
    write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2]).unwrap();
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &[
            "train-labels-idx1-ubyte: label count",
            "expected 3",
            "train-images-idx3-ubyte",
            "found 2",
        ],
    );
}

#[test]
fn mnist_bad_label_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", &[1, 2, 10], "");
    let msg = err(load(DatasetKind::Mnist, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &["train-labels-idx1-ubyte", "label 2", "0 to 9", "found 10"],
    );
}

// ---------------------------------------------------------------- CIFAR-10

#[test]
fn cifar_binary_round_trip_is_nchw() {
    let dir = tempfile::tempdir().unwrap();
    let batch_dir = dir.path().join("cifar-10-batches-bin");
    fs::create_dir(&batch_dir).unwrap();
    cifar::write_batch(&batch_dir.join("test_batch.bin"), &cifar_batch(12)).unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    fs::write(
        batch_dir.join("batches.meta.txt"),
        names.join("\n") + "\n\n",
    )
    .unwrap();

    let data = load(DatasetKind::Cifar10, dir.path(), Split::Test).unwrap();
    assert_eq!(data.images().shape(), &[12, 3, 32, 32]);
    assert_eq!(data.labels, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    assert_eq!(data.class_names, names);
    for &(i, c, y, x) in &[(0, 0, 0, 0), (5, 1, 2, 3), (11, 2, 31, 30), (7, 2, 0, 31)] {
        let expected = ((i + 3 * c + y + x) % 256) as f32 / 255.0;
        assert_eq!(
            data.images()[[i, c, y, x]],
            expected,
            "pixel {:?}",
            (i, c, y, x)
        );
    }
}

#[test]
fn cifar_train_reads_five_batches_in_order_with_standard_names() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        let mut batch = cifar_batch(2);
        batch.labels = vec![i, i];
        cifar::write_batch(&dir.path().join(format!("data_batch_{i}.bin")), &batch).unwrap();
    }
    let data = load(DatasetKind::Cifar10, dir.path(), Split::Train).unwrap();
    assert_eq!(data.labels, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(
        data.class_names,
        cifar::CLASS_NAMES.map(String::from).to_vec()
    );
}

#[test]
fn cifar_train_with_a_missing_batch_names_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in [1, 2, 4, 5] {
        cifar::write_batch(
            &dir.path().join(format!("data_batch_{i}.bin")),
            &cifar_batch(1),
        )
        .unwrap();
    }
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Train));
    assert_mentions(&msg, &["data_batch_3.bin"]);
}

#[test]
fn cifar_length_not_a_multiple_of_3073_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    cifar::write_batch(&path, &cifar_batch(2)).unwrap();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(
        &msg,
        &[
            "test_batch.bin: file length",
            "3073",
            "6046 bytes",
            "1 whole records",
        ],
    );
}

#[test]
fn cifar_empty_batch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("test_batch.bin"), b"").unwrap();
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(&msg, &["test_batch.bin: file length", "0 bytes"]);
}

#[test]
fn cifar_bad_label_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = cifar_batch(3);
    batch.labels[1] = 10;
    cifar::write_batch(&dir.path().join("test_batch.bin"), &batch).unwrap();
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(&msg, &["test_batch.bin", "label of record 1", "found 10"]);
}

#[test]
fn cifar_meta_with_wrong_count_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    cifar::write_batch(&dir.path().join("test_batch.bin"), &cifar_batch(1)).unwrap();
    fs::write(dir.path().join("batches.meta.txt"), "cat\ndog\n").unwrap();
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(
        &msg,
        &["batches.meta.txt: class names", "10 names", "found 2 names"],
    );
}

#[test]
fn cifar_falls_back_to_class_folders() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in cifar::CLASS_NAMES.iter().enumerate() {
        let rgb = vec![(i * 20) as u8; 32 * 32 * 3];
        write_png(
            &dir.path().join("test").join(name).join("0.png"),
            32,
            32,
            png::ColorType::Rgb,
            &rgb,
        );
    }
    let data = load(DatasetKind::Cifar10, dir.path(), Split::Test).unwrap();
    assert_eq!(data.images().shape(), &[10, 3, 32, 32]);
    assert_eq!(data.labels, (0..10).collect::<Vec<_>>());
    assert_eq!(
        data.class_names,
        cifar::CLASS_NAMES.map(String::from).to_vec()
    );
    assert_eq!(data.images()[[3, 2, 5, 5]], 60.0 / 255.0);

    // There is no train/ folder and no batch file for training.
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &["no CIFAR-10 train data", "data_batch_1.bin", "train/"],
    );
}

#[test]
fn cifar_class_folders_must_be_32x32_rgb_in_ten_classes() {
    let dir = tempfile::tempdir().unwrap();
    for name in cifar::CLASS_NAMES {
        grey_png(&dir.path().join("test").join(name).join("0.png"), 32, 32, 0);
    }
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(&msg, &["test: image shape", "32x32 RGB", "1 channel"]);

    fs::remove_dir_all(dir.path().join("test").join("truck")).unwrap();
    let msg = err(load(DatasetKind::Cifar10, dir.path(), Split::Test));
    assert_mentions(&msg, &["class folders", "ten classes", "found 9"]);
}

// ---------------------------------------------------------------- image folders

#[test]
fn folder_labels_follow_sorted_names() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("zebra/b.png"), 3, 2, 10);
    grey_png(&dir.path().join("zebra/a.png"), 3, 2, 20);
    grey_png(&dir.path().join("ant/x.PNG"), 3, 2, 30);

    let data = folder::load_folder(dir.path()).unwrap();
    assert_eq!(data.class_names, vec!["ant", "zebra"]);
    assert_eq!(data.labels, vec![0, 1, 1]);
    assert_eq!(data.images().shape(), &[3, 1, 2, 3]);
    let firsts: Vec<f32> = (0..3)
        .map(|i| data.images()[[i, 0, 0, 0]] * 255.0)
        .collect();
    assert_eq!(firsts, vec![30.0, 20.0, 10.0]);
}

#[test]
fn folder_ignores_other_extensions_and_hidden_entries() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 2, 2, 0);
    fs::write(dir.path().join("a/notes.txt"), "not an image").unwrap();
    fs::write(dir.path().join("a/.DS_Store"), "junk").unwrap();
    grey_png(&dir.path().join(".thumbnails/1.png"), 5, 5, 0);
    fs::write(dir.path().join("README.md"), "about").unwrap();

    let data = folder::load_folder(dir.path()).unwrap();
    assert_eq!(data.class_names, vec!["a"]);
    assert_eq!(data.len(), 1);
}

#[test]
fn folder_class_without_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 2, 2, 0);
    fs::create_dir(dir.path().join("b")).unwrap();
    fs::write(dir.path().join("b/1.gif"), "GIF89a").unwrap();
    let msg = err(folder::load_folder(dir.path()));
    assert_mentions(
        &msg,
        &["/b: images", ".png, .jpg or .jpeg", "none among 1 entries"],
    );
}

#[test]
fn folder_empty_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let msg = err(load(DatasetKind::Folder, dir.path(), Split::Train));
    assert_mentions(
        &msg,
        &[
            &dir.path().display().to_string(),
            "class folders",
            "no subfolders",
        ],
    );
}

#[test]
fn folder_of_loose_images_says_so() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("1.png"), 2, 2, 0);
    grey_png(&dir.path().join("2.png"), 2, 2, 0);
    let msg = err(folder::load_folder(dir.path()));
    assert_mentions(&msg, &["2 image files directly in it"]);
}

#[test]
fn folder_missing_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let msg = err(folder::load_folder(&missing));
    assert_mentions(&msg, &["nope"]);
}

#[test]
fn folder_mixed_sizes_names_the_first_odd_file_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 4, 4, 0);
    grey_png(&dir.path().join("a/2.png"), 4, 4, 0);
    grey_png(&dir.path().join("b/1.png"), 5, 4, 0);
    grey_png(&dir.path().join("b/2.png"), 6, 6, 0);
    let msg = err(folder::load_folder(dir.path()));
    assert_mentions(
        &msg,
        &[
            "b/1.png: image shape",
            "4x4 grey",
            "a/1.png",
            "found 5x4 grey",
        ],
    );
}

#[test]
fn folder_mixed_channels_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 2, 2, 0);
    write_png(
        &dir.path().join("a/2.png"),
        2,
        2,
        png::ColorType::Rgb,
        &[0; 12],
    );
    let msg = err(folder::load_folder(dir.path()));
    assert_mentions(&msg, &["a/2.png: image shape", "2x2 grey", "found 2x2 RGB"]);
}

#[test]
fn folder_corrupt_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 2, 2, 0);
    fs::write(dir.path().join("a/2.jpg"), "plain text").unwrap();
    let msg = err(folder::load_folder(dir.path()));
    assert_mentions(&msg, &["a/2.jpg: file signature", "PNG", "JPEG"]);
}

#[test]
fn folder_split_uses_train_and_test_subfolders() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("train/a/1.png"), 2, 2, 0);
    grey_png(&dir.path().join("train/b/1.png"), 2, 2, 0);
    grey_png(&dir.path().join("test/a/1.png"), 2, 2, 0);
    assert_eq!(
        load(DatasetKind::Folder, dir.path(), Split::Train)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        load(DatasetKind::Folder, dir.path(), Split::Test)
            .unwrap()
            .len(),
        1
    );

    fs::remove_dir_all(dir.path().join("test")).unwrap();
    let msg = err(load(DatasetKind::Folder, dir.path(), Split::Test));
    assert_mentions(&msg, &["no test/ subfolder beside train/"]);
}

#[test]
fn folder_without_split_serves_both_splits() {
    let dir = tempfile::tempdir().unwrap();
    grey_png(&dir.path().join("a/1.png"), 2, 2, 0);
    for split in [Split::Train, Split::Test] {
        let data = load(DatasetKind::Folder, dir.path(), split).unwrap();
        assert_eq!(data.class_names, vec!["a"]);
    }
}

// ---------------------------------------------------------------- single images

fn test_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(name)
}

#[test]
fn grey_jpeg_loads_as_one_channel() {
    let img = load_image(&test_image("grey-8x4.jpg")).unwrap();
    assert_eq!(img.shape(), &[1, 4, 8]);
    for x in 0..8 {
        let expected = (16 + 32 * x) as f32 / 255.0;
        assert!(
            (img[[0, 2, x]] - expected).abs() < 3.0 / 255.0,
            "x = {x}: {}",
            img[[0, 2, x]]
        );
    }
}

#[test]
fn rgb_jpegs_load_as_three_channels() {
    for name in ["rgb-8x4.jpg", "rgb-8x4-progressive.jpg"] {
        let img = load_image(&test_image(name)).unwrap();
        assert_eq!(img.shape(), &[3, 4, 8], "{name}");
        let near = |v: f32, want: f32| (v - want).abs() < 8.0 / 255.0;
        // Left half red, right half blue.
        assert!(
            near(img[[0, 1, 0]], 1.0) && near(img[[1, 1, 0]], 0.0) && near(img[[2, 1, 0]], 0.0),
            "{name}"
        );
        assert!(
            near(img[[0, 1, 7]], 0.0) && near(img[[1, 1, 7]], 0.0) && near(img[[2, 1, 7]], 1.0),
            "{name}"
        );
    }
}

#[test]
fn truncated_jpeg_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs::read(test_image("rgb-8x4.jpg")).unwrap();
    for cut in [2, 20, 200, bytes.len() - 10] {
        let path = dir.path().join(format!("cut{cut}.jpg"));
        fs::write(&path, &bytes[..cut]).unwrap();
        // A decoder may fill a cut-off tail with grey rather than fail; it must
        // never panic, and a failure must name the file.
        if let Err(e) = load_image(&path) {
            assert_mentions(&e.to_string(), &[&format!("cut{cut}.jpg")]);
        }
    }
    let path = dir.path().join("header-only.jpg");
    fs::write(&path, &bytes[..2]).unwrap();
    assert_mentions(&err(load_image(&path)), &["header-only.jpg: JPEG data"]);
}

#[test]
fn png_to_model_input_explains_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    write_png(&path, 6, 4, png::ColorType::Rgb, &[255; 6 * 4 * 3]);
    let img = load_image(&path).unwrap();
    let (input, notes) = to_model_input(&img, 1, 28, 28).unwrap();
    assert_eq!(input.shape(), &[1, 28, 28]);
    assert!(input.iter().all(|&v| (v - 1.0).abs() < 1e-5));
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_mentions(&notes.join("; "), &["RGB to grey", "resized 6x4 to 28x28"]);
}

// ---------------------------------------------------------------- bundled sample

#[test]
fn bundled_mnist_sample_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
    for (split, n) in [(Split::Train, 4000), (Split::Test, 1000)] {
        let data = load(DatasetKind::Mnist, &dir, split).unwrap();
        assert_eq!(data.len(), n);
        assert_eq!(data.images().shape(), &[n, 1, 28, 28]);
        assert_eq!(data.label_counts(), vec![n / 10; 10]);
        let max = data.images().iter().fold(0.0f32, |m, &v| m.max(v));
        assert_eq!(max, 1.0);
        // Digits are drawn in the middle: the border is almost all black.
        let border: f32 = data.images().slice(ndarray::s![.., .., 0, ..]).sum();
        assert!(
            border < n as f32 * 0.01,
            "top rows should be empty, sum {border}"
        );
    }
}

// ---------------------------------------------------------------- real data

#[test]
fn real_mnist_test_set() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    let data = load(DatasetKind::Mnist, &dir, Split::Test).unwrap();
    assert_eq!(data.images().shape(), &[10_000, 1, 28, 28]);
    let counts = data.label_counts();
    assert_eq!(
        counts,
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(counts.iter().sum::<usize>(), 10_000);
}

#[test]
fn real_mnist_train_set() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    let data = load(DatasetKind::Mnist, &dir, Split::Train).unwrap();
    assert_eq!(data.images().shape(), &[60_000, 1, 28, 28]);
    assert_eq!(data.label_counts().iter().sum::<usize>(), 60_000);
    assert!(data
        .label_counts()
        .iter()
        .all(|&c| (5_000..7_000).contains(&c)));
}

/// Mean pixel value of each class.
fn class_means(data: &Dataset) -> Vec<f64> {
    let mut sums = vec![0.0f64; data.num_classes()];
    for (img, &label) in data.images().outer_iter().zip(&data.labels) {
        sums[label] += img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64;
    }
    sums.iter()
        .zip(data.label_counts())
        .map(|(s, n)| s / n as f64)
        .collect()
}

#[test]
fn real_cifar_test_binary_and_folder_agree() {
    let Some(dir) = shared_data("cifar10") else {
        return;
    };
    let standard = cifar::CLASS_NAMES.map(String::from).to_vec();

    // The binary batch is preferred for the test split when it exists.
    let binary = load(DatasetKind::Cifar10, &dir, Split::Test).unwrap();
    let folders = load(DatasetKind::Folder, &dir, Split::Test).unwrap();
    for data in [&binary, &folders] {
        assert_eq!(data.images().shape(), &[10_000, 3, 32, 32]);
        assert_eq!(data.label_counts(), vec![1000; 10]);
        assert_eq!(data.class_names, standard);
    }
    // Same images, other order and other JPEG decoder: class means must agree.
    for (b, f) in class_means(&binary).iter().zip(class_means(&folders)) {
        assert!((b - f).abs() < 0.002, "class means differ: {b} vs {f}");
    }
    assert_eq!(binary.images().len(), IMAGE_BYTES * 10_000);
}

/// Slow (50,000 JPEGs): run with `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn real_cifar_train_folder() {
    let Some(dir) = shared_data("cifar10") else {
        return;
    };
    let start = std::time::Instant::now();
    let data = load(DatasetKind::Cifar10, &dir, Split::Train).unwrap();
    eprintln!(
        "loaded {} CIFAR-10 training images in {:.2?}",
        data.len(),
        start.elapsed()
    );
    assert_eq!(data.images().shape(), &[50_000, 3, 32, 32]);
    assert_eq!(data.label_counts(), vec![5000; 10]);
}
