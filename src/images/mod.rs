//! Pictures: from attributions to PNG figures, `.npy` files and an HTML report.
//!
//! The path of one batch of attributions `[N, C, H, W]`:
//!
//! 1. [`saliency_maps`] post-processes it as keras-vis does (absolute value, maximum over
//!    channels, min-max normalisation) into maps `[N, H, W]` in `[0, 1]`;
//! 2. a [`Colormap`] turns each map value into a colour, as matplotlib would;
//! 3. [`write_figure`] draws input, heat map and overlay side by side as a PNG, and
//!    [`write_image_png`], [`write_heatmap_png`], [`write_overlay_png`] draw one panel;
//! 4. [`write_attributions`] and [`write_maps`] save the numbers for NumPy;
//! 5. [`write_report`] puts the panels of many inputs and methods in one HTML table.
//!
//! Every file is written atomically through [`crate::fsutil`].
//!
//! ```no_run
//! use ndarray::Axis;
//! use salient::images::{saliency_maps, write_figure, FigureStyle, Normalize};
//! # fn demo(images: salient::Tensor, raw: salient::Tensor) -> salient::Result<()> {
//! let maps = saliency_maps(&raw, Normalize::PerInput)?; // [N, H, W]
//! for i in 0..maps.shape()[0] {
//!     let path = std::path::PathBuf::from(format!("figure_{i}.png"));
//!     let (image, map) = (images.index_axis(Axis(0), i), maps.index_axis(Axis(0), i));
//!     write_figure(&path, image, map, &FigureStyle::default())?;
//! }
//! # Ok(())
//! # }
//! ```

mod colormap;
mod figure;
mod npy;
pub mod plot;
mod postprocess;
mod report;

pub use colormap::Colormap;
pub use figure::{
    auto_scale, png_size, read_png_rgb, write_figure, write_heatmap_png, write_image_png,
    write_overlay_png, FigureStyle, RgbImage, Scale, MAX_SIDE_PX, MIN_PANEL_PX, PANEL_GAP_PX,
};
pub use npy::{read_npy, write_attributions, write_maps, write_npy};
pub use postprocess::{normalize_maps, saliency_maps, Normalize, NORMALIZE_EPS};
pub use report::{
    write_report, Cell, Prediction, Report, ReportCell, ReportMethod, ReportRow, Section, Table,
    DISPLAY_PX, MIN_DISPLAY_PX, REPORT_FILE, TABLE_PX,
};
