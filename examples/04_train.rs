//! 04 — training the tutorial's network, briefly, on the bundled MNIST sample.
//!
//! `fixtures/mnist-sample` holds 4,000 training and 1,000 test digits. `fit`
//! does what Keras's `model.fit(x, y, batch_size=250, epochs, validation_split=0.2)`
//! does: the last 20% (800 digits) are held out for validation, the other
//! 3,200 are reshuffled every epoch and cut into batches of 250, and each
//! batch is one Adam step on the mean softmax cross-entropy, dropout on. Every
//! epoch prints Keras's line; at the end, the tutorial's test line.
//!
//! Three epochs take a few seconds and reach about 88% on the test digits;
//! `salient demo` trains the tutorial's full 25 epochs (about 97%). The
//! checkpoint goes to `out/04_train/mnist-sample.safetensors`, ready for the
//! command line (`salient saliency --model ...`).
//!
//! Run: `cargo run --release --example 04_train`

use std::path::Path;

use salient::data::{self, DatasetKind, Split};
use salient::model::{self, Sequential};
use salient::train::{fit, FitOptions, KerasProgress};

fn main() -> salient::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
    let train = data::load(DatasetKind::Mnist, &dir, Split::Train)?;
    let test = data::load(DatasetKind::Mnist, &dir, Split::Test)?;
    println!(
        "{} training and {} test digits of {:?}, labels {:?} per class",
        train.len(),
        test.len(),
        train.shape(),
        train.label_counts()
    );

    let mut model = Sequential::tutorial(train.shape(), train.num_classes(), 0)?;
    let options = FitOptions {
        epochs: 3,
        ..FitOptions::default() // batch 250, validation split 0.2, Adam lr 1e-3, seed 0
    };
    fit(&mut model, &train, &options, &mut KerasProgress::new())?;

    let (loss, accuracy) = salient::train::evaluate(&model, &test, 250)?;
    println!("Test loss: {loss:.4} / Test accuracy: {accuracy:.4}");

    let out = Path::new("out/04_train");
    std::fs::create_dir_all(out).map_err(|e| salient::Error::io(out, e))?;
    let checkpoint = out.join("mnist-sample.safetensors");
    model::save(&model, &checkpoint)?;
    println!("Saved {}", checkpoint.display());
    println!(
        "Next: cargo run --release -- saliency --model {} --dataset mnist --data fixtures/mnist-sample --method guided --out out/guided",
        checkpoint.display()
    );
    Ok(())
}
