//! 01 — backprop on one neuron, with every number printed.
//!
//! A neuron `y = relu(w·x + b)` with `x = [1, 2]`, `w = [0.5, −0.25]`, `b = 0.1`:
//! forward `w·x + b = 0.5 − 0.5 + 0.1 = 0.1`, so `y = 0.1`. Backward from
//! `dy = 1`: ReLU passes it (its input is positive), so `∂y/∂w = x = [1, 2]`,
//! `∂y/∂x = w = [0.5, −0.25]` and `∂y/∂b = 1`.
//!
//! Run: `cargo run --release --example 01_backprop`

use ndarray::array;
use salient::{ReluRule, Tape, Tensor};

fn main() -> salient::Result<()> {
    let mut tape = Tape::new();
    let x = tape.input(array![[1.0f32, 2.0]].into_dyn()); // [N = 1, in = 2]
    let w = tape.input(array![[0.5f32, -0.25]].into_dyn()); // [out = 1, in = 2]
    let b = tape.input(array![0.1f32].into_dyn()); // [out = 1]
    let z = tape.dense(x, w, b)?; // z = x·wᵀ + b
    let y = tape.relu(z)?;
    println!("forward:  z = {}, y = {}", tape.value(z)?, tape.value(y)?);

    // Seed the backward pass with dy = 1 and walk the tape in reverse.
    let grads = tape.backward(y, &Tensor::ones(vec![1, 1]), ReluRule::Gradient)?;
    for (name, v) in [("x", x), ("w", w), ("b", b), ("z", z)] {
        println!(
            "dy/d{name} = {}",
            grads.get(v).expect("every value here depends on a leaf")
        );
    }
    println!("tape holds {} values", tape.len());
    Ok(())
}
