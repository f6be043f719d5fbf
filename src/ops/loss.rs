//! Softmax and categorical cross-entropy, fused.
//!
//! For logits `x: [N, K]` and target distributions `t: [N, K]` (one-hot rows
//! for class labels), with `p = softmax(x)`:
//!
//! `L = (1/N) Σₙ Σₖ tₙₖ · (lseₙ − xₙₖ)`, where `lseₙ = log Σₖ e^{xₙₖ}`,
//!
//! which is `−(1/N) Σ t · log p` computed without ever taking the log of a
//! rounded-to-zero probability. The gradient is the famous
//! `∂L/∂xₙₖ = (pₙₖ · Σₖ tₙₖ − tₙₖ) / N`, i.e. `(p − t) / N` for one-hot targets.
//! Targets are data, not differentiated.

use ndarray::{Axis, Zip};

use crate::error::{Error, Result};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{expect_rank, shape_error, Pool, Tensor};

/// One-hot rows `[N, K]` for class labels.
pub fn one_hot(labels: &[usize], classes: usize) -> Result<Tensor> {
    let mut t = Tensor::zeros(vec![labels.len(), classes]);
    for (n, &label) in labels.iter().enumerate() {
        if label >= classes {
            return Err(Error::invalid(
                "one_hot",
                format!(
                    "label {label} at position {n} is not below the number of classes {classes}"
                ),
            ));
        }
        t[[n, label]] = 1.0;
    }
    Ok(t)
}

/// Mean cross-entropy of `softmax(logits)` against `targets`, and the
/// probabilities. Accumulates the per-row losses in `f64`.
pub fn softmax_cross_entropy_forward(
    logits: &Tensor,
    targets: &Tensor,
    pool: &mut Pool,
) -> Result<(f32, Tensor)> {
    let op = "softmax_cross_entropy";
    expect_rank(logits, 2, op, "logits")?;
    if logits.shape() != targets.shape() {
        return Err(shape_error(
            op,
            "targets must match the logits",
            "logits",
            logits.shape(),
            "targets",
            targets.shape(),
        ));
    }
    let n = logits.shape()[0];
    if n == 0 {
        return Err(Error::invalid(op, "the batch is empty"));
    }
    let mut probs = pool.to_overwrite(logits.shape());
    let mut total = 0.0f64;
    for ((x, t), mut p) in logits
        .axis_iter(Axis(0))
        .zip(targets.axis_iter(Axis(0)))
        .zip(probs.axis_iter_mut(Axis(0)))
    {
        let max = x.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = x.iter().map(|&v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        Zip::from(&mut p)
            .and(&x)
            .for_each(|p, &x| *p = (x - lse).exp());
        total += x
            .iter()
            .zip(t.iter())
            .map(|(&x, &t)| f64::from(t * (lse - x)))
            .sum::<f64>();
    }
    Ok(((total / n as f64) as f32, probs))
}

struct SoftmaxCrossEntropy {
    probs: Tensor,
    targets: Tensor,
}

impl Backward for SoftmaxCrossEntropy {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let n = self.probs.shape()[0] as f32;
        let scale = a.dy.iter().next().copied().unwrap_or(1.0) / n;
        let mut dx = a.pool.to_overwrite(self.probs.shape());
        for ((mut d, p), t) in dx
            .axis_iter_mut(Axis(0))
            .zip(self.probs.axis_iter(Axis(0)))
            .zip(self.targets.axis_iter(Axis(0)))
        {
            let mass = t.sum();
            Zip::from(&mut d)
                .and(&p)
                .and(&t)
                .for_each(|d, &p, &t| *d = scale * (p * mass - t));
        }
        vec![Some(dx)]
    }

    fn recycle(self: Box<Self>, pool: &mut Pool) {
        pool.give(self.probs);
    }
}

impl Tape<'_> {
    /// Mean softmax cross-entropy of `logits: [N, K]` against `targets: [N, K]`;
    /// a scalar (shape `[]`).
    pub fn softmax_cross_entropy(&mut self, logits: Var, targets: Tensor) -> Result<Var> {
        let (loss, probs) = self.compute(&[logits], |v, pool| {
            softmax_cross_entropy_forward(v[0], &targets, pool)
        })?;
        let value = Tensor::from_elem(vec![], loss);
        Ok(self.push(
            value,
            &[logits],
            Box::new(SoftmaxCrossEntropy { probs, targets }),
        ))
    }
}
