//! Keras-style progress: a live bar while an epoch runs (on a terminal), then
//! one line per epoch.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{EpochStats, Observer};

/// Prints what Keras prints: a progress bar during each epoch (only when
/// standard error is a terminal) and `Epoch 3/25 - 14s - loss: ...` after it.
#[derive(Default)]
pub struct KerasProgress {
    bar: Option<ProgressBar>,
    batches: usize,
}

impl KerasProgress {
    /// A new reporter.
    pub fn new() -> Self {
        Self::default()
    }

    fn bar(&mut self, epoch: usize) -> &ProgressBar {
        let batches = self.batches as u64;
        self.bar.get_or_insert_with(|| {
            // indicatif draws nothing when stderr is not a terminal.
            let bar = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} {pos:>4}/{len} [{bar:30}] {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("Epoch {epoch}"));
            bar
        })
    }
}

impl Observer for KerasProgress {
    fn on_train_begin(&mut self, train: usize, validation: usize, batches_per_epoch: usize) {
        self.batches = batches_per_epoch;
        println!("Train on {train} samples, validate on {validation} samples");
    }

    fn on_batch(&mut self, epoch: usize, batch: usize, loss: f32, accuracy: f32) {
        let bar = self.bar(epoch);
        bar.set_position(batch as u64);
        bar.set_message(format!("- loss: {loss:.4} - accuracy: {accuracy:.4}"));
    }

    fn on_epoch(&mut self, stats: &EpochStats) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!("{stats}");
    }
}
