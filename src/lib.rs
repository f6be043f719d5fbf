//! # salient
//!
//! Train small convolutional networks from scratch and see, with saliency maps,
//! where they look.
//!
//! The modules read in the order data flows:
//! [`tensor`] → [`tape`] → [`ops`] → [`layers`] → [`model`] → [`train`] /
//! [`saliency`] → [`trust`] → [`images`]. [`data`] loads the images a model learns from, and
//! `cli` is the `salient` command line built on all of them (with `explore`, its page in
//! the browser), behind the `cli` feature, on by default. Files are read
//! within the [`Limits`] on what they may declare and written atomically by
//! [`fsutil`].
//!
//! [`ops`] is the reference: plain loops and one matrix product per image that
//! define what each op computes. The speed machinery (an AVX-512 kernel,
//! Winograd's transforms, fused layers, reused buffers) lives apart, in a
//! private module, and is tested against the reference; a [`Tape`]'s
//! [`Kernels`] say which of the two its ops run. `docs/WALKTHROUGH.md` reads
//! the code in this order.
//!
//! A saliency map is the gradient of one class score with respect to the input
//! image: one [`Tape::backward`] call seeded with a one-hot over the scores.
//!
//! Tensors are `ndarray` arrays; the crate re-exports [`ndarray`], so
//! `salient::ndarray` is always the version salient was built with.
//!
//! Without default features (`default-features = false`) the library leaves
//! out the command line and its dependencies (clap, indicatif, ctrlc,
//! tiny_http), and builds for `wasm32-unknown-unknown`.

#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod error;
#[cfg(feature = "cli")]
pub mod explore;
mod fast;
pub mod fsutil;
pub mod images;
pub mod layers;
pub mod limits;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod ops;
pub mod saliency;
pub mod tape;
pub mod tensor;
pub mod train;
pub mod trust;

/// The array crate every tensor is built on, so that users need not pin its version.
pub use ndarray;

pub use error::{Error, Result};
pub use limits::Limits;
pub use ops::ReluRule;
pub use tape::{Gradients, Kernels, Tape, Var};
pub use tensor::Tensor;
