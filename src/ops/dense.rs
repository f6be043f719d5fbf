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
use crate::fast::kernel::{matmul_par, transpose, Epilogue, Strided};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{as_slice, expect_rank, shape_error, Pool, Tensor};

/// A row-major matrix operand with `cols` columns.
fn rows(data: &[f32], cols: usize) -> Strided<'_> {
    Strided {
        data,
        rs: cols,
        cs: 1,
    }
}

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
    // The kernel streams rows of B, so Wᵀ[in, out] is laid out first (a
    // fraction of the product's time).
    let mut wt = pool.to_overwrite(&[fan_in, out]);
    let wts = wt.as_slice_mut().expect("pooled");
    transpose(as_slice(w, "dense")?, out, fan_in, fan_in, wts, out);
    // y[N, out] += x[N, in] · Wᵀ[in, out]
    let xs = as_slice(x, "dense")?;
    matmul_par(
        n,
        out,
        fan_in,
        rows(xs, fan_in),
        rows(wts, out),
        ys,
        out,
        Epilogue::ACCUMULATE,
    );
    pool.give(wt);
    Ok(y)
}

struct Dense;

impl Backward for Dense {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (x, w) = (a.inputs[0], a.inputs[1]);
        let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let dy = a.dy.as_slice().expect("gradients are contiguous");
        let dx = a.wants[0].then(|| {
            let mut dx = a.pool.to_overwrite(&[n, fan_in]);
            // dx[N, in] = dy[N, out] · W[out, in]
            let ws = w.as_slice().expect("checked in forward");
            let dxs = dx.as_slice_mut().expect("pooled");
            let (dys, wr) = (rows(dy, out), rows(ws, fan_in));
            matmul_par(n, fan_in, out, dys, wr, dxs, fan_in, Epilogue::STORE);
            dx
        });
        let dw = a.wants[1].then(|| {
            let mut dw = a.pool.to_overwrite(&[out, fan_in]);
            // dW[out, in] = dyᵀ[out, N] · x[N, in], dyᵀ read through swapped
            // strides (the kernel broadcasts from A, so any strides do).
            let dyt = Strided {
                data: dy,
                rs: 1,
                cs: out,
            };
            let xs = rows(x.as_slice().expect("checked in forward"), fan_in);
            let dws = dw.as_slice_mut().expect("pooled");
            matmul_par(out, fan_in, n, dyt, xs, dws, fan_in, Epilogue::STORE);
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
