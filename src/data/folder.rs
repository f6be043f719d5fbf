//! Image folders: `DIR/<class>/*.png|*.jpg|*.jpeg`, one subfolder per class.
//!
//! The sorted subfolder names are the class names, so label `i` is the `i`-th
//! name in sorted order. Within a class, files are taken in name order. Files with
//! other extensions (`.txt`, `.DS_Store`, ...) and hidden entries (names starting
//! with `.`) are ignored, so notes and system files beside the images do no
//! harm; a class folder with no image at all is an error.
//!
//! Every image must have the same size and number of channels (see
//! [`super::decode`] for how PNG and JPEG variants map to grey or RGB); the
//! first one that differs is reported. Decoding runs on all cores, and the result
//! is in the same order whatever the number of threads.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::decode::read_image;
use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::limits::{thousands, Limits, MAX_DATASET_FLAG};

pub use super::decode::load_image;

/// File extensions (compared without case) taken as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads one split of a folder data set.
///
/// If `dir` has a `train/` or a `test/` subfolder, the split's subfolder is the
/// data set (and must exist). Otherwise `dir` itself is, for either split: a
/// folder without a train/test division serves both.
pub fn load_folder_split(dir: &Path, split: Split) -> Result<Dataset> {
    let wanted = dir.join(split.name());
    if wanted.is_dir() {
        return load_folder(&wanted);
    }
    let other = match split {
        Split::Train => Split::Test,
        Split::Test => Split::Train,
    };
    if dir.join(other.name()).is_dir() {
        return Err(Error::io(
            wanted,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {split}/ subfolder beside {other}/"),
            ),
        ));
    }
    load_folder(dir)
}

/// Loads every image under `dir/<class>/`.
///
/// The first image fixes the shape; the whole set's size is checked against
/// [`Limits::max_dataset_bytes`] before the others are decoded, each straight
/// into its place in one buffer of bytes.
pub fn load_folder(dir: &Path) -> Result<Dataset> {
    let FolderListing { class_names, files } = list_images(dir)?;
    let Some((first_path, _)) = files.first() else {
        return Err(Error::format(dir, "images", "at least one image", "none"));
    };
    let first = read_image(first_path)?;
    let shape = first.shape();
    let per = first.pixels.len();
    let limit = Limits::current().max_dataset_bytes;
    let total = (per as u64).saturating_mul(files.len() as u64);
    if total > limit {
        return Err(Error::TooLarge {
            subject: dir.display().to_string(),
            what: format!(
                "{} images of {} take {} bytes",
                files.len(),
                describe(shape),
                thousands(total)
            ),
            limit: format!("{} bytes for one split", thousands(limit)),
            raise: Some(MAX_DATASET_FLAG),
        });
    }
    let mut pixels = vec![0u8; per * files.len()];
    // Collect every result before looking at errors, so that the error reported
    // is the first in file order, not whichever thread failed first.
    let results: Vec<Result<()>> = pixels
        .par_chunks_mut(per.max(1))
        .zip(files.par_iter())
        .map(|(dst, (path, _))| {
            let img = read_image(path)?;
            if img.shape() != shape {
                return Err(Error::format(
                    path,
                    "image shape",
                    format!(
                        "{} like {} (every image must match)",
                        describe(shape),
                        first_path.display()
                    ),
                    describe(img.shape()),
                ));
            }
            dst.copy_from_slice(&img.pixels);
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<()>>()?;
    let labels = files.iter().map(|&(_, label)| label).collect();
    Dataset::from_bytes(pixels, shape, labels, class_names)
}

/// What a folder data set holds, found without reading any image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    /// The class subfolders' names, sorted: label `i` is `class_names[i]`.
    pub class_names: Vec<String>,
    /// Every image file with its label, in load order.
    pub files: Vec<(PathBuf, usize)>,
}

/// Lists the classes and image files of `dir` (see the module documentation).
pub fn list_images(dir: &Path) -> Result<FolderListing> {
    let entries = sorted_entries(dir)?;
    let class_dirs: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    if class_dirs.is_empty() {
        let loose = entries.iter().filter(|p| is_image_file(p)).count();
        let found = if loose > 0 {
            format!("no subfolders, but {loose} image files directly in it")
        } else {
            "no subfolders".to_string()
        };
        return Err(Error::format(
            dir,
            "class folders",
            "one subfolder of .png/.jpg/.jpeg images per class",
            found,
        ));
    }

    let mut class_names = Vec::with_capacity(class_dirs.len());
    let mut files = Vec::new();
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let entries = sorted_entries(class_dir)?;
        let before = files.len();
        files.extend(
            entries
                .iter()
                .filter(|p| is_image_file(p))
                .map(|p| (p.clone(), label)),
        );
        if files.len() == before {
            return Err(Error::format(
                class_dir,
                "images",
                "at least one .png, .jpg or .jpeg file in every class folder",
                format!("none among {} entries", entries.len()),
            ));
        }
        let name = class_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        class_names.push(name);
    }
    Ok(FolderListing { class_names, files })
}

/// The non-hidden entries of a folder, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

fn is_image_file(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    path.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn describe([c, h, w]: [usize; 3]) -> String {
    let kind = match c {
        1 => "grey",
        3 => "RGB",
        _ => "channels",
    };
    format!("{w}x{h} {kind} ([C, H, W] = [{c}, {h}, {w}])")
}
