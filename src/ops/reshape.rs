//! Reshape and flatten: the values stay, their shape changes; the backward
//! reshapes the gradient back.
//!
//! Tensors are row-major NCHW, so flattening `[N, C, H, W]` to `[N, C·H·W]`
//! orders features by channel, then row, then column, as PyTorch does (Keras,
//! being NHWC, orders them H, W, C; checkpoints are stored in PyTorch's order).

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{Pool, Tensor};

/// A pooled copy of `x` with a new shape of the same size.
pub fn reshape_forward(x: &Tensor, shape: &[usize], pool: &mut Pool) -> Result<Tensor> {
    if shape.iter().product::<usize>() != x.len() {
        return Err(crate::tensor::shape_error(
            "reshape",
            "the new shape must hold as many values",
            "input",
            x.shape(),
            "target",
            shape,
        ));
    }
    let mut y = pool.to_overwrite(shape);
    let ys = y.as_slice_mut().expect("pooled");
    match x.as_slice() {
        // Row-major already (every value the tape makes is): one copy.
        Some(xs) => ys.copy_from_slice(xs),
        None => ys.iter_mut().zip(x.iter()).for_each(|(y, &x)| *y = x),
    }
    Ok(y)
}

struct Reshape;

impl Backward for Reshape {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut dx = a.pool.to_overwrite(a.inputs[0].shape());
        match a.dy.as_slice() {
            Some(dys) => dx.as_slice_mut().expect("pooled").copy_from_slice(dys),
            None => {
                let dy =
                    a.dy.view()
                        .into_shape_with_order(IxDyn(a.inputs[0].shape()));
                dx.assign(&dy.expect("same number of values"));
            }
        }
        vec![Some(dx)]
    }
}

impl Tape<'_> {
    /// `x` with a new shape holding the same number of values.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let y = self.compute(&[x], |v, pool| reshape_forward(v[0], shape, pool))?;
        Ok(self.push(y, &[x], Box::new(Reshape)))
    }

    /// `[N, ...]` to `[N, product of the rest]`.
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let shape = self.value(x)?.shape().to_vec();
        let Some((&n, rest)) = shape.split_first() else {
            return Err(Error::invalid(
                "flatten",
                "input must have a batch axis, but is a scalar",
            ));
        };
        self.reshape(x, &[n, rest.iter().product()])
    }
}
