//! A pool of `f32` (and byte) buffers, so that repeated steps of the same
//! shapes allocate nothing after the first. It decides where an op's outputs
//! and scratch live, never what the op computes.

use std::collections::HashMap;

use ndarray::IxDyn;

use crate::tensor::Tensor;

/// Free buffers, keyed by length.
///
/// A training step asks for the same sizes every time (activations, gradients,
/// im2col columns); giving buffers back at the end of a step and taking them
/// out again at the next turns the allocator into a lookup. The pool belongs to
/// one tape (no global state), so tapes in different threads never share it.
#[derive(Default, Debug)]
pub struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    /// Byte buffers (a max pooling's winners), keyed by length.
    free_bytes: HashMap<usize, Vec<Vec<u8>>>,
    /// Buffers it had to allocate because none of the length was free.
    fresh: usize,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A zero-filled buffer of `len` values, reused if one is free.
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(mut v) => {
                // Large buffers are cleared by all cores; small ones (biases,
                // kernels) are not worth sending to the thread pool.
                const CHUNK: usize = 1 << 16;
                if v.len() > CHUNK {
                    use rayon::prelude::*;
                    v.par_chunks_mut(CHUNK).for_each(|c| c.fill(0.0));
                } else {
                    v.fill(0.0);
                }
                v
            }
            None => {
                self.fresh += 1;
                vec![0.0; len]
            }
        }
    }

    /// A buffer of `len` values whose contents are left from earlier use (or
    /// zero): for outputs an op overwrites completely, saving a pass over memory.
    pub fn vec_to_overwrite(&mut self, len: usize) -> Vec<f32> {
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(v) => v,
            None => {
                self.fresh += 1;
                vec![0.0; len]
            }
        }
    }

    /// A zero-filled tensor of the given shape.
    pub fn zeros(&mut self, shape: &[usize]) -> Tensor {
        let len = shape.iter().product();
        let data = self.vec(len);
        Tensor::from_shape_vec(IxDyn(shape), data).expect("length is the shape's product")
    }

    /// A tensor whose every value the caller will write (see
    /// [`vec_to_overwrite`](Pool::vec_to_overwrite)).
    pub fn to_overwrite(&mut self, shape: &[usize]) -> Tensor {
        let len = shape.iter().product();
        let data = self.vec_to_overwrite(len);
        Tensor::from_shape_vec(IxDyn(shape), data).expect("length is the shape's product")
    }

    /// A copy of `t` in a pooled buffer (standard layout).
    pub fn copy_of(&mut self, t: &Tensor) -> Tensor {
        use rayon::prelude::*;
        let mut out = self.to_overwrite(t.shape());
        let dst = out.as_slice_mut().expect("pooled");
        match t.as_slice() {
            // Contiguous: a parallel memcpy, chunk by chunk.
            Some(src) => dst
                .par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s)),
            None => dst.iter_mut().zip(t.iter()).for_each(|(d, &v)| *d = v),
        }
        out
    }

    /// A byte buffer of `len` values left from earlier use (or zero), for
    /// small per-value records such as a max pooling's winners.
    pub fn bytes_to_overwrite(&mut self, len: usize) -> Vec<u8> {
        match self.free_bytes.get_mut(&len).and_then(Vec::pop) {
            Some(v) => v,
            None => {
                self.fresh += 1;
                vec![0; len]
            }
        }
    }

    /// Gives a byte buffer back for reuse.
    pub fn give_bytes(&mut self, v: Vec<u8>) {
        if v.capacity() > 0 {
            self.free_bytes.entry(v.len()).or_default().push(v);
        }
    }

    /// Gives a buffer back for reuse.
    pub fn give_vec(&mut self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.free.entry(v.len()).or_default().push(v);
        }
    }

    /// Gives a tensor's buffer back for reuse.
    pub fn give(&mut self, t: Tensor) {
        let (v, _offset) = t.into_raw_vec_and_offset();
        self.give_vec(v);
    }

    /// How many buffers the pool has allocated so far (rather than reused):
    /// constant from one step to the next in a steady state.
    pub fn fresh_allocations(&self) -> usize {
        self.fresh
    }

    /// Number of free buffers held (for tests of reuse).
    pub fn free_buffers(&self) -> usize {
        let bytes: usize = self.free_bytes.values().map(Vec::len).sum();
        self.free.values().map(Vec::len).sum::<usize>() + bytes
    }
}
