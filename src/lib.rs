//! # salient
//!
//! Train small convolutional networks from scratch and see, with saliency maps,
//! where they look.
//!
//! The crate reads top to bottom in the order data flows:
//! `tensor` -> `tape` -> `ops` -> `layers` -> `model` -> `train` / `saliency` -> `images`.

pub mod error;
pub mod fsutil;
pub mod images;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::Tensor;
