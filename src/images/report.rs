//! A self-contained HTML report: one table, a row per input, a column per method.
//!
//! The report is one `index.html` beside its PNGs; it links them by relative paths and
//! holds its style inline, so the folder can be zipped, mailed or opened offline. There is
//! no script, font or style sheet from elsewhere.
//!
//! ```text
//! #  | input | true | predicted  | gradient | guided | Grad-CAM
//! 12 | [7]   | 7    | 7  99.1 %  | [map]    | [map]  | [map]
//! ```
//!
//! Pictures are shown enlarged by a whole factor with `image-rendering: pixelated`, so
//! every input pixel stays a sharp square. Write the PNGs at the input's own size
//! ([`Scale::Factor(1)`](super::Scale::Factor)) and the report enlarges them; larger PNGs
//! are shrunk to about [`DISPLAY_PX`]. With many methods the pictures are drawn smaller,
//! down to about [`MIN_DISPLAY_PX`], so that a row of all thirteen methods on MNIST fits a
//! 1600-pixel-wide window ([`TABLE_PX`]); CIFAR-10's 32-pixel inputs need about 1700.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::colormap::Colormap;
use super::figure::png_size;
use crate::error::{Error, Result};
use crate::fsutil;

/// The file name of the report inside its folder.
pub const REPORT_FILE: &str = "index.html";

/// About how many CSS pixels the longer side of each picture takes on screen.
pub const DISPLAY_PX: u32 = 144;

/// The smallest size a picture is shrunk to so that a wide row fits, in CSS pixels.
pub const MIN_DISPLAY_PX: u32 = 96;

/// About how many CSS pixels the pictures of one row may take together.
pub const TABLE_PX: u32 = 1400;

/// CSS pixels around each picture in its cell (padding on both sides).
const CELL_PADDING_PX: u32 = 8;

/// Everything a report shows. Text is plain text: the writer escapes it.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Heading and page title, e.g. `Saliency on MNIST`.
    pub title: String,
    /// Labelled facts shown under the title, e.g. `("Model", "mnist.safetensors")`,
    /// `("Data set", "MNIST test, inputs 0-15")`, `("Post-processing", ...)`.
    pub details: Vec<(String, String)>,
    /// Free paragraphs, e.g. "The softmax head was made linear for the backward pass."
    pub notes: Vec<String>,
    /// The colour map of the heat maps, to draw a legend; `None` draws none.
    pub colormap: Option<Colormap>,
    /// The columns, one per saliency method, in order.
    pub methods: Vec<ReportMethod>,
    /// The rows, one per input; with no row and no method there is no table.
    pub rows: Vec<ReportRow>,
    /// Sections after the table, such as the trust scores.
    pub sections: Vec<Section>,
}

/// A part of the page after the main table: a heading, paragraphs, tables of
/// text or pictures, and figures.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// The section's heading.
    pub heading: String,
    /// Paragraphs under the heading.
    pub paragraphs: Vec<String>,
    /// Tables, each with its caption.
    pub tables: Vec<Table>,
    /// PNGs (relative to the report's folder) shown at their own size, with a caption.
    pub figures: Vec<(PathBuf, String)>,
    /// Labelled definitions, e.g. `("deletion AUC", "the area under ...")`.
    pub definitions: Vec<(String, String)>,
}

/// A table of text or pictures.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// A line above the table.
    pub caption: String,
    /// The heading of each column.
    pub header: Vec<String>,
    /// The rows, each with one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

/// One cell of a [`Table`].
#[derive(Debug, Clone)]
pub enum Cell {
    /// Plain text.
    Text(String),
    /// Text drawn as good (green) or bad (red) news.
    Marked(String, bool),
    /// A PNG relative to the report's folder, enlarged like the main table's,
    /// with an optional caption under it.
    Picture(PathBuf, Option<String>),
}

/// A saliency method: the heading of a column.
#[derive(Debug, Clone)]
pub struct ReportMethod {
    /// Shown in the column heading, e.g. `Integrated gradients`.
    pub name: String,
    /// Shown in the header, e.g. "64 steps; completeness error at most 0.4 %".
    pub note: Option<String>,
}

/// What the model said about one input.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The predicted class's name, e.g. `7` or `cat`.
    pub class: String,
    /// Its softmax probability, in `[0, 1]`; shown as a percentage.
    pub confidence: f32,
}

/// One input: a row of the table.
#[derive(Debug, Clone)]
pub struct ReportRow {
    /// The input's index in its data set (or in the list of the user's images).
    pub index: usize,
    /// The input drawn as a PNG, relative to the report's folder.
    pub image: PathBuf,
    /// The labelled class, if known; a user's own images have none.
    pub true_class: Option<String>,
    /// The model's prediction.
    pub predicted: Prediction,
    /// One picture per method, in the order of [`Report::methods`].
    pub cells: Vec<ReportCell>,
}

/// A method's picture for one input.
#[derive(Debug, Clone)]
pub struct ReportCell {
    /// A PNG (an overlay or a heat map), relative to the report's folder.
    pub image: PathBuf,
    /// A line under the picture, e.g. "completeness error 0.2 %".
    pub caption: Option<String>,
}

/// Writes `dir/index.html` (atomically) and returns its path.
///
/// Every picture must already exist in `dir`: the writer reads each PNG's size to show it
/// crisp, and so also catches a broken link. Fails if a row has not one cell per method,
/// or a path is absolute or leaves the folder (`..`).
pub fn write_report(dir: &Path, report: &Report) -> Result<PathBuf> {
    let html = render(dir, report)?;
    let path = dir.join(REPORT_FILE);
    fsutil::write_bytes_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// The HTML text of the report; `dir` is where the pictures are.
fn render(dir: &Path, report: &Report) -> Result<String> {
    let title = if report.title.is_empty() {
        "Saliency report"
    } else {
        &report.title
    };
    let has_truth = report.rows.iter().any(|r| r.true_class.is_some());
    // The input and one picture per method share the row's width.
    let side = picture_side(1 + report.methods.len());

    // Writing to a String cannot fail, hence the `let _ = write!(...)` below.
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{}</title>", escape(title));
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>\n<header>");
    let _ = writeln!(h, "<h1>{}</h1>", escape(title));

    // Facts first, then each method's note, in one list so that the labels line up.
    let method_notes = report
        .methods
        .iter()
        .filter_map(|m| m.note.as_ref().map(|n| (&m.name, n)));
    let facts: Vec<_> = report
        .details
        .iter()
        .map(|(l, v)| (l, v))
        .chain(method_notes)
        .collect();
    if !facts.is_empty() {
        h.push_str("<dl>\n");
        for (label, value) in facts {
            let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
        }
        h.push_str("</dl>\n");
    }
    for note in &report.notes {
        let _ = writeln!(h, "<p>{}</p>", escape(note));
    }
    if let Some(map) = report.colormap {
        let _ = writeln!(
            h,
            "<div class=\"legend\"><span>0</span><span class=\"bar\" style=\"background: {}\"></span>\
             <span>1</span><span class=\"muted\">normalised saliency ({})</span></div>",
            gradient_css(map),
            map
        );
    }
    h.push_str("</header>\n<main>\n");
    if !(report.rows.is_empty() && report.methods.is_empty()) {
        render_table(&mut h, dir, report, side, has_truth)?;
    }
    for section in &report.sections {
        render_section(&mut h, dir, section)?;
    }
    h.push_str("</main>\n");
    let _ = writeln!(
        h,
        "<footer class=\"muted\">Made by salient {}.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(h)
}

/// The main table: a row per input, a column per method.
fn render_table(
    h: &mut String,
    dir: &Path,
    report: &Report,
    side: u32,
    has_truth: bool,
) -> Result<()> {
    h.push_str("<table>\n<thead>\n<tr><th>#</th><th>Input</th>");
    if has_truth {
        h.push_str("<th>True</th>");
    }
    h.push_str("<th>Predicted</th>");
    for m in &report.methods {
        let _ = write!(h, "<th class=\"method\">{}</th>", escape(&m.name));
    }
    h.push_str("</tr>\n</thead>\n<tbody>\n");

    for (r, row) in report.rows.iter().enumerate() {
        if row.cells.len() != report.methods.len() {
            return Err(Error::invalid(
                "report",
                format!(
                    "row {r} (input {}) has {} pictures for {} methods",
                    row.index,
                    row.cells.len(),
                    report.methods.len()
                ),
            ));
        }
        let wrong = row
            .true_class
            .as_ref()
            .is_some_and(|t| *t != row.predicted.class);
        // An id per row, so that `index.html#input-12` links to one input.
        let _ = writeln!(
            h,
            "<tr id=\"input-{}\"{}>",
            row.index,
            if wrong { " class=\"wrong\"" } else { "" }
        );
        let _ = writeln!(h, "<td class=\"num\">{}</td>", row.index);
        let alt = format!("input {}", row.index);
        let _ = writeln!(h, "<td>{}</td>", img(dir, &row.image, &alt, side)?.0);
        if has_truth {
            let truth = row.true_class.as_deref().map_or("\u{2014}".into(), escape);
            let _ = writeln!(h, "<td class=\"cls\">{truth}</td>");
        }
        let _ = writeln!(
            h,
            "<td class=\"cls pred\">{}<br><span class=\"muted\">{:.1}&#8239;%</span></td>",
            escape(&row.predicted.class),
            100.0 * row.predicted.confidence
        );
        for (m, cell) in report.methods.iter().zip(&row.cells) {
            let alt = format!("{}, input {}", m.name, row.index);
            let (picture, width) = img(dir, &cell.image, &alt, side)?;
            let _ = write!(h, "<td>{picture}");
            if let Some(caption) = &cell.caption {
                // As wide as the picture, so a long caption wraps instead of widening the column.
                let _ = write!(
                    h,
                    "<div class=\"muted cap\" style=\"width: {width}px\">{}</div>",
                    escape(caption)
                );
            }
            h.push_str("</td>\n");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    Ok(())
}

/// A [`Section`]: heading, paragraphs, definitions, tables, figures.
fn render_section(h: &mut String, dir: &Path, section: &Section) -> Result<()> {
    let _ = writeln!(h, "<section>\n<h2>{}</h2>", escape(&section.heading));
    for p in &section.paragraphs {
        let _ = writeln!(h, "<p>{}</p>", escape(p));
    }
    if !section.definitions.is_empty() {
        h.push_str("<dl>\n");
        for (term, meaning) in &section.definitions {
            let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(meaning));
        }
        h.push_str("</dl>\n");
    }
    for table in &section.tables {
        let side = picture_side(table.header.len());
        let _ = writeln!(
            h,
            "<table class=\"scores\">\n<caption>{}</caption>\n<thead><tr>",
            escape(&table.caption)
        );
        for head in &table.header {
            let _ = write!(h, "<th>{}</th>", escape(head));
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for (r, row) in table.rows.iter().enumerate() {
            if row.len() != table.header.len() {
                return Err(Error::invalid(
                    "report",
                    format!(
                        "row {r} of table {:?} has {} cells for {} columns",
                        table.caption,
                        row.len(),
                        table.header.len()
                    ),
                ));
            }
            h.push_str("<tr>");
            for cell in row {
                match cell {
                    Cell::Text(t) => {
                        let _ = write!(h, "<td>{}</td>", escape(t));
                    }
                    Cell::Marked(t, good) => {
                        let class = if *good { "good" } else { "bad" };
                        let _ = write!(h, "<td class=\"{class}\">{}</td>", escape(t));
                    }
                    Cell::Picture(path, caption) => {
                        let (picture, width) = img(dir, path, &path.display().to_string(), side)?;
                        let _ = write!(h, "<td>{picture}");
                        if let Some(c) = caption {
                            let _ = write!(
                                h,
                                "<div class=\"muted cap\" style=\"width: {width}px\">{}</div>",
                                escape(c)
                            );
                        }
                        h.push_str("</td>");
                    }
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
    }
    for (path, caption) in &section.figures {
        let src = relative_url(path)?;
        let (w, hgt) = png_size(&dir.join(path))?;
        let _ = writeln!(
            h,
            "<figure><img class=\"plot\" src=\"{}\" width=\"{w}\" height=\"{hgt}\" alt=\"{}\">\
             <figcaption class=\"muted\">{}</figcaption></figure>",
            escape(&src),
            escape(caption),
            escape(caption)
        );
    }
    h.push_str("</section>\n");
    Ok(())
}

/// An `<img>` for a PNG in `dir`, sized so that its pixels stay whole squares on screen
/// and its longer side comes close to `side`; and its width on screen.
fn img(dir: &Path, rel: &Path, alt: &str, side: u32) -> Result<(String, u32)> {
    let src = relative_url(rel)?;
    let (w, h) = png_size(&dir.join(rel))?;
    let (dw, dh) = display_size(w, h, side);
    let tag = format!(
        "<img src=\"{}\" width=\"{dw}\" height=\"{dh}\" alt=\"{}\">",
        escape(&src),
        escape(alt)
    );
    Ok((tag, dw))
}

/// The longer side to aim at for each of `pictures` pictures in a row: [`DISPLAY_PX`]
/// when they fit in [`TABLE_PX`], less when they do not, but not below [`MIN_DISPLAY_PX`].
fn picture_side(pictures: usize) -> u32 {
    let share = TABLE_PX / (pictures.max(1) as u32) - CELL_PADDING_PX;
    share.clamp(MIN_DISPLAY_PX, DISPLAY_PX)
}

/// Enlarges by the whole factor that brings the longer side closest to `target`
/// from below; a picture already larger is divided by a whole factor instead.
fn display_size(w: u32, h: u32, target: u32) -> (u32, u32) {
    let side = w.max(h).max(1);
    if side <= target {
        let k = target / side;
        (w * k, h * k)
    } else {
        let d = side.div_ceil(target);
        ((w / d).max(1), (h / d).max(1))
    }
}

/// A relative path as a URL path: `/` between parts, and every byte outside the
/// unreserved set percent-encoded, so spaces, `#` and `?` in file names still link.
fn relative_url(rel: &Path) -> Result<String> {
    let bad = |why: &str| Error::invalid("report", format!("{}: {why}", rel.display()));
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                let part = part.to_str().ok_or_else(|| bad("the path is not UTF-8"))?;
                parts.push(percent_encode(part));
            }
            Component::CurDir => {}
            _ => {
                return Err(bad(
                    "pictures must be given relative to the report's folder",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(bad("the path names no file"));
    }
    Ok(parts.join("/"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes text for HTML content and quoted attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A CSS gradient through 17 samples of the colour map, for the legend.
fn gradient_css(map: Colormap) -> String {
    let stops: Vec<String> = (0..=16)
        .map(|i| {
            let [r, g, b] = map.rgb(i as f32 / 16.0);
            format!("rgb({r},{g},{b})")
        })
        .collect();
    format!("linear-gradient(to right, {})", stops.join(", "))
}

const STYLE: &str = r#"
:root { color-scheme: light; --line: #d0d7de; --muted: #59636e; --head: #f6f8fa; }
body { margin: 0 16px 16px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 20px 0 8px; }
header p { margin: 6px 0; max-width: 70em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 8px 0; }
dt { font-weight: 600; color: var(--muted); }
dd { margin: 0; }
.muted { color: var(--muted); font-size: 12px; }
.legend { display: flex; align-items: center; gap: 8px; margin: 10px 0; }
.legend .bar { display: inline-block; width: 200px; height: 12px; border: 1px solid var(--line); }
table { border-collapse: separate; border-spacing: 0; margin-top: 12px; }
th, td { padding: 6px 4px; border-bottom: 1px solid var(--line); text-align: center; vertical-align: top; }
td.num, td.cls { vertical-align: middle; padding: 6px 8px; }
thead th { position: sticky; top: 0; z-index: 1; background: var(--head); border-bottom: 2px solid var(--line);
  white-space: nowrap; }
section { margin-top: 28px; max-width: 110em; }
h2 { font-size: 18px; margin: 12px 0 6px; }
section p { max-width: 70em; }
table.scores td { padding: 4px 10px; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.scores caption { text-align: left; font-weight: 600; padding: 4px 0; }
td.good { color: #1a7f37; font-weight: 600; }
td.bad { color: #cf222e; font-weight: 600; }
img.plot { image-rendering: auto; max-width: 100%; height: auto; }
thead th.method { white-space: normal; font-size: 13px; line-height: 1.2; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); }
td.cls { font-size: 16px; font-weight: 600; }
tr.wrong td.pred { color: #cf222e; }
tr.wrong td.pred::after { content: " \2717"; }
td img { display: block; margin: 0 auto; image-rendering: pixelated; }
.cap { margin: 4px auto 0; line-height: 1.25; }
footer { margin-top: 16px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{write_heatmap_png, write_image_png, FigureStyle, Scale};
    use ndarray::{Array2, Array3};

    /// Writes a 28x28 input PNG and one heat map PNG per method into `dir`.
    fn sample(dir: &Path) -> Report {
        let style = FigureStyle {
            scale: Scale::Factor(1),
            ..FigureStyle::default()
        };
        let methods = ["Gradient", "Guided \"backprop\"", "a <b>bold</b> & co"];
        let mut rows = Vec::new();
        for index in [3usize, 14] {
            let input = format!("input {index}.png"); // a space, to check URL encoding
            let image = Array3::<f32>::from_elem((1, 28, 28), 0.5).into_dyn();
            write_image_png(&dir.join(&input), image.view(), Scale::Factor(1)).unwrap();
            let mut cells = Vec::new();
            for m in 0..methods.len() {
                let name = format!("m{m}_{index}.png");
                let map = Array2::<f32>::from_elem((28, 28), m as f32 / 2.0).into_dyn();
                write_heatmap_png(&dir.join(&name), map.view(), &style).unwrap();
                cells.push(ReportCell {
                    image: PathBuf::from(name),
                    caption: (m == 0).then(|| "error < 1%".to_string()),
                });
            }
            rows.push(ReportRow {
                index,
                image: PathBuf::from(input),
                true_class: Some("7".into()),
                predicted: Prediction {
                    class: if index == 3 { "7" } else { "1" }.into(),
                    confidence: 0.987,
                },
                cells,
            });
        }
        Report {
            title: "MNIST <script>alert(1)</script> & friends".into(),
            details: vec![("Model".into(), "it's \"mnist\".safetensors".into())],
            notes: vec!["Softmax made linear for the backward pass.".into()],
            colormap: Some(Colormap::Viridis),
            methods: methods
                .iter()
                .map(|&name| ReportMethod {
                    name: name.into(),
                    note: Some(format!("note on {name}")),
                })
                .collect(),
            rows,
            sections: Vec::new(),
        }
    }

    /// Every `src="..."` value in the page, percent-decoded.
    fn sources(html: &str) -> Vec<String> {
        html.split("src=\"")
            .skip(1)
            .map(|rest| {
                let url = &rest[..rest.find('"').unwrap()];
                let mut bytes = Vec::new();
                let mut it = url.bytes();
                while let Some(b) = it.next() {
                    if b == b'%' {
                        let hex = [it.next().unwrap(), it.next().unwrap()];
                        bytes.push(
                            u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap(),
                        );
                    } else {
                        bytes.push(b);
                    }
                }
                String::from_utf8(bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn report_links_existing_pngs_and_escapes_text() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample(dir.path());
        let path = write_report(dir.path(), &report).unwrap();
        assert_eq!(path, dir.path().join(REPORT_FILE));
        let html = std::fs::read_to_string(&path).unwrap();

        let srcs = sources(&html);
        assert_eq!(srcs.len(), 2 * (1 + 3), "one input and three maps per row");
        for src in &srcs {
            assert!(dir.path().join(src).is_file(), "{src} is missing");
        }
        assert!(html.contains("src=\"input%203.png\""));

        // No text reaches the page unescaped.
        assert!(!html.contains("<script>") && !html.contains("<b>"));
        assert!(html.contains("MNIST &lt;script&gt;alert(1)&lt;/script&gt; &amp; friends"));
        assert!(html.contains("Guided &quot;backprop&quot;"));
        assert!(html.contains("a &lt;b&gt;bold&lt;/b&gt; &amp; co"));
        assert!(html.contains("it&#39;s &quot;mnist&quot;.safetensors"));
        assert!(html.contains("error &lt; 1%"));

        // Self-contained: nothing fetched from elsewhere.
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"));
        // 28 px shown x5 = 140, crisp; the misclassified row is marked.
        assert!(html.contains("width=\"140\" height=\"140\""));
        assert!(html.contains("image-rendering: pixelated"));
        assert_eq!(html.matches("class=\"wrong\"").count(), 1);
        assert!(html.contains("98.7"));
    }

    #[test]
    fn true_column_is_left_out_when_no_input_has_a_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = sample(dir.path());
        for row in &mut report.rows {
            row.true_class = None;
        }
        let html = render(dir.path(), &report).unwrap();
        assert!(!html.contains("<th>True</th>"));
        assert!(!html.contains("class=\"wrong\""));
    }

    #[test]
    fn broken_reports_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample(dir.path());

        let mut missing = good.clone();
        missing.rows[1].cells[2].image = PathBuf::from("nowhere.png");
        let err = write_report(dir.path(), &missing).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.to_string().contains("nowhere.png"),
            "{err}"
        );
        assert!(!dir.path().join(REPORT_FILE).exists());

        let mut short = good.clone();
        short.rows[0].cells.pop();
        let err = write_report(dir.path(), &short).unwrap_err();
        assert!(
            err.to_string().contains("2 pictures for 3 methods"),
            "{err}"
        );

        for bad in ["../input 3.png", "/tmp/input 3.png", ""] {
            let mut outside = good.clone();
            outside.rows[0].image = PathBuf::from(bad);
            assert!(write_report(dir.path(), &outside).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_size_keeps_whole_pixels() {
        assert_eq!(display_size(28, 28, DISPLAY_PX), (140, 140)); // x5
        assert_eq!(display_size(32, 32, DISPLAY_PX), (128, 128)); // x4
        assert_eq!(display_size(32, 16, DISPLAY_PX), (128, 64));
        assert_eq!(display_size(224, 224, DISPLAY_PX), (112, 112)); // /2
        assert_eq!(display_size(144, 144, DISPLAY_PX), (144, 144));
        assert_eq!(display_size(28, 28, MIN_DISPLAY_PX), (84, 84)); // x3
    }

    #[test]
    fn many_methods_shrink_pictures_to_fit_the_row() {
        assert_eq!(picture_side(4), DISPLAY_PX); // input + 3 methods
        assert_eq!(picture_side(10), 132);
        assert_eq!(picture_side(14), MIN_DISPLAY_PX); // input + all 13 methods
        assert_eq!(picture_side(0), DISPLAY_PX);
    }

    #[test]
    fn escape_covers_the_five_specials() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }
}
