//! Tensors: `f32` arrays on `ndarray`, images in NCHW layout (batch, channels,
//! height, width).

/// The one tensor type: a dynamic-rank `f32` array. Images are `[N, C, H, W]`.
pub type Tensor = ndarray::ArrayD<f32>;
