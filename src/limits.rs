//! Limits on the sizes that files and arguments declare.
//!
//! A file's header says how much it holds (an IDX file's image count, a PNG's
//! width and height, a checkpoint's layer sizes). Every such size is checked,
//! with overflow-checked arithmetic, against what the file can really hold and
//! against these limits *before* anything is allocated for it, so a 14 KB file
//! that claims 100,000 x 100,000 pixels costs 14 KB, not 30 GB.
//!
//! The limits are process-wide, like rayon's thread pool: [`Limits::current`]
//! reads them and [`Limits::set`] changes them (the command line's
//! `--max-pixels`, `--max-params` and `--max-dataset-bytes` do). The defaults let every real photo,
//! data set and model of the tutorial's size through:
//!
//! | limit | default | what it bounds |
//! | --- | --- | --- |
//! | [`max_pixels`](Limits::max_pixels) | 64 million | one image (a 61 MP camera's photos pass) |
//! | [`max_params`](Limits::max_params) | 64 million | one model's weights (256 MB of `f32`) |
//! | [`max_values_per_input`](Limits::max_values_per_input) | 16 million | one layer's output for one input |
//! | [`max_dataset_bytes`](Limits::max_dataset_bytes) | 256 MiB | one split's pixels, kept as bytes (CIFAR-10's training split takes 150 MB) |
//! | [`max_layers`](Limits::max_layers) | 1,000 | layers in one model |

use std::sync::RwLock;

use crate::error::{Error, Result};

/// The largest sizes salient accepts from a file or an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Pixels (width x height) of one image, whatever its channels.
    pub max_pixels: u64,
    /// Weights and biases of one model.
    pub max_params: u64,
    /// Values in one layer's output for one input (`C·H·W` or features):
    /// what a forward pass holds per image, times the batch size.
    pub max_values_per_input: u64,
    /// Bytes of one split of a data set (one byte per pixel and channel).
    pub max_dataset_bytes: u64,
    /// Layers of one model.
    pub max_layers: usize,
}

/// The flag that raises [`Limits::max_pixels`].
pub const MAX_PIXELS_FLAG: &str = "--max-pixels";
/// The flag that raises [`Limits::max_params`].
pub const MAX_PARAMS_FLAG: &str = "--max-params";
/// The flag that raises [`Limits::max_dataset_bytes`].
pub const MAX_DATASET_FLAG: &str = "--max-dataset-bytes";

/// Bytes a checkpoint's safetensors header may take. A model at
/// [`Limits::max_layers`] needs about 1.2 MB (the architecture and two tensor
/// entries per layer); the `safetensors` crate's own bound, 100 MB, would let
/// a header's JSON cost gigabytes to parse.
pub const MAX_HEADER_BYTES: u64 = 4 << 20;
/// Bytes of a checkpoint's architecture JSON: a thousand layers take about 200 KB.
pub const MAX_ARCHITECTURE_BYTES: usize = 1 << 20;

impl Limits {
    /// The defaults in the module's table.
    pub const DEFAULT: Limits = Limits {
        max_pixels: 64_000_000,
        max_params: 64_000_000,
        max_values_per_input: 1 << 24,
        max_dataset_bytes: 256 << 20,
        max_layers: 1000,
    };

    /// The limits in force.
    pub fn current() -> Limits {
        *CURRENT.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `limits` in force for the whole process.
    pub fn set(limits: Limits) {
        *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Bytes an image file may have: its pixels at 16 bits in 4 channels,
    /// plus room for metadata. No PNG or JPEG of an allowed size is larger.
    pub fn max_image_file_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(1 << 24)
    }

    /// Bytes a checkpoint may have: its header and every weight as `f32`.
    pub fn max_checkpoint_bytes(&self) -> u64 {
        self.max_params
            .saturating_mul(4)
            .saturating_add(MAX_HEADER_BYTES + 8)
    }

    /// All of a model file (`kind`: `a checkpoint`, `an ONNX model`) of at
    /// most [`max_checkpoint_bytes`](Self::max_checkpoint_bytes), refused
    /// before reading if larger.
    pub(crate) fn read_model_file(&self, path: &std::path::Path, kind: &str) -> Result<Vec<u8>> {
        let what = format!(
            "{kind} of at most {} parameters",
            thousands(self.max_params)
        );
        crate::fsutil::read_bounded(path, self.max_checkpoint_bytes(), &what)
    }

    /// Bytes a data file (IDX, CIFAR-10 batch) may have, after decompression.
    pub fn max_data_file_bytes(&self) -> u64 {
        self.max_dataset_bytes.saturating_add(1 << 20)
    }

    /// Refuses a `width x height` image above [`max_pixels`](Self::max_pixels);
    /// `subject` names the file.
    pub fn check_pixels(&self, subject: &str, width: u64, height: u64) -> Result<()> {
        let pixels = width.saturating_mul(height);
        if pixels > self.max_pixels {
            return Err(Error::TooLarge {
                subject: subject.to_string(),
                what: format!(
                    "the image is {width}x{height} = {} pixels",
                    thousands(pixels)
                ),
                limit: format!("{} pixels", thousands(self.max_pixels)),
                raise: Some(MAX_PIXELS_FLAG),
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

static CURRENT: RwLock<Limits> = RwLock::new(Limits::DEFAULT);

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The product of `dims`, or `None` if it overflows a `u64`.
pub fn product(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(64_000_000), "64,000,000");
    }

    #[test]
    fn product_checks_overflow() {
        assert_eq!(product(&[2, 3, 4]), Some(24));
        assert_eq!(product(&[]), Some(1));
        assert_eq!(product(&[usize::MAX, 3]), None);
    }

    #[test]
    fn pixel_limit_names_the_flag() {
        let err = Limits::DEFAULT
            .check_pixels("big.png", 100_000, 100_000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("big.png") && err.contains("--max-pixels"),
            "{err}"
        );
        assert!(err.contains("10,000,000,000 pixels"), "{err}");
        assert!(Limits::DEFAULT.check_pixels("ok.png", 8000, 6000).is_ok());
        assert!(Limits::DEFAULT
            .check_pixels("wrap.png", u64::MAX, 2)
            .is_err());
    }
}
