//! Inverted dropout.
//!
//! In training, each value is kept with probability `1 − rate` and scaled by
//! `1 / (1 − rate)`, so its expected value is unchanged and inference needs no
//! rescaling: `y = x ⊙ m` with `mᵢ ∈ {0, 1/(1 − rate)}`. The backward is the same
//! product, `dx = dy ⊙ m`, so the forward saves the mask. At inference dropout
//! is the identity (the layer simply does not call this op).
//!
//! The mask is drawn from a ChaCha8 stream per block of 4096 values, all seeded
//! from one `seed`, so it is the same whatever the number of threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tape::{Backward, GradArgs, Tape, Var};
use crate::tensor::{as_slice, slice, slice_mut, zip_map_into, Pool, Tensor};

/// Values per random stream: fixed, so masks do not depend on the thread count.
const BLOCK: usize = 4096;

/// Draws an inverted-dropout mask of the given shape.
pub fn dropout_mask(shape: &[usize], rate: f32, seed: u64, pool: &mut Pool) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::invalid(
            "dropout",
            format!("rate must be in [0, 1), got {rate}"),
        ));
    }
    let scale = 1.0 / (1.0 - rate);
    // `rand` turns a u32 into a uniform f32 as `(u >> 8)·2⁻²⁴`, so "the draw is
    // at least `rate`" is the integer test `u >> 8 ≥ ⌈rate·2²⁴⌉` (exact: rate·2²⁴
    // fits an f64). Drawing a block of words at once and comparing integers
    // vectorises; the decisions are those of `rng.random::<f32>() >= rate`.
    let threshold = (f64::from(rate) * f64::from(1u32 << 24)).ceil() as u32;
    let mut mask = pool.to_overwrite(shape);
    mask.as_slice_mut()
        .expect("pooled")
        .par_chunks_mut(BLOCK)
        .enumerate()
        // `move`: the threshold and scale live in registers, not behind
        // references the compiler must reload at every store.
        .for_each(move |(block, m)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(block as u64);
            let mut words = [0u32; BLOCK];
            let words = &mut words[..m.len()];
            rng.fill(words);
            for (v, &u) in m.iter_mut().zip(words.iter()) {
                *v = if u >> 8 >= threshold { scale } else { 0.0 };
            }
        });
    Ok(mask)
}

struct Dropout {
    mask: Tensor,
}

impl Backward for Dropout {
    fn backward(&self, a: GradArgs<'_>) -> Vec<Option<Tensor>> {
        let mut dx = a.pool.to_overwrite(a.dy.shape());
        zip_map_into(
            slice_mut(&mut dx),
            slice(a.dy),
            slice(&self.mask),
            |g, m| g * m,
        );
        vec![Some(dx)]
    }

    fn recycle(self: Box<Self>, pool: &mut Pool) {
        pool.give(self.mask);
    }
}

impl Tape<'_> {
    /// Training-mode inverted dropout with the given drop `rate`; `seed` fixes the
    /// mask.
    pub fn dropout(&mut self, x: Var, rate: f32, seed: u64) -> Result<Var> {
        let (y, mask) = self.compute(&[x], |v, pool| {
            let mask = dropout_mask(v[0].shape(), rate, seed, pool)?;
            let mut y = pool.to_overwrite(v[0].shape());
            zip_map_into(
                slice_mut(&mut y),
                as_slice(v[0], "dropout")?,
                slice(&mask),
                |x, m| x * m,
            );
            Ok((y, mask))
        })?;
        Ok(self.push(y, &[x], Box::new(Dropout { mask })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer comparison keeps exactly the values a per-value
    /// `rng.random::<f32>() >= rate` would, block by block.
    #[test]
    fn mask_matches_drawing_one_float_at_a_time() {
        for rate in [0.0, 0.25, 0.5, 0.1, 0.999] {
            let len = 2 * BLOCK + 123;
            let mask = dropout_mask(&[len], rate, 7, &mut Pool::new()).unwrap();
            let scale = 1.0 / (1.0 - rate);
            for (block, m) in mask.as_slice().unwrap().chunks(BLOCK).enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                rng.set_stream(block as u64);
                for &v in m {
                    let want = if rng.random::<f32>() >= rate {
                        scale
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "rate {rate}, block {block}");
                }
            }
        }
    }
}
