//! Data sets: the labelled images a model learns from.
//!
//! Every loader returns the same [`Dataset`]: the images as the bytes the files
//! hold (turned into `[N, C, H, W]` batches of `f32` in `[0, 1]` when needed),
//! one label per image, and the class names. Every size a file declares is
//! checked against [`Limits`](crate::limits::Limits) before anything is
//! allocated for it. Three
//! layouts on disk are understood, picked with [`DatasetKind`]:
//!
//! - [`idx`]: MNIST's IDX files, gzip-compressed or not.
//! - [`cifar`]: CIFAR-10's binary batches, or CIFAR-10 as class folders of images.
//! - [`folder`]: any `DIR/<class>/*.png|*.jpg|*.jpeg` tree.
//!
//! [`decode`] turns one PNG or JPEG file into a tensor and [`convert`] fits such an
//! image to what a model expects (channels and size).

pub mod cifar;
pub mod convert;
pub mod decode;
pub mod folder;
pub mod idx;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ndarray::{Axis, IxDyn, Slice};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use convert::{resize_bilinear, to_model_input};
pub use decode::load_image;

/// Labelled images, all of one shape.
///
/// Images loaded from files stay as the bytes the files hold (one byte per
/// pixel and channel) until a batch needs them: [`batch`](Dataset::batch)
/// turns the chosen images into `f32` in `[0, 1]`. CIFAR-10's 50,000 training
/// images take 150 MB so, against 600 MB as `f32`. A data set built from a
/// tensor with [`Dataset::new`] keeps its `f32` values as they are.
///
/// The loaders and the constructors guarantee that there is one label per
/// image and that every label indexes `class_names`.
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Images,
    /// One label per image, each below `class_names.len()`.
    pub labels: Vec<usize>,
    /// The name of label `i` is `class_names[i]`.
    pub class_names: Vec<String>,
}

/// How a data set holds its images.
#[derive(Clone, Debug)]
enum Images {
    /// `N·C·H·W` bytes; pixel `p` stands for `p / 255`.
    Bytes { pixels: Vec<u8>, shape: [usize; 3] },
    /// `[N, C, H, W]` values, as given.
    Floats(Tensor),
}

impl Dataset {
    /// Builds a data set from an `[N, C, H, W]` tensor after checking that the
    /// parts agree.
    pub fn new(images: Tensor, labels: Vec<usize>, class_names: Vec<String>) -> Result<Self> {
        if images.ndim() != 4 {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "images must be [N, C, H, W], found shape {:?}",
                    images.shape()
                ),
            ));
        }
        Self::checked(
            Images::Floats(images.as_standard_layout().into_owned()),
            labels,
            class_names,
        )
    }

    /// Builds a data set from 8-bit pixels: `N` images of `shape = [C, H, W]`,
    /// one after the other, each channel a row-major plane; pixel `p` stands
    /// for `p / 255`.
    pub fn from_bytes(
        pixels: Vec<u8>,
        shape: [usize; 3],
        labels: Vec<usize>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let per = shape.iter().product::<usize>();
        if per == 0 || pixels.len() != per.saturating_mul(labels.len()) {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} pixel bytes are not {} images of {shape:?}",
                    pixels.len(),
                    labels.len()
                ),
            ));
        }
        Self::checked(Images::Bytes { pixels, shape }, labels, class_names)
    }

    fn checked(images: Images, labels: Vec<usize>, class_names: Vec<String>) -> Result<Self> {
        let data = Dataset {
            images,
            labels: Vec::new(),
            class_names,
        };
        let n = data.count_images();
        if n != labels.len() {
            return Err(Error::invalid(
                "dataset",
                format!("{n} images but {} labels", labels.len()),
            ));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= data.class_names.len())
        {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "label {label} of image {i} is not below the number of classes ({})",
                    data.class_names.len()
                ),
            ));
        }
        Ok(Dataset { labels, ..data })
    }

    fn count_images(&self) -> usize {
        match &self.images {
            Images::Bytes { pixels, shape } => {
                pixels.len() / shape.iter().product::<usize>().max(1)
            }
            Images::Floats(t) => t.len_of(Axis(0)),
        }
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        match &self.images {
            Images::Bytes { shape, .. } => *shape,
            Images::Floats(t) => match *t.shape() {
                [_, c, h, w] => [c, h, w],
                _ => [0, 0, 0],
            },
        }
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// How many images each class has, indexed by label.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(label) {
                *c += 1;
            }
        }
        counts
    }

    /// The images at `indices` as one `[n, C, H, W]` batch of `f32`.
    pub fn batch(&self, indices: &[usize]) -> Result<Tensor> {
        let [c, h, w] = self.shape();
        let mut out = Tensor::zeros(IxDyn(&[indices.len(), c, h, w]));
        self.batch_into(indices, &mut out)?;
        Ok(out)
    }

    /// Writes the images at `indices` into `out`, an `[indices.len(), C, H, W]`
    /// tensor (a buffer reused from batch to batch).
    pub fn batch_into(&self, indices: &[usize], out: &mut Tensor) -> Result<()> {
        let [c, h, w] = self.shape();
        if out.shape() != [indices.len(), c, h, w] {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "a batch of {} images of {:?} does not fit a buffer of {:?}",
                    indices.len(),
                    [c, h, w],
                    out.shape()
                ),
            ));
        }
        self.check_indices(indices)?;
        let per = c * h * w;
        let dst = out
            .as_slice_mut()
            .ok_or_else(|| Error::invalid("dataset", "the batch buffer must be contiguous"))?;
        for (d, &i) in dst.chunks_mut(per).zip(indices) {
            match &self.images {
                Images::Bytes { pixels, .. } => {
                    for (v, &p) in d.iter_mut().zip(&pixels[i * per..(i + 1) * per]) {
                        *v = f32::from(p) / 255.0;
                    }
                }
                Images::Floats(t) => {
                    for (v, &x) in d.iter_mut().zip(t.index_axis(Axis(0), i).iter()) {
                        *v = x;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every image as one `[N, C, H, W]` tensor of `f32`: four bytes per value,
    /// so for small sets; training and evaluation take batches instead.
    pub fn images(&self) -> Tensor {
        let all: Vec<usize> = (0..self.len()).collect();
        let [c, h, w] = self.shape();
        let mut out = Tensor::zeros(IxDyn(&[all.len(), c, h, w]));
        // The indices are in range and the buffer fits, so this cannot fail.
        let _ = self.batch_into(&all, &mut out);
        out
    }

    fn check_indices(&self, indices: &[usize]) -> Result<()> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(
                "select",
                format!("index {bad} is out of range for a data set of {n} images"),
            ));
        }
        Ok(())
    }

    /// A new data set with the images at `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        self.check_indices(indices)?;
        let images = match &self.images {
            Images::Bytes { pixels, shape } => {
                let per = shape.iter().product::<usize>();
                let mut chosen = Vec::with_capacity(indices.len() * per);
                for &i in indices {
                    chosen.extend_from_slice(&pixels[i * per..(i + 1) * per]);
                }
                Images::Bytes {
                    pixels: chosen,
                    shape: *shape,
                }
            }
            Images::Floats(t) => Images::Floats(t.select(Axis(0), indices)),
        };
        Ok(Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        })
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let images = match &self.images {
            Images::Bytes { pixels, shape } => Images::Bytes {
                pixels: pixels[..n * shape.iter().product::<usize>()].to_vec(),
                shape: *shape,
            },
            Images::Floats(t) => Images::Floats(t.slice_axis(Axis(0), Slice::from(..n)).to_owned()),
        };
        Dataset {
            images,
            labels: self.labels[..n].to_vec(),
            class_names: self.class_names.clone(),
        }
    }
}

/// Which half of a data set: the images to learn from or the ones held out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

impl Split {
    /// `"train"` or `"test"`, also the name of the split's subfolder.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(Error::invalid(
                "split",
                format!("unknown split `{s}`: expected `train` or `test`"),
            )),
        }
    }
}

/// The layout of a data set on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// MNIST IDX files, see [`idx::load_mnist`].
    Mnist,
    /// CIFAR-10 binary batches or class folders, see [`cifar::load_cifar10`].
    Cifar10,
    /// One subfolder of images per class, see [`folder::load_folder_split`].
    Folder,
}

impl DatasetKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Folder => "folder",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;

    /// Parses `mnist`, `cifar10` or `folder` (any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" => Ok(DatasetKind::Cifar10),
            "folder" => Ok(DatasetKind::Folder),
            _ => Err(Error::invalid(
                "dataset",
                format!("unknown data set kind `{s}`: expected `mnist`, `cifar10` or `folder`"),
            )),
        }
    }
}

/// Loads one split of a data set of the given kind from `dir`.
///
/// For [`DatasetKind::Folder`] the split picks the subfolder `dir/train` or
/// `dir/test` when `dir` has either; otherwise `dir` itself is the data set and
/// both splits load the same images.
pub fn load(kind: DatasetKind, dir: &Path, split: Split) -> Result<Dataset> {
    match kind {
        DatasetKind::Mnist => idx::load_mnist(dir, split),
        DatasetKind::Cifar10 => cifar::load_cifar10(dir, split),
        DatasetKind::Folder => folder::load_folder_split(dir, split),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn tiny() -> Dataset {
        // Image i is filled with the value i, so selections are easy to check.
        let images = Array4::from_shape_fn((4, 1, 2, 3), |(i, _, _, _)| i as f32).into_dyn();
        Dataset::new(images, vec![0, 1, 1, 0], vec!["a".into(), "b".into()]).unwrap()
    }

    #[test]
    fn helpers_report_sizes() {
        let d = tiny();
        assert_eq!(d.len(), 4);
        assert!(!d.is_empty());
        assert_eq!(d.shape(), [1, 2, 3]);
        assert_eq!(d.num_classes(), 2);
        assert_eq!(d.label_counts(), vec![2, 2]);
    }

    #[test]
    fn select_picks_images_and_labels_in_order() {
        let d = tiny().select(&[2, 0, 2]).unwrap();
        assert_eq!(d.labels, vec![1, 0, 1]);
        let images = d.images();
        assert_eq!(images.shape(), &[3, 1, 2, 3]);
        assert_eq!(images[[0, 0, 1, 2]], 2.0);
        assert_eq!(images[[1, 0, 0, 0]], 0.0);
    }

    #[test]
    fn select_out_of_range_is_an_error() {
        let err = tiny().select(&[1, 4]).unwrap_err().to_string();
        assert!(err.contains("index 4"), "{err}");
        assert!(err.contains("4 images"), "{err}");
    }

    #[test]
    fn take_clamps_to_length() {
        assert_eq!(tiny().take(2).labels, vec![0, 1]);
        assert_eq!(tiny().take(10).len(), 4);
        assert_eq!(tiny().take(0).images().shape(), &[0, 1, 2, 3]);
    }

    #[test]
    fn byte_images_become_unit_floats_only_in_batches() {
        let pixels = vec![0, 255, 51, 102, 7, 8, 9, 10];
        let d = Dataset::from_bytes(pixels, [1, 2, 2], vec![1, 0], vec!["a".into(), "b".into()])
            .unwrap();
        let b = d.batch(&[1, 0]).unwrap();
        assert_eq!(b.shape(), &[2, 1, 2, 2]);
        assert_eq!(b[[1, 0, 0, 1]], 1.0);
        assert!((b[[1, 0, 1, 0]] - 0.2).abs() < 1e-7);
        assert_eq!(b[[0, 0, 0, 0]], 7.0 / 255.0);
        assert_eq!(
            d.select(&[1]).unwrap().batch(&[0]).unwrap(),
            b.slice(ndarray::s![0..1, .., .., ..]).into_dyn()
        );
        assert_eq!(d.take(1).labels, vec![1]);
        assert!(d.batch(&[2]).is_err());
        assert!(Dataset::from_bytes(vec![0; 7], [1, 2, 2], vec![0, 0], vec!["a".into()]).is_err());
    }

    #[test]
    fn new_rejects_parts_that_disagree() {
        let images = Array4::<f32>::zeros((2, 1, 2, 2)).into_dyn();
        let names = vec!["a".to_string()];
        assert!(Dataset::new(images.clone(), vec![0], names.clone()).is_err());
        let err = Dataset::new(images, vec![0, 1], names)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 1 of image 1"), "{err}");
    }

    #[test]
    fn kinds_and_splits_parse() {
        assert_eq!("mnist".parse::<DatasetKind>().unwrap(), DatasetKind::Mnist);
        assert_eq!(
            "CIFAR10".parse::<DatasetKind>().unwrap(),
            DatasetKind::Cifar10
        );
        assert_eq!(
            "folder".parse::<DatasetKind>().unwrap(),
            DatasetKind::Folder
        );
        let err = "imagenet".parse::<DatasetKind>().unwrap_err().to_string();
        assert!(err.contains("imagenet") && err.contains("cifar10"), "{err}");
        for kind in [
            DatasetKind::Mnist,
            DatasetKind::Cifar10,
            DatasetKind::Folder,
        ] {
            assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
        }
        assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
        assert!("valid".parse::<Split>().is_err());
    }
}
