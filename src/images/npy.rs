//! Attributions and maps as NumPy `.npy` files, to study them further in Python:
//! `numpy.load("maps.npy")` gives a `float32` array of the same shape.
//!
//! Arrays are always written in C order (`'fortran_order': False`), whatever the memory
//! layout of the tensor, so that every reader gets the plain row-major layout.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};
use crate::fsutil;
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
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Tensor::read_npy(BufReader::new(file)).map_err(|e| match e {
        ndarray_npy::ReadNpyError::Io(e) => Error::io(path, e),
        other => Error::format(path, "npy", "a float32 .npy array", other.to_string()),
    })
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

        let bad = dir.path().join("bad.npy");
        std::fs::write(&bad, b"not numpy").unwrap();
        assert!(matches!(read_npy(&bad), Err(Error::Format { .. })));
        assert!(matches!(
            read_npy(&dir.path().join("missing.npy")),
            Err(Error::Io { .. })
        ));
    }
}
