//! Training: the Adam optimiser and a Keras-like `fit` loop.

mod adam;
mod fit;
#[cfg(feature = "cli")]
mod progress;

pub use adam::Adam;
pub use fit::{evaluate, fit, split_validation, EpochStats, FitOptions, Observer, TrainStep};
#[cfg(feature = "cli")]
pub use progress::KerasProgress;
