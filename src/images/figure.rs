//! PNG figures: the input, its saliency map as a heat map, and the two overlaid.
//!
//! A figure is three panels side by side with an 8 px white gap, as keras-vis's
//! notebooks showed them:
//!
//! ```text
//! +---------+   +---------+   +---------+
//! |  input  |   |   heat  |   | overlay |
//! +---------+   +---------+   +---------+
//! ```
//!
//! The overlay is `alpha * heat + (1 - alpha) * image`, with `alpha = 0.5` by default.
//!
//! Inputs of 28 or 32 pixels would be stamps on a screen, so panels are enlarged by a
//! whole factor with nearest-neighbour sampling: every input pixel becomes a `k x k`
//! block of one colour, nothing is smoothed, and what is drawn is exactly what the model
//! saw. [`auto_scale`] picks `k` so the longer side reaches [`MIN_PANEL_PX`] = 224 px:
//! 28 -> x8 (224 px), 32 -> x7 (224 px), 224 or more -> x1.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{ArrayViewD, Ix2, Ix3};

use super::colormap::Colormap;
use crate::error::{Error, Result};
use crate::fsutil;

/// The longer side, in pixels, that [`auto_scale`] enlarges a panel to at least.
pub const MIN_PANEL_PX: usize = 224;

/// White space between panels of a figure, in output pixels.
pub const PANEL_GAP_PX: usize = 8;

/// The largest side, in pixels, of any image written here: a guard against a scale
/// factor that would ask for gigabytes.
pub const MAX_SIDE_PX: usize = 16_384;

/// How much to enlarge panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// The factor of [`auto_scale`].
    #[default]
    Auto,
    /// This whole factor; 1 keeps the input's size.
    Factor(usize),
}

/// How figures and panels are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FigureStyle {
    /// Colour map for the heat map.
    pub colormap: Colormap,
    /// Weight of the heat map in the overlay, in `[0, 1]`.
    pub alpha: f32,
    /// Enlargement of every panel.
    pub scale: Scale,
}

impl Default for FigureStyle {
    /// Viridis, alpha 0.5 (the keras-vis notebooks), automatic scale.
    fn default() -> Self {
        FigureStyle {
            colormap: Colormap::default(),
            alpha: 0.5,
            scale: Scale::Auto,
        }
    }
}

/// The whole factor that makes the longer side of an `height x width` image at least
/// [`MIN_PANEL_PX`]: `ceil(224 / max(height, width))`, and 1 if it is already that big.
///
/// ```
/// use salient::images::auto_scale;
/// assert_eq!(auto_scale(28, 28), 8);
/// assert_eq!(auto_scale(32, 32), 7);
/// assert_eq!(auto_scale(500, 300), 1);
/// ```
pub fn auto_scale(height: usize, width: usize) -> usize {
    let side = height.max(width).max(1);
    MIN_PANEL_PX.div_ceil(side).max(1)
}

/// An 8-bit RGB picture in memory: `pixels` holds `height` rows of `width` RGB triples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Row-major RGB bytes, `3 * width * height` of them.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An image of one colour.
    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        RgbImage {
            width,
            height,
            pixels: rgb.repeat(width * height),
        }
    }

    /// The colour at column `x`, row `y`. **Panics** outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside the image"
        );
        let i = 3 * (y * self.width + x);
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// An input image `[C, H, W]` with values in `[0, 1]`: one channel is drawn grey,
    /// three as RGB. Values are clamped to `[0, 1]` and NaN is drawn black.
    pub fn from_chw(image: ArrayViewD<f32>) -> Result<Self> {
        let shape = image.shape().to_vec();
        let image = image.into_dimensionality::<Ix3>().map_err(|_| {
            Error::invalid(
                "figure",
                format!("expected an image [C, H, W], got shape {shape:?}"),
            )
        })?;
        let (c, h, w) = image.dim();
        if c != 1 && c != 3 {
            return Err(Error::invalid(
                "figure",
                format!("an image needs 1 (grey) or 3 (RGB) channels, got {c}"),
            ));
        }
        check_size(h, w)?;
        let mut out = RgbImage::filled(w, h, [0, 0, 0]);
        for y in 0..h {
            for x in 0..w {
                let i = 3 * (y * w + x);
                for k in 0..3 {
                    out.pixels[i + k] = unit_to_u8(image[[if c == 1 { 0 } else { k }, y, x]]);
                }
            }
        }
        Ok(out)
    }

    /// A map `[H, W]` with values in `[0, 1]` drawn through a colour map.
    pub fn heat_map(map: ArrayViewD<f32>, colormap: Colormap) -> Result<Self> {
        let shape = map.shape().to_vec();
        let map = map.into_dimensionality::<Ix2>().map_err(|_| {
            Error::invalid(
                "figure",
                format!("expected a saliency map [H, W], got shape {shape:?}"),
            )
        })?;
        let (h, w) = map.dim();
        check_size(h, w)?;
        let mut pixels = Vec::with_capacity(3 * h * w);
        // Row-major iteration, whatever the strides of the view.
        for &t in map.iter() {
            pixels.extend_from_slice(&colormap.rgb(t));
        }
        Ok(RgbImage {
            width: w,
            height: h,
            pixels,
        })
    }

    /// `alpha * heat + (1 - alpha) * image`, channel by channel, rounded.
    pub fn overlay(image: &RgbImage, heat: &RgbImage, alpha: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::invalid(
                "figure",
                format!("overlay alpha must be in [0, 1], got {alpha}"),
            ));
        }
        if (image.width, image.height) != (heat.width, heat.height) {
            return Err(Error::invalid(
                "figure",
                format!(
                    "the saliency map is {}x{} but the image is {}x{} (width x height)",
                    heat.width, heat.height, image.width, image.height
                ),
            ));
        }
        let pixels = image
            .pixels
            .iter()
            .zip(&heat.pixels)
            .map(|(&i, &h)| (alpha * h as f32 + (1.0 - alpha) * i as f32).round() as u8)
            .collect();
        Ok(RgbImage {
            width: image.width,
            height: image.height,
            pixels,
        })
    }

    /// Nearest-neighbour enlargement: each pixel becomes a `factor x factor` block.
    pub fn upscale(&self, factor: usize) -> Result<Self> {
        if factor == 0 {
            return Err(Error::invalid(
                "figure",
                "the scale factor must be at least 1",
            ));
        }
        let (Some(w), Some(h)) = (
            self.width.checked_mul(factor),
            self.height.checked_mul(factor),
        ) else {
            return Err(Error::invalid(
                "figure",
                format!("scale factor {factor} is far too large"),
            ));
        };
        check_size(h, w)?;
        let mut pixels = Vec::with_capacity(3 * w * h);
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&self.pixel(x / factor, y / factor));
            }
        }
        Ok(RgbImage {
            width: w,
            height: h,
            pixels,
        })
    }

    /// Panels of equal height side by side, `gap` columns of `background` between them.
    pub fn hstack(panels: &[RgbImage], gap: usize, background: [u8; 3]) -> Result<Self> {
        let Some(first) = panels.first() else {
            return Err(Error::invalid("figure", "no panel to draw"));
        };
        let h = first.height;
        if let Some(p) = panels.iter().find(|p| p.height != h) {
            return Err(Error::invalid(
                "figure",
                format!("panels must have one height, got {h} and {}", p.height),
            ));
        }
        let w = panels.iter().map(|p| p.width).sum::<usize>() + gap * (panels.len() - 1);
        check_size(h, w)?;
        let mut out = RgbImage::filled(w, h, background);
        let mut x0 = 0;
        for p in panels {
            for y in 0..h {
                let src = &p.pixels[3 * y * p.width..3 * (y + 1) * p.width];
                let dst = 3 * (y * w + x0);
                out.pixels[dst..dst + src.len()].copy_from_slice(src);
            }
            x0 += p.width + gap;
        }
        Ok(out)
    }

    /// Writes an 8-bit RGB PNG, atomically (see [`fsutil::write_atomic`]).
    pub fn write_png(&self, path: &Path) -> Result<()> {
        check_size(self.height, self.width)?;
        fsutil::write_atomic(path, |w| {
            let mut encoder = png::Encoder::new(w, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(png_to_io)?;
            writer.write_image_data(&self.pixels).map_err(png_to_io)?;
            writer.finish().map_err(png_to_io)
        })
    }
}

/// Writes the three-panel figure (input, heat map, overlay) for one input.
///
/// `image` is `[C, H, W]` with values in `[0, 1]`; `map` is `[H, W]` with values in
/// `[0, 1]`, as [`saliency_maps`](super::saliency_maps) makes them.
pub fn write_figure(
    path: &Path,
    image: ArrayViewD<f32>,
    map: ArrayViewD<f32>,
    style: &FigureStyle,
) -> Result<()> {
    let (input, heat, overlay) = panels(image, map, style)?;
    let factor = factor(style.scale, &input);
    let panels = [
        input.upscale(factor)?,
        heat.upscale(factor)?,
        overlay.upscale(factor)?,
    ];
    RgbImage::hstack(&panels, PANEL_GAP_PX, [255, 255, 255])?.write_png(path)
}

/// Writes the input image `[C, H, W]` alone.
pub fn write_image_png(path: &Path, image: ArrayViewD<f32>, scale: Scale) -> Result<()> {
    let input = RgbImage::from_chw(image)?;
    input.upscale(factor(scale, &input))?.write_png(path)
}

/// Writes the heat map of `map` `[H, W]` alone.
pub fn write_heatmap_png(path: &Path, map: ArrayViewD<f32>, style: &FigureStyle) -> Result<()> {
    let heat = RgbImage::heat_map(map, style.colormap)?;
    heat.upscale(factor(style.scale, &heat))?.write_png(path)
}

/// Writes the overlay of `map` `[H, W]` on `image` `[C, H, W]` alone.
pub fn write_overlay_png(
    path: &Path,
    image: ArrayViewD<f32>,
    map: ArrayViewD<f32>,
    style: &FigureStyle,
) -> Result<()> {
    let (_, _, overlay) = panels(image, map, style)?;
    overlay
        .upscale(factor(style.scale, &overlay))?
        .write_png(path)
}

/// Reads a PNG back as 8-bit RGB: `(width, height, pixels)`. Grey is repeated into three
/// channels and alpha is dropped. Meant for tests and checks, not as a general loader.
pub fn read_png_rgb(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let mut decoder = png::Decoder::new(open(path)?);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| png_read_error(path, e))?;
    let (width, height) = reader.info().size();
    crate::limits::Limits::current().check_pixels(
        &path.display().to_string(),
        u64::from(width),
        u64::from(height),
    )?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        Error::format(
            path,
            "PNG header",
            "an image that fits in memory",
            "a larger one",
        )
    })?;
    let expansion = crate::data::decode::PNG_MAX_EXPANSION as u64;
    let holds = crate::fsutil::regular_file_len(path)?.saturating_mul(expansion);
    if size as u64 > holds {
        return Err(Error::format(
            path,
            "PNG size",
            format!("at most {holds} bytes of pixels in this file"),
            format!("{width}x{height}"),
        ));
    }
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| png_read_error(path, e))?;
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        png::ColorType::Indexed => {
            // EXPAND turns palettes into RGB, so this does not happen.
            return Err(Error::format(
                path,
                "PNG colour type",
                "RGB or grey",
                "indexed",
            ));
        }
    };
    Ok((info.width, info.height, rgb))
}

/// A PNG's `(width, height)` from its header, without decoding the pixels.
pub fn png_size(path: &Path) -> Result<(u32, u32)> {
    let reader = png::Decoder::new(open(path)?)
        .read_info()
        .map_err(|e| png_read_error(path, e))?;
    Ok(reader.info().size())
}

/// The three panels at the input's size.
fn panels(
    image: ArrayViewD<f32>,
    map: ArrayViewD<f32>,
    style: &FigureStyle,
) -> Result<(RgbImage, RgbImage, RgbImage)> {
    let input = RgbImage::from_chw(image)?;
    let heat = RgbImage::heat_map(map, style.colormap)?;
    let overlay = RgbImage::overlay(&input, &heat, style.alpha)?;
    Ok((input, heat, overlay))
}

fn factor(scale: Scale, panel: &RgbImage) -> usize {
    match scale {
        Scale::Auto => auto_scale(panel.height, panel.width),
        Scale::Factor(k) => k,
    }
}

/// `[0, 1]` to a byte, rounded; NaN is 0.
fn unit_to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

fn check_size(height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::invalid(
            "figure",
            format!("cannot draw an image of {width}x{height} pixels"),
        ));
    }
    if height > MAX_SIDE_PX || width > MAX_SIDE_PX {
        return Err(Error::invalid(
            "figure",
            format!(
                "{width}x{height} pixels is larger than {MAX_SIDE_PX} on a side; use a smaller scale"
            ),
        ));
    }
    Ok(())
}

/// Opens a regular file (a FIFO would block) for reading.
fn open(path: &Path) -> Result<BufReader<File>> {
    crate::fsutil::regular_file_len(path)?;
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io(path, e))
}

fn png_to_io(e: png::EncodingError) -> std::io::Error {
    match e {
        png::EncodingError::IoError(e) => e,
        other => std::io::Error::other(other),
    }
}

fn png_read_error(path: &Path, e: png::DecodingError) -> Error {
    match e {
        png::DecodingError::IoError(e) => Error::io(path, e),
        other => Error::format(path, "PNG data", "a valid PNG file", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, Array3};

    fn style(colormap: Colormap, scale: Scale) -> FigureStyle {
        FigureStyle {
            colormap,
            alpha: 0.5,
            scale,
        }
    }

    /// Every `k x k` block of the read-back image has the colour of its source pixel.
    fn assert_blocks(pixels: &[u8], width: usize, k: usize, source: &RgbImage) {
        for y in 0..source.height * k {
            for x in 0..width {
                let i = 3 * (y * width + x);
                assert_eq!(
                    pixels[i..i + 3],
                    source.pixel(x / k, y / k),
                    "at ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn auto_scale_reaches_224_on_the_longer_side() {
        assert_eq!(auto_scale(28, 28), 8);
        assert_eq!(auto_scale(32, 32), 7);
        assert_eq!(auto_scale(100, 60), 3); // ceil(2.24)
        assert_eq!(auto_scale(224, 224), 1);
        assert_eq!(auto_scale(1000, 10), 1);
        assert_eq!(auto_scale(1, 1), 224);
    }

    #[test]
    fn zero_map_is_the_colormaps_zero_colour() {
        let dir = tempfile::tempdir().unwrap();
        for map in Colormap::ALL {
            let path = dir.path().join(format!("{map}.png"));
            let zeros = Array2::<f32>::zeros((3, 5)).into_dyn();
            write_heatmap_png(&path, zeros.view(), &style(map, Scale::Factor(1))).unwrap();
            let (w, h, px) = read_png_rgb(&path).unwrap();
            assert_eq!((w, h), (5, 3));
            assert!(px.chunks(3).all(|p| p == map.rgb(0.0)), "{map}");
        }
    }

    #[test]
    fn upscaled_2x2_input_gives_blocks_of_equal_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.png");
        let image = array![[[0.0f32, 0.25], [0.5, 1.0]]].into_dyn(); // [1, 2, 2], grey
        write_image_png(&path, image.view(), Scale::Factor(3)).unwrap();
        let (w, h, px) = read_png_rgb(&path).unwrap();
        assert_eq!((w, h), (6, 6));
        // 0.25 * 255 = 63.75 -> 64, 0.5 * 255 = 127.5 -> 128.
        let want = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255],
        };
        assert_blocks(&px, 6, 3, &want);
    }

    #[test]
    fn figure_is_three_auto_scaled_panels_with_white_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figure.png");
        // A 28x28 RGB input, red on the left half; the map is 1 on the top row, else 0.
        let mut image = Array3::<f32>::zeros((3, 28, 28));
        image.slice_mut(ndarray::s![0, .., ..14]).fill(1.0);
        let mut map = Array2::<f32>::zeros((28, 28));
        map.row_mut(0).fill(1.0);
        let s = style(Colormap::Jet, Scale::Auto);
        write_figure(&path, image.view().into_dyn(), map.view().into_dyn(), &s).unwrap();

        let (w, h, px) = read_png_rgb(&path).unwrap();
        let k = 8; // 28 -> 224
        assert_eq!(
            (w, h),
            (3 * 28 * k as u32 + 2 * PANEL_GAP_PX as u32, 28 * k as u32)
        );
        let at = |x: usize, y: usize| {
            let i = 3 * (y * w as usize + x);
            [px[i], px[i + 1], px[i + 2]]
        };
        let (heat_x0, overlay_x0) = (224 + PANEL_GAP_PX, 2 * (224 + PANEL_GAP_PX));
        assert_eq!(at(0, 100), [255, 0, 0]); // input, red half
        assert_eq!(at(223, 100), [0, 0, 0]); // input, black half
        assert_eq!(at(224, 0), [255, 255, 255]); // gap
        assert_eq!(at(heat_x0 - 1, 223), [255, 255, 255]); // gap
        assert_eq!(at(heat_x0, 0), Colormap::Jet.rgb(1.0)); // heat, top row, [128, 0, 0]
        assert_eq!(at(heat_x0 + 50, 8), Colormap::Jet.rgb(0.0)); // second input row
                                                                 // Overlay: 0.5 * jet(1) + 0.5 * red = (0.5 * 128 + 0.5 * 255, 0, 0) = (191.5 -> 192, 0, 0).
        assert_eq!(at(overlay_x0, 7), [192, 0, 0]);
        // 0.5 * jet(0) + 0.5 * black = (0, 0, 64).
        assert_eq!(at(overlay_x0 + 223, 223), [0, 0, 64]);
    }

    #[test]
    fn overlay_alone_has_the_overlay_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlay.png");
        let image = array![[[1.0f32, 0.0]]].into_dyn(); // grey, 1x2
        let map = array![[0.0f32, 1.0]].into_dyn();
        let s = FigureStyle {
            colormap: Colormap::Gray,
            alpha: 0.25,
            scale: Scale::Factor(2),
        };
        write_overlay_png(&path, image.view(), map.view(), &s).unwrap();
        let (w, h, px) = read_png_rgb(&path).unwrap();
        assert_eq!((w, h), (4, 2));
        // 0.25 * 0 + 0.75 * 255 = 191.25 -> 191; 0.25 * 255 + 0.75 * 0 = 63.75 -> 64.
        let want = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![191, 191, 191, 64, 64, 64],
        };
        assert_blocks(&px, 4, 2, &want);
    }

    #[test]
    fn rgb_input_keeps_its_channels_and_clamps() {
        let image = array![[[0.2f32]], [[1.5]], [[f32::NAN]]].into_dyn(); // [3, 1, 1]
        let img = RgbImage::from_chw(image.view()).unwrap();
        assert_eq!(img.pixel(0, 0), [51, 255, 0]);
    }

    #[test]
    fn transposed_map_is_drawn_in_logical_order() {
        let map = array![[0.0f32, 1.0], [0.0, 0.0]];
        let heat = RgbImage::heat_map(map.t().into_dyn(), Colormap::Gray).unwrap();
        // The transpose moves the 1 from (row 0, col 1) to (row 1, col 0).
        assert_eq!(heat.pixel(0, 1), [255; 3]);
        assert_eq!(heat.pixel(1, 0), [0; 3]);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let s = FigureStyle::default();
        let image = Array3::<f32>::zeros((1, 4, 4)).into_dyn();
        let map = Array2::<f32>::zeros((4, 4)).into_dyn();
        let small_map = Array2::<f32>::zeros((2, 4)).into_dyn();
        let two_channels = Array3::<f32>::zeros((2, 4, 4)).into_dyn();
        let empty = Array3::<f32>::zeros((1, 0, 4)).into_dyn();

        let err = write_figure(&path, image.view(), small_map.view(), &s).unwrap_err();
        assert!(err.to_string().contains("4x2"), "{err}");
        let err = write_figure(&path, two_channels.view(), map.view(), &s).unwrap_err();
        assert!(err.to_string().contains("got 2"), "{err}");
        assert!(write_image_png(&path, empty.view(), Scale::Auto).is_err());
        assert!(write_image_png(&path, image.view(), Scale::Factor(0)).is_err());
        assert!(write_image_png(&path, image.view(), Scale::Factor(usize::MAX)).is_err());
        let err = write_heatmap_png(&path, image.view(), &s).unwrap_err();
        assert!(err.to_string().contains("[H, W]"), "{err}");
        let loud = FigureStyle { alpha: 1.5, ..s };
        assert!(write_overlay_png(&path, image.view(), map.view(), &loud).is_err());
        assert!(!path.exists(), "no file is left behind by a failed write");
    }

    #[test]
    fn read_png_rgb_expands_grey_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grey.png");
        fsutil::write_atomic(&path, |w| {
            let mut e = png::Encoder::new(w, 2, 1);
            e.set_color(png::ColorType::Grayscale);
            e.set_depth(png::BitDepth::Eight);
            let mut writer = e.write_header().map_err(png_to_io)?;
            writer.write_image_data(&[10, 200]).map_err(png_to_io)?;
            writer.finish().map_err(png_to_io)
        })
        .unwrap();
        assert_eq!(
            read_png_rgb(&path).unwrap(),
            (2, 1, vec![10, 10, 10, 200, 200, 200])
        );
        assert_eq!(png_size(&path).unwrap(), (2, 1));

        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"GIF89a").unwrap();
        assert!(matches!(read_png_rgb(&bad), Err(Error::Format { .. })));
        assert!(matches!(
            png_size(&dir.path().join("none.png")),
            Err(Error::Io { .. })
        ));
    }
}
