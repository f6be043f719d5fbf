//! Object masks: does the map fall on the object?
//!
//! Given a mask of the object's pixels, two scores per map:
//!
//! - the **pointing game** (Zhang et al. 2016): a hit if the map's largest
//!   value (the first, in row-major order, at a tie) lies inside the mask;
//! - the **energy-based pointing game** (Wang et al. 2020, Score-CAM): the
//!   share of the map's positive part that lies inside the mask,
//!   `Σ_{p ∈ mask} max(m_p, 0) / Σ_p max(m_p, 0)`.
//!
//! The map is the drawn one ([`super::drawn_maps`]). A random map scores
//! about the mask's share of the image on both: compare with that.

use std::path::Path;

use ndarray::{Array2, ArrayView2, Axis};

use crate::data::{convert, decode};
use crate::error::{Error, Result};

/// What one map scores against one mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pointing {
    /// The share of positive map inside the mask, in `[0, 1]`; NaN if the map
    /// has no positive value.
    pub energy: f64,
    /// Whether the map's maximum lies inside the mask (false for a map with no
    /// positive value).
    pub hit: bool,
}

/// Scores `map` against `mask` (the same `[H, W]`).
pub fn pointing(map: ArrayView2<f32>, mask: ArrayView2<bool>) -> Result<Pointing> {
    if map.shape() != mask.shape() {
        return Err(Error::invalid(
            "mask",
            format!(
                "the mask is {:?} but the map is {:?}",
                mask.shape(),
                map.shape()
            ),
        ));
    }
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    let (mut best, mut best_in) = (f32::NEG_INFINITY, false);
    for (&m, &object) in map.iter().zip(mask.iter()) {
        let positive = f64::from(m.max(0.0));
        total += positive;
        if object {
            inside += positive;
        }
        if m > best {
            best = m;
            best_in = object;
        }
    }
    if total == 0.0 {
        return Ok(Pointing {
            energy: f64::NAN,
            hit: false,
        });
    }
    Ok(Pointing {
        energy: inside / total,
        hit: best_in,
    })
}

/// Reads a mask image (PNG or JPEG): white marks the object. The mask is
/// converted as its input is (to grey by luma, resized bilinearly to
/// `height x width` without keeping the aspect ratio), and a pixel is the
/// object's if it is brighter than one half.
pub fn read_mask(path: &Path, height: usize, width: usize) -> Result<Array2<bool>> {
    let image = decode::read_image(path)?;
    let (fitted, _) = convert::fit_decoded(&image, 1, height, width)?;
    let grey = fitted.index_axis(Axis(0), 0);
    let mask = grey
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| Error::invalid("mask", format!("{}: not an image", path.display())))?
        .mapv(|v| v > 0.5);
    if !mask.iter().any(|&m| m) {
        return Err(Error::invalid(
            "mask",
            format!(
                "{}: the mask is empty (no pixel brighter than one half); white marks the object",
                path.display()
            ),
        ));
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn energy_and_hit_by_hand() {
        let map = array![[0.0f32, 2.0], [1.0, -3.0]];
        let mask = array![[false, true], [false, true]];
        // Positive mass 3, of which 2 inside; the maximum 2 is inside.
        let p = pointing(map.view(), mask.view()).unwrap();
        assert!((p.energy - 2.0 / 3.0).abs() < 1e-12);
        assert!(p.hit);
        let p = pointing(map.view(), mask.mapv(|m| !m).view()).unwrap();
        assert!((p.energy - 1.0 / 3.0).abs() < 1e-12);
        assert!(!p.hit);
        // No positive value: undefined energy, no hit.
        let p = pointing(map.mapv(|v| -v.abs()).view(), mask.view()).unwrap();
        assert!(p.energy.is_nan() && !p.hit);
    }
}
