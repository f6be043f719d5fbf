//! Element-wise arithmetic with broadcasting, and the smooth unary functions.
//!
//! Binary ops broadcast as NumPy and PyTorch do: shapes are aligned at their
//! last axis, and an axis of length 1 (or a missing leading axis) is repeated
//! to match the other operand. `[2, 3] + [3]` adds the row to each row;
//! `[4, 1] · [1, 5]` is an outer product.
//!
//! | op | forward | backward (before summing over broadcast axes) |
//! | --- | --- | --- |
//! | `add` | `a + b` | `da = g`, `db = g` |
//! | `sub` | `a − b` | `da = g`, `db = −g` |
//! | `mul` | `a · b` | `da = g·b`, `db = g·a` |
//! | `div` | `a / b` | `da = g / b`, `db = −g·a / b²` |
//! | `neg` | `−x` | `−g` |
//! | `exp` | `eˣ` | `g·y` |
//! | `log` | `ln x` | `g / x` |
//! | `sqrt` | `√x` | `g / (2y)` |
//! | `powf` | `xᵖ` | `g·p·xᵖ⁻¹` |
//! | `tanh` | `tanh x` | `g·(1 − y²)` |
//! | `sigmoid` | `1 / (1 + e⁻ˣ)` | `g·y·(1 − y)` |
//! | `clip` (`relu6` = clip to `[0, 6]`) | `min(max(x, lo), hi)` | `g` where `lo < x < hi`, else 0 |
//! | `leaky_relu` | `x` if `x > 0`, else `αx` | `g` if `x > 0`, else `αg` |
//! | `gelu` | `x·Φ(x)`, `Φ` the normal CDF | `g·(Φ(x) + x·φ(x))` |
//!
//! A broadcast operand was used once per repeat, so its gradient is the sum
//! of the repeats' gradients: [`sum_to_shape`] adds them up.

use ndarray::{Axis, IxDyn, Zip};

use crate::error::Result;
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{shape_error, zip_map_into, Tensor};

/// The shape two operands broadcast to, or an error naming both.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    // The axis `i` of the result, read from the end of each shape.
    let dim = |s: &[usize], i: usize| match (i + s.len()).checked_sub(n) {
        Some(j) => s[j],
        None => 1,
    };
    (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(shape_error(
                op,
                "the shapes do not broadcast (each axis must match or be 1)",
                "a",
                a,
                "b",
                b,
            )),
        })
        .collect()
}

/// Sums a gradient of the broadcast shape back to an operand's `shape`: over
/// the leading axes the operand lacks, and over the axes where it has length 1.
pub fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Tensor {
    let mut out = g.clone();
    while out.ndim() > shape.len() {
        out = out.sum_axis(Axis(0));
    }
    for (axis, &len) in shape.iter().enumerate() {
        if len == 1 && out.shape()[axis] != 1 {
            out = out.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    out
}

/// An element-wise binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }

    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
}

/// The reference forward of a binary op, broadcasting `a` and `b`.
pub fn binary_forward(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = IxDyn(&broadcast_shape(op.name(), a.shape(), b.shape())?);
    let (a, b) = (
        a.broadcast(shape.clone())
            .expect("shape from broadcast_shape"),
        b.broadcast(shape).expect("shape from broadcast_shape"),
    );
    Ok(Zip::from(&a).and(&b).map_collect(|&x, &y| op.apply(x, y)))
}

struct Binary(BinaryOp);

impl Backward for Binary {
    fn backward(&self, args: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let (a, b, g) = (args.inputs[0], args.inputs[1], args.dy);
        if self.0 == BinaryOp::Add && a.shape() == g.shape() && b.shape() == g.shape() {
            // A residual sum passes the gradient to both sides unchanged.
            let mut copy = || args.pool.copy_of(g);
            return vec![args.wants[0].then(&mut copy), args.wants[1].then(&mut copy)];
        }
        let full = g.raw_dim();
        let a_b = a.broadcast(full.clone()).expect("broadcast in the forward");
        let b_b = b.broadcast(full).expect("broadcast in the forward");
        let da = || -> Tensor {
            match self.0 {
                BinaryOp::Add | BinaryOp::Sub => g.clone(),
                BinaryOp::Mul => Zip::from(g).and(&b_b).map_collect(|&g, &y| g * y),
                BinaryOp::Div => Zip::from(g).and(&b_b).map_collect(|&g, &y| g / y),
            }
        };
        let db = || -> Tensor {
            match self.0 {
                BinaryOp::Add => g.clone(),
                BinaryOp::Sub => g.mapv(|g| -g),
                BinaryOp::Mul => Zip::from(g).and(&a_b).map_collect(|&g, &x| g * x),
                BinaryOp::Div => Zip::from(g)
                    .and(&a_b)
                    .and(&b_b)
                    .map_collect(|&g, &x, &y| -g * x / (y * y)),
            }
        };
        vec![
            args.wants[0].then(|| sum_to_shape(&da(), a.shape())),
            args.wants[1].then(|| sum_to_shape(&db(), b.shape())),
        ]
    }
}

/// An element-wise unary op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    /// `xᵖ` for a fixed exponent `p`.
    Pow(f32),
    Tanh,
    Sigmoid,
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `x` for `x > 0`, else `α·x`.
    LeakyRelu(f32),
    /// `x·Φ(x)` with the exact normal CDF, as PyTorch's default `GELU`.
    Gelu,
}

/// The error function, by Abramowitz and Stegun's 7.1.26: absolute error
/// below 1.5e-7, under an f32's rounding near 1.
pub fn erf(x: f32) -> f32 {
    let (p, a) = (
        0.327_591_1f32,
        [
            0.254_829_6f32,
            -0.284_496_74,
            1.421_413_7,
            -1.453_152_1,
            1.061_405_4,
        ],
    );
    let t = 1.0 / (1.0 + p * x.abs());
    let poly = t * (a[0] + t * (a[1] + t * (a[2] + t * (a[3] + t * a[4]))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// The standard normal CDF `Φ(x) = (1 + erf(x/√2)) / 2`.
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

impl UnaryOp {
    /// `y = f(x)`.
    pub fn forward(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Pow(p) => x.powf(p),
            UnaryOp::Tanh => x.tanh(),
            // Written so that `e^(−x)` never overflows: for x < 0, eˣ/(1 + eˣ).
            UnaryOp::Sigmoid if x >= 0.0 => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Sigmoid => {
                let e = x.exp();
                e / (1.0 + e)
            }
            UnaryOp::Clip(lo, hi) => x.max(lo).min(hi),
            UnaryOp::LeakyRelu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            UnaryOp::Gelu => x * normal_cdf(x),
        }
    }

    /// `∂L/∂x` from the input `x`, the output `y` and `g = ∂L/∂y`.
    pub fn backward(self, x: f32, y: f32, g: f32) -> f32 {
        match self {
            UnaryOp::Neg => -g,
            UnaryOp::Exp => g * y,
            UnaryOp::Log => g / x,
            UnaryOp::Sqrt => g / (2.0 * y),
            UnaryOp::Pow(p) => g * p * x.powf(p - 1.0),
            UnaryOp::Tanh => g * (1.0 - y * y),
            UnaryOp::Sigmoid => g * y * (1.0 - y),
            // Like ReLU at 0, the kinks take the subgradient 0 (PyTorch's hardtanh).
            UnaryOp::Clip(lo, hi) => {
                if x > lo && x < hi {
                    g
                } else {
                    0.0
                }
            }
            UnaryOp::LeakyRelu(alpha) => {
                if x > 0.0 {
                    g
                } else {
                    alpha * g
                }
            }
            UnaryOp::Gelu => {
                let density = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
                g * (normal_cdf(x) + x * density)
            }
        }
    }
}

struct Unary(UnaryOp);

impl Backward for Unary {
    fn backward(&self, args: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let dx = Zip::from(args.inputs[0])
            .and(args.output)
            .and(args.dy)
            .map_collect(|&x, &y, &g| self.0.backward(x, y, g));
        vec![Some(dx)]
    }
}

impl Tape<'_> {
    fn binary(&mut self, op: BinaryOp, a: Var, b: Var) -> Result<Var> {
        let y = self.compute(&[a, b], |v, pool| match v[0].shape() == v[1].shape() {
            // Equal shapes (a residual sum): the same formula into a buffer
            // the tape reuses from pass to pass.
            true => {
                let mut y = pool.to_overwrite(v[0].shape());
                match (v[0].as_slice(), v[1].as_slice()) {
                    (Some(a), Some(b)) => {
                        let ys = y.as_slice_mut().expect("pooled");
                        zip_map_into(ys, a, b, |a, b| op.apply(a, b));
                    }
                    _ => Zip::from(&mut y)
                        .and(v[0])
                        .and(v[1])
                        .for_each(|y, &a, &b| *y = op.apply(a, b)),
                }
                Ok(y)
            }
            false => binary_forward(op, v[0], v[1]),
        })?;
        Ok(self.push(y, &[a, b], Box::new(Binary(op))))
    }

    /// `a + b`, broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a − b`, broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// `a · b` element by element, broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a / b` element by element, broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `op` applied to every element of `x`.
    pub fn unary(&mut self, op: UnaryOp, x: Var) -> Result<Var> {
        let y = self.compute(&[x], |v, _| Ok(v[0].mapv(|x| op.forward(x))))?;
        Ok(self.push(y, &[x], Box::new(Unary(op))))
    }

    /// `−x`.
    pub fn neg(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Neg, x)
    }

    /// `eˣ`.
    pub fn exp(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Exp, x)
    }

    /// `ln x` (NaN below 0, −∞ at 0, as in PyTorch).
    pub fn log(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Log, x)
    }

    /// `√x`.
    pub fn sqrt(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Sqrt, x)
    }

    /// `xᵖ` for a fixed `p`.
    pub fn powf(&mut self, x: Var, p: f32) -> Result<Var> {
        self.unary(UnaryOp::Pow(p), x)
    }

    /// `tanh x`.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Tanh, x)
    }

    /// The logistic function `1 / (1 + e⁻ˣ)`.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Sigmoid, x)
    }

    /// `x` clipped to `[lo, hi]` (ONNX's `Clip`).
    pub fn clip(&mut self, x: Var, lo: f32, hi: f32) -> Result<Var> {
        self.unary(UnaryOp::Clip(lo, hi), x)
    }

    /// `min(max(x, 0), 6)`.
    pub fn relu6(&mut self, x: Var) -> Result<Var> {
        self.clip(x, 0.0, 6.0)
    }

    /// `x` for `x > 0`, else `α·x`.
    pub fn leaky_relu(&mut self, x: Var, alpha: f32) -> Result<Var> {
        self.unary(UnaryOp::LeakyRelu(alpha), x)
    }

    /// The Gaussian error linear unit `x·Φ(x)`.
    pub fn gelu(&mut self, x: Var) -> Result<Var> {
        self.unary(UnaryOp::Gelu, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn shapes_broadcast_from_the_last_axis() {
        assert_eq!(broadcast_shape("t", &[2, 3], &[3]).unwrap(), [2, 3]);
        assert_eq!(broadcast_shape("t", &[4, 1], &[1, 5]).unwrap(), [4, 5]);
        assert_eq!(broadcast_shape("t", &[], &[2, 2]).unwrap(), [2, 2]);
        let e = broadcast_shape("add", &[2, 3], &[2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add") && e.contains("[2, 3]") && e.contains("[2]"),
            "{e}"
        );
    }

    #[test]
    fn a_broadcast_operand_gets_the_sum_of_its_repeats() {
        let g = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
        assert_eq!(sum_to_shape(&g, &[3]), array![5.0f32, 7.0, 9.0].into_dyn());
        assert_eq!(
            sum_to_shape(&g, &[2, 1]),
            array![[6.0f32], [15.0]].into_dyn()
        );
        assert_eq!(sum_to_shape(&g, &[]), ndarray::arr0(21.0f32).into_dyn());
    }

    #[test]
    fn erf_is_within_its_bound() {
        // erf(0.5) = 0.5204998778, erf(1) = 0.8427007929, erf(2) = 0.9953222650 (tables).
        for (x, want) in [
            (0.5f32, 0.520_499_9f32),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 3e-7);
        }
        assert!(erf(0.0).abs() < 3e-7);
    }

    #[test]
    fn sigmoid_does_not_overflow() {
        assert_eq!(UnaryOp::Sigmoid.forward(-1000.0), 0.0);
        assert_eq!(UnaryOp::Sigmoid.forward(1000.0), 1.0);
        assert_eq!(UnaryOp::Sigmoid.forward(0.0), 0.5);
    }
}
