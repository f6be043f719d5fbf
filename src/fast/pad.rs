//! Padding of image planes, on every thread: a border of `value` around each
//! `[H, W]` plane of `[N, C, H, W]`, and its backward (the inside of each
//! plane of the gradient). What it computes is [`crate::ops::reshape`]'s
//! `pad`, value for value: only copies, no arithmetic.

use rayon::prelude::*;

/// Planes' worth of values per parallel task.
const CHUNK: usize = 1 << 15;

/// The border around each plane: rows above and below, columns left and
/// right.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Border {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Border {
    /// `pads` (one `(before, after)` per axis of a rank-4 tensor) as a border
    /// of each plane, if only the last two axes are padded.
    pub(crate) fn of(pads: &[(usize, usize)]) -> Option<Self> {
        match pads {
            &[(0, 0), (0, 0), (top, bottom), (left, right)] => Some(Border {
                top,
                bottom,
                left,
                right,
            }),
            _ => None,
        }
    }
}

/// `y` = each `h × w` plane of `x` inside `border` of `value`.
pub(crate) fn forward(x: &[f32], h: usize, w: usize, border: Border, value: f32, y: &mut [f32]) {
    let (hp, wp) = (
        h + border.top + border.bottom,
        w + border.left + border.right,
    );
    let planes = (CHUNK / (hp * wp).max(1)).max(1);
    if h * w == 0 {
        y.fill(value);
        return;
    }
    y.par_chunks_mut(planes * hp * wp)
        .zip(x.par_chunks(planes * h * w))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(hp * wp).zip(x.chunks(h * w)) {
                plane(x, w, border, value, y);
            }
        });
}

/// One plane `x` (`w` wide) inside `border` of `value`, into `y`.
pub(crate) fn plane(x: &[f32], w: usize, border: Border, value: f32, y: &mut [f32]) {
    let wp = w + border.left + border.right;
    let h = x.len() / w.max(1);
    let (above, rest) = y.split_at_mut(border.top * wp);
    above.fill(value);
    let (rows, below) = rest.split_at_mut(h * wp);
    below.fill(value);
    for (row, src) in rows.chunks_mut(wp).zip(x.chunks(w)) {
        row[..border.left].fill(value);
        row[border.left..border.left + w].copy_from_slice(src);
        row[border.left + w..].fill(value);
    }
}

/// The backward: `dx` = the inside of each plane of `dy` (the border's
/// gradient goes nowhere).
pub(crate) fn backward(dy: &[f32], h: usize, w: usize, border: Border, dx: &mut [f32]) {
    let (hp, wp) = (
        h + border.top + border.bottom,
        w + border.left + border.right,
    );
    if h * w == 0 {
        return;
    }
    let planes = (CHUNK / (hp * wp).max(1)).max(1);
    dx.par_chunks_mut(planes * h * w)
        .zip(dy.par_chunks(planes * hp * wp))
        .for_each(|(dx, dy)| {
            for (dx, dy) in dx.chunks_mut(h * w).zip(dy.chunks(hp * wp)) {
                let inside = dy[border.top * wp..].chunks(wp);
                for (row, src) in dx.chunks_mut(w).zip(inside) {
                    row.copy_from_slice(&src[border.left..border.left + w]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pad_forward;
    use crate::tensor::Tensor;

    /// Every border (none, one side, all sides) on planes from 1x1 to 5x7,
    /// against the reference `pad`; and the backward gives back exactly the
    /// inside of each plane.
    #[test]
    fn borders_match_the_reference() {
        for (h, w) in [(1, 1), (2, 3), (5, 7), (4, 1)] {
            for (top, bottom, left, right) in
                [(0, 0, 0, 0), (1, 1, 1, 1), (0, 2, 3, 0), (3, 1, 0, 2)]
            {
                let x: Vec<f32> = (0..2 * 3 * h * w).map(|i| i as f32 * 0.5 - 3.0).collect();
                let xt = Tensor::from_shape_vec(vec![2, 3, h, w], x.clone()).unwrap();
                let pads = [(0, 0), (0, 0), (top, bottom), (left, right)];
                let want = pad_forward(&xt, &pads, f32::NEG_INFINITY).unwrap();
                let border = Border::of(&pads).unwrap();
                let mut y = vec![7.0; want.len()];
                forward(&x, h, w, border, f32::NEG_INFINITY, &mut y);
                assert_eq!(
                    y,
                    want.iter().copied().collect::<Vec<_>>(),
                    "{h}x{w} {pads:?}"
                );
                let mut dx = vec![7.0; x.len()];
                backward(&y, h, w, border, &mut dx);
                assert_eq!(dx, x, "{h}x{w} {pads:?}");
            }
        }
    }
}
