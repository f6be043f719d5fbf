//! The speed machinery: everything that makes the ops of [`crate::ops`] fast,
//! and nothing that defines what they compute.
//!
//! The reference ops in [`crate::ops`] say what each op computes; the code here
//! computes the same, faster, and is tested against them (`tests/reference.rs`,
//! on random shapes and on real images). The ops reach it through a few
//! functions: [`conv::forward`] and [`conv::backward`] for convolutions (with a
//! ReLU and a 2x2 max pooling folded in), [`pool`] for pooling on its own,
//! [`norm`] for batch normalisation at inference, [`pad`] for borders around
//! image planes, and [`dense`] for dense layers. `fused.rs` adds ops of its
//! own to the tape: a convolution with its ReLU and 2x2 pooling, and, for the
//! class scores alone, a convolution with its batch normalisation, residual
//! sum and ReLU and a max pooling with its border, each equal to the ops it
//! stands for.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `kernel.rs` | the AVX-512 matrix-multiply kernel, transposes |
//! | `gemm.rs` | the portable product, on `matrixmultiply` |
//! | `conv.rs` | convolution as products over shifted rows or im2col columns |
//! | `dense.rs` | dense layers' products on the kernel, in parallel over rows |
//! | `winograd.rs`, `winograd_columns.rs` | Winograd's minimal filtering for 3x3 layers |
//! | `pool.rs` | max pooling: 2x2 in vector code, with winners kept; any window in two passes |
//! | `norm.rs` | batch normalisation at inference, on every thread |
//! | `pad.rs` | a border around image planes, and its backward, on every thread |
//! | `relu.rs` | the ReLU rules in vector code |
//! | `fused.rs` | convolution + ReLU + 2x2 max pooling as one op; for the scores alone, convolution + batch norm + residual + ReLU, and a padded max pooling |
//! | `workspace.rs` | the [`Pool`] of buffers a training step reuses |
//!
//! **The portable path.** Everything here also runs without AVX-512. To test
//! that path on a machine that has AVX-512, set `SALIENT_PORTABLE=1`: the
//! vector code is then never called ([`kernel::available`] answers false).

pub(crate) mod conv;
pub(crate) mod dense;
mod fused;
mod gemm;
pub(crate) mod kernel;
pub(crate) mod norm;
pub(crate) mod pad;
pub(crate) mod pool;
pub(crate) mod relu;
mod winograd;
mod winograd_columns;
mod workspace;

pub use workspace::Pool;
