//! 03 — the tutorial's network, layer by layer, as Keras's `model.summary()` shows it.
//!
//! Each layer turns one per-sample shape into the next. Shapes are printed
//! channels first, `(None, C, H, W)`, where Keras would print `(None, H, W, C)`:
//! this crate stores images as NCHW, like PyTorch. Parameters:
//!
//! - Conv2D: `filters · (in_channels · kh · kw) + filters` (kernel and bias):
//!   `32 · (1 · 3 · 3) + 32 = 320`, then `64 · (32 · 3 · 3) + 64 = 18,496`;
//! - Dense: `units · inputs + units`: `256 · 1600 + 256 = 409,856`, then
//!   `10 · 256 + 10 = 2,570`;
//! - pooling, dropout and flatten have none.
//!
//! Then one batch goes through the model: a softmax head gives rows that sum
//! to 1, and the same pass with the head made linear gives the class scores
//! that saliency differentiates. The black image scores exactly 0 for every
//! class: the biases start at zero, and zeros stay zeros through the kernels,
//! ReLU and pooling.
//!
//! Run: `cargo run --release --example 03_network`

use salient::layers::LayerSpec;
use salient::model::{Head, Sequential};
use salient::Tensor;

fn main() -> salient::Result<()> {
    let model = Sequential::tutorial([1, 28, 28], 10, 0)?;
    summary(&model);

    // Two grey images: all black, and all mid-grey.
    let mut batch = Tensor::zeros(vec![2, 1, 28, 28]);
    batch.index_axis_mut(ndarray::Axis(0), 1).fill(0.5);
    let probs = model.predict(&batch, 2, Head::AsBuilt)?;
    let scores = model.predict(&batch, 2, Head::Linear)?;
    for i in 0..2 {
        let row = probs.index_axis(ndarray::Axis(0), i);
        println!(
            "\nimage {i}: probabilities sum to {:.6}; untrained, so all near 0.1: {:.3}",
            row.sum(),
            row
        );
        println!(
            "image {i}: linear class scores (the softmax's input): {:.3}",
            scores.index_axis(ndarray::Axis(0), i)
        );
    }

    let cifar = Sequential::tutorial([3, 32, 32], 10, 0)?;
    println!(
        "\nThe same network for CIFAR-10's 3x32x32 images has {} parameters.",
        thousands(cifar.num_params())
    );
    Ok(())
}

/// Prints the model as Keras 2's `model.summary()` does.
fn summary(model: &Sequential) {
    let rule = |c: char| println!("{}", c.to_string().repeat(69));
    println!("Model: \"sequential\"");
    rule('_');
    println!("{:<33}{:<26}Param #", "Layer (type)", "Output Shape");
    rule('=');
    let layers = model.layers();
    for (i, layer) in layers.iter().enumerate() {
        let kind = match layer.spec {
            LayerSpec::Conv2D { .. } => "Conv2D",
            LayerSpec::MaxPooling2D { .. } => "MaxPooling2D",
            LayerSpec::Dropout { .. } => "Dropout",
            LayerSpec::Flatten => "Flatten",
            LayerSpec::Dense { .. } => "Dense",
        };
        let shape: Vec<String> = layer.output_shape.iter().map(|d| d.to_string()).collect();
        let params = layer.params.as_ref().map_or(0, |(w, b)| w.len() + b.len());
        println!(
            "{:<33}{:<26}{}",
            format!("{} ({kind})", layer.name),
            format!("(None, {})", shape.join(", ")),
            thousands(params)
        );
        if i + 1 < layers.len() {
            rule('_');
        }
    }
    rule('=');
    println!("Total params: {}", thousands(model.num_params()));
    println!("Trainable params: {}", thousands(model.num_params()));
    println!("Non-trainable params: 0");
    rule('_');
}

/// `431242` as `431,242`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
