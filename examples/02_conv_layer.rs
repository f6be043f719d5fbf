//! 02 — one convolution layer, forward and backward, on a 4x4 image.
//!
//! The image is dark on the left and bright on the right; the 2x2 kernel
//! `[[-1, 1], [-1, 1]]` answers "is it brighter on the right?". A `valid`
//! convolution slides it over the 3x3 positions where it fits:
//!
//! ```text
//! x = 0 0 1 1      w = -1 1      z = w ⋆ x + b = 0 2 0      y = relu(z) = 0 2 0
//!     0 0 1 1          -1 1                      0 2 0                    0 2 0
//!     0 0 1 1                                    0 2 0                    0 2 0
//!     0 0 1 1      b = 0
//! ```
//!
//! Backward from `L = Σ y` (a seed of ones): ReLU lets the gradient through
//! only where `z > 0`, the middle column (at `z = 0` its subgradient is 0). So
//!
//! - `∂L/∂b = 3`, one per position that passed;
//! - `∂L/∂w` is the sum of the three image patches under those positions, each
//!   `[[0, 1], [0, 1]]` (columns 1 and 2 of `x`), hence `[[0, 3], [0, 3]]`;
//! - `∂L/∂x` spreads `w` back from each position that passed: columns 1 and 2
//!   of `x` get `-1` and `+1` per position covering them, once in the top and
//!   bottom rows and twice in the middle ones.
//!
//! Run: `cargo run --release --example 02_conv_layer`

use ndarray::array;
use salient::ops::{Conv2dSpec, Padding};
use salient::{ReluRule, Tape, Tensor};

fn main() -> salient::Result<()> {
    let mut tape = Tape::new();
    // Layouts are NCHW for images and [out, in, kh, kw] for kernels, as PyTorch.
    let image = array![
        [0.0f32, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
    ];
    let x = tape.input(
        image
            .into_shape_with_order((1, 1, 4, 4))
            .expect("16 values make a 1x1x4x4 image")
            .into_dyn(),
    );
    let w = tape.input(array![[[[-1.0f32, 1.0], [-1.0, 1.0]]]].into_dyn());
    let b = tape.input(array![0.0f32].into_dyn());
    let spec = Conv2dSpec {
        stride: 1,
        padding: Padding::Valid,
    };
    let z = tape.conv2d(x, w, b, spec)?;
    let y = tape.relu(z)?;

    println!("x, the image [1, 1, 4, 4]:\n{}\n", tape.value(x)?);
    println!("w, the kernel [1, 1, 2, 2]:\n{}\n", tape.value(w)?);
    println!(
        "y = relu(conv2d(x, w) + b) [1, 1, 3, 3]:\n{}\n",
        tape.value(y)?
    );

    // L = Σ y: seed the backward pass with ∂L/∂y = 1 everywhere.
    let seed = Tensor::ones(tape.value(y)?.raw_dim());
    let grads = tape.backward(y, &seed, ReluRule::Gradient)?;
    let grad = |v| grads.get(v).expect("x, w and b are inputs of the tape");
    println!("∂L/∂z (what ReLU let through):\n{}\n", grad(z));
    println!("∂L/∂w:\n{}\n", grad(w));
    println!("∂L/∂b: {}\n", grad(b));
    println!("∂L/∂x (the saliency of each pixel for L):\n{}", grad(x));
    Ok(())
}
