//! The tape: reverse-mode automatic differentiation, written out.
//!
//! Every op appends its output to the tape and, beside it, a small record of how
//! to send a gradient back to its inputs. Values are addressed by [`Var`]
//! handles, which are just positions on the tape. Because an op can only use
//! values recorded before it, the tape is already in topological order:
//! [`Tape::backward`] walks it once from the end to the start, and when it
//! reaches a value, every consumer of that value has already added its share of
//! the gradient (the chain rule's sum over paths).
//!
//! ```
//! use salient::{Tape, Tensor, ReluRule};
//! use ndarray::array;
//!
//! // y = relu(x), seeded with dy = 1: the gradient is 1 where x > 0.
//! let mut tape = Tape::new();
//! let x = tape.input(array![[-1.0f32, 2.0]].into_dyn());
//! let y = tape.relu(x).unwrap();
//! let seed = Tensor::ones(vec![1, 2]);
//! let grads = tape.backward(y, &seed, ReluRule::Gradient).unwrap();
//! assert_eq!(grads.get(x).unwrap().as_slice().unwrap(), &[0.0, 1.0]);
//! ```

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::ops::ReluRule;
use crate::tensor::{Pool, Tensor};

/// Which implementation the ops recorded on a tape run.
///
/// All three compute the same function; they differ in speed and in the
/// last bits of rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// The reference ops of [`crate::ops`]: plain loops and one matrix
    /// product per image, which define what each op computes.
    Reference,
    /// The fast paths of `crate::fast`, each output computed by the same
    /// chain of products wherever it sits, so that identical receptive fields
    /// give identical values and max-pooling ties are broken as the
    /// reference breaks them. What saliency uses.
    #[default]
    Fast,
    /// [`Fast`](Kernels::Fast) plus Winograd's transforms where they pay:
    /// the fastest, but an output's rounding depends on its place in a tile,
    /// so an exact tie may become a near-tie decided by a few ulps. What
    /// training, evaluation and prediction use, where no gradient is read
    /// pixel by pixel.
    Winograd,
}

/// A handle to a value on a [`Tape`]: which tape, and the value's position on
/// it. Cheap to copy.
///
/// A `Var` knows its tape: given to another tape, or to its own after
/// [`Tape::clear`], it is refused with an error rather than read as whatever
/// that tape holds at the same position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var {
    tape: u64,
    index: usize,
}

impl Var {
    /// The value's position on its tape.
    pub fn index(self) -> usize {
        self.index
    }
}

/// A fresh tape identity for every tape (and for every clearing of one).
fn next_tape_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What an op's backward rule is given.
pub struct GradArgs<'b> {
    /// The op's inputs, in the order the op took them.
    pub inputs: Vec<&'b Tensor>,
    /// The op's forward output.
    pub output: &'b Tensor,
    /// The gradient of the result with respect to the output, `∂L/∂y`.
    pub dy: &'b Tensor,
    /// Which inputs need a gradient; rules skip the work for the others.
    pub wants: Vec<bool>,
    /// The ReLU backward rule in force for this pass.
    pub relu: ReluRule,
    /// Where to take buffers from (a rule may also allocate its own).
    pub pool: &'b mut Pool,
}

/// The backward half of an op: given `∂L/∂y`, return `∂L/∂x` for each input,
/// of that input's shape (`None` where `wants` is false). What the forward
/// saved for this (a dropout mask, the softmax of a loss) lives in the
/// implementing struct.
///
/// Every op of [`crate::ops`] is one of these beside its forward; a user adds
/// an op the same way, with [`Tape::record`]:
///
/// ```
/// use salient::tape::{Backward, GradArgs};
/// use salient::{ReluRule, Tape, Tensor};
/// use ndarray::array;
///
/// /// `y = x³`, so `∂L/∂x = 3x² · ∂L/∂y`.
/// struct Cube;
///
/// impl Backward for Cube {
///     fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
///         let x = a.inputs[0];
///         vec![Some(ndarray::Zip::from(x).and(a.dy).map_collect(|&x, &g| 3.0 * x * x * g))]
///     }
/// }
///
/// let mut tape = Tape::new();
/// let x = tape.input(array![1.0f32, -2.0].into_dyn());
/// let y = tape.value(x)?.mapv(|v| v * v * v);
/// let y = tape.record(y, &[x], Box::new(Cube))?;
/// let grads = tape.backward(y, &Tensor::ones(vec![2]), ReluRule::Gradient)?;
/// assert_eq!(grads.get(x).unwrap().as_slice().unwrap(), &[3.0, 12.0]);
/// # Ok::<(), salient::Error>(())
/// ```
pub trait Backward: Send + Sync {
    /// `∂L/∂x` for each input, from `∂L/∂y` and what the forward saw.
    fn backward(&self, args: GradArgs<'_>) -> Vec<Option<Tensor>>;

    /// Returns saved buffers to the pool when the tape is cleared.
    fn recycle(self: Box<Self>, _pool: &mut Pool) {}
}

/// One recorded value: where it came from and how to differentiate through it.
struct Node {
    inputs: Vec<Var>,
    rule: Option<Box<dyn Backward>>,
    requires_grad: bool,
}

/// A reverse-mode autodiff tape.
///
/// Leaves enter through [`input`](Tape::input) (owned, differentiated),
/// [`param`](Tape::param) (borrowed, differentiated: a model's weights are read in
/// place, never copied), and [`constant`](Tape::constant) /
/// [`constant_ref`](Tape::constant_ref) (not differentiated). Ops are methods
/// defined next to their backward rules in [`crate::ops`].
///
/// A tape keeps a [`Pool`] of buffers. To reuse memory across training steps, end
/// a step with [`into_pool`](Tape::into_pool) and start the next with
/// [`with_pool`](Tape::with_pool). The tape has no global state: tapes in
/// different threads are independent.
pub struct Tape<'a> {
    id: u64,
    values: Vec<Cow<'a, Tensor>>,
    nodes: Vec<Node>,
    pool: Pool,
    recording: bool,
    kernels: Kernels,
}

impl Default for Tape<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Tape<'a> {
    /// A tape that records backward rules.
    pub fn new() -> Self {
        Self::with_pool(Pool::new())
    }

    /// A recording tape that takes its buffers from `pool`.
    pub fn with_pool(pool: Pool) -> Self {
        Tape {
            id: next_tape_id(),
            values: Vec::new(),
            nodes: Vec::new(),
            pool,
            recording: true,
            kernels: Kernels::default(),
        }
    }

    /// This tape with its ops run by `kernels` (by default [`Kernels::Fast`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Which implementation the ops on this tape run.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// A tape for evaluation and prediction: ops compute their values but record
    /// no backward rules and save nothing for a backward pass.
    pub fn inference() -> Self {
        Self::inference_with_pool(Pool::new())
    }

    /// [`inference`](Tape::inference) with buffers from `pool`.
    pub fn inference_with_pool(pool: Pool) -> Self {
        Tape {
            recording: false,
            ..Self::with_pool(pool)
        }
    }

    /// Whether backward rules are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Clears the tape, returning every owned buffer to the pool, and hands the
    /// pool back for the next step.
    pub fn into_pool(mut self) -> Pool {
        self.clear();
        self.pool
    }

    /// Forgets every value and rule, keeping their buffers in the pool. The
    /// tape's earlier vars are refused from then on.
    pub fn clear(&mut self) {
        self.id = next_tape_id();
        for value in self.values.drain(..) {
            if let Cow::Owned(t) = value {
                self.pool.give(t);
            }
        }
        for node in self.nodes.drain(..) {
            if let Some(rule) = node.rule {
                rule.recycle(&mut self.pool);
            }
        }
    }

    /// Number of values on the tape.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the tape holds no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A leaf we want the gradient of (typically the input image, for saliency).
    pub fn input(&mut self, value: Tensor) -> Var {
        self.leaf(Cow::Owned(value), true)
    }

    /// A borrowed leaf we want the gradient of (a model's weight, read in place).
    pub fn param(&mut self, value: &'a Tensor) -> Var {
        self.leaf(Cow::Borrowed(value), true)
    }

    /// A leaf that is not differentiated.
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.leaf(Cow::Owned(value), false)
    }

    /// A borrowed leaf that is not differentiated (weights during saliency or
    /// evaluation: their gradients are never computed).
    pub fn constant_ref(&mut self, value: &'a Tensor) -> Var {
        self.leaf(Cow::Borrowed(value), false)
    }

    fn leaf(&mut self, value: Cow<'a, Tensor>, requires_grad: bool) -> Var {
        // Ops read values as contiguous slices; an owned value in another
        // layout (a transposed view made owned, say) is laid out afresh.
        let value = match value {
            Cow::Owned(t) if !t.is_standard_layout() => {
                Cow::Owned(t.as_standard_layout().into_owned())
            }
            v => v,
        };
        self.values.push(value);
        self.nodes.push(Node {
            inputs: Vec::new(),
            rule: None,
            requires_grad,
        });
        self.var(self.values.len() - 1)
    }

    /// The var at `index` of this tape.
    fn var(&self, index: usize) -> Var {
        Var {
            tape: self.id,
            index,
        }
    }

    /// Whether `v` was made by this tape (since its last clearing).
    fn owns(&self, v: Var) -> bool {
        v.tape == self.id && v.index < self.values.len()
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> Result<&Tensor> {
        match self.owns(v) {
            true => Ok(self.values[v.index].as_ref()),
            false => Err(self.foreign(v)),
        }
    }

    /// Every value a backward pass reaches, in tape order: the differentiated
    /// leaves and every op output that depends on one (none on an inference
    /// tape).
    pub fn differentiated(&self) -> Vec<Var> {
        (0..self.values.len())
            .filter(|&i| self.recording && self.nodes[i].requires_grad)
            .map(|i| self.var(i))
            .collect()
    }

    /// Whether a gradient will flow to `v` (it is, or depends on, a
    /// differentiated leaf, and the tape is recording).
    pub fn requires_grad(&self, v: Var) -> bool {
        self.recording && self.owns(v) && self.nodes[v.index].requires_grad
    }

    fn foreign(&self, v: Var) -> Error {
        let whose = if v.tape == self.id {
            format!("it holds {} values", self.values.len())
        } else {
            "it was made by another tape, or before this one was cleared".to_string()
        };
        Error::invalid(
            "tape",
            format!("variable #{} is not on this tape ({whose})", v.index),
        )
    }

    /// Checks that every var is on this tape.
    pub(crate) fn check(&self, vars: &[Var]) -> Result<()> {
        match vars.iter().find(|&&v| !self.owns(v)) {
            Some(&v) => Err(self.foreign(v)),
            None => Ok(()),
        }
    }

    /// Runs an op's forward computation on the values of `vars`, with the pool
    /// to draw its output from (a split borrow the ops could not write alone).
    pub(crate) fn compute<R>(
        &mut self,
        vars: &[Var],
        f: impl FnOnce(&[&Tensor], &mut Pool) -> Result<R>,
    ) -> Result<R> {
        self.check(vars)?;
        let inputs: Vec<&Tensor> = vars.iter().map(|v| self.values[v.index].as_ref()).collect();
        f(&inputs, &mut self.pool)
    }

    /// Records a value computed from `inputs` (vars of this tape) with the
    /// rule that sends a gradient back to them: how an op defined outside
    /// this crate joins the tape (see [`Backward`]).
    ///
    /// The backward pass checks nothing the rule returns beyond what `+=`
    /// needs: each gradient must have its input's shape.
    pub fn record(
        &mut self,
        value: Tensor,
        inputs: &[Var],
        rule: Box<dyn Backward>,
    ) -> Result<Var> {
        self.check(inputs)?;
        let value = match value.is_standard_layout() {
            true => value,
            false => value.as_standard_layout().into_owned(),
        };
        Ok(self.push(value, inputs, rule))
    }

    /// Records an op's output. The rule is kept only when recording and when some
    /// input needs a gradient; otherwise its saved state goes straight back to
    /// the pool.
    pub(crate) fn push(&mut self, value: Tensor, inputs: &[Var], rule: Box<dyn Backward>) -> Var {
        let requires_grad =
            self.recording && inputs.iter().any(|v| self.nodes[v.index].requires_grad);
        let rule = if requires_grad {
            Some(rule)
        } else {
            rule.recycle(&mut self.pool);
            None
        };
        self.values.push(Cow::Owned(value));
        self.nodes.push(Node {
            inputs: inputs.to_vec(),
            rule,
            requires_grad,
        });
        self.var(self.values.len() - 1)
    }

    /// Reverse-mode pass: the gradient of `Σ seed ⊙ output` with respect to
    /// every recorded value that depends on a differentiated leaf.
    ///
    /// The seed is any upstream gradient of `output`'s shape: `1` for a scalar
    /// loss, or a one-hot over class scores, which makes the result the gradient
    /// of one class score (what a saliency map is). `relu` picks the ReLU
    /// backward rule for this pass only. The tape is unchanged, so `backward`
    /// may be called again with another seed.
    pub fn backward(&mut self, output: Var, seed: &Tensor, relu: ReluRule) -> Result<Gradients> {
        self.run_backward(output, seed, relu, None)
    }

    /// [`backward`](Tape::backward) keeping only the gradients of `keep` (an
    /// input, the parameters): every other gradient goes back to the pool as
    /// soon as it has been passed on. The result is the same, bit for bit.
    /// Unless `keep` holds `output`, the seed is read in place, not copied.
    pub fn backward_to(
        &mut self,
        output: Var,
        seed: &Tensor,
        relu: ReluRule,
        keep: &[Var],
    ) -> Result<Gradients> {
        self.check(keep)?;
        self.run_backward(output, seed, relu, Some(keep))
    }

    fn run_backward(
        &mut self,
        output: Var,
        seed: &Tensor,
        relu: ReluRule,
        keep: Option<&[Var]>,
    ) -> Result<Gradients> {
        self.check(&[output])?;
        if !self.recording {
            return Err(Error::invalid(
                "backward",
                "this tape was made with Tape::inference() and recorded no backward rules",
            ));
        }
        let out_shape = self.values[output.index].shape();
        if seed.shape() != out_shape {
            return Err(crate::tensor::shape_error(
                "backward",
                "the seed must have the output's shape",
                "output",
                out_shape,
                "seed",
                seed.shape(),
            ));
        }
        let id = self.id;
        let Tape {
            values,
            nodes,
            pool,
            ..
        } = self;
        // Which gradients the caller reads (all, without `keep`), how many ops
        // consume each value, and which values' gradient slots hold instead
        // the gradient of the max pooling at that position (and its spec).
        let kept: Vec<bool> = match keep {
            None => vec![true; values.len()],
            Some(keep) => (0..values.len())
                .map(|index| keep.contains(&Var { tape: id, index }))
                .collect(),
        };
        let mut grads: Vec<Option<Tensor>> = (0..values.len()).map(|_| None).collect();
        // The output's gradient is the seed: copied only if the caller keeps
        // it (nothing recorded after the output adds to it), else read in
        // place (a convolution's seed is tens of megabytes).
        let seed_in_place = nodes[output.index].requires_grad && !kept[output.index];
        if nodes[output.index].requires_grad && kept[output.index] {
            grads[output.index] = Some(pool.copy_of(seed));
        }
        let owned = |dy: Cow<'_, Tensor>, pool: &mut Pool| match dy {
            Cow::Owned(t) => t,
            Cow::Borrowed(t) => pool.copy_of(t),
        };
        // Walk backwards: every consumer of value i sits after i on the tape, so
        // by the time we reach i its gradient is complete.
        for i in (0..=output.index).rev() {
            // Leaves keep their gradient; only ops pass it on.
            let Some(rule) = nodes[i].rule.as_ref() else {
                continue;
            };
            let dy = match grads[i].take() {
                Some(g) => Cow::Owned(g),
                None if seed_in_place && i == output.index => Cow::Borrowed(seed),
                None => continue,
            };
            let node = &nodes[i];
            let input_grads = rule.backward(GradArgs {
                inputs: node
                    .inputs
                    .iter()
                    .map(|v| values[v.index].as_ref())
                    .collect(),
                output: values[i].as_ref(),
                dy: &dy,
                wants: node
                    .inputs
                    .iter()
                    .map(|v| nodes[v.index].requires_grad)
                    .collect(),
                relu,
                pool,
            });
            // A rule (perhaps a user's, through `record`) must give one gradient
            // per input, each of its input's shape.
            if input_grads.len() != node.inputs.len() {
                return Err(Error::invalid(
                    "backward",
                    format!(
                        "the op recorded as value #{i} returned {} gradients for its {} inputs",
                        input_grads.len(),
                        node.inputs.len()
                    ),
                ));
            }
            for (v, dx) in node.inputs.iter().zip(input_grads) {
                let Some(dx) = dx else { continue };
                if dx.shape() != values[v.index].shape() {
                    return Err(crate::tensor::shape_error(
                        "backward",
                        format!("the op recorded as value #{i} returned a gradient of another shape than its input's"),
                        "input",
                        values[v.index].shape(),
                        "gradient",
                        dx.shape(),
                    ));
                }
                match &mut grads[v.index] {
                    Some(acc) => {
                        *acc += &dx;
                        pool.give(dx);
                    }
                    slot @ None => *slot = Some(dx),
                }
            }
            if kept[i] {
                grads[i] = Some(owned(dy, pool));
            } else if let Cow::Owned(dy) = dy {
                pool.give(dy);
            }
        }
        // Leaves outside `keep` (ops' gradients went back as they were used).
        for (g, _) in grads.iter_mut().zip(&kept).filter(|(_, &k)| !k) {
            if let Some(g) = g.take() {
                pool.give(g);
            }
        }
        Ok(Gradients { tape: id, grads })
    }

    /// [`backward`](Tape::backward) from a scalar loss, seeded with 1.
    pub fn backward_scalar(&mut self, loss: Var) -> Result<Gradients> {
        let seed = self.unit_seed(loss)?;
        self.backward(loss, &seed, ReluRule::Gradient)
    }

    /// [`backward_to`](Tape::backward_to) from a scalar loss, seeded with 1:
    /// a training step's backward, which keeps only the parameters' gradients.
    pub fn backward_scalar_to(&mut self, loss: Var, keep: &[Var]) -> Result<Gradients> {
        let seed = self.unit_seed(loss)?;
        self.backward_to(loss, &seed, ReluRule::Gradient, keep)
    }

    /// `∂L/∂L = 1`, for a loss that holds one value.
    fn unit_seed(&self, loss: Var) -> Result<Tensor> {
        let shape = self.value(loss)?.shape().to_vec();
        if shape.iter().product::<usize>() != 1 {
            return Err(Error::invalid(
                "backward_scalar",
                format!("the loss must hold one value, but has shape {shape:?}"),
            ));
        }
        Ok(Tensor::ones(shape))
    }

    /// Returns the buffers of a finished gradient set to the pool.
    pub fn recycle(&mut self, grads: Gradients) {
        for g in grads.grads.into_iter().flatten() {
            self.pool.give(g);
        }
    }
}

/// The result of a backward pass: one gradient per value on the tape, for the
/// values that depend on a differentiated leaf.
#[derive(Debug)]
pub struct Gradients {
    tape: u64,
    grads: Vec<Option<Tensor>>,
}

impl Gradients {
    /// `∂L/∂v`, if a gradient reached `v`.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        if v.tape != self.tape {
            return None;
        }
        self.grads.get(v.index).and_then(Option::as_ref)
    }

    /// Takes `∂L/∂v` out, leaving `None`.
    pub fn take(&mut self, v: Var) -> Option<Tensor> {
        if v.tape != self.tape {
            return None;
        }
        self.grads.get_mut(v.index).and_then(Option::take)
    }
}
