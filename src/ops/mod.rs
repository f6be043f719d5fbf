//! The differentiable ops: the reference that defines what each computes.
//!
//! Each file holds one family, its forward and its backward side by side, and
//! adds its methods to [`Tape`](crate::Tape). The reference implementations
//! here are plain loops and one matrix product per image, written to be read;
//! a tape with [`Kernels::Reference`](crate::tape::Kernels::Reference) runs
//! them. The fast paths (`crate::fast`) compute the same and are tested
//! against them, on random shapes and on real images.
//!
//! | op | file | forward | backward (from `dy = ∂L/∂y`) |
//! | --- | --- | --- | --- |
//! | `conv2d` | `conv.rs` | `y = W·im2col(x) + b` | `dx = col2im(Wᵀ·dy)`, `dW = Σ dy·colsᵀ`, `db = Σ dy` |
//! | `conv2d_with` | `conv.rs` | the same with any stride, dilation, padding and groups | the same loops, each tap at its dilated place |
//! | `conv2d_relu` | `conv.rs` | `y = max(W·im2col(x) + b, 0)` | the ReLU rule, then as `conv2d` |
//! | `max_pool2d` | `pool.rs` | `y = max over window` | `dy` to the window's first maximum in row-major order |
//! | `avg_pool2d`, `global_avg_pool2d` | `pool.rs` | `y = mean over window` (padding counted or not) | `dy / count` to every input of the window |
//! | `relu` | `activation.rs` | `y = max(x, 0)` | `1[x > 0]·dy`, or a [`ReluRule`] |
//! | `identity` | `activation.rs` | `y = x` | `dx = dy` |
//! | `softmax` | `activation.rs` | `y = eˣ / Σ eˣ` | `dx = y ⊙ (dy − Σ dy·y)` |
//! | `log_softmax` | `activation.rs` | `y = x − log Σ eˣ` | `dx = dy − softmax(x)·Σ dy` |
//! | `dense` | `dense.rs` | `y = x·Wᵀ + b` | `dx = dy·W`, `dW = dyᵀ·x`, `db = Σₙ dy` |
//! | `dropout` | `dropout.rs` | `y = x ⊙ m` | `dx = dy ⊙ m` |
//! | `reshape`, `flatten` | `reshape.rs` | same values, new shape | `dx = dy` reshaped back |
//! | `softmax_cross_entropy` | `loss.rs` | `L = mean(lse − x·t)` | `dx = (p − t) / N` |
//! | `add`, `sub`, `mul`, `div` | `elementwise.rs` | `a ∘ b`, broadcasting | each side's partial derivative, summed over its broadcast axes |
//! | `neg`, `exp`, `log`, `sqrt`, `powf`, `tanh`, `sigmoid` | `elementwise.rs` | `f(x)` | `f′(x)·dy` |
//! | `sum`, `mean`, `max` | `reduce.rs` | over chosen axes | spread back over each group; `max` to its first maximum |
//! | `batch_norm`, `batch_norm_train` | `norm.rs` | `γ·(x − μ)/√(σ² + ε) + β` per channel | see `norm.rs` (training: through the batch statistics) |
//! | `matmul` | `matmul.rs` | `Y = A·B` per batch element | `dA = dY·Bᵀ`, `dB = Aᵀ·dY` |
//! | `permute`, `transpose`, `concat`, `slice`, `pad` | `reshape.rs` | values moved | the gradient moved back |
//!
//! A few more ops live with the speed machinery, because they are part of it
//! (`fast/fused.rs`): `conv2d_max_pool2d`, a convolution, its ReLU and a 2x2
//! max pooling in one pass, equal to the three ops above one after another;
//! and, on a tape that records nothing (the class scores alone),
//! `conv2d_inference` (a convolution with its batch normalisation, residual
//! sum and ReLU) and `max_pool2d_inference` (a max pooling with its −∞
//! border), the bits of the ops they stand for.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod reshape;

pub use activation::{log_softmax_rows, relu, softmax_rows, ReluRule};
pub use conv::{
    col2im, conv2d_direct, conv2d_direct_backward, conv2d_forward, conv2d_general_reference,
    conv2d_general_reference_backward, conv2d_reference, conv2d_reference_backward, im2col,
    Conv2dOptions, Conv2dSpec, ConvGeometry, Padding,
};
pub use dense::dense_forward;
pub use dropout::dropout_mask;
pub use elementwise::{binary_forward, broadcast_shape, sum_to_shape, BinaryOp, UnaryOp};
pub use loss::{one_hot, softmax_cross_entropy_forward};
pub use matmul::matmul_forward;
pub use norm::{batch_norm_forward, batch_statistics};
pub use pool::{
    avg_pool2d_reference, avg_pool2d_reference_backward, beats, max_pool2d_reference,
    max_pool2d_reference_backward, AvgPool2dSpec, MaxPool2dSpec,
};
pub use reduce::{reduce_backward, reduce_forward, Reduce};
pub use reshape::{concat_forward, pad_forward, permute_forward, reshape_forward, slice_forward};
