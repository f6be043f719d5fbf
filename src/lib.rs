//! # salient
//!
//! Train small convolutional networks from scratch and see, with saliency maps,
//! where they look.
//!
//! The modules read in the order data flows:
//! [`tensor`] → [`tape`] → [`ops`] → [`layers`] → [`model`] → [`train`] /
//! [`saliency`] → [`images`]. [`data`] loads the images a model learns from, and
//! [`cli`] is the `salient` command line built on all of them.
//!
//! A saliency map is the gradient of one class score with respect to the input
//! image: one [`Tape::backward`] call seeded with a one-hot over the scores.

pub mod cli;
pub mod data;
pub mod error;
mod fast;
pub mod fsutil;
pub mod images;
pub mod layers;
pub mod model;
pub mod ops;
pub mod saliency;
pub mod tape;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use ops::ReluRule;
pub use tape::{Gradients, Kernels, Tape, Var};
pub use tensor::Tensor;
