//! Reductions over axes: sum, mean and maximum.
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | `sum` | `y = Σ_axes x` | every `x` in a group gets `g` |
//! | `mean` | `y = Σ_axes x / n` | every `x` in a group gets `g / n` |
//! | `max` | `y = max_axes x` | the group's **first maximum** in row-major order gets `g`, the rest 0 |
//!
//! A *group* is the set of elements reduced into one output. `max` breaks ties
//! as max pooling does (and as PyTorch's `amax` does not: it splits the
//! gradient evenly): the first maximum takes it all, and a NaN beats every
//! number. With `keep_dims`, reduced axes stay as length 1, so the result
//! broadcasts against the input.

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::ops::beats;
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::Tensor;

/// How to reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

impl Reduce {
    fn name(self) -> &'static str {
        match self {
            Reduce::Sum => "sum",
            Reduce::Mean => "mean",
            Reduce::Max => "max",
        }
    }
}

/// The axes to reduce, checked: in range and each once. Empty means every axis.
fn checked_axes(op: &'static str, rank: usize, axes: &[usize]) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    if let Some(&bad) = sorted.iter().find(|&&a| a >= rank) {
        return Err(Error::invalid(
            op,
            format!("axis {bad} is out of range for a tensor of rank {rank}"),
        ));
    }
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            op,
            format!("axes {axes:?} name an axis twice"),
        ));
    }
    Ok(sorted)
}

/// The input as `[groups, group size]`: kept axes first (in order), then the
/// reduced ones, so that each row is one group in row-major order.
fn grouped(x: &Tensor, axes: &[usize]) -> (Tensor, Vec<usize>) {
    let kept: Vec<usize> = (0..x.ndim()).filter(|a| !axes.contains(a)).collect();
    let order: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let groups: usize = kept.iter().map(|&a| x.shape()[a]).product();
    let size: usize = axes.iter().map(|&a| x.shape()[a]).product();
    let rows = x
        .view()
        .permuted_axes(IxDyn(&order))
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[groups, size]))
        .expect("sizes multiply out");
    (rows, order)
}

/// The output shape: reduced axes dropped, or kept as 1.
fn reduced_shape(shape: &[usize], axes: &[usize], keep_dims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(a, &len)| match (axes.contains(&a), keep_dims) {
            (false, _) => Some(len),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// The reference forward: the reduced values and, for `max`, each group's
/// winner (its index within the group).
pub fn reduce_forward(
    how: Reduce,
    x: &Tensor,
    axes: &[usize],
    keep_dims: bool,
) -> Result<(Tensor, Option<Vec<usize>>)> {
    let axes = checked_axes(how.name(), x.ndim(), axes)?;
    let (rows, _) = grouped(x, &axes);
    let size = rows.shape()[1];
    if size == 0 && how != Reduce::Sum {
        return Err(Error::invalid(
            how.name(),
            format!("cannot reduce an empty axis (shape {:?})", x.shape()),
        ));
    }
    let mut winners = (how == Reduce::Max).then(Vec::new);
    let values: Vec<f32> = rows
        .outer_iter()
        .map(|row| match how {
            Reduce::Sum => row.sum(),
            Reduce::Mean => row.sum() / size as f32,
            Reduce::Max => {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if beats(v, row[best]) {
                        best = i;
                    }
                }
                winners.as_mut().expect("max").push(best);
                row[best]
            }
        })
        .collect();
    let shape = reduced_shape(x.shape(), &axes, keep_dims);
    let y = Tensor::from_shape_vec(IxDyn(&shape), values).expect("one value per group");
    Ok((y, winners))
}

/// The reference backward: `dy` (of the output's shape) spread back over each
/// group as the table above says.
pub fn reduce_backward(
    how: Reduce,
    x_shape: &[usize],
    axes: &[usize],
    winners: Option<&[usize]>,
    dy: &Tensor,
) -> Tensor {
    let axes = checked_axes(how.name(), x_shape.len(), axes).expect("checked by the forward");
    let kept: Vec<usize> = (0..x_shape.len()).filter(|a| !axes.contains(a)).collect();
    let order: Vec<usize> = kept.iter().chain(&axes).copied().collect();
    let groups: usize = kept.iter().map(|&a| x_shape[a]).product();
    let size: usize = axes.iter().map(|&a| x_shape[a]).product();
    let mut rows = Tensor::zeros(IxDyn(&[groups, size]));
    for ((q, mut row), &g) in rows.outer_iter_mut().enumerate().zip(dy.iter()) {
        match (how, winners) {
            (Reduce::Sum, _) => row.fill(g),
            (Reduce::Mean, _) => row.fill(g / size as f32),
            (Reduce::Max, Some(w)) => row[w[q]] = g,
            (Reduce::Max, None) => unreachable!("max keeps its winners"),
        }
    }
    // Back from [kept..., reduced...] to the input's own axis order.
    let permuted: Vec<usize> = order.iter().map(|&a| x_shape[a]).collect();
    let mut inverse = vec![0; order.len()];
    for (i, &a) in order.iter().enumerate() {
        inverse[a] = i;
    }
    rows.into_shape_with_order(IxDyn(&permuted))
        .expect("sizes multiply out")
        .permuted_axes(IxDyn(&inverse))
        .as_standard_layout()
        .into_owned()
}

struct Reduction {
    how: Reduce,
    axes: Vec<usize>,
    winners: Option<Vec<usize>>,
}

impl Backward for Reduction {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let dx = reduce_backward(
            self.how,
            a.inputs[0].shape(),
            &self.axes,
            self.winners.as_deref(),
            a.dy,
        );
        vec![Some(dx)]
    }
}

impl Tape<'_> {
    /// Reduces `x` over `axes` (every axis if empty); `keep_dims` keeps them as length 1.
    pub fn reduce(&mut self, how: Reduce, x: Var, axes: &[usize], keep_dims: bool) -> Result<Var> {
        let (y, winners) = self.compute(&[x], |v, _| reduce_forward(how, v[0], axes, keep_dims))?;
        let rule = Reduction {
            how,
            axes: axes.to_vec(),
            winners,
        };
        Ok(self.push(y, &[x], Box::new(rule)))
    }

    /// `Σ x` over `axes` (every axis if empty).
    pub fn sum(&mut self, x: Var, axes: &[usize], keep_dims: bool) -> Result<Var> {
        self.reduce(Reduce::Sum, x, axes, keep_dims)
    }

    /// The mean of `x` over `axes` (every axis if empty).
    pub fn mean(&mut self, x: Var, axes: &[usize], keep_dims: bool) -> Result<Var> {
        self.reduce(Reduce::Mean, x, axes, keep_dims)
    }

    /// The maximum of `x` over `axes` (every axis if empty); its gradient goes
    /// to each group's first maximum.
    pub fn max(&mut self, x: Var, axes: &[usize], keep_dims: bool) -> Result<Var> {
        self.reduce(Reduce::Max, x, axes, keep_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn sums_means_and_maxima_by_hand() {
        let x = array![[1.0f32, 5.0, 5.0], [7.0, 2.0, 0.0]].into_dyn();
        let (s, _) = reduce_forward(Reduce::Sum, &x, &[1], false).unwrap();
        assert_eq!(s, array![11.0f32, 9.0].into_dyn());
        let (m, _) = reduce_forward(Reduce::Mean, &x, &[0], true).unwrap();
        assert_eq!(m, array![[4.0f32, 3.5, 2.5]].into_dyn());
        // Row 0 ties at 5: the first (column 1) wins.
        let (y, w) = reduce_forward(Reduce::Max, &x, &[1], false).unwrap();
        assert_eq!(y, array![5.0f32, 7.0].into_dyn());
        assert_eq!(w.as_deref(), Some(&[1, 0][..]));
        let g = array![10.0f32, 20.0].into_dyn();
        let dx = reduce_backward(Reduce::Max, &[2, 3], &[1], w.as_deref(), &g);
        assert_eq!(dx, array![[0.0f32, 10.0, 0.0], [20.0, 0.0, 0.0]].into_dyn());
        // Over both axes: all of x, one group in row-major order.
        let (all, w) = reduce_forward(Reduce::Max, &x, &[], false).unwrap();
        assert_eq!((all.shape(), all.sum()), (&[][..], 7.0));
        assert_eq!(w.as_deref(), Some(&[3][..]));
    }

    #[test]
    fn axes_are_checked() {
        let x = Tensor::zeros(vec![2, 3]);
        assert!(reduce_forward(Reduce::Sum, &x, &[2], false).is_err());
        assert!(reduce_forward(Reduce::Sum, &x, &[1, 1], false).is_err());
        let empty = Tensor::zeros(vec![2, 0]);
        assert!(reduce_forward(Reduce::Max, &empty, &[1], false).is_err());
        assert_eq!(
            reduce_forward(Reduce::Sum, &empty, &[1], false)
                .unwrap()
                .0
                .sum(),
            0.0
        );
    }
}
