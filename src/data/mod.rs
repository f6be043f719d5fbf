//! Data sets: the labelled images a model learns from.
//!
//! Every loader returns the same [`Dataset`]: all images in one `[N, C, H, W]`
//! tensor of `f32` in `[0, 1]`, one label per image, and the class names. Three
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

use ndarray::{Axis, Slice};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use convert::{resize_bilinear, to_model_input};
pub use decode::load_image;

/// Labelled images, all of one shape.
///
/// The fields are public so that training code can borrow them directly; the
/// loaders and [`Dataset::new`] guarantee that `images` is `[N, C, H, W]`, that
/// there are `N` labels and that every label indexes `class_names`.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[N, C, H, W]`, `f32` scaled to `[0, 1]`.
    pub images: Tensor,
    /// One label per image, each below `class_names.len()`.
    pub labels: Vec<usize>,
    /// The name of label `i` is `class_names[i]`.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Builds a data set after checking that the parts agree.
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
        let n = images.len_of(Axis(0));
        if n != labels.len() {
            return Err(Error::invalid(
                "dataset",
                format!("{n} images but {} labels", labels.len()),
            ));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= class_names.len())
        {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "label {label} of image {i} is not below the number of classes ({})",
                    class_names.len()
                ),
            ));
        }
        Ok(Dataset {
            images,
            labels,
            class_names,
        })
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
        match *self.images.shape() {
            [_, c, h, w] => [c, h, w],
            _ => [0, 0, 0],
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

    /// A new data set with the images at `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(
                "select",
                format!("index {bad} is out of range for a data set of {n} images"),
            ));
        }
        Ok(Dataset {
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        })
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice_axis(Axis(0), Slice::from(..n)).to_owned(),
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
        assert_eq!(d.images.shape(), &[3, 1, 2, 3]);
        assert_eq!(d.images[[0, 0, 1, 2]], 2.0);
        assert_eq!(d.images[[1, 0, 0, 0]], 0.0);
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
        assert_eq!(tiny().take(0).images.shape(), &[0, 1, 2, 3]);
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
