//! Ops that move values without arithmetic: the backward moves the gradient
//! back to where each value came from.
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | `reshape`, `flatten` | same values, new shape | `dy` reshaped back |
//! | `permute`, `transpose` | axes reordered | `dy` with the inverse order |
//! | `concat` | inputs side by side along an axis | each input's part of `dy` |
//! | `slice` | `x[start..end]` along an axis | `dy` in place, zeros elsewhere |
//! | `pad` | `x` inside a border of a constant | the inside of `dy` |
//!
//! Tensors are row-major NCHW, so flattening `[N, C, H, W]` to `[N, C·H·W]`
//! orders features by channel, then row, then column, as PyTorch does (Keras,
//! being NHWC, orders them H, W, C; checkpoints are stored in PyTorch's order).

use ndarray::{Axis, IxDyn, Slice};

use crate::error::{Error, Result};
use crate::fast;
use crate::tape::{Backward, GradArgs, Kernels, Tape, Var};
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

/// Checks that `axes` orders every axis of a rank-`rank` tensor once.
fn check_permutation(rank: usize, axes: &[usize]) -> Result<()> {
    let mut seen = vec![false; rank];
    let ok = axes.len() == rank
        && axes
            .iter()
            .all(|&a| a < rank && !std::mem::replace(&mut seen[a], true));
    match ok {
        true => Ok(()),
        false => Err(Error::invalid(
            "permute",
            format!(
                "{axes:?} is not an order of the {rank} axes 0 to {}",
                rank.saturating_sub(1)
            ),
        )),
    }
}

/// The reference forward of `permute`: axis `i` of the result is axis
/// `axes[i]` of `x`.
pub fn permute_forward(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    check_permutation(x.ndim(), axes)?;
    Ok(x.view()
        .permuted_axes(IxDyn(axes))
        .as_standard_layout()
        .into_owned())
}

struct Permute(Vec<usize>);

impl Backward for Permute {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &axis) in self.0.iter().enumerate() {
            inverse[axis] = i;
        }
        vec![Some(
            permute_forward(a.dy, &inverse).expect("a permutation"),
        )]
    }
}

/// Checks `axis` against a rank.
fn check_axis(op: &'static str, rank: usize, axis: usize) -> Result<()> {
    match axis < rank {
        true => Ok(()),
        false => Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        )),
    }
}

/// The reference forward of `concat`: the inputs side by side along `axis`;
/// every other axis must match.
pub fn concat_forward(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = xs.first() else {
        return Err(Error::invalid("concat", "no tensor to concatenate"));
    };
    check_axis("concat", first.ndim(), axis)?;
    for x in xs {
        let same = x.ndim() == first.ndim()
            && (0..x.ndim()).all(|a| a == axis || x.shape()[a] == first.shape()[a]);
        if !same {
            return Err(crate::tensor::shape_error(
                "concat",
                format!("every axis but {axis} must match"),
                "first",
                first.shape(),
                "other",
                x.shape(),
            ));
        }
    }
    let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
    ndarray::concatenate(Axis(axis), &views)
        .map(|y| y.as_standard_layout().into_owned())
        .map_err(|e| Error::invalid("concat", e.to_string()))
}

struct Concat(usize);

impl Backward for Concat {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut start = 0;
        a.inputs
            .iter()
            .zip(&a.wants)
            .map(|(x, &want)| {
                let len = x.shape()[self.0];
                let part =
                    a.dy.slice_axis(Axis(self.0), Slice::from(start..start + len));
                start += len;
                want.then(|| part.as_standard_layout().into_owned())
            })
            .collect()
    }
}

/// The reference forward of `slice`: `x[start..end]` along `axis`.
pub fn slice_forward(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
    check_axis("slice", x.ndim(), axis)?;
    let len = x.shape()[axis];
    if start > end || end > len {
        return Err(Error::invalid(
            "slice",
            format!("{start}..{end} does not lie in axis {axis} of length {len}"),
        ));
    }
    Ok(x.slice_axis(Axis(axis), Slice::from(start..end))
        .as_standard_layout()
        .into_owned())
}

struct SliceOf {
    axis: usize,
    start: usize,
}

impl Backward for SliceOf {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut dx = Tensor::zeros(a.inputs[0].raw_dim());
        let end = self.start + a.dy.shape()[self.axis];
        dx.slice_axis_mut(Axis(self.axis), Slice::from(self.start..end))
            .assign(a.dy);
        vec![Some(dx)]
    }
}

/// The reference forward of `pad`: `x` inside a border of `value`,
/// `pads[a] = (before, after)` values along axis `a`.
pub fn pad_forward(x: &Tensor, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
    let mut y = Tensor::zeros(IxDyn(&padded_shape(x, pads)?));
    pad_into(&mut y, x, pads, value);
    Ok(y)
}

/// Writes `x` padded with `value` into `y`, of the padded shape.
fn pad_into(y: &mut Tensor, x: &Tensor, pads: &[(usize, usize)], value: f32) {
    y.fill(value);
    inside(y, x.shape(), pads).assign(x);
}

/// The shape of `x` padded by `pads`, checked.
fn padded_shape(x: &Tensor, pads: &[(usize, usize)]) -> Result<Vec<usize>> {
    if pads.len() != x.ndim() {
        return Err(Error::invalid(
            "pad",
            format!(
                "{} (before, after) pairs for a tensor of rank {}",
                pads.len(),
                x.ndim()
            ),
        ));
    }
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .zip(pads)
        .map(|(&len, &(b, a))| len.checked_add(b).and_then(|l| l.checked_add(a)))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid("pad", "the padded size overflows"))?;
    Ok(shape)
}

/// The part of a padded tensor that holds the input.
fn inside<'t>(
    y: &'t mut Tensor,
    shape: &[usize],
    pads: &[(usize, usize)],
) -> ndarray::ArrayViewMutD<'t, f32> {
    let mut view = y.view_mut();
    for (axis, (&len, &(before, _))) in shape.iter().zip(pads).enumerate() {
        view.slice_axis_inplace(Axis(axis), Slice::from(before..before + len));
    }
    view
}

struct Pad {
    pads: Vec<(usize, usize)>,
    /// Which implementation the backward runs.
    kernels: Kernels,
}

impl Backward for Pad {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut dx = a.pool.to_overwrite(a.inputs[0].shape());
        let planes = planes(self.kernels, a.inputs[0], &self.pads);
        if let (Some((h, w, border)), Some(dys)) = (planes, a.dy.as_slice()) {
            let dxs = dx.as_slice_mut().expect("pooled");
            fast::pad::backward(dys, h, w, border, dxs);
            return vec![Some(dx)];
        }
        let mut view = a.dy.view();
        for (axis, (&len, &(before, _))) in a.inputs[0].shape().iter().zip(&self.pads).enumerate() {
            view.slice_axis_inplace(Axis(axis), Slice::from(before..before + len));
        }
        dx.assign(&view);
        vec![Some(dx)]
    }
}

/// For the fast path: the planes' height and width and the border, when
/// `x` is `[N, C, H, W]` in standard layout padded on its last two axes only.
fn planes(
    kernels: Kernels,
    x: &Tensor,
    pads: &[(usize, usize)],
) -> Option<(usize, usize, fast::pad::Border)> {
    let &[_, _, h, w] = x.shape() else {
        return None;
    };
    let border = fast::pad::Border::of(pads)?;
    (kernels != Kernels::Reference && x.is_standard_layout()).then_some((h, w, border))
}

impl Tape<'_> {
    /// `x` with its axes reordered: axis `i` of the result is axis `axes[i]` of `x`.
    pub fn permute(&mut self, x: Var, axes: &[usize]) -> Result<Var> {
        let y = self.compute(&[x], |v, _| permute_forward(v[0], axes))?;
        Ok(self.push(y, &[x], Box::new(Permute(axes.to_vec()))))
    }

    /// `x` with its last two axes swapped (a batch of matrices transposed).
    pub fn transpose(&mut self, x: Var) -> Result<Var> {
        let rank = self.value(x)?.ndim();
        if rank < 2 {
            return Err(Error::invalid(
                "transpose",
                format!("needs at least two axes, got rank {rank}"),
            ));
        }
        let mut axes: Vec<usize> = (0..rank).collect();
        axes.swap(rank - 2, rank - 1);
        self.permute(x, &axes)
    }

    /// `xs` side by side along `axis`.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Result<Var> {
        let y = self.compute(xs, |v, _| concat_forward(v, axis))?;
        Ok(self.push(y, xs, Box::new(Concat(axis))))
    }

    /// `x[start..end]` along `axis`.
    pub fn slice(&mut self, x: Var, axis: usize, start: usize, end: usize) -> Result<Var> {
        let y = self.compute(&[x], |v, _| slice_forward(v[0], axis, start, end))?;
        Ok(self.push(y, &[x], Box::new(SliceOf { axis, start })))
    }

    /// `x` inside a border of `value`: `pads[a] = (before, after)` along axis `a`.
    pub fn pad(&mut self, x: Var, pads: &[(usize, usize)], value: f32) -> Result<Var> {
        let kernels = self.kernels();
        let y = self.compute(&[x], |v, pool| {
            let mut y = pool.to_overwrite(&padded_shape(v[0], pads)?);
            match (
                planes(kernels, v[0], pads),
                v[0].as_slice(),
                y.as_slice_mut(),
            ) {
                (Some((h, w, border)), Some(xs), Some(ys)) => {
                    fast::pad::forward(xs, h, w, border, value, ys)
                }
                _ => pad_into(&mut y, v[0], pads, value),
            }
            Ok(y)
        })?;
        let rule = Pad {
            pads: pads.to_vec(),
            kernels,
        };
        Ok(self.push(y, &[x], Box::new(rule)))
    }
}
