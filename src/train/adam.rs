//! Adam, exactly as Keras 3 writes it (`keras/src/optimizers/adam.py`).
//!
//! For step `t = 1, 2, ...` and gradient `g`:
//!
//! ```text
//! m ← m + (1 − β₁)(g − m)
//! v ← v + (1 − β₂)(g² − v)
//! α = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
//! w ← w − α · m / (√v + ε)
//! ```
//!
//! The bias corrections are folded into `α`, so `ε` is added to `√v` rather
//! than to the corrected `√v̂` of the paper: with Keras's `ε = 1e-7` the two
//! differ slightly early in training, and we follow Keras.

use ndarray::Zip;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The Adam optimiser and its moment estimates.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate (Keras: 1e-3).
    pub lr: f32,
    /// Decay of the first moment (0.9).
    pub beta1: f32,
    /// Decay of the second moment (0.999).
    pub beta2: f32,
    /// Added to `√v` (1e-7).
    pub epsilon: f32,
    t: u32,
    moments: Vec<(Tensor, Tensor)>,
}

impl Default for Adam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl Adam {
    /// Adam with Keras's defaults and the given learning rate.
    pub fn new(lr: f32) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            t: 0,
            moments: Vec::new(),
        }
    }

    /// Steps taken so far.
    pub fn iterations(&self) -> u32 {
        self.t
    }

    /// One update of every parameter with its gradient, in the same order each
    /// call.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[Tensor]) -> Result<()> {
        if params.len() != grads.len() {
            return Err(Error::invalid(
                "adam",
                format!("{} parameters but {} gradients", params.len(), grads.len()),
            ));
        }
        if self.moments.is_empty() {
            self.moments = params
                .iter()
                .map(|p| (Tensor::zeros(p.raw_dim()), Tensor::zeros(p.raw_dim())))
                .collect();
        }
        for ((p, g), (m, _)) in params.iter().zip(grads).zip(&self.moments) {
            if p.shape() != g.shape() || p.shape() != m.shape() {
                return Err(crate::tensor::shape_error(
                    "adam",
                    "parameter and gradient must match",
                    "parameter",
                    p.shape(),
                    "gradient",
                    g.shape(),
                ));
            }
        }
        self.t += 1;
        let t = f64::from(self.t);
        let alpha = (f64::from(self.lr) * (1.0 - f64::from(self.beta2).powf(t)).sqrt()
            / (1.0 - f64::from(self.beta1).powf(t))) as f32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(&mut self.moments) {
            Zip::from(&mut **p)
                .and(g)
                .and(m)
                .and(v)
                .par_for_each(|w, &g, m, v| {
                    *m += (1.0 - b1) * (g - *m);
                    *v += (1.0 - b2) * (g * g - *v);
                    *w -= alpha * *m / (v.sqrt() + eps);
                });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_steps_by_hand() {
        // w = 1, g = 2, t = 1: m = 0.1·2 = 0.2, v = 0.001·4 = 0.004,
        // α = 1e-3·√0.001 / 0.1 = 3.16227766e-4,
        // w = 1 − α·0.2 / (√0.004 + 1e-7) = 1 − 3.16227766e-4 · 3.16227267 = 0.99900000158.
        let mut adam = Adam::default();
        let mut w = Tensor::from_elem(vec![1], 1.0);
        adam.step(&mut [&mut w], &[Tensor::from_elem(vec![1], 2.0)])
            .unwrap();
        assert!(
            (f64::from(w[[0]]) - 0.999_000_001_6).abs() < 1e-7,
            "{}",
            w[[0]]
        );
        // t = 2, g = −1: m = 0.2 + 0.1·(−1 − 0.2) = 0.08; v = 0.004 + 0.001·(1 − 0.004) = 0.004996;
        // α = 1e-3·√(1 − 0.999²)/(1 − 0.81) = 1e-3·0.0447102/0.19 = 2.3531673e-4;
        // w = 0.999 − 2.3531673e-4 · 0.08 / (0.0706824 + 1e-7) = 0.999 − 2.6633e-4 = 0.99873366.
        adam.step(&mut [&mut w], &[Tensor::from_elem(vec![1], -1.0)])
            .unwrap();
        assert!(
            (f64::from(w[[0]]) - 0.998_733_665).abs() < 2e-7,
            "{}",
            w[[0]]
        );
        assert_eq!(adam.iterations(), 2);
    }

    #[test]
    fn mismatched_gradients_are_errors() {
        let mut adam = Adam::default();
        let mut w = Tensor::zeros(vec![2]);
        assert!(adam.step(&mut [&mut w], &[]).is_err());
        assert!(adam.step(&mut [&mut w], &[Tensor::zeros(vec![3])]).is_err());
    }
}
