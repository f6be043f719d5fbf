//! The training loop, as Keras's `model.fit(x, y, batch_size, epochs,
//! validation_split)` runs it.
//!
//! - The validation set is the **last** `validation_split` of the data as given,
//!   taken before any shuffling (Keras). Data read from class folders arrives
//!   sorted by class, which would make the validation set the last classes; so
//!   when the labels are sorted the data is shuffled once, seeded, before the split.
//! - The training part is reshuffled every epoch; each batch is one Adam step on
//!   the mean softmax cross-entropy, dropout on.
//! - The loss and accuracy reported for an epoch are running means over its
//!   batches, weighted by batch size; validation figures are computed after the
//!   epoch, dropout off.
//! - One seed fixes initialisation (given to the model's builder), shuffling and
//!   dropout; with the same thread count, a run is bit-for-bit repeatable (every
//!   parallel reduction in the ops sums in a fixed order).

use std::time::Instant;

use ndarray::{Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::{mix, Mode};
use crate::model::{argmax, loss_and_accuracy, Classifier, Head, Sequential};
use crate::ops::one_hot;
use crate::tape::{Kernels, Tape, Var};
use crate::tensor::{Pool, Tensor};

use super::Adam;

/// Settings of [`fit`], with Keras's defaults and the tutorial's batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOptions {
    /// Passes over the training data (25).
    pub epochs: usize,
    /// Images per Adam step (250).
    pub batch_size: usize,
    /// Share of the data held out for validation, from the end (0.2).
    pub validation_split: f64,
    /// Fixes shuffling and dropout (initialisation is fixed by the model's seed).
    pub seed: u64,
    /// Adam's learning rate (1e-3).
    pub learning_rate: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 25,
            batch_size: 250,
            validation_split: 0.2,
            seed: 0,
            learning_rate: 1e-3,
        }
    }
}

/// What one epoch achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Total epochs of the run.
    pub epochs: usize,
    /// Wall-clock seconds of training and validation.
    pub seconds: f64,
    /// Running mean training loss over the epoch.
    pub loss: f32,
    /// Running mean training accuracy over the epoch.
    pub accuracy: f32,
    /// Validation loss, if a validation set was held out.
    pub val_loss: Option<f32>,
    /// Validation accuracy, if a validation set was held out.
    pub val_accuracy: Option<f32>,
}

impl std::fmt::Display for EpochStats {
    /// Keras's epoch line: `Epoch 3/25 - 14s - loss: 0.0512 - accuracy: 0.9841 - ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Epoch {}/{} - {:.0}s - loss: {:.4} - accuracy: {:.4}",
            self.epoch, self.epochs, self.seconds, self.loss, self.accuracy
        )?;
        if let (Some(l), Some(a)) = (self.val_loss, self.val_accuracy) {
            write!(f, " - val_loss: {l:.4} - val_accuracy: {a:.4}")?;
        }
        Ok(())
    }
}

/// Hears about training as it goes (progress bars, logs). Every method has an
/// empty default.
pub trait Observer {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _train: usize, _validation: usize, _batches_per_epoch: usize) {}
    /// After each batch, with the epoch's running means so far.
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _loss: f32, _accuracy: f32) {}
    /// After each epoch.
    fn on_epoch(&mut self, _stats: &EpochStats) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// The indices of the training and validation parts, as Keras splits them:
/// the last `fraction` of the data (after one seeded shuffle if the labels are
/// sorted by class) is for validation.
pub fn split_validation(
    data: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::invalid(
            "fit",
            format!("validation_split must be in [0, 1), got {fraction}"),
        ));
    }
    let n = data.len();
    let mut order: Vec<usize> = (0..n).collect();
    let sorted = data.labels.windows(2).all(|w| w[0] <= w[1]);
    let several_classes = data.labels.first() != data.labels.last();
    if sorted && several_classes {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, 0x5b1d)));
    }
    // Keras: split_at = int(n · (1 − validation_split)).
    let split_at = (n as f64 * (1.0 - fraction)) as usize;
    let validation = order.split_off(split_at);
    if order.is_empty() {
        return Err(Error::invalid(
            "fit",
            format!("no training data left after holding out {fraction} of {n} images"),
        ));
    }
    Ok((order, validation))
}

fn batch_shape(data: &Dataset, n: usize) -> Vec<usize> {
    let [c, h, w] = data.shape();
    vec![n, c, h, w]
}

/// One optimisation step at a time: the optimiser's state and the buffers that
/// steps reuse.
#[derive(Debug, Default)]
pub struct TrainStep {
    /// The optimiser.
    pub adam: Adam,
    /// Buffers reused from step to step.
    pub pool: Pool,
}

impl TrainStep {
    /// Adam with the given learning rate and an empty pool.
    pub fn new(learning_rate: f32) -> Self {
        TrainStep {
            adam: Adam::new(learning_rate),
            pool: Pool::new(),
        }
    }

    /// One Adam step on the mean softmax cross-entropy of a batch `x` (taken
    /// from [`TrainStep::pool`] or anywhere) with dropout on. Returns the batch's
    /// loss and the number of correct predictions. A non-finite loss is
    /// returned, not refused, and the weights are then left unchanged.
    pub fn step(
        &mut self,
        model: &mut Sequential,
        x: Tensor,
        labels: &[usize],
        dropout_seed: u64,
    ) -> Result<(f32, usize)> {
        let targets = one_hot(labels, model.num_classes())?;
        // Forward and backward on a tape that borrows the weights.
        let pool = std::mem::take(&mut self.pool);
        let mut tape = Tape::with_pool(pool).with_kernels(Kernels::Winograd);
        let input = tape.constant(x);
        let pass = model.forward(&mut tape, input, Mode::Train { dropout_seed }, Head::Linear)?;
        let logits = pass.last();
        let loss = tape.softmax_cross_entropy(logits, targets)?;
        let loss_value = tape.value(loss)?.sum();
        let correct = tape
            .value(logits)?
            .axis_iter(Axis(0))
            .zip(labels)
            .filter(|(row, &l)| argmax(row.iter().copied()) == l)
            .count();
        if !loss_value.is_finite() {
            self.pool = tape.into_pool();
            return Ok((loss_value, correct));
        }
        // Only the parameters' gradients are kept.
        let params: Vec<Var> = pass
            .params
            .iter()
            .flatten()
            .flat_map(|&(w, b)| [w, b])
            .collect();
        let mut grads = tape.backward_scalar_to(loss, &params)?;
        let param_grads: Vec<Tensor> = params
            .iter()
            .map(|&v| {
                grads
                    .take(v)
                    .ok_or_else(|| Error::invalid("fit", "a parameter received no gradient"))
            })
            .collect::<Result<_>>()?;
        tape.recycle(grads);
        self.pool = tape.into_pool();

        // The tape is gone, so the weights can change.
        let mut params: Vec<&mut Tensor> = model.params_mut().collect();
        self.adam.step(&mut params, &param_grads)?;
        param_grads.into_iter().for_each(|g| self.pool.give(g));
        Ok((loss_value, correct))
    }
}

/// Mean softmax cross-entropy and accuracy of `model` on a data set, with
/// dropout off (Keras's `evaluate`), converting `batch_size` images at a time.
pub fn evaluate(model: &dyn Classifier, data: &Dataset, batch_size: usize) -> Result<(f32, f32)> {
    if batch_size == 0 {
        return Err(Error::invalid(
            "evaluate",
            "the batch size must be at least 1",
        ));
    }
    let mut logits = Tensor::zeros(IxDyn(&[data.len(), model.num_classes()]));
    let mut pool = Pool::new();
    let all: Vec<usize> = (0..data.len()).collect();
    for (b, indices) in all.chunks(batch_size).enumerate() {
        let mut x = pool.to_overwrite(&batch_shape(data, indices.len()));
        data.batch_into(indices, &mut x)?;
        let rows = model.predict_scores(&x, batch_size, &mut pool)?;
        pool.give(x);
        let start = b * batch_size;
        logits
            .slice_axis_mut(Axis(0), ndarray::Slice::from(start..start + indices.len()))
            .assign(&rows);
    }
    loss_and_accuracy(&logits, &data.labels)
}

/// Trains `model` on `data` with Adam, softmax cross-entropy and the options'
/// settings, telling `observer` how it goes. Returns each epoch's figures.
pub fn fit(
    model: &mut Sequential,
    data: &Dataset,
    opts: &FitOptions,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochStats>> {
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(Error::invalid(
            "fit",
            "batch size and epochs must be at least 1",
        ));
    }
    if data.shape() != model.input_shape() {
        return Err(Error::invalid(
            "fit",
            format!(
                "the model takes images of {:?} (channels, height, width) but the data holds {:?}",
                model.input_shape(),
                data.shape()
            ),
        ));
    }
    if !(opts.learning_rate.is_finite() && opts.learning_rate > 0.0) {
        return Err(Error::invalid(
            "fit",
            format!(
                "the learning rate must be a positive number, got {}",
                opts.learning_rate
            ),
        ));
    }
    if data.num_classes() > model.num_classes() {
        return Err(Error::invalid(
            "fit",
            format!(
                "the data has {} classes but the model scores {}",
                data.num_classes(),
                model.num_classes()
            ),
        ));
    }
    let (mut train, validation) = split_validation(data, opts.validation_split, opts.seed)?;
    let validation = data.select(&validation)?;
    let batches = train.len().div_ceil(opts.batch_size);
    observer.on_train_begin(train.len(), validation.len(), batches);

    let mut rng = ChaCha8Rng::seed_from_u64(mix(opts.seed, 0x5eed_5ff1e));
    let mut step = TrainStep::new(opts.learning_rate);
    let mut history = Vec::with_capacity(opts.epochs);
    for epoch in 1..=opts.epochs {
        let start = Instant::now();
        train.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, indices) in train.chunks(opts.batch_size).enumerate() {
            let labels: Vec<usize> = indices.iter().map(|&i| data.labels[i]).collect();
            let mut x = step.pool.to_overwrite(&batch_shape(data, indices.len()));
            data.batch_into(indices, &mut x)?;
            let dropout_seed = mix(mix(opts.seed, epoch as u64), b as u64);
            let (loss_value, batch_correct) = step.step(model, x, &labels, dropout_seed)?;
            if !loss_value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    loss: loss_value,
                });
            }
            correct += batch_correct;
            loss_sum += f64::from(loss_value) * indices.len() as f64;
            seen += indices.len();
            observer.on_batch(
                epoch,
                b + 1,
                (loss_sum / seen as f64) as f32,
                correct as f32 / seen as f32,
            );
        }
        let (val_loss, val_accuracy) = if validation.is_empty() {
            (None, None)
        } else {
            let (l, a) = evaluate(model, &validation, opts.batch_size)?;
            (Some(l), Some(a))
        };
        let stats = EpochStats {
            epoch,
            epochs: opts.epochs,
            seconds: start.elapsed().as_secs_f64(),
            loss: (loss_sum / seen as f64) as f32,
            accuracy: correct as f32 / seen as f32,
            val_loss,
            val_accuracy,
        };
        observer.on_epoch(&stats);
        history.push(stats);
    }
    Ok(history)
}
