//! Batched matrix product: `y[..., i, j] = Σ_s a[..., i, s] · b[..., s, j]`.
//!
//! `a` is `[..., m, k]` and `b` is `[..., k, n]`; their batch axes (all but
//! the last two) broadcast as in element-wise ops, so a `[k, n]` weight
//! multiplies every matrix of a `[B, m, k]` batch.
//!
//! | | |
//! | --- | --- |
//! | forward | `Y = A·B` per batch element |
//! | backward | `dA = dY·Bᵀ`, `dB = Aᵀ·dY`, each summed over the batch axes it was broadcast along |

use ndarray::{Ix2, IxDyn};

use crate::error::{Error, Result};
use crate::ops::elementwise::{broadcast_shape, sum_to_shape};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{shape_error, Tensor};

/// The result's shape, and `(m, k, n)`, or an error naming both shapes.
fn product_shape(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, [usize; 3])> {
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::invalid(
            "matmul",
            format!("both operands need at least two axes, got {a:?} and {b:?}"),
        ));
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(shape_error(
            "matmul",
            "a's last axis must equal b's second to last",
            "a",
            a,
            "b",
            b,
        ));
    }
    let mut shape = broadcast_shape("matmul", &a[..a.len() - 2], &b[..b.len() - 2])?;
    shape.extend([m, n]);
    Ok((shape, [m, k, n]))
}

/// `x` broadcast to `batch` leading axes and its own last two, as
/// `[batch size, rows, cols]`.
fn as_batch(x: &Tensor, batch: &[usize]) -> Tensor {
    let (r, c) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let count = batch.iter().product();
    x.broadcast(IxDyn(&full))
        .expect("batch axes broadcast (checked)")
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[count, r, c]))
        .expect("sizes multiply out")
}

/// The reference forward: one `ndarray` product per batch element.
pub fn matmul_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (shape, [m, _, n]) = product_shape(a.shape(), b.shape())?;
    let batch = &shape[..shape.len() - 2];
    let (a3, b3) = (as_batch(a, batch), as_batch(b, batch));
    let count: usize = batch.iter().product();
    let mut y = Tensor::zeros(IxDyn(&[count, m, n]));
    for ((mut y, a), b) in y.outer_iter_mut().zip(a3.outer_iter()).zip(b3.outer_iter()) {
        let a = a.into_dimensionality::<Ix2>().expect("rank 2");
        let b = b.into_dimensionality::<Ix2>().expect("rank 2");
        y.assign(&a.dot(&b).into_dyn());
    }
    Ok(y.into_shape_with_order(IxDyn(&shape))
        .expect("sizes multiply out"))
}

/// `x` with its last two axes swapped, in standard layout.
fn swap_last(x: &Tensor) -> Tensor {
    let mut v = x.view();
    let r = v.ndim();
    v.swap_axes(r - 2, r - 1);
    v.as_standard_layout().into_owned()
}

struct MatMul;

impl Backward for MatMul {
    fn backward(&self, args: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (a, b, g) = (args.inputs[0], args.inputs[1], args.dy);
        let product =
            |x: &Tensor, y: &Tensor| matmul_forward(x, y).expect("shapes from the forward");
        // Each gradient has the broadcast batch shape; sum back to the operand's.
        let da = args.wants[0].then(|| sum_to_shape(&product(g, &swap_last(b)), a.shape()));
        let db = args.wants[1].then(|| sum_to_shape(&product(&swap_last(a), g), b.shape()));
        vec![da, db]
    }
}

impl Tape<'_> {
    /// The batched matrix product of `a: [..., m, k]` and `b: [..., k, n]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = self.compute(&[a, b], |v, _| matmul_forward(v[0], v[1]))?;
        Ok(self.push(y, &[a, b], Box::new(MatMul)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn shapes_are_checked_and_batches_broadcast() {
        assert!(product_shape(&[2, 3], &[4, 5]).is_err());
        assert!(product_shape(&[3], &[3, 5]).is_err());
        assert_eq!(product_shape(&[7, 2, 3], &[3, 5]).unwrap().0, [7, 2, 5]);
        assert_eq!(product_shape(&[1, 2, 3], &[4, 3, 5]).unwrap().0, [4, 2, 5]);
    }

    #[test]
    fn a_product_by_hand() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn();
        let b = array![[5.0f32, 6.0], [7.0, 8.0]].into_dyn();
        assert_eq!(
            matmul_forward(&a, &b).unwrap(),
            array![[19.0f32, 22.0], [43.0, 50.0]].into_dyn()
        );
    }
}
