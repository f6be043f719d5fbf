//! CIFAR-10: 32x32 colour images in ten classes.
//!
//! Two layouts are read:
//!
//! - The official binary batches: `data_batch_1.bin` .. `data_batch_5.bin`
//!   (training) and `test_batch.bin` (test), in `DIR` or in
//!   `DIR/cifar-10-batches-bin`. Each file is a run of 3073-byte records: one
//!   label byte, then the 1024 red, 1024 green and 1024 blue bytes of a 32x32
//!   image, row-major. That is already `[C, H, W]` order. Class names come from
//!   `batches.meta.txt` beside the batches (one per line) if it is there.
//! - Class folders: `DIR/train/<class>/*.jpg` and `DIR/test/<class>/*.jpg` (or
//!   PNG), read by [`super::folder`]. The standard class names sort into the
//!   standard label order, so both layouts give the same labels.
//!
//! For each split the binary batches are used if the split's first batch file
//! exists, since they are the original, lossless format; otherwise the split's
//! class folder. So a directory may mix the two, e.g. training images as JPEG
//! folders and the test set as `test_batch.bin`.

use std::path::{Path, PathBuf};

use super::{folder, Dataset, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::{thousands, Limits, MAX_DATASET_FLAG};

/// The classes in label order, as in the official `batches.meta.txt`.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Images are `SIDE x SIDE` pixels.
pub const SIDE: usize = 32;
/// Bytes of one image: three planes of `SIDE * SIDE`.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Bytes of one record: a label byte and an image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// The folder the official archive unpacks to.
pub const BATCH_DIR: &str = "cifar-10-batches-bin";
/// The file of class names beside the batches.
pub const META_FILE: &str = "batches.meta.txt";

/// The records of one or more batch files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CifarBatch {
    /// One label per image, each below 10.
    pub labels: Vec<u8>,
    /// `IMAGE_BYTES` per image, planes R, G, B, each row-major.
    pub pixels: Vec<u8>,
}

/// Loads one split of CIFAR-10 from `dir`, from binary batches or class folders
/// (see the module documentation for which is chosen).
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    if let Some(batch_dir) = find_batch_dir(dir, split) {
        return load_batches(&batch_dir, split);
    }
    let folder = dir.join(split.name());
    if folder.is_dir() {
        return load_class_folders(&folder);
    }
    Err(Error::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no CIFAR-10 {split} data: looked for {} here and in {BATCH_DIR}/, \
                 and for class folders in {split}/",
                batch_file_names(split)[0]
            ),
        ),
    ))
}

/// The batch files of a split, in load order.
pub fn batch_file_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// `dir` or `dir/cifar-10-batches-bin`, whichever holds the split's first batch.
pub fn find_batch_dir(dir: &Path, split: Split) -> Option<PathBuf> {
    let first = batch_file_names(split).into_iter().next()?;
    [dir.to_path_buf(), dir.join(BATCH_DIR)]
        .into_iter()
        .find(|d| d.join(&first).is_file())
}

/// Loads all of a split's batch files from `batch_dir`; every one must exist.
fn load_batches(batch_dir: &Path, split: Split) -> Result<Dataset> {
    let class_names = read_class_names(batch_dir)?;
    let mut all = CifarBatch::default();
    for name in batch_file_names(split) {
        let path = batch_dir.join(name);
        let batch = read_batch(&path)?;
        let limit = Limits::current().max_dataset_bytes;
        if (all.pixels.len() + batch.pixels.len()) as u64 > limit {
            return Err(Error::TooLarge {
                subject: path.display().to_string(),
                what: format!(
                    "the {split} batches hold {} bytes of pixels up to here",
                    thousands((all.pixels.len() + batch.pixels.len()) as u64)
                ),
                limit: format!("{} bytes for one split", thousands(limit)),
                raise: Some(MAX_DATASET_FLAG),
            });
        }
        all.labels.extend(batch.labels);
        all.pixels.extend(batch.pixels);
    }
    let labels = all.labels.into_iter().map(usize::from).collect();
    Dataset::from_bytes(all.pixels, [3, SIDE, SIDE], labels, class_names)
}

/// Loads `DIR/<class>/*` and checks it looks like CIFAR-10.
fn load_class_folders(dir: &Path) -> Result<Dataset> {
    let data = folder::load_folder(dir)?;
    if data.num_classes() != CLASS_NAMES.len() {
        return Err(Error::format(
            dir,
            "class folders",
            format!("{} (CIFAR-10 has ten classes)", CLASS_NAMES.len()),
            format!("{}: {}", data.num_classes(), data.class_names.join(", ")),
        ));
    }
    if data.shape() != [3, SIDE, SIDE] {
        let [c, h, w] = data.shape();
        return Err(Error::format(
            dir,
            "image shape",
            format!("{SIDE}x{SIDE} RGB images"),
            format!("{w}x{h} with {c} channel(s)"),
        ));
    }
    Ok(data)
}

/// Reads the class names from `batch_dir/batches.meta.txt` (one per line, blank
/// lines skipped), or gives [`CLASS_NAMES`] if the file is absent.
pub fn read_class_names(batch_dir: &Path) -> Result<Vec<String>> {
    let path = batch_dir.join(META_FILE);
    if !path.is_file() {
        return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    let bytes = fsutil::read_bounded(&path, 1 << 16, "a list of class names")?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != CLASS_NAMES.len() {
        return Err(Error::format(
            &path,
            "class names",
            format!("{} names, one per line", CLASS_NAMES.len()),
            format!("{} names", names.len()),
        ));
    }
    Ok(names)
}

/// Reads one batch file.
pub fn read_batch(path: &Path) -> Result<CifarBatch> {
    let limit = Limits::current().max_data_file_bytes();
    let bytes = fsutil::read_bounded(path, limit, "a CIFAR-10 batch")?;
    parse_batch(&bytes, path)
}

/// Parses the bytes of a batch file; `path` is only used in errors.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<CifarBatch> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(Error::format(
            path,
            "file length",
            format!("a positive multiple of {RECORD_BYTES} bytes (1 label byte and {IMAGE_BYTES} pixel bytes per image)"),
            format!(
                "{} bytes ({} whole records and {} bytes over)",
                bytes.len(),
                bytes.len() / RECORD_BYTES,
                bytes.len() % RECORD_BYTES
            ),
        ));
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut batch = CifarBatch {
        labels: Vec::with_capacity(n),
        pixels: Vec::with_capacity(n * IMAGE_BYTES),
    };
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let Some((&label, image)) = record.split_first() else {
            continue;
        };
        if usize::from(label) >= CLASS_NAMES.len() {
            return Err(Error::format(
                path,
                format!("label of record {i}"),
                "a class index from 0 to 9",
                label.to_string(),
            ));
        }
        batch.labels.push(label);
        batch.pixels.extend_from_slice(image);
    }
    Ok(batch)
}

/// Writes a batch file atomically: for each image its label byte, then its
/// `IMAGE_BYTES` pixel bytes.
pub fn write_batch(path: &Path, batch: &CifarBatch) -> Result<()> {
    if batch.pixels.len() != batch.labels.len() * IMAGE_BYTES {
        return Err(Error::invalid(
            "write_batch",
            format!(
                "{} labels need {} pixel bytes, found {}",
                batch.labels.len(),
                batch.labels.len() * IMAGE_BYTES,
                batch.pixels.len()
            ),
        ));
    }
    fsutil::write_atomic(path, |w| {
        for (label, image) in batch
            .labels
            .iter()
            .zip(batch.pixels.chunks_exact(IMAGE_BYTES))
        {
            w.write_all(&[*label])?;
            w.write_all(image)?;
        }
        Ok(())
    })
}
