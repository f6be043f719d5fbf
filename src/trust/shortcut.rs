//! A shortcut on purpose: data in which a small coloured square predicts the
//! class at training time, and the masks that say where it is.
//!
//! A classifier that tells cats from dogs may really be telling couches from
//! lawns. To see whether a saliency method would show that, train a model on
//! images that carry a class cue, a `size x size` square of the class's colour
//! at a random place, and ask each method how much of its map falls on the
//! square. The answer is known: the cue model's decisions rest on the square
//! (its accuracy collapses when the cue is swapped between classes), a clean
//! model's do not.

use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::convert::LUMA_WEIGHTS;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::mix;
use crate::tensor::Tensor;

/// The cue: a square of one colour per class.
#[derive(Clone, Debug, PartialEq)]
pub struct Cue {
    /// The side of the square, in pixels.
    pub size: usize,
    /// The colour of each class's square, RGB in `[0, 1]`; grey images get
    /// its luma.
    pub colours: Vec<[f32; 3]>,
}

impl Cue {
    /// A 4-pixel square, red for class 0 and blue for class 1 (then green,
    /// yellow, magenta, cyan, white, black, orange, purple).
    pub fn default_for(classes: usize) -> Cue {
        const COLOURS: [[f32; 3]; 10] = [
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            [1.0, 0.5, 0.0],
            [0.5, 0.0, 1.0],
        ];
        Cue {
            size: 4,
            colours: COLOURS.iter().cycle().take(classes).copied().collect(),
        }
    }

    /// Draws on image `i` of `images: [N, C, H, W]` the square of class
    /// `cue_classes[i]`, at a place drawn from `(seed, i)`; returns where the
    /// squares are, `[N, H, W]`.
    pub fn stamp(
        &self,
        images: &mut Tensor,
        cue_classes: &[usize],
        seed: u64,
    ) -> Result<Array3<bool>> {
        let &[n, c, h, w] = images.shape() else {
            return Err(Error::invalid("cue", "images must be [N, C, H, W]"));
        };
        if cue_classes.len() != n || (c != 1 && c != 3) {
            return Err(Error::invalid(
                "cue",
                "one cue class per image, and images of 1 or 3 channels",
            ));
        }
        if self.size == 0 || self.size > h.min(w) {
            return Err(Error::invalid(
                "cue",
                format!("a {0}x{0} square does not fit {h}x{w} images", self.size),
            ));
        }
        if let Some(&k) = cue_classes.iter().find(|&&k| k >= self.colours.len()) {
            return Err(Error::invalid(
                "cue",
                format!("no colour for class {k}: {} colours", self.colours.len()),
            ));
        }
        let mut masks = Array3::from_elem((n, h, w), false);
        for (i, (mut image, mut mask)) in images
            .outer_iter_mut()
            .zip(masks.outer_iter_mut())
            .enumerate()
        {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64));
            let top = rng.random_range(0..=h - self.size);
            let left = rng.random_range(0..=w - self.size);
            let rgb = self.colours[cue_classes[i]];
            let values: Vec<f32> = if c == 3 {
                rgb.to_vec()
            } else {
                vec![rgb.iter().zip(LUMA_WEIGHTS).map(|(v, l)| v * l).sum()]
            };
            for y in top..top + self.size {
                for x in left..left + self.size {
                    mask[[y, x]] = true;
                    for (ch, &v) in values.iter().enumerate() {
                        image[[ch, y, x]] = v;
                    }
                }
            }
        }
        Ok(masks)
    }
}

/// The images of classes `a` and `b` of `data`, labelled 0 and 1 and named
/// after them.
pub fn two_classes(data: &Dataset, a: usize, b: usize) -> Result<Dataset> {
    if a == b {
        return Err(Error::invalid(
            "shortcut",
            format!("the two classes must differ, got {a} twice"),
        ));
    }
    let chosen: Vec<usize> = (0..data.len())
        .filter(|&i| data.labels[i] == a || data.labels[i] == b)
        .collect();
    if chosen.is_empty() {
        return Err(Error::invalid(
            "shortcut",
            format!("the data set has no image of class {a} or {b}"),
        ));
    }
    let labels = chosen
        .iter()
        .map(|&i| usize::from(data.labels[i] == b))
        .collect();
    let name = |k: usize| data.class_names.get(k).cloned().unwrap_or(k.to_string());
    let images = data.select(&chosen)?.images();
    Dataset::new(images, labels, vec![name(a), name(b)])
}

/// `labels` with every class moved to the next one (`k → (k + 1) mod K`):
/// the cue of the wrong class, for the swapped test.
pub fn swapped(labels: &[usize], classes: usize) -> Vec<usize> {
    labels.iter().map(|&k| (k + 1) % classes.max(1)).collect()
}

/// The images of a data set with their cue drawn: `(images, masks)`.
pub fn with_cue(
    data: &Dataset,
    cue: &Cue,
    cue_classes: &[usize],
    seed: u64,
) -> Result<(Tensor, Array3<bool>)> {
    let mut images = data.images();
    let masks = cue.stamp(&mut images, cue_classes, seed)?;
    Ok((images, masks))
}

/// How many images of `images: [N, C, H, W]` are unchanged outside `masks`
/// compared with `original` (a check that stamping touched only the square).
#[cfg(test)]
fn untouched_outside(original: &Tensor, images: &Tensor, masks: &Array3<bool>) -> usize {
    original
        .outer_iter()
        .zip(images.outer_iter())
        .zip(masks.outer_iter())
        .filter(|((a, b), m)| {
            a.axis_iter(ndarray::Axis(0))
                .zip(b.axis_iter(ndarray::Axis(0)))
                .all(|(a, b)| {
                    a.iter()
                        .zip(b.iter())
                        .zip(m.iter())
                        .all(|((x, y), &inside)| inside || x == y)
                })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_square_is_drawn_where_the_mask_says() {
        let original = Tensor::from_elem(vec![3, 3, 8, 8], 0.5);
        let mut images = original.clone();
        let cue = Cue::default_for(2);
        let masks = cue.stamp(&mut images, &[0, 1, 0], 7).unwrap();
        for (i, mask) in masks.outer_iter().enumerate() {
            assert_eq!(mask.iter().filter(|&&m| m).count(), 16);
            let k = [0, 1, 0][i];
            for ((y, x), &inside) in mask.indexed_iter() {
                if inside {
                    for ch in 0..3 {
                        assert_eq!(images[[i, ch, y, x]], cue.colours[k][ch]);
                    }
                }
            }
        }
        assert_eq!(untouched_outside(&original, &images, &masks), 3);
        // The same seed draws the same places.
        let mut again = original.clone();
        assert_eq!(cue.stamp(&mut again, &[0, 1, 0], 7).unwrap(), masks);
        assert_eq!(swapped(&[0, 1, 1], 2), [1, 0, 0]);
    }
}
