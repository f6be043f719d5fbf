//! The differentiable ops. Each file holds one family, its forward and its
//! backward side by side, and adds its methods to [`Tape`](crate::Tape).
//!
//! | op | file | forward | backward (from `dy = ∂L/∂y`) | saved by forward |
//! | --- | --- | --- | --- | --- |
//! | `dense` | `dense.rs` | `y = x·Wᵀ + b` | `dx = dy·W`, `dW = dyᵀ·x`, `db = Σₙ dy` | — |
//! | `conv2d` | `conv.rs` (3x3: `winograd.rs` for many channels, `winograd_columns.rs` for 1 to 4 in) | `y = W·im2col(x) + b` | `dx = col2im(Wᵀ·dy)`, `dW = Σ dy·colsᵀ`, `db = Σ dy` | — (rebuilds the columns, or reads `x` shifted) |
//! | `conv2d_relu` | `conv.rs` | `y = max(W·im2col(x) + b, 0)` | the ReLU rule, then as `conv2d` | — (uses `y`) |
//! | `max_pool2d` | `pool.rs` | `y = max over window` | `dy` to the window's first input equal to `y` | — (uses `x` and `y`) |
//! | `conv2d_max_pool2d` | `conv.rs`, `pool.rs` | `conv2d` (or `conv2d_relu`), then a 2x2 `max_pool2d` of each image's output while it is in cache | as the two ops | each window's winner (a byte) |
//! | `dropout` | `dropout.rs` | `y = x ⊙ m` | `dx = dy ⊙ m` | mask `m` |
//! | `relu` | `activation.rs` | `y = max(x, 0)` | `1[x > 0]·dy`, or a [`ReluRule`] | — (uses `y`) |
//! | `identity` | `activation.rs` | `y = x` | `dx = dy` | — |
//! | `softmax` | `activation.rs` | `y = eˣ / Σ eˣ` | `dx = y ⊙ (dy − Σ dy·y)` | — (uses `y`) |
//! | `reshape`, `flatten` | `reshape.rs` | same values, new shape | `dx = dy` reshaped back | — |
//! | `softmax_cross_entropy` | `loss.rs` | `L = mean(lse − x·t)` | `dx = (p − t) / N` | `p`, `t` |

mod activation;
mod conv;
mod dense;
mod dropout;
mod loss;
mod pool;
mod reshape;
mod winograd;
mod winograd_columns;

pub use activation::{relu, softmax_rows, ReluRule};
pub use conv::{
    col2im, conv2d_forward, conv2d_relu_forward, im2col, Conv2dSpec, ConvGeometry, Padding,
};
pub use dense::dense_forward;
pub use dropout::dropout_mask;
pub use loss::{one_hot, softmax_cross_entropy_forward};
pub use pool::{max_pool2d_forward, MaxPool2dSpec};
pub use reshape::reshape_forward;
