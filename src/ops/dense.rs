//! Dense (fully connected) layer: `y = x·Wᵀ + b`.
//!
//! Shapes: `x: [N, in]`, `W: [out, in]` (PyTorch's layout, which is what
//! checkpoints store), `b: [out]`, `y: [N, out]`.
//!
//! Backward, from `dy = ∂L/∂y`:
//! - `dx = dy · W`       (`[N, out] · [out, in]`)
//! - `dW = dyᵀ · x`      (`[out, N] · [N, in]`)
//! - `db = Σₙ dyₙ`

use ndarray::Axis;

use crate::error::Result;
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{as_slice, expect_rank, gemm_par, shape_error, Mat, MatMut, Pool, Tensor};

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

/// The forward computation, `y = x·Wᵀ + b`, into a pooled buffer.
pub fn dense_forward(x: &Tensor, w: &Tensor, b: &Tensor, pool: &mut Pool) -> Result<Tensor> {
    let (n, fan_in, out) = dims(x, w, b)?;
    let mut y = pool.to_overwrite(&[n, out]);
    // Start from the bias in every row, then accumulate x·Wᵀ onto it (β = 1).
    y.axis_iter_mut(Axis(0)).for_each(|mut row| row.assign(b));
    let ys = y.as_slice_mut().expect("pooled tensors are contiguous");
    // y[N, out] += x[N, in] · Wᵀ[in, out]   (Wᵀ read through swapped strides)
    gemm_par(
        1.0,
        Mat::rows(as_slice(x, "dense")?, n, fan_in),
        Mat::rows(as_slice(w, "dense")?, out, fan_in).t(),
        1.0,
        MatMut::rows(ys, n, out),
    );
    Ok(y)
}

struct Dense;

impl Backward for Dense {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (x, w) = (a.inputs[0], a.inputs[1]);
        let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let dy = a.dy.as_slice().expect("gradients are contiguous");
        let dx = a.wants[0].then(|| {
            let mut dx = a.pool.zeros(&[n, fan_in]);
            // dx[N, in] = dy[N, out] · W[out, in]
            gemm_par(
                1.0,
                Mat::rows(dy, n, out),
                Mat::rows(w.as_slice().expect("checked in forward"), out, fan_in),
                0.0,
                MatMut::rows(dx.as_slice_mut().expect("pooled"), n, fan_in),
            );
            dx
        });
        let dw = a.wants[1].then(|| {
            let mut dw = a.pool.zeros(&[out, fan_in]);
            // dW[out, in] = dyᵀ[out, N] · x[N, in]
            gemm_par(
                1.0,
                Mat::rows(dy, n, out).t(),
                Mat::rows(x.as_slice().expect("checked in forward"), n, fan_in),
                0.0,
                MatMut::rows(dw.as_slice_mut().expect("pooled"), out, fan_in),
            );
            dw
        });
        let db = a.wants[2].then(|| {
            let mut db = a.pool.zeros(&[out]);
            db.assign(&a.dy.sum_axis(Axis(0)));
            db
        });
        vec![dx, dw, db]
    }
}

impl Tape<'_> {
    /// Dense layer `y = x·Wᵀ + b` with `x: [N, in]`, `W: [out, in]`, `b: [out]`.
    pub fn dense(&mut self, x: Var, w: Var, b: Var) -> Result<Var> {
        let y = self.compute(&[x, w, b], |v, pool| dense_forward(v[0], v[1], v[2], pool))?;
        Ok(self.push(y, &[x, w, b], Box::new(Dense)))
    }
}
