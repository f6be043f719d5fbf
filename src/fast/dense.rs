//! Fast dense layers: the products on the AVX-512 kernel, in parallel over
//! rows. [`crate::ops`]'s `dense_reference` defines what they compute.

use ndarray::Axis;

use super::kernel::{matmul_par, transpose, Epilogue, Strided};
use super::Pool;
use crate::error::Result;
use crate::tensor::{as_slice, Tensor};

/// A row-major matrix operand with `cols` columns.
fn rows(data: &[f32], cols: usize) -> Strided<'_> {
    Strided {
        data,
        rs: cols,
        cs: 1,
    }
}

/// The forward computation, `y = x·Wᵀ + b`, into a pooled buffer.
pub(crate) fn forward(x: &Tensor, w: &Tensor, b: &Tensor, pool: &mut Pool) -> Result<Tensor> {
    let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    if n <= FEW {
        return forward_few(x, w, b, pool);
    }
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

/// The most rows [`forward_few`] takes.
const FEW: usize = 16;

/// [`forward`] for a few rows (the class scores of a few images), as
/// `yᵀ[out, N] = W[out, in] · xᵀ[in, N] + b`: `W` is read as it lies, where
/// the product over the rows of `x` lays out `Wᵀ` first, which for a few rows
/// takes longer than the product itself. Each output is the same chain of
/// products from the same start (its bias), so the same bits.
fn forward_few(x: &Tensor, w: &Tensor, b: &Tensor, pool: &mut Pool) -> Result<Tensor> {
    let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let (xs, ws, bs) = (
        as_slice(x, "dense")?,
        as_slice(w, "dense")?,
        as_slice(b, "dense")?,
    );
    let mut xt = pool.vec_to_overwrite(fan_in * n);
    transpose(xs, n, fan_in, fan_in, &mut xt, n);
    // Each row of yᵀ starts from its bias, then x·Wᵀ accumulates onto it.
    let mut yt = pool.vec_to_overwrite(out * n);
    for (row, &bias) in yt.chunks_mut(n.max(1)).zip(bs) {
        row.fill(bias);
    }
    let (wr, xr) = (rows(ws, fan_in), rows(&xt, n));
    matmul_par(out, n, fan_in, wr, xr, &mut yt, n, Epilogue::ACCUMULATE);
    let mut y = pool.to_overwrite(&[n, out]);
    transpose(&yt, out, n, n, y.as_slice_mut().expect("pooled"), out);
    pool.give_vec(xt);
    pool.give_vec(yt);
    Ok(y)
}

/// The backward of [`forward`]: `[dx, dW, db]`, each only if `wants` it.
pub(crate) fn backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    wants: &[bool],
    pool: &mut Pool,
) -> [Option<Tensor>; 3] {
    {
        let (n, fan_in, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let dys = dy.as_slice().expect("gradients are contiguous");
        let dx = wants[0].then(|| {
            let mut dx = pool.to_overwrite(&[n, fan_in]);
            // dx[N, in] = dy[N, out] · W[out, in]
            let ws = w.as_slice().expect("checked in forward");
            let dxs = dx.as_slice_mut().expect("pooled");
            let (dys, wr) = (rows(dys, out), rows(ws, fan_in));
            matmul_par(n, fan_in, out, dys, wr, dxs, fan_in, Epilogue::STORE);
            dx
        });
        let dw = wants[1].then(|| {
            let mut dw = pool.to_overwrite(&[out, fan_in]);
            // dW[out, in] = dyᵀ[out, N] · x[N, in], dyᵀ read through swapped
            // strides (the kernel broadcasts from A, so any strides do).
            let dyt = Strided {
                data: dys,
                rs: 1,
                cs: out,
            };
            let xs = rows(x.as_slice().expect("checked in forward"), fan_in);
            let dws = dw.as_slice_mut().expect("pooled");
            matmul_par(out, fan_in, n, dyt, xs, dws, fan_in, Epilogue::STORE);
            dw
        });
        let db = wants[2].then(|| {
            let mut db = pool.zeros(&[out]);
            db.assign(&dy.sum_axis(Axis(0)));
            db
        });
        [dx, dw, db]
    }
}
