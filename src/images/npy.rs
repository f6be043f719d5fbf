//! Attributions and maps as NumPy `.npy` files, to study them further in Python:
//! `numpy.load("maps.npy")` gives a `float32` array of the same shape.
//!
//! Arrays are always written in C order (`'fortran_order': False`), whatever the memory
//! layout of the tensor, so that every reader gets the plain row-major layout.

use std::path::Path;

use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::Limits;
use crate::tensor::Tensor;

/// Writes a tensor of any rank as a little-endian float32 `.npy` file, atomically.
pub fn write_npy(path: &Path, array: &Tensor) -> Result<()> {
    // A transposed view would otherwise be written with 'fortran_order': True.
    let standard = array.as_standard_layout();
    fsutil::write_atomic(path, |w| {
        standard.write_npy(w).map_err(|e| match e {
            ndarray_npy::WriteNpyError::Io(e) => e,
            other => std::io::Error::other(other),
        })
    })
}

/// Writes raw attributions `[N, C, H, W]`, as a saliency method returns them.
pub fn write_attributions(path: &Path, raw: &Tensor) -> Result<()> {
    check_rank(raw, 4, "attributions [N, C, H, W]")?;
    write_npy(path, raw)
}

/// Writes post-processed maps `[N, H, W]`, as [`saliency_maps`](super::saliency_maps)
/// returns them.
pub fn write_maps(path: &Path, maps: &Tensor) -> Result<()> {
    check_rank(maps, 3, "maps [N, H, W]")?;
    write_npy(path, maps)
}

/// Reads a float32 `.npy` file of any rank, in C or Fortran order.
///
/// The shape in the header is checked against the bytes the file holds before
/// the array is allocated (the reader would otherwise allocate what the header
/// claims), and the file against [`Limits::max_dataset_bytes`] times four.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let limit = Limits::current().max_dataset_bytes.saturating_mul(4);
    let bytes = fsutil::read_bounded(path, limit, "a .npy file")?;
    check_declared_size(&bytes, path)?;
    Tensor::read_npy(&bytes[..]).map_err(|e| match e {
        ndarray_npy::ReadNpyError::Io(e) => Error::io(path, e),
        other => Error::format(path, "npy", "a float32 .npy array", other.to_string()),
    })
}

/// Checks that a `.npy` header's length and `'shape'` fit in the file: after
/// the magic `\x93NUMPY` and two version bytes, the header's length is a
/// little-endian `u16` (version 1) or `u32` (versions 2 and 3), then the
/// header, a Python dict holding `'shape': (d0, d1, ...)`, then the data.
fn check_declared_size(bytes: &[u8], path: &Path) -> Result<()> {
    let bad =
        |field: &str, expected: &str, found: String| Error::format(path, field, expected, found);
    let (len_bytes, start): (usize, usize) = match bytes.get(6) {
        Some(1) => (2, 10),
        Some(2 | 3) => (4, 12),
        _ => return Ok(()), // not a .npy file we know: the reader says why
    };
    let header_len = bytes
        .get(8..8 + len_bytes)
        .map(|b| {
            b.iter()
                .rev()
                .fold(0usize, |acc, &x| acc << 8 | usize::from(x))
        })
        .unwrap_or(usize::MAX);
    let Some(header) = bytes.get(start..start.saturating_add(header_len)) else {
        return Err(bad(
            "header length",
            &format!("at most the {} bytes of the file", bytes.len()),
            header_len.to_string(),
        ));
    };
    let header = String::from_utf8_lossy(header);
    let shape = header
        .split_once("'shape':")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(dims, _)| dims);
    let Some(dims) = shape else {
        return Err(bad("header", "a 'shape' tuple", header.into_owned()));
    };
    let values = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .try_fold(1u64, |acc, d| acc.checked_mul(d.parse::<u64>().ok()?));
    let data = (bytes.len() - start - header_len) as u64;
    match values.and_then(|v| v.checked_mul(4)) {
        Some(need) if need <= data => Ok(()),
        _ => Err(bad(
            "shape",
            &format!("a shape whose float32 values fit in the {data} bytes of data"),
            format!("({dims})"),
        )),
    }
}

fn check_rank(array: &Tensor, rank: usize, what: &str) -> Result<()> {
    if array.ndim() != rank {
        return Err(Error::invalid(
            "npy",
            format!("expected {what}, got shape {:?}", array.shape()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    /// Values that are not round in binary, so a lossy path would show.
    fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Array::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32 * 0.1 - 3.3).collect()).unwrap()
    }

    /// The header's text: after the 6-byte magic, 2 version bytes and a 2-byte length.
    fn header(path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        String::from_utf8(bytes[10..10 + len].to_vec()).unwrap()
    }

    #[test]
    fn attributions_and_maps_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let raw = ramp(&[2, 3, 4, 5]);
        let path = dir.path().join("raw.npy");
        write_attributions(&path, &raw).unwrap();
        assert_eq!(read_npy(&path).unwrap(), raw);
        let h = header(&path);
        assert!(h.contains("'descr': '<f4'"), "{h}");
        assert!(h.contains("'fortran_order': False"), "{h}");
        assert!(h.contains("'shape': (2, 3, 4, 5)"), "{h}");

        let maps = ramp(&[2, 4, 5]);
        let path = dir.path().join("maps.npy");
        write_maps(&path, &maps).unwrap();
        assert_eq!(read_npy(&path).unwrap(), maps);
        assert!(header(&path).contains("'shape': (2, 4, 5)"));
    }

    #[test]
    fn transposed_tensor_is_written_in_c_order() {
        let dir = tempfile::tempdir().unwrap();
        let maps = ramp(&[5, 4, 2]).reversed_axes(); // [2, 4, 5], Fortran layout in memory
        let path = dir.path().join("t.npy");
        write_maps(&path, &maps).unwrap();
        assert!(header(&path).contains("'fortran_order': False"));
        assert_eq!(read_npy(&path).unwrap(), maps);
    }

    #[test]
    fn wrong_rank_and_bad_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_maps(&dir.path().join("m.npy"), &ramp(&[2, 3])).unwrap_err();
        assert!(err.to_string().contains("[N, H, W]"), "{err}");
        let err = write_attributions(&dir.path().join("a.npy"), &ramp(&[2, 3, 4])).unwrap_err();
        assert!(err.to_string().contains("[N, C, H, W]"), "{err}");

        let bomb = dir.path().join("bomb.npy");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }";
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend([0; 16]);
        std::fs::write(&bomb, &bytes).unwrap();
        let err = read_npy(&bomb).unwrap_err().to_string();
        assert!(err.contains("shape") && err.contains("16 bytes"), "{err}");

        let bad = dir.path().join("bad.npy");
        std::fs::write(&bad, b"not numpy").unwrap();
        assert!(matches!(read_npy(&bad), Err(Error::Format { .. })));
        assert!(matches!(
            read_npy(&dir.path().join("missing.npy")),
            Err(Error::Io { .. })
        ));
    }
}
