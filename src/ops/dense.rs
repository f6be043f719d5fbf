//! Dense (fully connected) layer: `y = x·Wᵀ + b`.
//!
//! Shapes: `x: [N, in]`, `W: [out, in]` (PyTorch's layout, which is what
//! checkpoints store), `b: [out]`, `y: [N, out]`.
//!
//! Backward, from `dy = ∂L/∂y`:
//! - `dx = dy · W`       (`[N, out] · [out, in]`)
//! - `dW = dyᵀ · x`      (`[out, N] · [N, in]`)
//! - `db = Σₙ dyₙ`

use ndarray::{ArrayView2, Axis};

use crate::error::Result;
use crate::fast;
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
use crate::tensor::{expect_rank, shape_error, Pool, Tensor};

/// Checks shapes and returns `(n, in, out)`.
fn dims(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<(usize, usize, usize)> {
    expect_rank(x, 2, "dense", "input")?;
    expect_rank(w, 2, "dense", "weight")?;
    expect_rank(b, 1, "dense", "bias")?;
    let (n, fan_in) = (x.shape()[0], x.shape()[1]);
    let (out, w_in) = (w.shape()[0], w.shape()[1]);
    if w_in != fan_in {
        return Err(shape_error(
            "dense",
            "input features must equal the weight's columns (weight is [out, in])",
            "input",
            x.shape(),
            "weight",
            w.shape(),
        ));
    }
    if b.len() != out {
        return Err(shape_error(
            "dense",
            "bias length must equal the weight's rows",
            "weight",
            w.shape(),
            "bias",
            b.shape(),
        ));
    }
    Ok((n, fan_in, out))
}

/// The reference forward, `y = x·Wᵀ + b`.
pub fn dense_reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    dims(x, w, b)?;
    let (x, w) = (matrix(x), matrix(w));
    Ok((x.dot(&w.t()) + b).into_dyn())
}

/// The reference backward: `(dx, dW, db) = (dy·W, dyᵀ·x, Σₙ dy)`.
pub fn dense_reference_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (x, w, dy) = (matrix(x), matrix(w), matrix(dy));
    let dx = dy.dot(&w).into_dyn();
    let dw = dy.t().dot(&x).into_dyn();
    let db = dy.sum_axis(Axis(0)).into_dyn();
    (dx, dw, db)
}

/// A rank-2 tensor as a matrix view.
fn matrix(t: &Tensor) -> ArrayView2<'_, f32> {
    t.view().into_dimensionality().expect("rank checked")
}

/// `y = x·Wᵀ + b` as a training step runs it: the fast product.
pub fn dense_forward(x: &Tensor, w: &Tensor, b: &Tensor, pool: &mut Pool) -> Result<Tensor> {
    dims(x, w, b)?;
    fast::dense::forward(x, w, b, pool)
}

/// A dense layer on the tape.
struct Dense {
    kernels: Kernels,
}

impl Backward for Dense {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (x, w) = (a.inputs[0], a.inputs[1]);
        if self.kernels != Kernels::Reference {
            return fast::dense::backward(x, w, a.dy, &a.wants, a.pool).to_vec();
        }
        let (dx, dw, db) = dense_reference_backward(x, w, a.dy);
        vec![
            a.wants[0].then_some(dx),
            a.wants[1].then_some(dw),
            a.wants[2].then_some(db),
        ]
    }
}

impl Tape<'_> {
    /// Dense layer `y = x·Wᵀ + b` with `x: [N, in]`, `W: [out, in]`, `b: [out]`.
    pub fn dense(&mut self, x: Var, w: Var, b: Var) -> Result<Var> {
        let kernels = self.kernels();
        let y = self.compute(&[x, w, b], |v, pool| match kernels {
            Kernels::Reference => dense_reference(v[0], v[1], v[2]),
            _ => dense_forward(v[0], v[1], v[2], pool),
        })?;
        Ok(self.push(y, &[x, w, b], Box::new(Dense { kernels })))
    }
}
