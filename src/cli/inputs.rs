//! The images a command explains: picked from a data set by index, or read from
//! the user's own files and fitted to the model; and what the model makes of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{Axis, IxDyn};

use crate::data::{self, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::model::{argmax, Classifier};
use crate::ops::softmax_rows;
use crate::tensor::Tensor;

/// The tutorial's test images: `0, 12, 38, 83, 112, 74, 190`.
pub const TUTORIAL_INDICES: [usize; 7] = [0, 12, 38, 83, 112, 74, 190];

/// A batch of inputs for a model, with what is known about each.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `[N, C, H, W]` with the model's `[C, H, W]`, values in `[0, 1]`.
    pub images: Tensor,
    /// One per image, in order.
    pub items: Vec<Item>,
}

/// What is known about one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its index in the data set, or its position in the list of files.
    pub index: usize,
    /// How output files about it begin: the index (`12`) or the file's stem (`digit`).
    pub stem: String,
    /// How messages name it: `test image 12` or the file's path.
    pub name: String,
    /// The labelled class, for data set images.
    pub true_class: Option<usize>,
    /// What was done to fit the model's input (own images only).
    pub notes: Vec<String>,
}

impl Inputs {
    /// The images at `indices` of one split of a data set.
    ///
    /// Fails if an index is out of range, or if the images or the classes do not
    /// fit the model (a CIFAR-10 model shown MNIST, say).
    pub fn from_dataset(
        model: &dyn Classifier,
        kind: DatasetKind,
        dir: &Path,
        split: Split,
        indices: &[usize],
    ) -> Result<Inputs> {
        let set = data::load(kind, dir, split)?;
        Self::from_set(model, &set, dir, split, indices)
    }

    /// `count` images spread evenly over one split, at indices `k·n / count`:
    /// a split stored class by class (CIFAR-10's folders) still gives every
    /// class its share.
    pub fn spread_over(
        model: &dyn Classifier,
        kind: DatasetKind,
        dir: &Path,
        split: Split,
        count: usize,
    ) -> Result<Inputs> {
        let set = data::load(kind, dir, split)?;
        let n = set.len();
        let count = count.min(n);
        let indices: Vec<usize> = (0..count).map(|k| k * n / count).collect();
        Self::from_set(model, &set, dir, split, &indices)
    }

    /// The images at `indices` of `set`, loaded from `dir`'s `split`.
    fn from_set(
        model: &dyn Classifier,
        set: &Dataset,
        dir: &Path,
        split: Split,
        indices: &[usize],
    ) -> Result<Inputs> {
        if indices.is_empty() {
            return Err(Error::invalid("indices", "no index given"));
        }
        // Output files are named by index, so a repeat would overwrite its own figure.
        let mut seen = std::collections::HashSet::new();
        if let Some(&twice) = indices.iter().find(|&&i| !seen.insert(i)) {
            return Err(Error::invalid(
                "indices",
                format!("index {twice} is given twice; give each image once"),
            ));
        }
        let n = set.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(
                "indices",
                format!(
                    "index {bad} is out of range: the {split} split of {} has {n} images (0 to {})",
                    dir.display(),
                    n.saturating_sub(1)
                ),
            ));
        }
        if set.shape() != model.input_shape() {
            return Err(Error::invalid(
                "data",
                format!(
                    "the model takes images of {} but {} holds images of {}",
                    chw(model.input_shape()),
                    dir.display(),
                    chw(set.shape())
                ),
            ));
        }
        if set.num_classes() != model.num_classes() {
            return Err(Error::invalid(
                "data",
                format!(
                    "the model has {} classes but {} has {}",
                    model.num_classes(),
                    dir.display(),
                    set.num_classes()
                ),
            ));
        }
        let chosen = set.select(indices)?;
        let items = indices
            .iter()
            .zip(&chosen.labels)
            .map(|(&index, &label)| Item {
                index,
                stem: index.to_string(),
                name: format!("{split} image {index}"),
                true_class: Some(label),
                notes: Vec::new(),
            })
            .collect();
        Ok(Inputs {
            images: chosen.images(),
            items,
        })
    }

    /// PNG or JPEG files, each converted (grey ↔ RGB) and resized (bilinear) to
    /// the model's input as `salient predict` does; each item's notes say how.
    ///
    /// Two files with the same stem get `-2`, `-3`, ... appended to the later
    /// stems, so their output files stay apart.
    pub fn from_files(model: &dyn Classifier, paths: &[PathBuf]) -> Result<Inputs> {
        if paths.is_empty() {
            return Err(Error::invalid("image", "no image file given"));
        }
        let [c, h, w] = model.input_shape();
        let mut images = Vec::with_capacity(paths.len());
        let mut items = Vec::with_capacity(paths.len());
        let mut seen = HashMap::<String, usize>::new();
        for (index, path) in paths.iter().enumerate() {
            let image = data::decode::read_image(path)?;
            let (input, notes) = data::convert::fit_decoded(&image, c, h, w)?;
            images.push(input);
            let stem = path
                .file_stem()
                .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let count = seen.entry(stem.clone()).or_default();
            *count += 1;
            let stem = if *count == 1 {
                stem
            } else {
                format!("{stem}-{count}")
            };
            items.push(Item {
                index,
                stem,
                name: path.display().to_string(),
                true_class: None,
                notes,
            });
        }
        let views: Vec<_> = images.iter().map(|t| t.view()).collect();
        let images = ndarray::stack(Axis(0), &views)
            .map_err(|e| Error::invalid("image", format!("cannot stack the images: {e}")))?;
        Ok(Inputs { images, items })
    }

    /// The number of inputs.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there is no input.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The model's class probabilities `[N, K]`: the softmax of its linear class
/// scores, so that they are probabilities whatever the model's head.
pub fn probabilities(model: &dyn Classifier, images: &Tensor, batch_size: usize) -> Result<Tensor> {
    let logits = model.predict_scores(images, batch_size, &mut Default::default())?;
    let mut probs = Tensor::zeros(IxDyn(logits.shape()));
    softmax_rows(&logits, &mut probs);
    Ok(probs)
}

/// The most probable class of each row of `[N, K]` probabilities, and its probability.
pub fn top_classes(probs: &Tensor) -> Vec<(usize, f32)> {
    probs
        .outer_iter()
        .map(|row| {
            let k = argmax(row.iter().copied());
            (k, row[k])
        })
        .collect()
}

/// The class to explain for each input: `class` for all if given, else the
/// true class where known, else the predicted one.
pub fn targets(items: &[Item], predicted: &[(usize, f32)], class: Option<usize>) -> Vec<usize> {
    items
        .iter()
        .zip(predicted)
        .map(|(item, &(p, _))| class.or(item.true_class).unwrap_or(p))
        .collect()
}

/// Reads `--class`: a class name of the model (`cat`), or an index below the
/// number of classes.
pub fn parse_class(model: &dyn Classifier, text: &str) -> Result<usize> {
    let names = model.class_names();
    if let Some(k) = names.iter().position(|n| n == text.trim()) {
        return Ok(k);
    }
    match text.trim().parse::<usize>() {
        Ok(k) if k < names.len() => Ok(k),
        _ => Err(Error::invalid(
            "class",
            format!(
                "{text:?} is neither a class name of the model nor an index from 0 to {} (classes: {})",
                names.len().saturating_sub(1),
                names.join(", ")
            ),
        )),
    }
}

fn chw([c, h, w]: [usize; 3]) -> String {
    format!("{c}x{h}x{w} (channels x height x width)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sequential;

    fn item(true_class: Option<usize>) -> Item {
        Item {
            index: 0,
            stem: "0".into(),
            name: "test image 0".into(),
            true_class,
            notes: Vec::new(),
        }
    }

    #[test]
    fn targets_prefer_the_given_class_then_the_label_then_the_prediction() {
        let items = [item(Some(3)), item(None)];
        let predicted = [(5, 0.9), (6, 0.8)];
        assert_eq!(targets(&items, &predicted, None), [3, 6]);
        assert_eq!(targets(&items, &predicted, Some(1)), [1, 1]);
    }

    #[test]
    fn classes_parse_by_name_or_index() {
        let mut model = Sequential::builder([1, 2, 2])
            .flatten()
            .dense(3, crate::layers::Activation::Softmax)
            .build(0)
            .unwrap();
        model
            .set_class_names(vec!["cat".into(), "dog".into(), "1".into()])
            .unwrap();
        assert_eq!(parse_class(&model, "dog").unwrap(), 1);
        // A name wins over an index: "1" is the class named "1".
        assert_eq!(parse_class(&model, "1").unwrap(), 2);
        assert_eq!(parse_class(&model, "0").unwrap(), 0);
        let err = parse_class(&model, "3").unwrap_err().to_string();
        assert!(err.contains("0 to 2") && err.contains("cat, dog"), "{err}");
    }

    #[test]
    fn probabilities_sum_to_one() {
        let model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
        let images = Tensor::from_elem(IxDyn(&[2, 1, 28, 28]), 0.5);
        let p = probabilities(&model, &images, 250).unwrap();
        for row in p.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-5);
        }
        let top = top_classes(&p);
        assert_eq!(top.len(), 2);
        assert!(top[0].1 >= 0.1);
    }
}
