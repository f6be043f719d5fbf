//! Line plots and text labels drawn straight into an [`RgbImage`], for the "trust" figures.
//!
//! A deletion or insertion curve (class probability against the fraction of pixels removed, one
//! line per saliency method) needs a line plot, and a grid of maps needs labels. Both are drawn
//! here with `std` alone, so the figures need no plotting library:
//!
//! - text uses a built-in bitmap font ([`draw_text`]): 5x7 glyphs, with descenders for
//!   g, j, p, q and y, covering printable ASCII;
//! - lines are drawn by distance to the segment ([`draw_line`]), which gives any thickness and
//!   round ends;
//! - [`LinePlot::render`] lays out title, axes, ticks, grid, curves, spread bands and a legend;
//! - [`tile`] puts finished images in a grid.
//!
//! Pixel `(x, y)` is column `x`, row `y`, from the top-left corner. [`draw_line`] takes
//! real-valued coordinates in the same frame: pixel `(x, y)`'s centre is the point
//! `(x as f64, y as f64)`. Everything is clipped to the image, and no input makes these functions
//! panic.
//!
//! ```
//! use salient::images::plot::{palette, LinePlot, Series};
//!
//! let fractions: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
//! let series = Series {
//!     name: "Gradient".to_string(),
//!     rgb: palette(0),
//!     points: fractions.iter().map(|&x| (x, 1.0 - x * x)).collect(),
//!     band: None,
//!     dashed: false,
//! };
//! let plot = LinePlot {
//!     title: "Deletion curve".to_string(),
//!     x_label: "fraction of pixels removed".to_string(),
//!     y_label: "probability".to_string(),
//!     x_range: (0.0, 1.0),
//!     y_range: (0.0, 1.0),
//!     series: vec![series],
//! };
//! let image = plot.render(640, 400);
//! assert_eq!((image.width, image.height), (640, 400));
//! ```

use super::RgbImage;

/// Width in pixels of one character cell at scale 1: a 5-pixel glyph and 1 pixel of spacing.
pub const GLYPH_WIDTH: usize = 6;
/// Height in pixels of one character cell at scale 1: 7 rows down to the baseline, 2 rows of
/// descender, 1 row of line spacing.
pub const GLYPH_HEIGHT: usize = 10;

/// Rows stored per glyph: 7 down to the baseline, then 2 of descender.
const GLYPH_ROWS: usize = 9;
/// Height of capitals and digits; text is centred on this, not on the descenders.
const CAP_HEIGHT: usize = 7;

/// The font, one entry per character from `' '` (32) to `'~'` (126). Each row is a 5-bit mask,
/// `0b10000` being the leftmost column. Capitals and digits fill rows 0 to 6; lowercase letters
/// start at row 2 unless they have an ascender, and g, j, p, q, y and the comma reach down into
/// rows 7 and 8.
#[rustfmt::skip]
const FONT: [[u8; GLYPH_ROWS]; 95] = [
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // space
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100, 0b00000, 0b00000], // !
    [0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // "
    [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010, 0b00000, 0b00000], // #
    [0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100, 0b00000, 0b00000], // $
    [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011, 0b00000, 0b00000], // %
    [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101, 0b00000, 0b00000], // &
    [0b00100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '
    [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010, 0b00000, 0b00000], // (
    [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000, 0b00000, 0b00000], // )
    [0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000, 0b00000, 0b00000], // *
    [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000, 0b00000, 0b00000], // +
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00100, 0b01000], // ,
    [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // -
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000], // .
    [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000, 0b00000, 0b00000], // /
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110, 0b00000, 0b00000], // 0
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // 1
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000, 0b00000], // 2
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110, 0b00000, 0b00000], // 3
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010, 0b00000, 0b00000], // 4
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110, 0b00000, 0b00000], // 5
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // 6
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00000, 0b00000], // 7
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // 8
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100, 0b00000, 0b00000], // 9
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000, 0b00000], // :
    [0b00000, 0b01100, 0b01100, 0b00000, 0b00000, 0b01100, 0b01100, 0b00100, 0b01000], // ;
    [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00000, 0b00000], // <
    [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000, 0b00000], // =
    [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000, 0b00000, 0b00000], // >
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100, 0b00000, 0b00000], // ?
    [0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110, 0b00000, 0b00000], // @
    [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // A
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110, 0b00000, 0b00000], // B
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000, 0b00000], // C
    [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100, 0b00000, 0b00000], // D
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111, 0b00000, 0b00000], // E
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // F
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111, 0b00000, 0b00000], // G
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // H
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // I
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100, 0b00000, 0b00000], // J
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001, 0b00000, 0b00000], // K
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111, 0b00000, 0b00000], // L
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // M
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b00000, 0b00000], // N
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // O
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // P
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101, 0b00000, 0b00000], // Q
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001, 0b00000, 0b00000], // R
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110, 0b00000, 0b00000], // S
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00000], // T
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // U
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000, 0b00000], // V
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010, 0b00000, 0b00000], // W
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001, 0b00000, 0b00000], // X
    [0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00000], // Y
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111, 0b00000, 0b00000], // Z
    [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110, 0b00000, 0b00000], // [
    [0b00000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0b00000, 0b00000, 0b00000], // backslash
    [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110, 0b00000, 0b00000], // ]
    [0b00100, 0b01010, 0b10001, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // ^
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111, 0b00000], // _
    [0b01000, 0b00100, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // `
    [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111, 0b00000, 0b00000], // a
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110, 0b00000, 0b00000], // b
    [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000, 0b00000], // c
    [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111, 0b00000, 0b00000], // d
    [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110, 0b00000, 0b00000], // e
    [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000, 0b00000, 0b00000], // f
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // g
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // h
    [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // i
    [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100], // j
    [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b00000, 0b00000], // k
    [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000, 0b00000], // l
    [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001, 0b00000, 0b00000], // m
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000, 0b00000], // n
    [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000, 0b00000], // o
    [0b00000, 0b00000, 0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000], // p
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001], // q
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000, 0b00000, 0b00000], // r
    [0b00000, 0b00000, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110, 0b00000, 0b00000], // s
    [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110, 0b00000, 0b00000], // t
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101, 0b00000, 0b00000], // u
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000, 0b00000], // v
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010, 0b00000, 0b00000], // w
    [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b00000, 0b00000], // x
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // y
    [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000, 0b00000], // z
    [0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010, 0b00000, 0b00000], // {
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00000], // |
    [0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000, 0b00000, 0b00000], // }
    [0b00000, 0b00000, 0b01000, 0b10101, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000], // ~
];

/// The glyph drawn for `c`; anything outside printable ASCII draws as `'?'`.
fn glyph(c: char) -> &'static [u8; GLYPH_ROWS] {
    let c = if (' '..='~').contains(&c) { c } else { '?' };
    &FONT[c as usize - ' ' as usize]
}

/// Width in pixels of `text` drawn at `scale` (0 counts as 1): one cell per character, including
/// the spacing column after the last one.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars()
        .count()
        .saturating_mul(GLYPH_WIDTH)
        .saturating_mul(scale.max(1))
}

/// Width of the ink of `text`: [`text_width`] without the trailing spacing column, for centring.
fn ink_width(text: &str, scale: usize) -> usize {
    text_width(text, scale).saturating_sub(scale.max(1))
}

/// Offsets from the text's top-left corner of the `scale` x `scale` blocks that make up the lit
/// pixels of `text`, laid out left to right.
fn text_blocks(text: &str, scale: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let s = scale.max(1);
    text.chars().enumerate().flat_map(move |(i, c)| {
        let left = i.saturating_mul(GLYPH_WIDTH).saturating_mul(s);
        glyph(c).iter().enumerate().flat_map(move |(row, &bits)| {
            (0..5usize)
                .filter(move |col| bits & (0b10000 >> col) != 0)
                .map(move |col| {
                    let dx = left.saturating_add(col.saturating_mul(s));
                    (dx, row.saturating_mul(s))
                })
        })
    })
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale` x `scale` block
/// (0 counts as 1). One line only: `'\n'` and other characters outside printable ASCII draw as
/// `'?'`. Whatever falls outside the image is clipped.
pub fn draw_text(image: &mut RgbImage, x: usize, y: usize, text: &str, rgb: [u8; 3], scale: usize) {
    let s = scale.max(1);
    for (dx, dy) in text_blocks(text, s) {
        fill_rect(image, x.saturating_add(dx), y.saturating_add(dy), s, s, rgb);
    }
}

/// Draws `text` turned a quarter turn anticlockwise, reading upwards, as a y-axis label is. The
/// turned text occupies a box `GLYPH_HEIGHT * scale` wide and `text_width` tall whose top-left
/// corner is `(x, y)`.
fn draw_text_up(image: &mut RgbImage, x: usize, y: usize, text: &str, rgb: [u8; 3], scale: usize) {
    let s = scale.max(1);
    let length = text_width(text, s);
    for (dx, dy) in text_blocks(text, s) {
        // Column `dx` of the flat text becomes row `length - dx - s` of the turned text, counted
        // from its top; `dx + s <= length` for every block.
        let row = length.saturating_sub(dx).saturating_sub(s);
        fill_rect(
            image,
            x.saturating_add(dy),
            y.saturating_add(row),
            s,
            s,
            rgb,
        );
    }
}

/// Paints the `w` x `h` rectangle whose top-left pixel is `(x, y)`, clipped to the image.
pub fn fill_rect(image: &mut RgbImage, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
    let right = x.saturating_add(w).min(image.width);
    let bottom = y.saturating_add(h).min(image.height);
    for py in y..bottom {
        for px in x..right {
            put(image, px, py, rgb);
        }
    }
}

/// Index of pixel `(x, y)`'s red byte, or `None` outside the image (or outside a `pixels` buffer
/// too short for `width` x `height`, since the fields are public).
fn index(image: &RgbImage, x: usize, y: usize) -> Option<usize> {
    if x >= image.width || y >= image.height {
        return None;
    }
    let i = y.checked_mul(image.width)?.checked_add(x)?.checked_mul(3)?;
    (i.checked_add(3)? <= image.pixels.len()).then_some(i)
}

/// Sets one pixel; does nothing outside the image.
fn put(image: &mut RgbImage, x: usize, y: usize, rgb: [u8; 3]) {
    if let Some(i) = index(image, x, y) {
        image.pixels[i..i + 3].copy_from_slice(&rgb);
    }
}

/// Mixes `alpha` of `rgb` into one pixel, for translucent bands; does nothing outside the image.
fn blend(image: &mut RgbImage, x: usize, y: usize, rgb: [u8; 3], alpha: f64) {
    if let Some(i) = index(image, x, y) {
        for (old, new) in image.pixels[i..i + 3].iter_mut().zip(rgb) {
            let mixed = alpha * f64::from(new) + (1.0 - alpha) * f64::from(*old);
            *old = mixed.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// A white image; 0 x 0 if `width * height` pixels could not even be counted.
fn white(width: usize, height: usize) -> RgbImage {
    match width.checked_mul(height).and_then(|n| n.checked_mul(3)) {
        Some(bytes) => RgbImage {
            width,
            height,
            pixels: vec![255; bytes],
        },
        None => RgbImage {
            width: 0,
            height: 0,
            pixels: Vec::new(),
        },
    }
}

/// A box of pixel centres, bounds included, that drawing must stay inside.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Clip {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Clip {
    /// The whole image, or `None` for an image without pixels.
    fn of(image: &RgbImage) -> Option<Clip> {
        (image.width > 0 && image.height > 0).then(|| Clip {
            left: 0.0,
            top: 0.0,
            right: (image.width - 1) as f64,
            bottom: (image.height - 1) as f64,
        })
    }

    fn grown(self, by: f64) -> Clip {
        Clip {
            left: self.left - by,
            top: self.top - by,
            right: self.right + by,
            bottom: self.bottom + by,
        }
    }
}

type Point = (f64, f64);

/// The part of segment `a`-`b` inside `clip` (Liang-Barsky: intersect the segment's parameter
/// interval `[0, 1]` with the four half-planes), or `None` if nothing is inside.
fn clip_segment(a: Point, b: Point, clip: Clip) -> Option<(Point, Point)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    // Each pair (p, q) says "p * t <= q" for the points kept.
    let sides = [
        (-dx, a.0 - clip.left),
        (dx, clip.right - a.0),
        (-dy, a.1 - clip.top),
        (dy, clip.bottom - a.1),
    ];
    for (p, q) in sides {
        if p == 0.0 {
            if q < 0.0 {
                return None; // parallel to this side and outside it
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
    }
    // `max` and `min` skip a NaN quotient, so t0 and t1 stay numbers; huge coordinates can still
    // overflow, which the finiteness check below catches.
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    let (a, b) = (at(t0), at(t1));
    [a.0, a.1, b.0, b.1]
        .iter()
        .all(|v| v.is_finite())
        .then_some((a, b))
}

/// Squared distance from `p` to the segment `a`-`b` (to `a` if the segment is a point).
fn distance2(p: Point, a: Point, b: Point) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length2 = dx * dx + dy * dy;
    let t = if length2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / length2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    ex * ex + ey * ey
}

/// Paints every pixel of `clip` whose centre lies within `thickness / 2` of the segment `a`-`b`.
/// Measuring distance rather than stepping along the line gives any thickness, round ends and
/// gap-free joins between the segments of a polyline.
fn stroke(image: &mut RgbImage, a: Point, b: Point, rgb: [u8; 3], thickness: usize, clip: Clip) {
    if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return;
    }
    let radius = thickness.max(1) as f64 / 2.0;
    // Cut the segment down first, so that far-away ends cost no time and lose no precision.
    let Some((a, b)) = clip_segment(a, b, clip.grown(radius)) else {
        return;
    };
    let left = (a.0.min(b.0) - radius).floor().max(clip.left);
    let right = (a.0.max(b.0) + radius).ceil().min(clip.right);
    let top = (a.1.min(b.1) - radius).floor().max(clip.top);
    let bottom = (a.1.max(b.1) + radius).ceil().min(clip.bottom);
    if !(left <= right && top <= bottom) {
        return;
    }
    // A little slack so that a pixel exactly `radius` away is not lost to rounding.
    let reach = radius * radius + 1e-9;
    for y in top as usize..=bottom as usize {
        for x in left as usize..=right as usize {
            if distance2((x as f64, y as f64), a, b) <= reach {
                put(image, x, y, rgb);
            }
        }
    }
}

/// Draws a straight line `thickness` pixels wide (0 counts as 1) between two points given in
/// pixel coordinates (pixel `(x, y)`'s centre is `(x, y)`), with round ends. Clipped to the image;
/// a line with a NaN or infinite coordinate is skipped.
pub fn draw_line(
    image: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    rgb: [u8; 3],
    thickness: usize,
) {
    if let Some(clip) = Clip::of(image) {
        stroke(image, (x0, y0), (x1, y1), rgb, thickness, clip);
    }
}

/// Draws a polyline through `points` (pixel coordinates) inside `clip`. A non-finite point
/// breaks the line, and a point with no neighbour on either side is drawn as a dot, so that it
/// is not lost. A dashed line's pattern runs on across vertices, so short segments still show
/// dashes.
fn polyline(
    image: &mut RgbImage,
    points: &[Point],
    rgb: [u8; 3],
    thickness: usize,
    dashed: bool,
    clip: Clip,
) {
    let finite = |p: &Point| p.0.is_finite() && p.1.is_finite();
    let t = thickness.max(1) as f64;
    // Dashes show about 4 thicknesses long with gaps of about 3: round ends add half a
    // thickness at each end, so the centre line is drawn for 3 of every 7.
    let (on, period) = (3.0 * t, 7.0 * t);
    let mut phase = 0.0; // distance into the current dash period
    for (i, &b) in points.iter().enumerate() {
        if !finite(&b) {
            phase = 0.0;
            continue;
        }
        let previous = i
            .checked_sub(1)
            .and_then(|j| points.get(j))
            .filter(|p| finite(p));
        let Some(&a) = previous else {
            if !points.get(i + 1).is_some_and(finite) {
                stroke(image, b, b, rgb, thickness + 1, clip);
            }
            continue;
        };
        if !dashed {
            stroke(image, a, b, rgb, thickness, clip);
            continue;
        }
        let Some((a, b)) = clip_segment(a, b, clip) else {
            continue;
        };
        let length = (b.0 - a.0).hypot(b.1 - a.1);
        let at = |d: f64| {
            (
                a.0 + (b.0 - a.0) * d / length,
                a.1 + (b.1 - a.1) * d / length,
            )
        };
        let mut done = 0.0;
        while done < length {
            let drawing = phase < on;
            let step = (if drawing { on } else { period } - phase).min(length - done);
            if step.is_nan() || step <= 0.0 {
                break; // only rounding can get here; never loop forever
            }
            if drawing {
                stroke(image, at(done), at(done + step), rgb, thickness, clip);
            }
            done += step;
            phase += step;
            if phase >= period {
                phase -= period;
            }
        }
    }
}

/// One curve of a [`LinePlot`], e.g. one saliency method's deletion curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// Colour of the line, its band and its legend entry.
    pub rgb: [u8; 3],
    /// `(x, y)` in data units, joined in the order given. A NaN point breaks the line.
    pub points: Vec<(f64, f64)>,
    /// `(x, low, high)`: a spread (say, the 10th to 90th percentile over images) drawn as a
    /// translucent band under the line. Sorted by `x` when drawn; non-finite entries are dropped.
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Draws the line dashed, so that two methods with similar colours stay apart.
    pub dashed: bool,
}

/// A line plot with axes, ticks, grid, title and a legend to the right of the plot area.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Centred above the plot area; empty for none.
    pub title: String,
    /// Centred under the x-axis; empty for none.
    pub x_label: String,
    /// Written upwards left of the y-axis; empty for none.
    pub y_label: String,
    /// Data range shown along x. Reversed ends are swapped, equal ends widened, non-finite ends
    /// replaced, so any value gives a drawable plot.
    pub x_range: (f64, f64),
    /// Data range shown along y, treated as `x_range` is.
    pub y_range: (f64, f64),
    /// Drawn in order, so the last series is on top.
    pub series: Vec<Series>,
}

/// Line thickness of a series at text scale 1.
const SERIES_THICKNESS: usize = 2;
/// How much of a series' colour its band mixes into what lies under it.
const BAND_ALPHA: f64 = 0.2;
const TEXT_RGB: [u8; 3] = [0, 0, 0];
const AXIS_RGB: [u8; 3] = [60, 60, 60];
const GRID_RGB: [u8; 3] = [225, 225, 225];

/// Where [`LinePlot::render`] puts things: the plot area's corner pixels and the data ranges
/// they stand for.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
    x_range: (f64, f64),
    y_range: (f64, f64),
}

impl Layout {
    /// The pixel coordinates of the data point `(x, y)`; the range ends fall on the frame.
    fn to_pixel(self, (x, y): Point) -> Point {
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let px = self.left as f64 + (x - x0) / (x1 - x0) * (self.right - self.left) as f64;
        let py = self.bottom as f64 - (y - y0) / (y1 - y0) * (self.bottom - self.top) as f64;
        (px, py)
    }

    /// The data x shown at pixel column `column`.
    fn data_x(&self, column: usize) -> f64 {
        let (x0, x1) = self.x_range;
        let along = (column as f64 - self.left as f64) / (self.right - self.left) as f64;
        x0 + along * (x1 - x0)
    }

    fn clip(&self) -> Clip {
        Clip {
            left: self.left as f64,
            top: self.top as f64,
            right: self.right as f64,
            bottom: self.bottom as f64,
        }
    }
}

/// A range that can be drawn: ends in order, finite, apart, and with a finite span.
fn usable_range((a, b): (f64, f64)) -> (f64, f64) {
    const LIMIT: f64 = f64::MAX / 4.0; // keeps `hi - lo` finite
    let (lo, hi) = match (a.is_finite(), b.is_finite()) {
        (true, true) => (a.min(b), a.max(b)),
        (true, false) => (a, a),
        (false, true) => (b, b),
        (false, false) => (0.0, 1.0),
    };
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    if hi > lo {
        return (lo, hi);
    }
    // Equal ends: widen by 5% of the value, and by at least 1e-9 so zero gets a range too.
    let pad = (lo.abs() * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// Tick values for `range`, with the step between them: about six ticks at multiples of 1, 2,
/// 2.5 or 5 times a power of ten, so that labels read 0, 0.2, 0.4, ... rather than 0.17, 0.34.
fn nice_ticks((lo, hi): (f64, f64)) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    // Guards against an overflowed or underflowed step: fall back to the two ends.
    if !(step > 0.0 && step.is_finite() && first <= last && last - first <= 20.0) {
        return (vec![lo, hi], hi - lo);
    }
    let ticks = (0..=(last - first) as usize)
        .map(|i| (first + i as f64) * step)
        .map(|v| if v.abs() < step * 1e-9 { 0.0 } else { v }) // no "-0.0"
        .collect();
    (ticks, step)
}

/// A tick label with as many decimals as the step needs: "0.2" for steps of 0.2, "0.25" for
/// 0.25, and scientific notation for very large or very small steps.
fn tick_label(value: f64, step: f64) -> String {
    if !(1e-5..1e6).contains(&step) {
        return format!("{value:.1e}");
    }
    let decimals = (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize;
    format!("{value:.decimals$}")
}

/// Text scale for an image: 1 up to 799 pixels on the shorter side, 2 from 800, and so on, so
/// that labels stay readable on large figures.
fn text_scale(width: usize, height: usize) -> usize {
    (width.min(height) / 400).clamp(1, 8)
}

/// `text` cut to at most `max_width` pixels at `scale`, ending in ".." if it was cut.
fn fit_text(text: &str, max_width: usize, scale: usize) -> String {
    if text_width(text, scale) <= max_width {
        return text.to_string();
    }
    let cell = GLYPH_WIDTH * scale.max(1);
    let keep = (max_width / cell).saturating_sub(2);
    text.chars().take(keep).chain("..".chars()).collect()
}

/// `text`, cut to fit in `length` pixels, and where to start it so that it is centred on
/// `centre` without running past either end.
fn centred(text: &str, centre: usize, length: usize, scale: usize) -> (String, usize) {
    let text = fit_text(text, length, scale);
    let ink = ink_width(&text, scale);
    let start = centre
        .saturating_sub(ink / 2)
        .min(length.saturating_sub(ink));
    (text, start)
}

/// Draws every `k`-th tick label, with `k` the smallest stride at which labels `size` pixels
/// long, `spacing` pixels apart, keep at least `gap` pixels between them.
fn label_stride(size: usize, spacing: f64, gap: usize) -> usize {
    if spacing <= 0.0 || !spacing.is_finite() {
        return 1;
    }
    (((size + gap) as f64 / spacing).ceil() as usize).max(1)
}

impl LinePlot {
    /// Draws the plot on a white `width` x `height` image: title at the top, a framed plot area
    /// with light grid lines at the ticks, numeric tick labels, axis labels, each series' band
    /// and then its line, and a legend (a swatch in the series' style, then its name) right of
    /// the plot area. Text grows with the image (see [`GLYPH_WIDTH`]). Lines leaving the ranges
    /// are cut at the frame. An image too small for a plot area keeps just what fits.
    pub fn render(&self, width: usize, height: usize) -> RgbImage {
        let mut image = white(width, height);
        let s = text_scale(width, height);
        if let Some(layout) = self.layout(image.width, image.height, s) {
            self.draw_axes(&mut image, &layout, s);
            for series in &self.series {
                if let Some(band) = &series.band {
                    draw_band(&mut image, &layout, band, series.rgb);
                }
            }
            // The frame goes over the bands and under the lines.
            let (l, t, r, b) = (layout.left, layout.top, layout.right, layout.bottom);
            fill_rect(&mut image, l, t, r - l + 1, 1, AXIS_RGB);
            fill_rect(&mut image, l, b, r - l + 1, 1, AXIS_RGB);
            fill_rect(&mut image, l, t, 1, b - t + 1, AXIS_RGB);
            fill_rect(&mut image, r, t, 1, b - t + 1, AXIS_RGB);
            for series in &self.series {
                let points: Vec<Point> =
                    series.points.iter().map(|&p| layout.to_pixel(p)).collect();
                let thickness = SERIES_THICKNESS * s;
                polyline(
                    &mut image,
                    &points,
                    series.rgb,
                    thickness,
                    series.dashed,
                    layout.clip(),
                );
            }
            self.draw_labels(&mut image, &layout, s);
            self.draw_legend(&mut image, &layout, s);
        } else {
            let (title, x) = centred(&self.title, image.width / 2, image.width, s);
            draw_text(&mut image, x, 0, &title, TEXT_RGB, s);
        }
        image
    }

    /// Width the legend needs: swatch, gap, longest name; 0 without series.
    fn legend_width(&self, s: usize) -> usize {
        let longest = self
            .series
            .iter()
            .map(|series| text_width(&series.name, s))
            .max();
        longest.map_or(0, |w| (4 + 1) * GLYPH_WIDTH * s + w)
    }

    /// Margins from the text they must hold; `None` if no plot area of at least 2 x 2 pixels
    /// is left.
    fn layout(&self, width: usize, height: usize, s: usize) -> Option<Layout> {
        let x_range = usable_range(self.x_range);
        let y_range = usable_range(self.y_range);
        let (x_ticks, x_step) = nice_ticks(x_range);
        let (y_ticks, y_step) = nice_ticks(y_range);
        let (pad, tick, line) = (6 * s, 4 * s, GLYPH_HEIGHT * s);
        let widest = |ticks: &[f64], step| {
            let widths = ticks.iter().map(|&v| ink_width(&tick_label(v, step), s));
            widths.max().unwrap_or(0)
        };
        let has = |text: &str| usize::from(!text.is_empty());

        let top = pad + has(&self.title) * (line + pad);
        let left =
            pad + has(&self.y_label) * (line + pad) + widest(&y_ticks, y_step) + 2 * s + tick;
        let legend = self.legend_width(s).min(width * 2 / 5);
        let last_x_label = x_ticks
            .last()
            .map_or(0, |&v| ink_width(&tick_label(v, x_step), s));
        let right_margin =
            (pad + last_x_label / 2).max(if legend > 0 { legend + 4 * pad } else { 0 });
        let bottom_margin = tick + 3 * s + line + has(&self.x_label) * (line + pad) + pad;

        let right = width.checked_sub(1 + right_margin)?;
        let bottom = height.checked_sub(1 + bottom_margin)?;
        (right >= left + 2 && bottom >= top + 2).then_some(Layout {
            left,
            top,
            right,
            bottom,
            x_range,
            y_range,
        })
    }

    /// Grid lines, tick marks and tick labels of both axes.
    fn draw_axes(&self, image: &mut RgbImage, layout: &Layout, s: usize) {
        let (tick, gap) = (4 * s, 2 * s);
        let (l, t, r, b) = (layout.left, layout.top, layout.right, layout.bottom);

        let (x_ticks, x_step) = nice_ticks(layout.x_range);
        let labels: Vec<String> = x_ticks.iter().map(|&v| tick_label(v, x_step)).collect();
        let widest = labels
            .iter()
            .map(|label| ink_width(label, s))
            .max()
            .unwrap_or(0);
        let spacing = (r - l) as f64 * x_step / (layout.x_range.1 - layout.x_range.0);
        let stride = label_stride(widest, spacing, 3 * GLYPH_WIDTH * s / 2);
        for (i, (&value, label)) in x_ticks.iter().zip(&labels).enumerate() {
            let column = layout.to_pixel((value, layout.y_range.0)).0.round();
            if !(column >= l as f64 && column <= r as f64) {
                continue;
            }
            let column = column as usize;
            fill_rect(image, column, t, 1, b - t, GRID_RGB);
            fill_rect(image, column, b, 1, tick + 1, AXIS_RGB);
            if i % stride == 0 {
                let x = column.saturating_sub(ink_width(label, s) / 2);
                draw_text(image, x, b + tick + gap, label, TEXT_RGB, s);
            }
        }

        let (y_ticks, y_step) = nice_ticks(layout.y_range);
        let spacing = (b - t) as f64 * y_step / (layout.y_range.1 - layout.y_range.0);
        let stride = label_stride(CAP_HEIGHT * s, spacing, GLYPH_HEIGHT * s / 2);
        for (i, &value) in y_ticks.iter().enumerate() {
            let row = layout.to_pixel((layout.x_range.0, value)).1.round();
            if !(row >= t as f64 && row <= b as f64) {
                continue;
            }
            let row = row as usize;
            fill_rect(image, l + 1, row, r - l, 1, GRID_RGB);
            fill_rect(image, l - tick, row, tick + 1, 1, AXIS_RGB);
            if i % stride == 0 {
                let label = tick_label(value, y_step);
                let x = (l - tick - gap).saturating_sub(text_width(&label, s));
                let y = row.saturating_sub(CAP_HEIGHT * s / 2);
                draw_text(image, x, y, &label, TEXT_RGB, s);
            }
        }
    }

    /// Title above the plot area, x label under the tick labels, y label upwards at the left.
    fn draw_labels(&self, image: &mut RgbImage, layout: &Layout, s: usize) {
        let (pad, line) = (6 * s, GLYPH_HEIGHT * s);
        let centre_x = (layout.left + layout.right) / 2;
        let centre_y = (layout.top + layout.bottom) / 2;

        let (title, x) = centred(&self.title, centre_x, image.width, s);
        draw_text(image, x, pad, &title, TEXT_RGB, s);

        let (x_label, x) = centred(&self.x_label, centre_x, image.width, s);
        let y = layout.bottom + 4 * s + 3 * s + line + pad / 2;
        draw_text(image, x, y, &x_label, TEXT_RGB, s);

        let (y_label, y) = centred(&self.y_label, centre_y, image.height, s);
        draw_text_up(image, pad, y, &y_label, TEXT_RGB, s);
    }

    /// One row per series, top-aligned with the plot area: a swatch drawn like the series (band
    /// colour behind a short line, dashed if the series is), then the name, cut to fit.
    fn draw_legend(&self, image: &mut RgbImage, layout: &Layout, s: usize) {
        let (pad, line) = (6 * s, GLYPH_HEIGHT * s);
        let swatch = 4 * GLYPH_WIDTH * s;
        let x = layout.right + 2 * pad;
        let room = image
            .width
            .saturating_sub(x + swatch + GLYPH_WIDTH * s + 2 * pad);
        let clip = match Clip::of(image) {
            Some(clip) => clip,
            None => return,
        };
        for (i, series) in self.series.iter().enumerate() {
            let y = layout.top + i * (line + 2 * s);
            let middle = (y + CAP_HEIGHT * s / 2) as f64;
            if series.band.is_some() {
                for py in y.saturating_sub(s)..y + (CAP_HEIGHT + 1) * s {
                    for px in x..x + swatch {
                        blend(image, px, py, series.rgb, BAND_ALPHA);
                    }
                }
            }
            let ends = [(x as f64, middle), ((x + swatch - 1) as f64, middle)];
            polyline(
                image,
                &ends,
                series.rgb,
                SERIES_THICKNESS * s,
                series.dashed,
                clip,
            );
            let name = fit_text(&series.name, room, s);
            draw_text(image, x + swatch + GLYPH_WIDTH * s, y, &name, TEXT_RGB, s);
        }
    }
}

/// Fills, column by column, between the band's low and high curves (interpolated linearly at
/// each column's x), mixing in [`BAND_ALPHA`] of `rgb` so that grid and other bands show through.
fn draw_band(image: &mut RgbImage, layout: &Layout, band: &[(f64, f64, f64)], rgb: [u8; 3]) {
    let mut band: Vec<(f64, f64, f64)> = band
        .iter()
        .copied()
        .filter(|&(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
        .collect();
    band.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(first), Some(last)) = (band.first(), band.last()) else {
        return;
    };
    if band.len() < 2 {
        return;
    }
    let (x_first, x_last) = (first.0, last.0);
    for column in layout.left..=layout.right {
        let x = layout.data_x(column);
        if !(x_first..=x_last).contains(&x) {
            continue;
        }
        // The band segment [i - 1, i] holding x.
        let i = band.partition_point(|p| p.0 <= x).clamp(1, band.len() - 1);
        let (a, b) = (band[i - 1], band[i]);
        let t = if b.0 > a.0 {
            (x - a.0) / (b.0 - a.0)
        } else {
            0.0
        };
        let low = layout.to_pixel((x, a.1 + t * (b.1 - a.1))).1;
        let high = layout.to_pixel((x, a.2 + t * (b.2 - a.2))).1;
        let top = low.min(high).round().max(layout.top as f64);
        let bottom = low.max(high).round().min(layout.bottom as f64);
        if top <= bottom {
            for row in top as usize..=bottom as usize {
                blend(image, column, row, rgb, BAND_ALPHA);
            }
        }
    }
}

/// Lays out `images` in rows of `columns` (0 counts as 1), left to right then top to bottom, with
/// `gap` white pixels between neighbours and none around the edge. Each column is as wide as its
/// widest image and each row as tall as its tallest; an image sits at its cell's top-left corner.
/// No images give a 0 x 0 image.
pub fn tile(images: &[RgbImage], columns: usize, gap: usize) -> RgbImage {
    if images.is_empty() {
        return white(0, 0);
    }
    let columns = columns.clamp(1, images.len());
    let rows = images.len().div_ceil(columns);
    let mut widths = vec![0usize; columns];
    let mut heights = vec![0usize; rows];
    for (i, image) in images.iter().enumerate() {
        widths[i % columns] = widths[i % columns].max(image.width);
        heights[i / columns] = heights[i / columns].max(image.height);
    }
    let total = |sizes: &[usize]| {
        let gaps = gap.saturating_mul(sizes.len() - 1);
        sizes
            .iter()
            .fold(gaps, |sum, &size| sum.saturating_add(size))
    };
    let mut out = white(total(&widths), total(&heights));
    let mut y = 0usize;
    for (row, &height) in heights.iter().enumerate() {
        let mut x = 0usize;
        for (column, &width) in widths.iter().enumerate() {
            if let Some(image) = images.get(row * columns + column) {
                paste(&mut out, image, x, y);
            }
            x = x.saturating_add(width).saturating_add(gap);
        }
        y = y.saturating_add(height).saturating_add(gap);
    }
    out
}

/// Copies `image` into `out` with its top-left corner at `(x, y)`, clipped to `out`.
pub fn paste(out: &mut RgbImage, image: &RgbImage, x: usize, y: usize) {
    let visible = image.width.min(out.width.saturating_sub(x));
    for row in 0..image.height {
        let (Some(from), Some(to)) = (index(image, 0, row), index(out, x, y.saturating_add(row)))
        else {
            break;
        };
        let bytes = 3 * visible;
        if let (Some(source), Some(target)) = (
            image.pixels.get(from..from + bytes),
            out.pixels.get_mut(to..to + bytes),
        ) {
            target.copy_from_slice(source);
        }
    }
}

/// Fourteen categorical colours, one per saliency method: matplotlib's tab10, then four darker
/// tones from tab20b that stay apart from them. Cycle through with [`palette`].
pub const PALETTE: [[u8; 3]; 14] = [
    [31, 119, 180],  // blue
    [255, 127, 14],  // orange
    [44, 160, 44],   // green
    [214, 39, 40],   // red
    [148, 103, 189], // purple
    [140, 86, 75],   // brown
    [227, 119, 194], // pink
    [127, 127, 127], // grey
    [188, 189, 34],  // olive
    [23, 190, 207],  // cyan
    [57, 59, 121],   // indigo
    [99, 121, 57],   // moss
    [231, 186, 82],  // gold
    [123, 65, 115],  // plum
];

/// The `i`-th palette colour, starting over after the last.
pub fn palette(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [255, 0, 0];
    const WHITE: [u8; 3] = [255, 255, 255];

    /// Coordinates of the pixels of `image` that have colour `rgb`.
    fn pixels_of(image: &RgbImage, rgb: [u8; 3]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for y in 0..image.height {
            for x in 0..image.width {
                if image.pixel(x, y) == rgb {
                    found.push((x, y));
                }
            }
        }
        found
    }

    fn series(name: &str, rgb: [u8; 3], points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            rgb,
            points,
            band: None,
            dashed: false,
        }
    }

    fn plot(series: Vec<Series>) -> LinePlot {
        LinePlot {
            title: "Deletion".to_string(),
            x_label: "fraction removed".to_string(),
            y_label: "probability".to_string(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series,
        }
    }

    #[test]
    fn text_width_counts_cells() {
        assert_eq!(text_width("", 1), 0);
        assert_eq!(text_width("abc", 1), 3 * GLYPH_WIDTH);
        assert_eq!(text_width("abc", 2), 6 * GLYPH_WIDTH);
        assert_eq!(text_width("abc", 0), text_width("abc", 1));
        assert_eq!(text_width("é", 1), GLYPH_WIDTH); // one character, one cell
        assert_eq!(text_width("x", usize::MAX), usize::MAX); // saturates
    }

    #[test]
    fn font_covers_printable_ascii_with_distinct_glyphs() {
        for c in '!'..='~' {
            assert!(glyph(c).iter().any(|&row| row != 0), "{c:?} has no ink");
            assert!(
                glyph(c).iter().all(|&row| row < 0b100000),
                "{c:?} is over 5 wide"
            );
        }
        assert!(glyph(' ').iter().all(|&row| row == 0));
        // Upper and lower case differ, and lowercase without ascenders starts at row 2.
        for (upper, lower) in ('A'..='Z').zip('a'..='z') {
            assert_ne!(glyph(upper), glyph(lower), "{upper} and {lower}");
        }
        for c in "acegmnopqrsuvwxyz".chars() {
            assert_eq!(glyph(c)[..2], [0, 0], "{c:?} reaches above the x-height");
        }
        for c in "gjpqy".chars() {
            assert_ne!(glyph(c)[7..], [0, 0], "{c:?} has no descender");
        }
        assert_eq!(glyph('é'), glyph('?'));
        assert_eq!(glyph('\n'), glyph('?'));
    }

    #[test]
    fn draw_text_stays_in_its_cell() {
        let mut image = white(20, 20);
        draw_text(&mut image, 3, 4, "A", RED, 1);
        let lit = pixels_of(&image, RED);
        // 'A' is .###. / #...# / #...# / ##### / #...# x 3: 3 + 2 + 2 + 5 + 2 * 3 = 18 pixels.
        assert_eq!(lit.len(), 18);
        assert!(lit
            .iter()
            .all(|&(x, y)| (3..8).contains(&x) && (4..11).contains(&y)));
        assert_eq!(image.pixel(3, 4), WHITE);
        assert_eq!(image.pixel(4, 4), RED);
        assert_eq!(image.pixel(3, 7), RED); // the crossbar
        assert_eq!(image.pixel(7, 7), RED);

        // At scale 2 every font pixel is a 2 x 2 block.
        let mut big = white(20, 20);
        draw_text(&mut big, 0, 0, "A", RED, 2);
        assert_eq!(pixels_of(&big, RED).len(), 4 * 18);
        assert_eq!(big.pixel(2, 0), RED);
        assert_eq!(big.pixel(3, 1), RED);
        assert_eq!(big.pixel(1, 1), WHITE);
    }

    #[test]
    fn turned_text_reads_upwards() {
        // "A" turned anticlockwise: its top row (.###.) becomes the left column, and its first
        // column becomes the bottom row of the box, which is text_width = 6 tall.
        let mut image = white(20, 20);
        draw_text_up(&mut image, 2, 3, "A", RED, 1);
        let lit = pixels_of(&image, RED);
        assert_eq!(lit.len(), 18);
        assert!(lit
            .iter()
            .all(|&(x, y)| (2..9).contains(&x) && (3..9).contains(&y)));
        // Top row of 'A' at flat columns 1..=3 -> column 2, rows 3 + 6 - 1 - (1..=3).
        assert_eq!(image.pixel(2, 7), RED);
        assert_eq!(image.pixel(2, 5), RED);
        assert_eq!(image.pixel(2, 8), WHITE);
        assert_eq!(image.pixel(2, 4), WHITE);
    }

    #[test]
    fn horizontal_line_sets_one_row() {
        let mut image = white(20, 10);
        draw_line(&mut image, (2.0, 5.0), (10.0, 5.0), RED, 1);
        let expected: Vec<(usize, usize)> = (2..=10).map(|x| (x, 5)).collect();
        assert_eq!(pixels_of(&image, RED), expected);

        let mut thick = white(20, 10);
        draw_line(&mut thick, (2.0, 5.0), (10.0, 5.0), RED, 3);
        for x in 2..=10 {
            for y in 4..=6 {
                assert_eq!(thick.pixel(x, y), RED, "({x}, {y})");
            }
            assert_eq!(thick.pixel(x, 3), WHITE);
            assert_eq!(thick.pixel(x, 7), WHITE);
        }
    }

    #[test]
    fn diagonal_line_has_no_gaps() {
        let mut image = white(30, 30);
        draw_line(&mut image, (1.0, 2.0), (28.0, 11.0), RED, 1);
        for x in 1..=28 {
            assert!(
                (0..30).any(|y| image.pixel(x, y) == RED),
                "column {x} is empty"
            );
        }
    }

    #[test]
    fn drawing_is_clipped_and_never_panics() {
        let mut image = white(10, 10);
        draw_line(&mut image, (-100.0, 3.0), (1e300, 3.0), RED, 1);
        assert_eq!(
            pixels_of(&image, RED),
            (0..10).map(|x| (x, 3)).collect::<Vec<_>>()
        );

        let before = image.clone();
        draw_line(&mut image, (f64::NAN, 0.0), (5.0, 5.0), RED, 1);
        draw_line(&mut image, (0.0, 0.0), (f64::INFINITY, 5.0), RED, 1);
        draw_line(&mut image, (-f64::MAX, -5.0), (f64::MAX, -5.0), RED, 3);
        draw_line(&mut image, (20.0, 20.0), (40.0, 40.0), RED, 5);
        assert_eq!(image, before);
        // A line wider than the image covers it, without visiting pixels outside.
        let mut covered = white(10, 10);
        draw_line(
            &mut covered,
            (20.0, 20.0),
            (40.0, 40.0),
            RED,
            usize::MAX / 2,
        );
        assert_eq!(pixels_of(&covered, RED).len(), 100);

        draw_text(
            &mut image,
            usize::MAX,
            usize::MAX,
            "far away",
            RED,
            usize::MAX,
        );
        draw_text(&mut image, 8, 8, "clipped", RED, 3);
        fill_rect(&mut image, 5, 5, usize::MAX, usize::MAX, RED);
        assert_eq!(image.pixel(9, 9), RED);
        assert_eq!(image.pixel(4, 4), WHITE);

        let mut empty = white(0, 0);
        draw_line(&mut empty, (0.0, 0.0), (1.0, 1.0), RED, 2);
        draw_text(&mut empty, 0, 0, "x", RED, 1);
        fill_rect(&mut empty, 0, 0, 5, 5, RED);
        // A buffer too short for its stated size is left alone rather than overrun.
        let mut short = RgbImage {
            width: 4,
            height: 4,
            pixels: vec![0; 6],
        };
        fill_rect(&mut short, 0, 0, 4, 4, RED);
        assert_eq!(short.pixels, [255, 0, 0, 255, 0, 0]);
    }

    #[test]
    fn ranges_and_ticks() {
        assert_eq!(usable_range((1.0, 0.0)), (0.0, 1.0));
        assert_eq!(usable_range((f64::NAN, f64::INFINITY)), (0.0, 1.0));
        let (lo, hi) = usable_range((2.0, 2.0));
        assert!(lo < 2.0 && hi > 2.0);
        let (lo, hi) = usable_range((0.0, 0.0));
        assert!(lo < 0.0 && hi > 0.0);

        let (ticks, step) = nice_ticks((0.0, 1.0));
        let labels: Vec<String> = ticks.iter().map(|&v| tick_label(v, step)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let (ticks, step) = nice_ticks((-50.0, 100.0));
        let labels: Vec<String> = ticks.iter().map(|&v| tick_label(v, step)).collect();
        assert_eq!(labels, ["-50", "-25", "0", "25", "50", "75", "100"]);
        let (ticks, step) = nice_ticks((0.0, 0.5));
        assert_eq!(step, 0.1);
        assert_eq!(ticks.len(), 6);
        assert_eq!(tick_label(0.25, 0.25), "0.25");
        assert_eq!(tick_label(3e7, 1e7), "3.0e7");
    }

    #[test]
    fn render_puts_series_where_the_data_maps() {
        let colour = PALETTE[0];
        let plot = plot(vec![series(
            "Gradient",
            colour,
            vec![(0.0, 0.1), (0.3, 0.5), (0.5, 0.5), (1.0, 0.9)],
        )]);
        let image = plot.render(480, 320);
        assert_eq!((image.width, image.height), (480, 320));
        assert_eq!(image.pixel(0, 0), WHITE);

        let layout = plot.layout(480, 320, 1).unwrap();
        let (x, y) = layout.to_pixel((0.4, 0.5)); // on the flat part, away from any vertex
        assert_eq!(image.pixel(x.round() as usize, y.round() as usize), colour);
        // The frame is drawn, and the legend, right of the plot area, shows the colour.
        assert_eq!(image.pixel(layout.left, layout.top), AXIS_RGB);
        let legend = pixels_of(&image, colour)
            .into_iter()
            .filter(|&(x, _)| x > layout.right);
        assert!(legend.count() > 10);
        // Tick labels are drawn: there is black text under the x-axis.
        let below = (layout.bottom + 1..image.height)
            .any(|y| (layout.left..=layout.right).any(|x| image.pixel(x, y) == TEXT_RGB));
        assert!(below);
    }

    #[test]
    fn nan_breaks_the_line_and_outside_points_are_clipped() {
        let colour = PALETTE[3];
        let points = vec![
            (0.0, 0.5),
            (0.2, 0.5),
            (f64::NAN, f64::NAN),
            (0.8, 0.5),
            (1.0, 3.0),
        ];
        let plot = plot(vec![series("Occlusion", colour, points)]);
        let image = plot.render(400, 300);
        let layout = plot.layout(400, 300, 1).unwrap();
        let at = |x: f64, y: f64| {
            let (px, py) = layout.to_pixel((x, y));
            image.pixel(px.round() as usize, py.round() as usize)
        };
        assert_eq!(at(0.1, 0.5), colour);
        assert_ne!(at(0.5, 0.5), colour); // the gap
                                          // (0.8, 0.5) -> (1.0, 3.0) leaves through the top of the frame: nothing above it.
        for y in 0..layout.top {
            for x in layout.left..=layout.right {
                assert_ne!(image.pixel(x, y), colour, "({x}, {y})");
            }
        }
        assert!((layout.left..=layout.right).any(|x| image.pixel(x, layout.top + 1) == colour));
    }

    #[test]
    fn band_is_translucent_under_the_line() {
        let colour = [0, 0, 255];
        let mut with_band = series("SmoothGrad", colour, vec![(0.0, 0.5), (1.0, 0.5)]);
        with_band.band = Some(vec![(0.0, 0.3, 0.7), (f64::NAN, 0.0, 0.0), (1.0, 0.3, 0.7)]);
        let plot = plot(vec![with_band]);
        let image = plot.render(400, 300);
        let layout = plot.layout(400, 300, 1).unwrap();
        // Between grid lines: 20% blue over white turns red and green to 204, blue stays 255.
        let (x, y) = layout.to_pixel((0.33, 0.55));
        let inside = image.pixel(x.round() as usize, y.round() as usize);
        assert_eq!(inside, [204, 204, 255]);
        let (x, y) = layout.to_pixel((0.33, 0.85));
        assert_eq!(image.pixel(x.round() as usize, y.round() as usize), WHITE);
    }

    #[test]
    fn dashed_line_has_gaps() {
        let colour = PALETTE[1];
        let mut dashed = series("Grad-CAM", colour, vec![(0.0, 0.5), (1.0, 0.5)]);
        dashed.dashed = true;
        let plot = plot(vec![dashed]);
        let image = plot.render(400, 300);
        let layout = plot.layout(400, 300, 1).unwrap();
        let row = layout.to_pixel((0.0, 0.5)).1.round() as usize;
        let on = (layout.left..=layout.right)
            .filter(|&x| image.pixel(x, row) == colour)
            .count();
        let span = layout.right - layout.left + 1;
        assert!(on > span / 3 && on < span * 3 / 4, "{on} of {span}");
    }

    #[test]
    fn render_survives_degenerate_input() {
        let mut odd = plot(vec![
            series("empty", PALETTE[0], vec![]),
            series("one point", PALETTE[1], vec![(0.5, 0.5)]),
            series(
                "nan",
                PALETTE[2],
                vec![(f64::NAN, 1.0), (f64::INFINITY, 0.0)],
            ),
        ]);
        odd.x_range = (3.0, 3.0);
        odd.y_range = (f64::NAN, -f64::INFINITY);
        odd.series[2].band = Some(vec![(0.0, 1.0, 0.0)]);
        for (w, h) in [(0, 0), (1, 1), (30, 20), (0, 100), (100, 0), (2000, 1000)] {
            let image = odd.render(w, h);
            assert_eq!((image.width, image.height), (w, h));
            assert_eq!(image.pixels.len(), 3 * w * h);
        }
        // A lone point is drawn as a dot.
        let single = plot(vec![series("one point", PALETTE[4], vec![(0.5, 0.5)])]);
        let image = single.render(300, 200);
        let layout = single.layout(300, 200, 1).unwrap();
        let (x, y) = layout.to_pixel((0.5, 0.5));
        assert_eq!(
            image.pixel(x.round() as usize, y.round() as usize),
            PALETTE[4]
        );
        // A legend name too long for the image is cut, not drawn across the edge.
        assert!(fit_text("a very long method name", 60, 1).ends_with(".."));
        assert!(text_width(&fit_text("a very long method name", 60, 1), 1) <= 60);
    }

    #[test]
    fn tile_sizes_and_places() {
        let a = RgbImage::filled(10, 5, [1, 1, 1]);
        let b = RgbImage::filled(4, 8, [2, 2, 2]);
        let c = RgbImage::filled(6, 6, [3, 3, 3]);
        let grid = tile(&[a.clone(), b, c], 2, 3);
        // Columns 10 and 4 wide, rows 8 and 6 tall, gaps of 3.
        assert_eq!((grid.width, grid.height), (10 + 3 + 4, 8 + 3 + 6));
        assert_eq!(grid.pixel(0, 0), [1, 1, 1]);
        assert_eq!(grid.pixel(9, 4), [1, 1, 1]);
        assert_eq!(grid.pixel(9, 5), WHITE); // under the short image
        assert_eq!(grid.pixel(11, 0), WHITE); // the gap
        assert_eq!(grid.pixel(13, 7), [2, 2, 2]);
        assert_eq!(grid.pixel(0, 11), [3, 3, 3]);
        assert_eq!(grid.pixel(5, 16), [3, 3, 3]);
        assert_eq!(grid.pixel(6, 16), WHITE);

        let column = tile(&[a.clone(), a.clone()], 0, 2);
        assert_eq!((column.width, column.height), (10, 12));
        let row = tile(&[a.clone(), a], 9, 0);
        assert_eq!((row.width, row.height), (20, 5));
        assert_eq!(tile(&[], 3, 4), white(0, 0));
    }

    #[test]
    fn palette_colours_differ() {
        for (i, a) in PALETTE.iter().enumerate() {
            for b in &PALETTE[i + 1..] {
                let d: i32 = a
                    .iter()
                    .zip(b)
                    .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                    .sum();
                assert!(d > 60, "{a:?} and {b:?} are too close");
            }
        }
        assert_eq!(palette(PALETTE.len() + 2), PALETTE[2]);
    }
}
