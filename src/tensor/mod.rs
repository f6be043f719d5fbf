//! Tensors: `f32` arrays on `ndarray`, images in NCHW layout (batch, channels,
//! height, width).
//!
//! A [`Pool`] of buffers lets a training step reuse the last step's memory;
//! it lives with the rest of the speed machinery in `crate::fast`.

pub use crate::fast::Pool;

use crate::error::{Error, Result};

/// The one tensor type: a dynamic-rank `f32` array. Images are `[N, C, H, W]`.
pub type Tensor = ndarray::ArrayD<f32>;

/// Returns the tensor's data as a contiguous row-major slice.
///
/// Every tensor made by this crate is in standard layout; a tensor from
/// elsewhere (a transposed view turned owned, say) is refused with a clear error
/// rather than silently copied.
pub fn as_slice<'t>(t: &'t Tensor, op: &'static str) -> Result<&'t [f32]> {
    t.as_slice().ok_or_else(|| {
        Error::invalid(
            op,
            "tensor is not contiguous in row-major order (call .as_standard_layout())",
        )
    })
}

/// The data of a tensor the crate made (values on a tape, gradients, pooled
/// buffers), which are always contiguous.
///
/// # Panics
/// If `t` is not contiguous: for tensors from outside use [`as_slice`].
pub(crate) fn slice(t: &Tensor) -> &[f32] {
    t.as_slice()
        .expect("tensors made by the crate are contiguous")
}

/// Mutable [`slice`](fn@slice).
pub(crate) fn slice_mut(t: &mut Tensor) -> &mut [f32] {
    t.as_slice_mut()
        .expect("tensors made by the crate are contiguous")
}

/// Checks that `t` has rank `rank`, naming the op and the operand.
pub fn expect_rank(t: &Tensor, rank: usize, op: &'static str, name: &'static str) -> Result<()> {
    if t.ndim() == rank {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!(
                "{name} must have rank {rank}, but has shape {:?}",
                t.shape()
            ),
        ))
    }
}

/// Values per parallel task in element-wise loops: large enough that `rayon`'s
/// scheduling is noise, small enough to share the work between cores.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `out[i] = f(a[i])` over slices of equal length, in parallel.
pub fn map_into(out: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    use rayon::prelude::*;
    assert_eq!(out.len(), a.len());
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(a.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a)));
}

/// `out[i] = f(a[i], b[i])` over slices of equal length, in parallel.
pub fn zip_map_into(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    use rayon::prelude::*;
    assert!(out.len() == a.len() && a.len() == b.len());
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(a.par_chunks(ELEMENTWISE_CHUNK))
        .zip(b.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((o, a), b)| {
            o.iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, &a), &b)| *o = f(a, b))
        });
}

/// Builds the shape-mismatch error every op uses.
pub(crate) fn shape_error(
    op: &'static str,
    what: impl Into<String>,
    lhs_name: &'static str,
    lhs: &[usize],
    rhs_name: &'static str,
    rhs: &[usize],
) -> Error {
    Error::Shape {
        op,
        what: what.into(),
        lhs_name,
        lhs: lhs.to_vec(),
        rhs_name,
        rhs: rhs.to_vec(),
    }
}
