//! Decoding one PNG or JPEG file into planar pixels.
//!
//! The format is recognised by the file's first bytes, not its name. Whatever the
//! file stores, the result has 1 channel (grey) or 3 (RGB) of 8 bits:
//!
//! - palette and low-bit-depth PNGs are expanded to grey or RGB;
//! - alpha is dropped, not blended: a transparent pixel keeps the colour it
//!   stores, because there is no right background to blend with;
//! - 16-bit PNGs keep their high byte (`v >> 8`), which is within 1/255 of
//!   the exact value;
//! - CMYK and YCbCr JPEGs come out as RGB, one-component JPEGs as grey.

use std::cell::Cell;
use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use ndarray::Array3;

use zune_jpeg::errors::DecodeErrors;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::JpegDecoder;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::Limits;
use crate::tensor::Tensor;

/// The most bytes of pixels a PNG file can hold per byte of file: deflate's
/// largest expansion, 1032 to 1 (zlib's technical details), with room for
/// filter bytes.
pub const PNG_MAX_EXPANSION: usize = 1100;

/// The most pixels a JPEG file can hold per byte: each 8x8 block of a
/// component costs at least one bit of Huffman code (its DC difference), so
/// one byte covers at most eight blocks of 64 pixels.
const JPEG_MAX_PIXELS_PER_BYTE: u64 = 512;

/// One decoded image: 8-bit pixels, one plane per channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` bytes: all of channel 0, then channel 1, ...
    pub pixels: Vec<u8>,
}

impl DecodedImage {
    /// `[C, H, W]`, the shape this image has as a tensor.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The image as a `[C, H, W]` tensor with values `p / 255` in `[0, 1]`.
    pub fn to_tensor(&self) -> Tensor {
        let [c, h, w] = self.shape();
        Array3::from_shape_fn((c, h, w), |(ci, y, x)| {
            let byte = self.pixels.get((ci * h + y) * w + x).copied().unwrap_or(0);
            f32::from(byte) / 255.0
        })
        .into_dyn()
    }
}

/// Reads a PNG or JPEG file as a `[C, H, W]` tensor in `[0, 1]`, with `C` 1 (grey)
/// or 3 (RGB). See the module documentation for how other layouts are mapped.
pub fn load_image(path: &Path) -> Result<Tensor> {
    Ok(read_image(path)?.to_tensor())
}

/// Reads and decodes a PNG or JPEG file, within the [`Limits`] in force.
pub fn read_image(path: &Path) -> Result<DecodedImage> {
    let limit = Limits::current().max_image_file_bytes();
    let bytes = fsutil::read_bounded(path, limit, "an image file")?;
    decode_image(&bytes, path)
}

/// Decodes the bytes of a PNG or JPEG file; `path` is only used in errors.
///
/// The width and height in the file's header are checked against
/// [`Limits::max_pixels`] before the pixels are allocated.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<DecodedImage> {
    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    const JPEG_SIGNATURE: [u8; 2] = [0xff, 0xd8];
    if bytes.starts_with(&PNG_SIGNATURE) {
        decode_png(bytes, path)
    } else if bytes.starts_with(&JPEG_SIGNATURE) {
        decode_jpeg(bytes, path)
    } else {
        let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Err(Error::format(
            path,
            "file signature",
            "a PNG (89 50 4e 47) or JPEG (ff d8) file",
            format!("bytes [{}]", start.join(" ")),
        ))
    }
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<DecodedImage> {
    let png_error = |e: png::DecodingError| {
        Error::format(path, "PNG data", "a decodable PNG image", e.to_string())
    };
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // EXPAND: palette -> RGB(A), 1/2/4-bit grey -> 8-bit; STRIP_16: 16-bit -> 8-bit.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let (width, height) = (reader.info().width, reader.info().height);
    Limits::current().check_pixels(
        &path.display().to_string(),
        u64::from(width),
        u64::from(height),
    )?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        Error::format(
            path,
            "PNG size",
            "an image that fits in memory",
            "too large",
        )
    })?;
    // Deflate expands at most 1032 to 1, so the file cannot hold more pixels
    // than this: a header that claims more is refused before the buffer exists.
    let holds = bytes.len().saturating_mul(PNG_MAX_EXPANSION);
    if size > holds {
        return Err(Error::format(
            path,
            "PNG size",
            format!(
                "at most {holds} bytes of pixels in a file of {} bytes",
                bytes.len()
            ),
            format!("{width}x{height}, {size} bytes"),
        ));
    }
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(png_error)?;
    let samples = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(Error::format(
                path,
                "PNG colour type",
                "grey or RGB after palette expansion",
                "an unexpanded palette",
            ))
        }
    };
    let data = buf.get(..info.buffer_size()).unwrap_or(&buf);
    to_planar(
        data,
        samples,
        info.width as usize,
        info.height as usize,
        info.line_size,
        path,
    )
}

fn decode_jpeg(bytes: &[u8], path: &Path) -> Result<DecodedImage> {
    let mut decoder = JpegDecoder::new(bytes);
    let jpeg_error = |e: DecodeErrors| {
        Error::format(
            path,
            "JPEG data",
            "a decodable JPEG image",
            jpeg_message(&e),
        )
    };
    let decoder_panicked = || {
        Error::format(
            path,
            "JPEG data",
            "a decodable JPEG image",
            "the decoder failed on an inconsistent file",
        )
    };
    without_panics(|| decoder.decode_headers())
        .ok_or_else(decoder_panicked)?
        .map_err(jpeg_error)?;
    if let Some((width, height)) = decoder.dimensions() {
        Limits::current().check_pixels(&path.display().to_string(), width as u64, height as u64)?;
        // Every 8x8 block of a JPEG costs at least one bit, so a file holds
        // at most 512 pixels per byte.
        let holds = (bytes.len() as u64).saturating_mul(JPEG_MAX_PIXELS_PER_BYTE);
        let pixels = width as u64 * height as u64;
        if pixels > holds {
            return Err(Error::format(
                path,
                "JPEG size",
                format!("at most {holds} pixels in a file of {} bytes", bytes.len()),
                format!("{width}x{height}"),
            ));
        }
    }
    // One-component JPEGs decode to grey (Luma); everything else to RGB.
    let pixels = without_panics(|| decoder.decode())
        .ok_or_else(decoder_panicked)?
        .map_err(jpeg_error)?;
    let (width, height) = decoder.dimensions().unwrap_or((0, 0));
    let samples = match decoder.get_output_colorspace() {
        Some(ColorSpace::Luma) => 1,
        Some(ColorSpace::RGB) => 3,
        other => {
            return Err(Error::format(
                path,
                "JPEG colour space",
                "grey or RGB output",
                format!("{other:?}"),
            ))
        }
    };
    to_planar(&pixels, samples, width, height, width * samples, path)
}

thread_local! {
    /// Set while a decoder runs under [`without_panics`] on this thread.
    static IN_DECODER: Cell<bool> = const { Cell::new(false) };
}

/// Runs a third-party decoder, turning a panic inside it into `None`.
///
/// zune-jpeg still fails assertions in its upsampler on some corrupt files
/// (upstream issues etemesi254/zune-image #236 and #281; `tests/fuzz.rs`
/// found one), and a hostile file must give an error, not a crash. The
/// decoder's state is dropped with the panic. The panic hook, wrapped once,
/// stays silent for a panic inside a decoder on this thread and prints every
/// other panic as before.
fn without_panics<T>(decode: impl FnOnce() -> T) -> Option<T> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.with(Cell::get) {
                previous(info);
            }
        }));
    });
    IN_DECODER.with(|flag| flag.set(true));
    let out = panic::catch_unwind(AssertUnwindSafe(decode));
    IN_DECODER.with(|flag| flag.set(false));
    out.ok()
}

/// zune-jpeg's error text, without the quotes and line breaks of its `Debug` form.
fn jpeg_message(e: &DecodeErrors) -> String {
    let text = match e {
        DecodeErrors::Format(s) => s.clone(),
        DecodeErrors::FormatStatic(s) => s.to_string(),
        other => other.to_string(),
    };
    text.trim().replace('\n', "; ")
}

/// Splits interleaved pixels (`RGBRGB...`, rows `stride` bytes apart) into planes,
/// keeping grey or RGB and dropping an alpha channel.
fn to_planar(
    data: &[u8],
    samples: usize,
    width: usize,
    height: usize,
    stride: usize,
    path: &Path,
) -> Result<DecodedImage> {
    let channels = if samples >= 3 { 3 } else { 1 };
    let row_len = width * samples;
    if width == 0 || height == 0 || stride < row_len || data.len() < stride * (height - 1) + row_len
    {
        return Err(Error::format(
            path,
            "decoded pixels",
            format!("{height} rows of {width} pixels with {samples} samples"),
            format!("{} bytes", data.len()),
        ));
    }
    let plane = width * height;
    let mut pixels = vec![0u8; channels * plane];
    for (y, row) in data.chunks(stride).take(height).enumerate() {
        for (x, px) in row.chunks_exact(samples).take(width).enumerate() {
            for (c, &v) in px.iter().take(channels).enumerate() {
                if let Some(dst) = pixels.get_mut(c * plane + y * width + x) {
                    *dst = v;
                }
            }
        }
    }
    Ok(DecodedImage {
        channels,
        height,
        width,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_becomes_none_and_the_next_call_works() {
        assert_eq!(without_panics(|| 7), Some(7));
        let failed: Option<u8> = without_panics(|| panic!("a decoder assertion"));
        assert_eq!(failed, None);
        assert!(
            !IN_DECODER.with(Cell::get),
            "the flag is cleared after a panic"
        );
        assert_eq!(without_panics(|| "still fine"), Some("still fine"));
    }

    /// Encodes a PNG in memory with the `png` crate.
    fn png_bytes(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn rgba_png_drops_alpha_and_goes_planar() {
        // 2x1: a red opaque pixel, then a transparent blue one.
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &[255, 0, 0, 255, 0, 0, 255, 0],
        );
        let img = decode_image(&bytes, Path::new("a.png")).unwrap();
        assert_eq!(img.shape(), [3, 1, 2]);
        assert_eq!(img.pixels, vec![255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn grey_alpha_png_is_grey() {
        let bytes = png_bytes(
            1,
            2,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &[10, 0, 20, 255],
        );
        let img = decode_image(&bytes, Path::new("g.png")).unwrap();
        assert_eq!(img.shape(), [1, 2, 1]);
        assert_eq!(img.pixels, vec![10, 20]);
    }

    #[test]
    fn sixteen_bit_png_keeps_high_byte() {
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &[0xff, 0xff, 0x12, 0x34],
        );
        let img = decode_image(&bytes, Path::new("deep.png")).unwrap();
        assert_eq!(img.pixels, vec![0xff, 0x12]);
    }

    #[test]
    fn one_bit_png_expands_to_full_range() {
        // 0b1010_0000: pixels white, black, white, black.
        let bytes = png_bytes(
            4,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &[0b1010_0000],
        );
        let img = decode_image(&bytes, Path::new("bits.png")).unwrap();
        assert_eq!(img.pixels, vec![255, 0, 255, 0]);
    }

    #[test]
    fn tensor_is_chw_in_unit_range() {
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[255, 0, 51, 0, 255, 0],
        );
        let t = decode_image(&bytes, Path::new("t.png"))
            .unwrap()
            .to_tensor();
        assert_eq!(t.shape(), &[3, 1, 2]);
        assert_eq!(t[[0, 0, 0]], 1.0);
        assert_eq!(t[[1, 0, 1]], 1.0);
        assert!((t[[2, 0, 0]] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn unknown_signature_and_truncation_are_errors() {
        let err = decode_image(b"GIF89a", Path::new("x.png"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.png: file signature") && err.contains("47 49 46 38"),
            "{err}"
        );
        let bytes = png_bytes(4, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[7; 48]);
        for cut in [9, 30, bytes.len() - 13] {
            let err = decode_image(&bytes[..cut], Path::new("cut.png"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cut.png: PNG data"), "{err}");
        }
        let err = decode_image(&[0xff, 0xd8, 0xff], Path::new("cut.jpg"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut.jpg: JPEG data"), "{err}");
    }
}
