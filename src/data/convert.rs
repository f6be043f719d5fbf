//! Fitting one image to what a model expects: its number of channels and its size.
//!
//! A model trained on 28x28 grey digits can still be shown a 640x480 colour
//! photo; [`to_model_input`] converts it and says what it changed, so the user
//! knows the saliency map is of the converted image.

use ndarray::{Array3, ArrayView3, Ix3};

use super::decode::DecodedImage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// ITU-R BT.601 luma weights for R, G and B: how bright each primary looks.
pub const LUMA_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

/// Converts a `[C, H, W]` image (C = 1 or 3) to `channels` channels and
/// `height x width` pixels. Returns the new image and one human-readable note per
/// change made (none if the image already fits).
///
/// Grey becomes RGB by copying it to all three channels; RGB becomes grey by
/// [`LUMA_WEIGHTS`]. Resizing is [`resize_bilinear`] and does not keep the
/// aspect ratio.
pub fn to_model_input(
    img: &Tensor,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<(Tensor, Vec<String>)> {
    let [c, h, w] = chw_shape(img, "to_model_input")?;
    if channels != 1 && channels != 3 {
        return Err(Error::invalid(
            "to_model_input",
            format!("a model input needs 1 or 3 channels, not {channels}"),
        ));
    }
    let mut notes = Vec::new();
    let mut out = img.clone();
    // Resizing is done on as few channels as possible: the two steps commute.
    if channels < c {
        out = rgb_to_grey(&out)?;
        notes.push("converted RGB to grey (luma = 0.299 R + 0.587 G + 0.114 B)".to_string());
    }
    if (h, w) != (height, width) {
        out = resize_bilinear(&out, height, width)?;
        let mut note = format!("resized {w}x{h} to {width}x{height} (width x height, bilinear)");
        if w * height != width * h {
            note.push_str(", changing the aspect ratio");
        }
        notes.push(note);
    }
    if channels > c {
        out = grey_to_rgb(&out)?;
        notes.push("converted grey to RGB (the grey copied to all three channels)".to_string());
    }
    Ok((out, notes))
}

/// `[3, H, W]` RGB to `[1, H, W]` grey with the BT.601 [`LUMA_WEIGHTS`].
pub fn rgb_to_grey(img: &Tensor) -> Result<Tensor> {
    let view = chw_view(img, "rgb_to_grey")?;
    let [c, h, w] = chw_shape(img, "rgb_to_grey")?;
    if c != 3 {
        return Err(Error::invalid(
            "rgb_to_grey",
            format!("expected 3 channels, found {c}"),
        ));
    }
    let [wr, wg, wb] = LUMA_WEIGHTS;
    let grey = Array3::from_shape_fn((1, h, w), |(_, y, x)| {
        wr * view[[0, y, x]] + wg * view[[1, y, x]] + wb * view[[2, y, x]]
    });
    Ok(grey.into_dyn())
}

/// `[1, H, W]` grey to `[3, H, W]` RGB with the same value in each channel.
pub fn grey_to_rgb(img: &Tensor) -> Result<Tensor> {
    let view = chw_view(img, "grey_to_rgb")?;
    let [c, h, w] = chw_shape(img, "grey_to_rgb")?;
    if c != 1 {
        return Err(Error::invalid(
            "grey_to_rgb",
            format!("expected 1 channel, found {c}"),
        ));
    }
    Ok(Array3::from_shape_fn((3, h, w), |(_, y, x)| view[[0, y, x]]).into_dyn())
}

/// Resizes a `[C, H, W]` image to `[C, height, width]` by bilinear interpolation.
///
/// Pixels are treated as squares whose centres sit at half-integer positions
/// (the "align_corners = false" convention of OpenCV's `INTER_LINEAR` and
/// PyTorch's `interpolate`): output pixel `x` samples the input at
/// `(x + 0.5) * in_width / width - 0.5`, clamped to the image, from its two
/// nearest input pixels in each direction. There is no smoothing beforehand, so
/// shrinking by a large factor skips detail rather than averaging it.
pub fn resize_bilinear(img: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let view = chw_view(img, "resize_bilinear")?;
    let [c, h, w] = chw_shape(img, "resize_bilinear")?;
    if height == 0 || width == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            "resize_bilinear",
            format!("cannot resize {w}x{h} to {width}x{height}: sizes must be at least 1x1"),
        ));
    }
    if (h, w) == (height, width) {
        return Ok(img.clone());
    }
    Ok(resize_with(c, h, w, height, width, |ci, y, x| {
        view[[ci, y, x]]
    }))
}

/// Bilinear resizing of a `[c, h, w]` image read through `at(channel, y, x)`,
/// to `[c, height, width]` (all sizes at least 1).
fn resize_with(
    c: usize,
    h: usize,
    w: usize,
    height: usize,
    width: usize,
    at: impl Fn(usize, usize, usize) -> f32,
) -> Tensor {
    let rows = sample_points(h, height);
    let cols = sample_points(w, width);
    Array3::from_shape_fn((c, height, width), |(ci, y, x)| {
        let (y0, y1, fy) = rows[y];
        let (x0, x1, fx) = cols[x];
        let top = at(ci, y0, x0) * (1.0 - fx) + at(ci, y0, x1) * fx;
        let bottom = at(ci, y1, x0) * (1.0 - fx) + at(ci, y1, x1) * fx;
        top * (1.0 - fy) + bottom * fy
    })
    .into_dyn()
}

/// [`to_model_input`] for an image still in bytes, as decoded from a file.
///
/// A large photo is resized straight from its bytes, so it is never held as
/// `f32` at full size: a 48-megapixel photo costs its 144 MB of bytes, not
/// 576 MB more. The result equals `to_model_input(&img.to_tensor(), ..)` up to
/// rounding (resizing and the grey conversion commute).
pub fn fit_decoded(
    img: &DecodedImage,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<(Tensor, Vec<String>)> {
    let [c, h, w] = img.shape();
    if (h, w) == (height, width) || height == 0 || width == 0 || h == 0 || w == 0 {
        return to_model_input(&img.to_tensor(), channels, height, width);
    }
    let plane = h * w;
    let pixels = &img.pixels;
    let small = resize_with(c, h, w, height, width, |ci, y, x| {
        f32::from(pixels.get(ci * plane + y * w + x).copied().unwrap_or(0)) / 255.0
    });
    let (out, mut notes) = to_model_input(&small, channels, height, width)?;
    let mut note = format!("resized {w}x{h} to {width}x{height} (width x height, bilinear)");
    if w * height != width * h {
        note.push_str(", changing the aspect ratio");
    }
    // The same notes, in the same order, as `to_model_input` on the full image.
    let at = usize::from(channels < c);
    notes.insert(at.min(notes.len()), note);
    Ok((out, notes))
}

/// For each of `n_out` output positions along one axis: the two input indices to
/// blend and the weight of the second.
fn sample_points(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    let last = n_in - 1;
    (0..n_out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, last as f64);
            let i0 = (src.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

fn chw_shape(img: &Tensor, op: &'static str) -> Result<[usize; 3]> {
    match *img.shape() {
        [c, h, w] if c == 1 || c == 3 => Ok([c, h, w]),
        _ => Err(Error::invalid(
            op,
            format!(
                "expected an image of shape [C, H, W] with C = 1 or 3, found {:?}",
                img.shape()
            ),
        )),
    }
}

fn chw_view<'a>(img: &'a Tensor, op: &'static str) -> Result<ArrayView3<'a, f32>> {
    chw_shape(img, op)?;
    img.view()
        .into_dimensionality::<Ix3>()
        .map_err(|e| Error::invalid(op, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    fn assert_close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() < 1e-6, "{a:?}\n!=\n{b:?}");
        }
    }

    #[test]
    fn upscale_2x2_to_4x4_matches_hand_computed_values() {
        // Output x = 0..3 samples input x = -0.25 (clamped to 0), 0.25, 0.75, 1.25
        // (clamped to 1), so a row [0, 1] becomes [0, 0.25, 0.75, 1]; rows alike.
        let img = array![[[0.0f32, 1.0], [2.0, 3.0]]].into_dyn();
        let out = resize_bilinear(&img, 4, 4).unwrap();
        let expected = array![[
            [0.0f32, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],
            [1.5, 1.75, 2.25, 2.5],
            [2.0, 2.25, 2.75, 3.0],
        ]]
        .into_dyn();
        assert_close(&out, &expected);
    }

    #[test]
    fn halving_averages_each_2x2_block() {
        // Output x = 0, 1 samples input x = 0.5, 2.5: halfway between two pixels.
        let img = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| (4 * y + x) as f32).into_dyn();
        let out = resize_bilinear(&img, 2, 2).unwrap();
        assert_close(&out, &array![[[2.5f32, 4.5], [10.5, 12.5]]].into_dyn());
    }

    #[test]
    fn same_size_is_identity() {
        let img =
            Array3::from_shape_fn((3, 5, 7), |(c, y, x)| (c * 100 + y * 10 + x) as f32).into_dyn();
        assert_eq!(resize_bilinear(&img, 5, 7).unwrap(), img);
        let (out, notes) = to_model_input(&img, 3, 5, 7).unwrap();
        assert_eq!(out, img);
        assert!(notes.is_empty());
    }

    #[test]
    fn one_pixel_spreads_everywhere() {
        let img = array![[[0.5f32]]].into_dyn();
        let out = resize_bilinear(&img, 3, 2).unwrap();
        assert!(out.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn rgb_to_grey_uses_bt601() {
        let img = array![[[1.0f32]], [[0.5]], [[0.0]]].into_dyn();
        let grey = rgb_to_grey(&img).unwrap();
        assert!((grey[[0, 0, 0]] - (0.299 + 0.5 * 0.587)).abs() < 1e-6);
    }

    #[test]
    fn model_input_converts_and_explains() {
        let rgb = Array3::from_elem((3, 48, 64), 1.0f32).into_dyn();
        let (grey, notes) = to_model_input(&rgb, 1, 28, 28).unwrap();
        assert_eq!(grey.shape(), &[1, 28, 28]);
        assert!(grey.iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("RGB to grey"));
        assert!(notes[1].contains("resized 64x48 to 28x28") && notes[1].contains("aspect"));

        let grey = Array3::from_elem((1, 2, 2), 0.25f32).into_dyn();
        let (rgb, notes) = to_model_input(&grey, 3, 4, 4).unwrap();
        assert_eq!(rgb.shape(), &[3, 4, 4]);
        assert!(rgb.iter().all(|&v| v == 0.25));
        assert!(notes[0].contains("resized 2x2 to 4x4") && !notes[0].contains("aspect"));
        assert!(notes[1].contains("grey to RGB"));
    }

    #[test]
    fn bytes_resize_as_the_tensor_does() {
        let pixels: Vec<u8> = (0..3 * 6 * 10).map(|i| (i * 37 % 256) as u8).collect();
        let img = DecodedImage {
            channels: 3,
            height: 6,
            width: 10,
            pixels,
        };
        for (c, h, w) in [(1, 4, 4), (3, 3, 5), (3, 12, 20), (1, 6, 10)] {
            let (a, notes_a) = fit_decoded(&img, c, h, w).unwrap();
            let (b, notes_b) = to_model_input(&img.to_tensor(), c, h, w).unwrap();
            assert_eq!(notes_a, notes_b);
            assert_eq!(a.shape(), b.shape());
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let four = Array3::<f32>::zeros((4, 2, 2)).into_dyn();
        assert!(to_model_input(&four, 3, 2, 2).is_err());
        let grey = Array3::<f32>::zeros((1, 2, 2)).into_dyn();
        assert!(to_model_input(&grey, 2, 2, 2).is_err());
        assert!(resize_bilinear(&grey, 0, 2).is_err());
        let empty = Array3::<f32>::zeros((1, 0, 2)).into_dyn();
        assert!(resize_bilinear(&empty, 2, 2).is_err());
    }
}
