//! MNIST's IDX format.
//!
//! An IDX file is a big-endian header followed by raw bytes, row-major:
//!
//! ```text
//! images: 0x00000803, count, rows, cols, then count*rows*cols pixel bytes (0 = black)
//! labels: 0x00000801, count,             then count label bytes
//! ```
//!
//! The magic number says "unsigned bytes" (0x08) and the number of dimensions
//! (3 or 1). Files are often distributed gzip-compressed; the reader looks at the
//! content (gzip starts with the bytes `1f 8b`), not at the name, to decide.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use byteorder::{BigEndian, ByteOrder, WriteBytesExt};
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::{thousands, Limits, MAX_DATASET_FLAG};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The images of an IDX file, still as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Height of every image.
    pub rows: usize,
    /// Width of every image.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Loads MNIST's training (`train-*`) or test (`t10k-*`) images and labels from
/// `dir`. Each file may be named with or without a `.gz` suffix; see
/// [`find_idx_file`].
///
/// Images are `[1, rows, cols]`, kept as bytes (pixel `p` stands for `p / 255`);
/// the class names are `"0"` to `"9"`.
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find_idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;

    if labels.len() != images.count {
        return Err(Error::format(
            &labels_path,
            "label count",
            format!(
                "{} (the number of images in {})",
                images.count,
                images_path.display()
            ),
            labels.len().to_string(),
        ));
    }
    if let Some((i, &label)) = labels.iter().enumerate().find(|&(_, &l)| l > 9) {
        return Err(Error::format(
            &labels_path,
            format!("label {i}"),
            "a digit from 0 to 9",
            label.to_string(),
        ));
    }

    let labels = labels.into_iter().map(usize::from).collect();
    let class_names = (0..10).map(|d| d.to_string()).collect();
    Dataset::from_bytes(
        images.pixels,
        [1, images.rows, images.cols],
        labels,
        class_names,
    )
}

/// Finds `dir/name`, or failing that `dir/name.gz`.
pub fn find_idx_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        plain,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no such file, nor {name}.gz beside it"),
        ),
    ))
}

/// Reads an IDX images file (gzip-compressed or not).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_idx_images(&read_idx_file(path)?, path)
}

/// Reads an IDX labels file (gzip-compressed or not).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_idx_labels(&read_idx_file(path)?, path)
}

/// The bytes of an IDX file as stored (compressed or not), within the limits.
fn read_idx_file(path: &Path) -> Result<Vec<u8>> {
    let limit = Limits::current().max_data_file_bytes();
    fsutil::read_bounded(path, limit, "an IDX file")
}

/// Parses the bytes of an IDX images file; `path` is only used in errors.
///
/// Every size in the header is checked before anything is allocated: each
/// image against [`Limits::max_pixels`], all of them against
/// [`Limits::max_dataset_bytes`], and against what the file holds. A gzip
/// stream is decompressed only as far as the header says it reaches.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let limits = Limits::current();
    let (dims, pixels) = read_idx(bytes, path, IMAGES_MAGIC, |dims| {
        let [count, rows, cols] = *dims else {
            return Ok(0);
        };
        if rows == 0 || cols == 0 {
            return Err(Error::format(
                path,
                "image size",
                "at least 1x1 pixels",
                format!("{rows}x{cols}"),
            ));
        }
        limits.check_pixels(&path.display().to_string(), cols as u64, rows as u64)?;
        let total = crate::limits::product(dims).unwrap_or(u64::MAX);
        if total > limits.max_dataset_bytes {
            return Err(Error::TooLarge {
                subject: path.display().to_string(),
                what: format!(
                    "the header declares {count} images of {rows}x{cols}, {} bytes",
                    thousands(total)
                ),
                limit: format!(
                    "{} bytes for one split",
                    thousands(limits.max_dataset_bytes)
                ),
                raise: Some(MAX_DATASET_FLAG),
            });
        }
        Ok(total)
    })?;
    let [count, rows, cols] = dims[..] else {
        return Err(Error::invalid(
            "idx",
            "images header must have 3 dimensions",
        ));
    };
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Parses the bytes of an IDX labels file; `path` is only used in errors.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let limit = Limits::current().max_dataset_bytes;
    let (_, labels) = read_idx(bytes, path, LABELS_MAGIC, |dims| {
        let count = dims.first().copied().unwrap_or(0) as u64;
        if count > limit {
            return Err(Error::TooLarge {
                subject: path.display().to_string(),
                what: format!("the header declares {} labels", thousands(count)),
                limit: format!("{} labels", thousands(limit)),
                raise: Some(MAX_DATASET_FLAG),
            });
        }
        Ok(count)
    })?;
    Ok(labels)
}

/// Reads an IDX file from its bytes, decompressing them first if they start
/// with the gzip magic: checks the magic number, hands the dimensions to
/// `check`, which returns the data length they imply, and reads exactly that
/// many bytes. A gzip stream is read no further than that length and one byte
/// more, so a small file cannot expand to more than its header declares.
fn read_idx(
    bytes: &[u8],
    path: &Path,
    magic: u32,
    check: impl FnOnce(&[usize]) -> Result<u64>,
) -> Result<(Vec<usize>, Vec<u8>)> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        let (dims, data) = split_header(bytes, path, magic)?;
        let expected = check(&dims)?;
        check_data_length(path, data.len() as u64, expected, || describe(&dims))?;
        return Ok((dims, data.to_vec()));
    }
    let gzip_error = |e: std::io::Error| {
        Error::format(
            path,
            "gzip data",
            "a complete gzip stream",
            format!("a stream that fails to decompress ({e})"),
        )
    };
    let mut stream = MultiGzDecoder::new(bytes);
    let header_len = 4 * (1 + dims_of(magic));
    let mut header = Vec::with_capacity(header_len);
    (&mut stream)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(gzip_error)?;
    let (dims, _) = split_header(&header, path, magic)?;
    let expected = check(&dims)?;
    // No capacity up front: a stream shorter than its header claims costs only
    // what it holds.
    let mut data = Vec::new();
    stream
        .take(expected.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(gzip_error)?;
    check_data_length(path, data.len() as u64, expected, || describe(&dims))?;
    Ok((dims, data))
}

/// The number of dimensions an IDX file with this magic number has.
fn dims_of(magic: u32) -> usize {
    if magic == IMAGES_MAGIC {
        3
    } else {
        1
    }
}

/// `60000 images of 28x28` or `60000 labels`.
fn describe(dims: &[usize]) -> String {
    match dims {
        [count, rows, cols] => format!("{count} images of {rows}x{cols}"),
        [count] => format!("{count} labels"),
        _ => format!("dimensions {dims:?}"),
    }
}

/// Writes an IDX images file atomically, gzip-compressed if `path` ends in `.gz`
/// (with a zero timestamp, so the same input always gives the same bytes).
/// `pixels` holds whole `rows x cols` images, one after the other.
pub fn write_idx_images(path: &Path, rows: usize, cols: usize, pixels: &[u8]) -> Result<()> {
    let image_len = rows.checked_mul(cols).filter(|&n| n > 0).ok_or_else(|| {
        Error::invalid(
            "write_idx_images",
            format!("image size {rows}x{cols} must be at least 1x1"),
        )
    })?;
    if !pixels.len().is_multiple_of(image_len) {
        return Err(Error::invalid(
            "write_idx_images",
            format!(
                "{} pixel bytes are not a whole number of {rows}x{cols} images",
                pixels.len()
            ),
        ));
    }
    let dims = [pixels.len() / image_len, rows, cols];
    write_idx(path, "write_idx_images", IMAGES_MAGIC, &dims, pixels)
}

/// Writes an IDX labels file atomically, gzip-compressed if `path` ends in `.gz`.
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_idx(
        path,
        "write_idx_labels",
        LABELS_MAGIC,
        &[labels.len()],
        labels,
    )
}

fn write_idx(path: &Path, op: &'static str, magic: u32, dims: &[usize], data: &[u8]) -> Result<()> {
    let mut header = Vec::with_capacity(4 * (1 + dims.len()));
    header.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| {
            Error::invalid(
                op,
                format!("dimension {d} does not fit the 32-bit IDX header"),
            )
        })?;
        header
            .write_u32::<BigEndian>(d)
            .map_err(|e| Error::io(path, e))?;
    }
    let gzip = path.extension().is_some_and(|e| e == "gz");
    fsutil::write_atomic(path, |w| {
        if gzip {
            let mut gz = GzBuilder::new().mtime(0).write(w, Compression::best());
            gz.write_all(&header)?;
            gz.write_all(data)?;
            gz.finish()?;
            Ok(())
        } else {
            w.write_all(&header)?;
            w.write_all(data)
        }
    })
}

/// Checks the magic number and splits the file into its dimensions and its data.
fn split_header<'a>(bytes: &'a [u8], path: &Path, magic: u32) -> Result<(Vec<usize>, &'a [u8])> {
    let ndims = dims_of(magic);
    let (kind, other_magic, other_kind) = if magic == IMAGES_MAGIC {
        ("images", LABELS_MAGIC, "labels")
    } else {
        ("labels", IMAGES_MAGIC, "images")
    };
    let Some(found_magic) = bytes.get(..4).map(BigEndian::read_u32) else {
        return Err(Error::format(
            path,
            "magic number",
            format!("a 4-byte IDX {kind} magic number {magic:#010x}"),
            format!("a file of {} bytes", bytes.len()),
        ));
    };
    if found_magic != magic {
        let hint = if found_magic == other_magic {
            format!(" (an IDX {other_kind} file)")
        } else {
            String::new()
        };
        return Err(Error::format(
            path,
            "magic number",
            format!("{magic:#010x} (IDX {kind})"),
            format!("{found_magic:#010x}{hint}"),
        ));
    }
    let header_len = 4 * (1 + ndims);
    let Some((header, data)) = bytes.split_at_checked(header_len) else {
        return Err(Error::format(
            path,
            "header",
            format!("{header_len} bytes (magic number and {ndims} dimensions)"),
            format!("a file of {} bytes", bytes.len()),
        ));
    };
    let dims = header
        .chunks_exact(4)
        .skip(1)
        .map(|b| BigEndian::read_u32(b) as usize)
        .collect();
    Ok((dims, data))
}

/// Checks that the data after the header is exactly as long as the header says.
fn check_data_length(
    path: &Path,
    found: u64,
    expected: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    let problem = if found < expected {
        "the file is truncated"
    } else {
        "the file has trailing bytes"
    };
    Err(Error::format(
        path,
        "data length",
        format!("{expected} bytes after the header ({})", what()),
        format!("{found} bytes: {problem}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn images_round_trip_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 10) as u8).collect();
        for name in ["imgs", "imgs.gz"] {
            let path = dir.path().join(name);
            write_idx_images(&path, 3, 4, &pixels).unwrap();
            let back = read_idx_images(&path).unwrap();
            assert_eq!((back.count, back.rows, back.cols), (2, 3, 4));
            assert_eq!(back.pixels, pixels);
        }
        let raw = std::fs::read(dir.path().join("imgs")).unwrap();
        assert_eq!(&raw[..8], &[0, 0, 8, 3, 0, 0, 0, 2]);
        let gz = std::fs::read(dir.path().join("imgs.gz")).unwrap();
        assert_eq!(&gz[..2], &GZIP_MAGIC);
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("labels.gz");
        write_idx_labels(&gz, &[3, 1, 4]).unwrap();
        let misnamed = dir.path().join("labels");
        std::fs::rename(&gz, &misnamed).unwrap();
        assert_eq!(read_idx_labels(&misnamed).unwrap(), vec![3, 1, 4]);
    }

    #[test]
    fn writer_rejects_partial_images() {
        let err = write_idx_images(Path::new("unused"), 2, 2, &[0; 5]).unwrap_err();
        assert!(err.to_string().contains("5 pixel bytes"), "{err}");
    }

    #[test]
    fn labels_file_given_as_images_names_the_mixup() {
        let mut bytes = LABELS_MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 7]);
        let err = parse_idx_images(&bytes, Path::new("x.idx"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.idx") && err.contains("magic number"),
            "{err}"
        );
        assert!(
            err.contains("0x00000803") && err.contains("labels file"),
            "{err}"
        );
    }

    #[test]
    fn short_header_is_an_error() {
        let bytes = [0, 0, 8, 3, 0, 0, 0, 1, 0, 0];
        let err = parse_idx_images(&bytes, Path::new("h.idx"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.idx: header"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let err = parse_idx_labels(&[0, 0, 8, 1, 0, 0, 0, 1, 5, 6], Path::new("l"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected 1 bytes") && err.contains("trailing"),
            "{err}"
        );
    }

    #[test]
    fn broken_gzip_is_an_error() {
        let err = parse_idx_labels(&[0x1f, 0x8b, 8, 0, 1, 2], Path::new("l.gz"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("l.gz: gzip data"), "{err}");
    }

    #[test]
    fn huge_dimensions_do_not_allocate_or_overflow() {
        let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [u32::MAX, u32::MAX, u32::MAX] {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        assert!(parse_idx_images(&bytes, Path::new("big")).is_err());
    }

    proptest! {
        #[test]
        fn reader_never_panics(
            prefix in prop::sample::select(vec![
                vec![], vec![0, 0, 8, 3], vec![0, 0, 8, 1], GZIP_MAGIC.to_vec(),
            ]),
            rest in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = prefix;
            bytes.extend(rest);
            let _ = parse_idx_images(&bytes, Path::new("fuzz"));
            let _ = parse_idx_labels(&bytes, Path::new("fuzz"));
        }

        #[test]
        fn valid_headers_with_random_dimensions_never_panic(
            dims in prop::collection::vec(0u32..6, 3),
            data in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
            for d in &dims {
                bytes.extend_from_slice(&d.to_be_bytes());
            }
            bytes.extend(&data);
            let expected = (dims[0] * dims[1] * dims[2]) as usize;
            let ok = parse_idx_images(&bytes, Path::new("fuzz")).is_ok();
            prop_assert_eq!(ok, dims[1] > 0 && dims[2] > 0 && data.len() == expected);
        }
    }
}
