//! Occlusion (Zeiler and Fergus 2014): hide a patch, see how much the score drops.
//!
//! A square patch of side `size` slides over the image `stride` pixels at a
//! time (in all channels at once), filled with `fill`. The attribution of a pixel
//! is the mean, over the patch positions covering it, of
//!
//! ```text
//! y_c(x) − y_c(x with the patch filled)
//! ```
//!
//! so it is positive where hiding the pixel's neighbourhood lowers the score.
//! Positions run `0, stride, 2·stride, ...` along each axis, plus one flush with
//! the far edge if the steps miss it, so every pixel is covered.
//!
//! Defaults: `size = max(1, round(min(H, W) / 7))` (4 for 28x28 MNIST, about a
//! stroke's width), `stride = max(1, size / 2)` (so every pixel is covered by
//! about four patches), `fill = 0` (black). The occluded copies of one input go
//! through the model `batch_size` at a time.

use ndarray::{s, Array2, Axis};

use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::tensor::Tensor;

use super::{check_inputs, chunks, pick};

/// Occlusion maps and the settings that made them.
#[derive(Clone, Debug)]
pub struct Occlusion {
    /// The mean score drop per pixel, `[N, H, W]`.
    pub maps: Tensor,
    /// Side of the square patch.
    pub size: usize,
    /// Pixels between patch positions.
    pub stride: usize,
    /// The value written into the patch.
    pub fill: f32,
    /// Occluded copies scored per input.
    pub patches: usize,
}

impl Occlusion {
    /// One line describing the settings.
    pub fn describe(&self) -> String {
        format!(
            "occlusion: {0}x{0} patches filled with {1}, stride {2}: {3} occluded copies per input",
            self.size, self.fill, self.stride, self.patches
        )
    }
}

/// The default patch side for an `h × w` image: `max(1, round(min(h, w) / 7))`.
pub fn default_size(h: usize, w: usize) -> usize {
    ((h.min(w) as f64 / 7.0).round() as usize).max(1)
}

/// The patch side and stride for an `h × w` image: the given ones, checked,
/// or the defaults (see the module docs).
pub fn patch_geometry(
    h: usize,
    w: usize,
    size: Option<usize>,
    stride: Option<usize>,
) -> Result<(usize, usize)> {
    let size = size.unwrap_or_else(|| default_size(h, w));
    if size == 0 || size > h.min(w) {
        return Err(Error::invalid(
            "occlusion",
            format!(
                "the patch size must be between 1 and {} (the image is {w}x{h}), got {size}",
                h.min(w)
            ),
        ));
    }
    let stride = stride.unwrap_or((size / 2).max(1));
    if stride == 0 {
        return Err(Error::invalid("occlusion", "the stride must be at least 1"));
    }
    Ok((size, stride))
}

/// Occlusion maps `[N, H, W]` for `targets` (see the module docs for the
/// defaults taken when `size` or `stride` is `None`).
pub fn occlusion(
    model: &dyn Classifier,
    inputs: &Tensor,
    targets: &[usize],
    size: Option<usize>,
    stride: Option<usize>,
    fill: f32,
    batch_size: usize,
) -> Result<Occlusion> {
    let op = "occlusion";
    check_inputs(model, inputs, Some(targets))?;
    let (h, w) = (inputs.shape()[2], inputs.shape()[3]);
    let (size, stride) = patch_geometry(h, w, size, stride)?;
    if !fill.is_finite() {
        return Err(Error::invalid(
            op,
            format!("the fill value must be finite, got {fill}"),
        ));
    }
    let ys = positions(h, size, stride);
    let xs = positions(w, size, stride);
    let corners: Vec<(usize, usize)> = ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
        .collect();

    let mut pool = crate::tensor::Pool::new();
    let scores = pick(
        &model.predict_scores(inputs, batch_size, &mut pool)?,
        targets,
    );
    let n = inputs.shape()[0];
    let mut maps = Tensor::zeros(vec![n, h, w]);
    for (i, mut map) in maps.outer_iter_mut().enumerate() {
        let x = inputs.index_axis(Axis(0), i); // [C, H, W]
        let mut drop = Array2::<f64>::zeros((h, w));
        let mut cover = Array2::<f64>::zeros((h, w));
        for range in chunks(corners.len(), batch_size) {
            // [m, C, H, W]: m copies of input i, each with one patch filled.
            let mut shape = vec![range.len()];
            shape.extend_from_slice(x.shape());
            let mut copies = Tensor::zeros(shape);
            for (mut copy, &(y0, x0)) in copies.outer_iter_mut().zip(&corners[range.clone()]) {
                copy.assign(&x);
                copy.slice_mut(s![.., y0..y0 + size, x0..x0 + size])
                    .fill(fill);
            }
            let logits = model.predict_scores(&copies, batch_size, &mut pool)?;
            for (row, &(y0, x0)) in corners[range].iter().enumerate() {
                let delta = f64::from(scores[i]) - f64::from(logits[[row, targets[i]]]);
                drop.slice_mut(s![y0..y0 + size, x0..x0 + size])
                    .mapv_inplace(|d| d + delta);
                cover
                    .slice_mut(s![y0..y0 + size, x0..x0 + size])
                    .mapv_inplace(|c| c + 1.0);
            }
        }
        for ((m, &d), &c) in map.iter_mut().zip(&drop).zip(&cover) {
            *m = if c > 0.0 { (d / c) as f32 } else { 0.0 };
        }
    }
    Ok(Occlusion {
        maps,
        size,
        stride,
        fill,
        patches: corners.len(),
    })
}

/// Patch starts along an axis of `len`: `0, stride, ...` while the patch fits,
/// plus `len − size` if the last one stops short of the edge.
pub fn positions(len: usize, size: usize, stride: usize) -> Vec<usize> {
    let last = len - size;
    let mut starts: Vec<usize> = (0..=last).step_by(stride.max(1)).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_cover_the_far_edge() {
        assert_eq!(positions(28, 4, 2).len(), 13);
        assert_eq!(positions(10, 4, 3), [0, 3, 6]);
        assert_eq!(positions(10, 4, 4), [0, 4, 6]);
        assert_eq!(positions(4, 4, 1), [0]);
        assert_eq!(default_size(28, 28), 4);
        assert_eq!(default_size(3, 3), 1);
    }
}
