//! A register-blocked matrix-multiply kernel for CPUs with AVX-512.
//!
//! The reference ops in [`crate::ops`] define their convolutions and dense
//! layers as matrix products (`W·im2col(x)`, `x·Wᵀ`); this kernel computes
//! those products fast, for `fast::conv`, `fast::dense` and Winograd's 36
//! products alike.
//!
//! The default tile is `C[8, 48] = Σₖ A[8, k] · B[k, 48]`, held in 24 of the
//! 32 vector registers (8 rows × three 16-lane vectors). Per step `k`, three
//! loads of `B` and eight broadcasts of `A` feed 24 fused multiply-adds: the
//! loop is bound by the FMA units rather than by the load ports, as long as
//! the rows of `B` it streams stay in cache. (An 8 × 32 tile, with 16
//! accumulators, is slower per lane: its 10 loads per 16 FMAs saturate the
//! load ports, so it runs only where 48 would pad a lot.) Products 64 columns wide (a weight gradient with 64 output
//! channels) run `C[6, 64]` tiles instead: 24 accumulators again, from 6
//! broadcasts and 4 loads.
//!
//! [`matmul`] walks a whole product tile by tile. Rows past `m` and columns past
//! `n` are handled with clamped row pointers and AVX-512 lane masks, so any
//! size works without padding; a last panel of a few columns goes column by
//! column instead (`narrow_columns`). Machines without AVX-512 use
//! `matrixmultiply::sgemm` (see [`super::gemm`](mod@super::gemm)); [`available`] tells which.

/// A multiple of every tile's rows (8 and 6): where to split a product's rows.
const ROWS: usize = 24;
/// Steps of `k` per block, so that the rows of `B` a tile streams stay in
/// cache (for a [`Strided`] `B`; a [`Shifted`] one runs in one block).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub const KC: usize = 288;

/// Whether the AVX-512 code runs: the CPU has it, and `SALIENT_PORTABLE` is
/// not set to `1` (which forces the portable path, to test it on a machine
/// that has AVX-512). Read once per process.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let forced_portable = std::env::var("SALIENT_PORTABLE").is_ok_and(|v| v == "1");
        #[cfg(target_arch = "x86_64")]
        let has = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        has && !forced_portable
    })
}

/// What to do with a finished tile.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// Add the product to what `C` holds (`C += A·B`) instead of overwriting it.
    pub accumulate: bool,
    /// Add `bias[row]` to every element of a row.
    pub row_bias: Option<&'a [f32]>,
    /// Then `(x − mean[row])·scale[row] + shift[row]`.
    pub affine: Option<Affine<'a>>,
    /// Then add `residual[at]`, `at` being the element's index in `C`'s
    /// slice: a residual connection (`C` rows at offsets excluded).
    pub residual: Option<&'a [f32]>,
    /// Apply `max(·, 0)` last.
    pub relu: bool,
}

/// A per-row `(x − mean)·scale + shift`: batch normalisation at inference
/// on a convolution's output channels, taken as the outputs leave the
/// products. The same operations in the same order as the separate op
/// (`fast::norm`), so the same bits.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a> {
    pub mean: &'a [f32],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
}

impl<'a> Affine<'a> {
    /// The rows from `i0` on.
    pub fn from(self, i0: usize) -> Affine<'a> {
        Affine {
            mean: &self.mean[i0..],
            scale: &self.scale[i0..],
            shift: &self.shift[i0..],
        }
    }

    /// The shortest of the three tables.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn rows(&self) -> usize {
        self.mean.len().min(self.scale.len()).min(self.shift.len())
    }
}

impl Epilogue<'_> {
    /// `C = A·B`.
    pub const STORE: Epilogue<'static> = Epilogue {
        accumulate: false,
        row_bias: None,
        affine: None,
        relu: false,
        residual: None,
    };
    /// `C += A·B`.
    pub const ACCUMULATE: Epilogue<'static> = Epilogue {
        accumulate: true,
        row_bias: None,
        affine: None,
        relu: false,
        residual: None,
    };

    /// The epilogue on one value `x` of row `i`, at `C[at]` (the product,
    /// plus `C`'s value if accumulating): bias, affine, residual, ReLU, in
    /// the tiles' order.
    #[inline]
    fn finish(&self, i: usize, at: usize, mut x: f32) -> f32 {
        if let Some(b) = self.row_bias {
            x += b[i];
        }
        if let Some(a) = self.affine {
            x = (x - a.mean[i]) * a.scale[i] + a.shift[i];
        }
        if let Some(r) = self.residual {
            x += r[at];
        }
        if self.relu && x < 0.0 {
            0.0
        } else {
            x
        }
    }
}

/// A strided matrix operand: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// A matrix whose rows are windows of one buffer at arbitrary offsets:
/// element `(i, j)` at `data[offs[i] + j]`.
///
/// This is how a stride-1 convolution avoids im2col: row `(c, i, j)` of the
/// unrolled input is the image plane `c` read from offset `i·W + j` onwards.
#[derive(Clone, Copy, Debug)]
pub struct Shifted<'a> {
    pub data: &'a [f32],
    pub offs: &'a [usize],
}

/// A [`Shifted`] matrix whose columns are also picked from a table: element
/// `(i, j)` at `data[offs[i] + cols[j]]`. Only as `A`, whose columns the
/// kernel walks one step at a time.
///
/// The weight gradient of a stride-1 convolution sums over output pixels; with
/// `cols` listing where each real output sits on the wide grid, the sum skips
/// the wide grid's extra columns instead of multiplying zeros.
#[derive(Clone, Copy, Debug)]
pub struct Gapped<'a> {
    pub data: &'a [f32],
    pub offs: &'a [usize],
    pub cols: &'a [usize],
}

/// Any kind of operand.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Strided(Strided<'a>),
    Shifted(Shifted<'a>),
    Gapped(Gapped<'a>),
}

impl<'a> From<Strided<'a>> for Operand<'a> {
    fn from(s: Strided<'a>) -> Self {
        Operand::Strided(s)
    }
}

impl<'a> From<Shifted<'a>> for Operand<'a> {
    fn from(s: Shifted<'a>) -> Self {
        Operand::Shifted(s)
    }
}

impl<'a> From<Gapped<'a>> for Operand<'a> {
    fn from(g: Gapped<'a>) -> Self {
        Operand::Gapped(g)
    }
}

impl Operand<'_> {
    /// Whether every element of the `rows × cols` matrix lies in the buffer.
    #[cfg(target_arch = "x86_64")]
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        match self {
            Operand::Strided(s) => (rows - 1) * s.rs + (cols - 1) * s.cs < s.data.len(),
            Operand::Shifted(s) => {
                s.offs.len() >= rows && s.offs[..rows].iter().all(|&o| o + cols - 1 < s.data.len())
            }
            Operand::Gapped(g) => {
                let last = g.cols.get(..cols).and_then(|c| c.iter().max());
                g.offs.len() >= rows
                    && last.is_some_and(|&l| g.offs[..rows].iter().all(|&o| o + l < g.data.len()))
            }
        }
    }

    /// Whether each row's columns are contiguous.
    #[cfg(target_arch = "x86_64")]
    fn unit_columns(&self) -> bool {
        match self {
            Operand::Strided(s) => s.cs == 1,
            Operand::Shifted(_) => true,
            Operand::Gapped(_) => false,
        }
    }

    /// The element `(i, j)`.
    fn at(&self, i: usize, j: usize) -> f32 {
        match self {
            Operand::Strided(s) => s.data[i * s.rs + j * s.cs],
            Operand::Shifted(s) => s.data[s.offs[i] + j],
            Operand::Gapped(g) => g.data[g.offs[i] + g.cols[j]],
        }
    }

    /// A dense row-major copy, for the portable path.
    fn dense(&self, rows: usize, cols: usize) -> Vec<f32> {
        (0..rows)
            .flat_map(|i| (0..cols).map(move |j| (i, j)))
            .map(|(i, j)| self.at(i, j))
            .collect()
    }
}

fn dense_if_shifted(op: &Operand<'_>, rows: usize, cols: usize) -> Option<Vec<f32>> {
    (!matches!(op, Operand::Strided(_))).then(|| op.dense(rows, cols))
}

fn strided_view<'s>(op: &Operand<'s>, dense: Option<&'s [f32]>, cols: usize) -> Strided<'s> {
    match (op, dense) {
        (Operand::Strided(s), _) => *s,
        (_, Some(d)) => Strided {
            data: d,
            rs: cols,
            cs: 1,
        },
        (_, None) => unreachable!("non-strided operands are copied densely first"),
    }
}

/// `C[m, n] (+)= A[m, k] · B[k, n]`, tile by tile, with `B`'s columns
/// contiguous and `C` row-major with row stride `c_rs`. Without AVX-512 this
/// is [`matmul_portable`].
///
/// # Panics
/// If an operand is too short for the sizes and strides given, or `B` has
/// non-unit column stride.
#[allow(clippy::too_many_arguments)]
pub fn matmul<'a, 'b>(
    m: usize,
    n: usize,
    k: usize,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'b>>,
    c: &mut [f32],
    c_rs: usize,
    ep: Epilogue<'_>,
) {
    matmul_on(
        m,
        n,
        k,
        a.into(),
        b.into(),
        c,
        Out::Rows(c_rs),
        ep,
        None,
        available(),
    );
}

/// [`matmul`] with the rows of `C` shared out among the `rayon` threads, one
/// contiguous band each (in whole tiles): for the dense layers' products,
/// where a batch is one large product rather than many small ones.
#[allow(clippy::too_many_arguments)]
pub fn matmul_par(
    m: usize,
    n: usize,
    k: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    c: &mut [f32],
    c_rs: usize,
    ep: Epilogue<'_>,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    // Below about a million multiply-adds a second thread costs more than it saves.
    if threads == 1 || m < 2 * ROWS || m * n * k < 1 << 20 {
        return matmul(m, n, k, a, b, c, c_rs, ep);
    }
    let band = m.div_ceil(threads).next_multiple_of(ROWS);
    assert!(c.len() >= (m - 1) * c_rs + n, "C is too short");
    c[..(m - 1) * c_rs + n]
        .par_chunks_mut(band * c_rs)
        .enumerate()
        .for_each(|(t, c)| {
            let i0 = t * band;
            let rows = band.min(m - i0);
            let a = Strided {
                data: &a.data[i0 * a.rs..],
                ..a
            };
            let ep = Epilogue {
                row_bias: ep.row_bias.map(|bias| &bias[i0..]),
                affine: ep.affine.map(|a| a.from(i0)),
                residual: ep.residual.map(|r| &r[i0 * c_rs..]),
                ..ep
            };
            matmul(rows, n, k, a, b, c, c_rs, ep);
        });
}

/// `C += A·B` where row `i` of `C` is `c[offs[i]..][..n]`: rows may overlap,
/// and overlapping rows sum. This is col2im fused into the product: the input
/// gradient of a stride-1 convolution adds row `(c, i, j)` of `Wᵀ·dy` onto the
/// input plane `c` at offset `i·W + j`, straight from the registers.
///
/// # Panics
/// If an operand is too short for the sizes, offsets and strides given, or `B`
/// has non-unit column stride.
pub fn matmul_add_at<'a, 'b>(
    m: usize,
    n: usize,
    k: usize,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'b>>,
    c: &mut [f32],
    offs: &[usize],
) {
    assert!(offs.len() >= m, "fewer offsets than rows");
    matmul_on(
        m,
        n,
        k,
        a.into(),
        b.into(),
        c,
        Out::At(offs),
        Epilogue::ACCUMULATE,
        None,
        available(),
    );
}

/// How the kernel steps along the rows of `A`: `s·d`, or from a table.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
enum Walk<'a> {
    By(usize),
    At(&'a [usize]),
}

/// Where the rows of `C` are.
#[derive(Clone, Copy, Debug)]
enum Out<'a> {
    /// Row `i` at `c[i·rs..]`.
    Rows(usize),
    /// Row `i` at `c[offs[i]..]`.
    At(&'a [usize]),
}

impl Out<'_> {
    fn row(&self, i: usize) -> usize {
        match self {
            Out::Rows(rs) => i * rs,
            Out::At(offs) => offs[i],
        }
    }
}

/// An AVX-512 lane mask with the low `n` of 16 lanes set.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn lanes(n: usize) -> u16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// The low `n` bits set (all 64 for `n ≥ 64`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// Bit `l` set for each column `j + l`, `l < cols ≤ 64`, that `keep` stores.
/// Kept columns come in runs of `first` every `row`, so this ORs a few runs
/// together rather than testing lane by lane: it runs once per panel.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn kept_lanes(keep: Keep, j: usize, cols: usize) -> u64 {
    let run = |from: usize, len: usize| low_bits(len) << from;
    let pos = j % keep.row;
    let mut bits = if pos < keep.first {
        run(0, keep.first - pos)
    } else {
        0
    };
    let mut start = keep.row - pos;
    while start < cols {
        bits |= run(start, keep.first);
        start += keep.row;
    }
    bits & low_bits(cols)
}

/// What a tile stores of each of its (up to four) 16-lane vectors under
/// `keep`: worked out once per panel, not per row and vector (a popcount alone
/// is a dozen instructions without the `popcnt` feature, and the first
/// layers' tiles are short). Plain integers, so that it lives in registers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kept {
    /// Bit `16·v + l`: lane `l` of vector `v` is kept.
    lanes: u64,
    /// Bits `16·v..16·v + count_v`: where vector `v`'s kept values go, packed.
    packed: u64,
    /// Byte `v`: how many lanes of vector `v` are kept.
    counts: u32,
    /// Bit `v`: vector `v`'s kept lanes are not already the low ones, so need
    /// a compress (never when the row is a multiple of 16 wide). A panel
    /// with any bit set runs the tile that compresses every vector: one
    /// instruction more per vector, against a test per vector.
    compress: u8,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Kept {
    /// From the lane bits of [`kept_lanes`].
    fn new(lanes: u64) -> Self {
        let mut kept = Kept {
            lanes,
            ..Kept::default()
        };
        for v in 0..4 {
            let l = (lanes >> (16 * v)) as u16;
            let count = l.count_ones();
            kept.packed |= u64::from(self::lanes(count as usize)) << (16 * v);
            kept.counts |= count << (8 * v);
            kept.compress |= u8::from(l & l.wrapping_add(1) != 0) << v;
        }
        kept
    }
}

/// Which columns of a product to store: of every `row` consecutive columns,
/// the first `first`, packed together. A stride-1 convolution computed on an
/// output grid as wide as its input (`row = W`) keeps the `first = Wo` real
/// outputs of each row this way, with no second pass over memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub row: usize,
    pub first: usize,
}

impl Keep {
    /// Where column `j` of the full product lands among the kept ones (for a
    /// dropped column, where the next kept one lands).
    pub fn packed(&self, j: usize) -> usize {
        (j / self.row) * self.first + (j % self.row).min(self.first)
    }
}

/// [`matmul`] storing only the columns `keep` selects, packed: row `i` of `C`
/// holds `keep.packed(n)` values from `c[i * c_rs]` on. No accumulation.
#[allow(clippy::too_many_arguments)]
pub fn matmul_keep<'a, 'b>(
    m: usize,
    n: usize,
    k: usize,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'b>>,
    c: &mut [f32],
    c_rs: usize,
    ep: Epilogue<'_>,
    keep: Keep,
) {
    assert!(!ep.accumulate, "matmul_keep stores, it does not accumulate");
    assert!(keep.first >= 1 && keep.first <= keep.row, "keep {keep:?}");
    matmul_on(
        m,
        n,
        k,
        a.into(),
        b.into(),
        c,
        Out::Rows(c_rs),
        ep,
        Some(keep),
        available(),
    );
}

/// The product on the AVX-512 kernel (`fast`, which the caller checked the CPU
/// has) or on the portable path.
#[allow(clippy::too_many_arguments)]
fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut [f32],
    out: Out<'_>,
    ep: Epilogue<'_>,
    keep: Option<Keep>,
    fast: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if !fast {
        // Shifted operands are copied out densely first.
        let (da, db) = (dense_if_shifted(&a, m, k), dense_if_shifted(&b, k, n));
        let sa = strided_view(&a, da.as_deref(), k);
        let sb = strided_view(&b, db.as_deref(), n);
        if let (None, Out::Rows(c_rs)) = (keep, out) {
            return matmul_portable(m, n, k, sa, sb, c, c_rs, ep);
        }
        // Compute in full, then keep, or add at the rows' offsets.
        // The epilogue in the kernel's order: accumulate, bias, ReLU.
        let mut full = vec![0.0f32; m * n];
        matmul_portable(m, n, k, sa, sb, &mut full, n, Epilogue::STORE);
        let keep = keep.unwrap_or(Keep { row: n, first: n });
        for (i, row) in full.chunks(n).enumerate() {
            for (j, &v) in row
                .iter()
                .enumerate()
                .filter(|(j, _)| j % keep.row < keep.first)
            {
                let at = out.row(i) + keep.packed(j);
                c[at] = ep.finish(i, at, if ep.accumulate { c[at] + v } else { v });
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    matmul_tiled(m, n, k, a, b, c, out, ep, keep);
    // `available()` is false off x86_64, so `fast` never is.
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the AVX-512 kernel runs on x86_64 only");
}

/// [`matmul_on`] on the AVX-512 kernel, in blocks of [`KC`] steps.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn matmul_tiled(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut [f32],
    out: Out<'_>,
    ep: Epilogue<'_>,
    keep: Option<Keep>,
) {
    assert!(b.unit_columns(), "B must have contiguous columns");
    assert!(a.fits(m, k), "A is too short");
    assert!(b.fits(k, n), "B is too short");
    let stored = keep.map_or(n, |kp| kp.packed(n));
    let last_row = match out {
        Out::Rows(c_rs) => (m - 1) * c_rs,
        Out::At(offs) => offs[..m].iter().copied().max().unwrap_or(0),
    };
    assert!(
        stored == 0 || last_row + stored - 1 < c.len(),
        "C is too short"
    );
    if let Some(bias) = ep.row_bias {
        assert!(bias.len() >= m, "bias is too short");
    }
    if let Some(affine) = ep.affine {
        assert!(affine.rows() >= m, "affine is too short");
    }
    if let Some(residual) = ep.residual {
        assert!(matches!(out, Out::Rows(_)), "a residual needs rows of C");
        assert!(
            stored == 0 || last_row + stored - 1 < residual.len(),
            "the residual is too short"
        );
    }
    // Blocks of KC steps keep the slice of B a tile streams (KC × NR values)
    // in cache; each block after the first accumulates onto the last, and the
    // bias, affine and ReLU wait for the final block.
    let shape = tile_shape(n);
    // A last panel of a few columns goes column by column, when A's columns
    // are contiguous (see `narrow_columns`).
    let nr = 16 * shape.vecs();
    let tail = n - (n - 1) / nr * nr;
    let tiled = match a {
        Operand::Strided(s) if s.rs == 1 && tail <= NARROW => n - tail,
        _ => n,
    };
    // A shifted B's rows are windows of one image, which stays in cache
    // whatever the block: its products take every step in one block, and
    // write C once.
    let steps = match b {
        Operand::Shifted(_) => k.max(1),
        _ => KC,
    };
    for k0 in (0..k.max(1)).step_by(steps) {
        let kc = steps.min(k - k0.min(k));
        let last = k0 + steps >= k;
        let block_ep = Epilogue {
            accumulate: ep.accumulate || k0 > 0,
            row_bias: if last { ep.row_bias } else { None },
            affine: if last { ep.affine } else { None },
            relu: ep.relu && last,
            residual: if last { ep.residual } else { None },
        };
        let block = Block {
            m,
            n: tiled,
            k0,
            kc,
            a,
            b,
            out,
            ep: block_ep,
            keep,
        };
        match shape {
            TileShape::Wide => tiles::<8, 3>(&block, c),
            TileShape::Narrow => tiles::<8, 2>(&block, c),
            TileShape::Square => tiles::<6, 4>(&block, c),
        }
        if let (Operand::Strided(at), true) = (a, tiled < n) {
            narrow_columns(&block, at, tiled..n, c);
        }
    }
}

/// The tile shapes the kernel runs: rows of `A` × 16-lane vectors of `B`,
/// each with 24 accumulators (16 for `Narrow`).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileShape {
    /// 8 × 48: the default.
    Wide,
    /// 8 × 32, for widths that 48 would pad a lot (32, 96+32, …).
    Narrow,
    /// 6 × 64: per step 6 broadcasts and 4 loads feed 24 FMAs, the fewest
    /// loads per FMA; for widths that 64 pads less than 48 does (64, 121, …).
    Square,
}

#[cfg(target_arch = "x86_64")]
impl TileShape {
    fn vecs(self) -> usize {
        match self {
            TileShape::Wide => 3,
            TileShape::Narrow => 2,
            TileShape::Square => 4,
        }
    }
}

/// The shape for a product `n` columns wide: the one that pads the fewest
/// lanes, with 8 × 32 charged 13% more per lane (16 FMAs per 10 loads
/// saturate the load ports).
#[cfg(target_arch = "x86_64")]
fn tile_shape(n: usize) -> TileShape {
    let used = |v: usize| n as f64 / (n.div_ceil(16 * v) * 16 * v) as f64;
    let (wide, square) = (used(3), used(4));
    if used(2) > 1.13 * wide.max(square) {
        TileShape::Narrow
    } else if square > wide {
        TileShape::Square
    } else {
        TileShape::Wide
    }
}

/// One block of steps of a product, for [`tiles`].
#[cfg(target_arch = "x86_64")]
struct Block<'a> {
    m: usize,
    /// Columns to run as tiles (the rest go column by column).
    n: usize,
    k0: usize,
    kc: usize,
    a: Operand<'a>,
    b: Operand<'a>,
    out: Out<'a>,
    ep: Epilogue<'a>,
    keep: Option<Keep>,
}

/// `$run!(rows)` with `rows` the kernel's view of `B`'s rows from column `$j`
/// and step `$k0` on, of the operand's own kind (each kind its own
/// instantiation of the kernel).
#[cfg(target_arch = "x86_64")]
macro_rules! with_rows_of_b {
    ($b:expr, $j:expr, $k0:expr, $run:ident) => {
        match $b {
            Operand::Strided(s) => $run!(avx512::StridedRows {
                base: s.data.as_ptr().add($j + $k0 * s.rs),
                rs: s.rs,
            }),
            Operand::Shifted(s) => $run!(avx512::ShiftedRows {
                base: s.data.as_ptr().add($j),
                offs: s.offs.as_ptr().add($k0),
            }),
            Operand::Gapped(_) => unreachable!("B has contiguous columns (asserted)"),
        }
    };
}

/// Columns `0..blk.n` of one block of steps, tile by tile, in `R × 16·V` tiles.
#[cfg(target_arch = "x86_64")]
fn tiles<const R: usize, const V: usize>(blk: &Block<'_>, c: &mut [f32]) {
    let Block {
        m,
        n,
        k0,
        kc,
        a,
        b,
        out,
        ep,
        keep,
    } = *blk;
    let nr = 16 * V;
    // Per row block, where its R rows of A and of C start (rows past `m`
    // clamped to the last): worked out once, not once per tile.
    let (a_base, walk) = match a {
        Operand::Strided(s) => (s.data.as_ptr(), Walk::By(s.cs)),
        Operand::Shifted(s) => (s.data.as_ptr(), Walk::By(1)),
        Operand::Gapped(g) => (g.data.as_ptr(), Walk::At(&g.cols[k0..])),
    };
    let blocks: Vec<([usize; R], [usize; R])> = (0..m)
        .step_by(R)
        .map(|i| {
            let row = |r: usize| (i + r).min(m - 1);
            let a_offs = std::array::from_fn(|r| match a {
                Operand::Strided(s) => row(r) * s.rs + k0 * s.cs,
                Operand::Shifted(s) => s.offs[row(r)] + k0,
                Operand::Gapped(g) => g.offs[row(r)],
            });
            (a_offs, std::array::from_fn(|r| out.row(row(r))))
        })
        .collect();
    // Panels of B outside, row blocks of A inside: one panel of B serves
    // every row block while it is in L1.
    for j in (0..n).step_by(nr) {
        let cols = nr.min(n - j);
        // A narrow last panel runs a narrower tile: no FMAs on empty
        // vectors (for 193 columns, the last panel holds just one).
        let tile_vecs = cols.div_ceil(16);
        // With `keep`, the lanes to store and where the tile's first kept
        // column goes.
        let (keep_lanes, c_col) = match keep {
            None => (None, j),
            Some(kp) => (Some(Kept::new(kept_lanes(kp, j, cols))), kp.packed(j)),
        };
        let compress = keep_lanes.is_some_and(|k| k.compress != 0);
        for (q, (a_offs, c_offs)) in blocks.iter().enumerate() {
            let i = q * R;
            let rows = R.min(m - i);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is available (checked by the caller); its
            // asserts show that every row < m, column < n and step < k
            // addressed lies in the slices, and rows past `rows` are clamped
            // to the last one.
            unsafe {
                let walk = match walk {
                    Walk::By(d) => avx512::Walk::By(d),
                    Walk::At(table) => avx512::Walk::At(table.as_ptr()),
                };
                let t = avx512::Tile {
                    k: kc,
                    a: a_offs.map(|o| a_base.add(o)),
                    c: c_offs.map(|o| c.as_mut_ptr().add(o + c_col)),
                    keep: keep_lanes,
                    rows,
                    cols,
                    bias: ep.row_bias.map(|b| b.as_ptr().add(i)),
                    affine: ep.affine.map(|a| {
                        let a = a.from(i);
                        [a.mean.as_ptr(), a.scale.as_ptr(), a.shift.as_ptr()]
                    }),
                    residual: ep
                        .residual
                        .map(|r| c_offs.map(|o| r.as_ptr().add(o + c_col))),
                    accumulate: ep.accumulate,
                    relu: ep.relu,
                };
                // One instantiation per kind of A walk, B rows, width and
                // store (see `avx512::tile`).
                macro_rules! width {
                    ($rows_of_b:expr, $steps:expr, $compress:expr) => {
                        match tile_vecs {
                            1 => avx512::tile::<_, _, R, 1, $compress>(&t, $rows_of_b, $steps),
                            2 if V >= 2 => {
                                avx512::tile::<_, _, R, 2, $compress>(&t, $rows_of_b, $steps)
                            }
                            3 if V >= 3 => {
                                avx512::tile::<_, _, R, 3, $compress>(&t, $rows_of_b, $steps)
                            }
                            _ => avx512::tile::<_, _, R, V, $compress>(&t, $rows_of_b, $steps),
                        }
                    };
                    ($rows_of_b:expr, $steps:expr) => {
                        if compress {
                            width!($rows_of_b, $steps, true)
                        } else {
                            width!($rows_of_b, $steps, false)
                        }
                    };
                }
                macro_rules! run {
                    ($rows_of_b:expr) => {
                        match walk {
                            avx512::Walk::By(d) => width!($rows_of_b, avx512::StepsBy(d)),
                            avx512::Walk::At(p) => width!($rows_of_b, avx512::StepsAt(p)),
                        }
                    };
                }
                with_rows_of_b!(b, j, k0, run);
            }
        }
    }
}

/// Widest last panel [`matmul_on`] runs column by column.
#[cfg(target_arch = "x86_64")]
const NARROW: usize = 8;

/// Whether a product `n` columns wide runs a last panel column by column,
/// which reads `A`'s columns: only then is it worth laying `A` out transposed
/// (the tiles broadcast from rows or columns alike, in the same order).
pub fn reads_columns_of_a(n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() && n > 0 {
        let nr = 16 * tile_shape(n).vecs();
        return n - (n - 1) / nr * nr <= NARROW;
    }
    let _ = n;
    false
}
/// Rows per call of the column kernel: four vectors.
#[cfg(target_arch = "x86_64")]
const COLUMN: usize = 64;

/// Columns `cols` of one block of steps of the product, one column at a
/// time with the rows of `A` (here `a`, the block's `A` as strided) as the
/// vector side: `C[i, j] = Σₛ A[i, s]·B[s, j]`
/// for 16 rows `i` per fused multiply-add, reading `A`'s columns (contiguous,
/// `A[i, s]` at `data[i + s·cs]`) and broadcasting `B[s, j]`.
///
/// A tile spends 16 lanes on every row however few columns are left, so a last
/// panel of one column (193 = 4·48 + 1 on CIFAR's second layer) would cost 40%
/// of a full panel of 48; this way it costs a sixteenth of a tile's lanes.
/// Columns `keep` drops are skipped, and the epilogue runs per value.
#[cfg(target_arch = "x86_64")]
fn narrow_columns(blk: &Block<'_>, a: Strided<'_>, cols: std::ops::Range<usize>, c: &mut [f32]) {
    debug_assert_eq!(a.rs, 1);
    let ep = blk.ep;
    for j in cols {
        let c_col = match blk.keep {
            None => j,
            Some(kp) if j % kp.row < kp.first => kp.packed(j),
            Some(_) => continue,
        };
        for i0 in (0..blk.m).step_by(COLUMN) {
            let rows = COLUMN.min(blk.m - i0);
            let mut vals = [0.0f32; COLUMN];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is available (the caller's `fast`); `matmul_on`
            // asserted that A holds every (row < m, step < k) and B every
            // (step < k, column < n) addressed here.
            unsafe {
                let (a_col, kc) = (a.data.as_ptr().add(i0 + blk.k0 * a.cs), blk.kc);
                let v = &mut vals;
                macro_rules! run {
                    ($rows_of_b:expr) => {
                        match rows.div_ceil(16) {
                            1 => avx512::column::<_, 1>(kc, rows, a_col, a.cs, $rows_of_b, v),
                            2 => avx512::column::<_, 2>(kc, rows, a_col, a.cs, $rows_of_b, v),
                            3 => avx512::column::<_, 3>(kc, rows, a_col, a.cs, $rows_of_b, v),
                            _ => avx512::column::<_, 4>(kc, rows, a_col, a.cs, $rows_of_b, v),
                        }
                    };
                }
                with_rows_of_b!(blk.b, j, blk.k0, run);
            }
            // The tile's epilogue, in its order: accumulate, bias, affine, ReLU.
            for (r, &v) in vals[..rows].iter().enumerate() {
                let i = i0 + r;
                let at = blk.out.row(i) + c_col;
                c[at] = ep.finish(i, at, if ep.accumulate { c[at] + v } else { v });
            }
        }
    }
}

/// `dst[j·dst_rs + i] = src[i·src_rs + j]` for `i < rows`, `j < cols`: a
/// transposed copy. With AVX-512 each 16 values of a `dst` row are one gather
/// (16 rows of `src` at once), about four times the speed of scalar moves.
///
/// # Panics
/// If either slice is too short for the sizes and strides given.
pub fn transpose(
    src: &[f32],
    rows: usize,
    src_rs: usize,
    cols: usize,
    dst: &mut [f32],
    dst_rs: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_rs + cols - 1 < src.len(),
        "src is too short"
    );
    assert!(
        (cols - 1) * dst_rs + rows - 1 < dst.len(),
        "dst is too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() && src_rs <= i32::MAX as usize / 16 {
        // SAFETY: AVX-512 is available; the asserts bound every index read
        // (i·src_rs + j) and written (j·dst_rs + i); lane offsets (below
        // 16·src_rs) fit an i32.
        unsafe { avx512::transpose(src, rows, src_rs, cols, dst, dst_rs) };
        return;
    }
    transpose_portable(src, rows, src_rs, cols, dst, dst_rs);
}

/// `dst[r·stride..][..len] = src[r·len..][..len]` for every row `r` of `src`:
/// dense rows spread out (a convolution's gradient onto its wide grid). With
/// AVX-512 a short row is one masked load and store, where `copy_from_slice`
/// would call `memmove` for each.
///
/// # Panics
/// If `src` is not a whole number of rows, a row is longer than `stride`, or
/// `dst` is too short.
pub fn spread_rows(src: &[f32], len: usize, dst: &mut [f32], stride: usize) {
    if spread_rows_checked("spread_rows", src.len(), len, stride, dst.len()) == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 is available; the asserts bound every row read and
        // written.
        unsafe { avx512::spread_rows(src, len, dst, stride) };
        return;
    }
    for (d, s) in dst.chunks_mut(stride).zip(src.chunks(len)) {
        d[..len].copy_from_slice(s);
    }
}

/// How many rows of `len` values `values` values make, checking what every
/// spreading of rows `stride` apart into `out_len` values needs: whole rows
/// (none if `len` is 0), each no longer than `stride`, the last inside.
///
/// # Panics
/// If any of those fails, naming `what`.
pub(crate) fn spread_rows_checked(
    what: &str,
    values: usize,
    len: usize,
    stride: usize,
    out_len: usize,
) -> usize {
    if len == 0 {
        assert!(values == 0, "{what}: rows of 0 in {values} values");
        return 0;
    }
    let rows = values / len;
    assert!(
        values.is_multiple_of(len) && len <= stride,
        "{what}: rows of {len} in {values} values, {stride} apart"
    );
    assert!(
        rows == 0 || (rows - 1) * stride + len <= out_len,
        "{what}: out is too short"
    );
    rows
}

/// [`transpose`] without intrinsics.
fn transpose_portable(
    src: &[f32],
    rows: usize,
    src_rs: usize,
    cols: usize,
    dst: &mut [f32],
    dst_rs: usize,
) {
    // Blocks of 16 rows keep the written lines in L1.
    for i0 in (0..rows).step_by(16) {
        for j in 0..cols {
            for i in i0..(i0 + 16).min(rows) {
                dst[j * dst_rs + i] = src[i * src_rs + j];
            }
        }
    }
}

/// The same product on `matrixmultiply::sgemm`, for any CPU: the reference the
/// AVX-512 kernel is tested against, and its stand-in where it cannot run.
#[allow(clippy::too_many_arguments)]
pub fn matmul_portable(
    m: usize,
    n: usize,
    k: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    c: &mut [f32],
    c_rs: usize,
    ep: Epilogue<'_>,
) {
    use super::gemm::{gemm, Mat, MatMut};
    if m == 0 || n == 0 {
        return;
    }
    fn mat<'s>(s: Strided<'s>, rows: usize, cols: usize) -> Mat<'s> {
        Mat {
            data: s.data,
            rows,
            cols,
            row_stride: s.rs,
            col_stride: s.cs,
        }
    }
    let beta = if ep.accumulate { 1.0 } else { 0.0 };
    let out = MatMut {
        data: &mut *c,
        rows: m,
        cols: n,
        row_stride: c_rs,
        col_stride: 1,
    };
    gemm(1.0, mat(a, m, k), mat(b, k, n), beta, out);
    if ep.row_bias.is_some() || ep.affine.is_some() || ep.residual.is_some() || ep.relu {
        for i in 0..m {
            let row = i * c_rs;
            for (at, v) in c[row..row + n].iter_mut().enumerate() {
                *v = ep.finish(i, row + at, *v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::COLUMN;

    /// The longest tile (in steps) that prefetches its output: a short tile
    /// stalls on its stores, a long one hides them behind its FMAs.
    const PREFETCH_K: usize = 32;

    /// Vector `v`'s 16 lanes out of an integer with a bit per lane.
    #[inline(always)]
    fn mask(bits: u64, v: usize) -> __mmask16 {
        (bits >> (16 * v)) as __mmask16
    }

    use super::lanes;

    /// Where row `s` of `B` starts.
    pub trait BRows: Copy {
        /// # Safety
        /// `s` must be a valid row of the operand.
        unsafe fn row(self, s: usize) -> *const f32;
    }

    /// Rows `rs` apart.
    #[derive(Clone, Copy)]
    pub struct StridedRows {
        pub base: *const f32,
        pub rs: usize,
    }

    impl BRows for StridedRows {
        #[inline(always)]
        unsafe fn row(self, s: usize) -> *const f32 {
            self.base.add(s * self.rs)
        }
    }

    /// Rows at offsets from a table.
    #[derive(Clone, Copy)]
    pub struct ShiftedRows {
        pub base: *const f32,
        pub offs: *const usize,
    }

    impl BRows for ShiftedRows {
        #[inline(always)]
        unsafe fn row(self, s: usize) -> *const f32 {
            self.base.add(*self.offs.add(s))
        }
    }

    /// How the kernel steps along the rows of `A`.
    #[derive(Clone, Copy)]
    pub enum Walk {
        /// Step `s` at `s·d`.
        By(usize),
        /// Step `s` at `table[s]`.
        At(*const usize),
    }

    /// Where step `s` is along a row of `A` (one implementation per [`Walk`],
    /// so that each kernel has its walk compiled in).
    pub trait ASteps: Copy {
        /// # Safety
        /// `s` must be a valid step of the operand.
        unsafe fn at(self, s: usize) -> usize;
    }

    /// `s·d`.
    #[derive(Clone, Copy)]
    pub struct StepsBy(pub usize);

    impl ASteps for StepsBy {
        #[inline(always)]
        unsafe fn at(self, s: usize) -> usize {
            s * self.0
        }
    }

    /// `table[s]`.
    #[derive(Clone, Copy)]
    pub struct StepsAt(pub *const usize);

    impl ASteps for StepsAt {
        #[inline(always)]
        unsafe fn at(self, s: usize) -> usize {
            *self.0.add(s)
        }
    }

    /// One tile's operands: `A` as `R` row pointers, `C` and what to do when
    /// storing it.
    pub struct Tile<const R: usize> {
        pub k: usize,
        pub a: [*const f32; R],
        /// Where each row of the tile's `C` starts.
        pub c: [*mut f32; R],
        pub rows: usize,
        pub cols: usize,
        pub bias: Option<*const f32>,
        /// Per row from the tile's first: mean, scale and shift.
        pub affine: Option<[*const f32; 3]>,
        /// Where each row's residual starts, laid out as `C`.
        pub residual: Option<[*const f32; R]>,
        pub accumulate: bool,
        pub relu: bool,
        /// Store only these lanes of each vector, packed together.
        pub keep: Option<super::Kept>,
    }

    /// One tile: `C[rows, cols] (+)= A[rows, k] · B[k, cols]` (+ bias, relu),
    /// in `R × V` accumulators. `COMPRESS`: `t.keep` keeps lanes that are not
    /// the low ones of their vector, which the store gathers down first.
    ///
    /// # Safety
    /// AVX-512F must be available. `t.a[r] + a_steps.at(s)` for `s < k`, `b.row(s) + j`
    /// for `j < cols`, `t.c[r] + j` for `r < rows` (for `j` below the
    /// number of kept lanes, with `keep`; the same for `t.residual[r] + j`),
    /// and `bias + r` must all be in bounds.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<
        B: BRows,
        A: ASteps,
        const R: usize,
        const V: usize,
        const COMPRESS: bool,
    >(
        t: &Tile<R>,
        b: B,
        a_steps: A,
    ) {
        let (rows, cols) = (t.rows, t.cols);
        debug_assert!(
            (1..=R).contains(&rows) && (1..=16 * V).contains(&cols) && R <= 8 && R * V <= 24
        );
        // Lane masks of the V vectors of a tile row (the last may be partial),
        // as bits of one integer: an array of masks built lane by lane would
        // cost a store-forwarding stall per tile, which small-K products feel.
        let masks = super::low_bits(cols);
        let a = t.a;
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // A short tile (a first layer's: 9 or 27 steps) asks for the cache
        // lines of C now, so that its stores find them in cache rather than
        // stalling on a fetch each: its output is tens of megabytes, long out
        // of cache.
        if t.k <= PREFETCH_K {
            for &c in &t.c[..rows] {
                for v in 0..=V {
                    let at = c.wrapping_add((16 * v).min(16 * V - 1));
                    _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                }
            }
        }
        // A full tile loads B unmasked: a masked load takes a slot on the
        // ports the FMAs issue on.
        if cols == 16 * V {
            steps::<B, A, R, V, true>(&mut acc, t.k, &a, b, a_steps, masks);
        } else {
            steps::<B, A, R, V, false>(&mut acc, t.k, &a, b, a_steps, masks);
        }
        // The store: accumulate, bias, affine, residual, ReLU, then write
        // each row's vectors, with `keep` only the kept lanes, packed one
        // vector after another.
        // Written out here with constant bounds, so that `acc` stays in its
        // registers (a helper taking the accumulators as an array, by value
        // or by reference, would keep them in a stack copy).
        let (off, stored, kept) = match t.keep {
            Some(k) => {
                let mut off = [0; V];
                for v in 1..V {
                    off[v] = off[v - 1] + (k.counts >> (8 * (v - 1)) & 0xff) as usize;
                }
                (off, k.packed, k.lanes)
            }
            None => (std::array::from_fn(|v| 16 * v), masks, masks),
        };
        // max(floor, x) is ReLU with a floor of 0, and leaves x as it is with
        // −∞ (vmaxps returns its second operand when either is NaN, so a NaN
        // stays visible, as `ops::relu` keeps it).
        let floor = _mm512_set1_ps(if t.relu { 0.0 } else { f32::NEG_INFINITY });
        #[allow(clippy::needless_range_loop)] // an iterator spills `acc`
        for r in 0..R {
            // Rows past `t.rows` were computed on clamped pointers; not stored.
            if r >= rows {
                break;
            }
            let (acc, cp) = (acc[r], t.c[r]);
            let bias = t.bias.map(|b| _mm512_set1_ps(*b.add(r)));
            let affine = t.affine.map(|a| a.map(|p| _mm512_set1_ps(*p.add(r))));
            for v in 0..V {
                let at = cp.add(off[v]);
                let mut x = acc[v];
                if t.accumulate {
                    // C holds the kept lanes packed: spread them back out to
                    // their lanes (where, without `COMPRESS`, they are).
                    x = _mm512_add_ps(
                        x,
                        if COMPRESS {
                            _mm512_maskz_expandloadu_ps(mask(kept, v), at)
                        } else {
                            _mm512_maskz_loadu_ps(mask(stored, v), at)
                        },
                    );
                }
                if let Some(b) = bias {
                    x = _mm512_add_ps(x, b);
                }
                if let Some([mean, scale, shift]) = affine {
                    x = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, mean), scale), shift);
                }
                if let Some(res) = t.residual {
                    // Laid out as C: its kept lanes spread back out too.
                    let at = res[r].add(off[v]);
                    x = _mm512_add_ps(
                        x,
                        if COMPRESS {
                            _mm512_maskz_expandloadu_ps(mask(kept, v), at)
                        } else {
                            _mm512_maskz_loadu_ps(mask(stored, v), at)
                        },
                    );
                }
                x = _mm512_max_ps(floor, x);
                if COMPRESS {
                    // Gather the kept lanes at the bottom of the register
                    // (vcompressps; its store form is microcoded and slow).
                    x = _mm512_maskz_compress_ps(mask(kept, v), x);
                }
                _mm512_mask_storeu_ps(at, mask(stored, v), x);
            }
        }
    }

    /// The tile's loop: `acc[r] += A[r, s] · B[s, ..]` for every step `s`, B's
    /// rows loaded whole (`FULL`) or through the lane masks.
    #[inline(always)]
    unsafe fn steps<B: BRows, A: ASteps, const R: usize, const V: usize, const FULL: bool>(
        acc: &mut [[__m512; V]; R],
        k: usize,
        a: &[*const f32; R],
        b: B,
        a_steps: A,
        masks: u64,
    ) {
        for s in 0..k {
            let off = a_steps.at(s);
            let bp = b.row(s);
            let bv: [__m512; V] = std::array::from_fn(|v| {
                if FULL {
                    _mm512_loadu_ps(bp.add(16 * v))
                } else {
                    _mm512_maskz_loadu_ps(mask(masks, v), bp.add(16 * v))
                }
            });
            // Constant bounds: both loops unroll, and `acc` lives in registers.
            for r in 0..R {
                let av = _mm512_set1_ps(*a[r].add(off));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
    }

    /// `col[i] = Σₛ A[i, s]·B[s]` for `i < rows ≤ 16·V`, `s < k`, with
    /// `A[i, s]` at `a + i + s·a_cs` and `B[s]` at `b.row(s)`. Each value is
    /// one chain of fused multiply-adds over `s` in order, as in a tile
    /// (`steps`), so a column computed here has the bits it would have in a
    /// tile: every output of a product is computed the same way wherever it
    /// sits, and identical inputs give identical outputs.
    ///
    /// # Safety
    /// AVX-512F must be available; `a + i + s·a_cs` for `i < rows` and
    /// `b.row(s)` must be in bounds for `s < k`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn column<B: BRows, const V: usize>(
        k: usize,
        rows: usize,
        a: *const f32,
        a_cs: usize,
        b: B,
        col: &mut [f32; COLUMN],
    ) {
        debug_assert!(V * 16 <= COLUMN && rows <= 16 * V);
        let m: [__mmask16; V] = std::array::from_fn(|v| lanes(rows.saturating_sub(16 * v)));
        let mut acc = [_mm512_setzero_ps(); V];
        for s in 0..k {
            let bs = _mm512_set1_ps(*b.row(s));
            let at = a.add(s * a_cs);
            for v in 0..V {
                let x = _mm512_maskz_loadu_ps(m[v], at.add(16 * v));
                acc[v] = _mm512_fmadd_ps(x, bs, acc[v]);
            }
        }
        for v in 0..V {
            _mm512_mask_storeu_ps(col.as_mut_ptr().add(16 * v), m[v], acc[v]);
        }
    }

    /// See [`super::spread_rows`].
    ///
    /// # Safety
    /// AVX-512F must be available and the caller's bounds checks hold.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn spread_rows(src: &[f32], len: usize, dst: &mut [f32], stride: usize) {
        for r in 0..src.len() / len {
            let (from, to) = (src.as_ptr().add(r * len), dst.as_mut_ptr().add(r * stride));
            for i in (0..len).step_by(16) {
                let m = lanes(len - i);
                _mm512_mask_storeu_ps(to.add(i), m, _mm512_maskz_loadu_ps(m, from.add(i)));
            }
        }
    }

    /// See [`super::transpose`].
    ///
    /// # Safety
    /// AVX-512F must be available and the caller's bounds checks hold.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose(
        src: &[f32],
        rows: usize,
        src_rs: usize,
        cols: usize,
        dst: &mut [f32],
        dst_rs: usize,
    ) {
        // Lane l reads row l of the block: offset l·src_rs from its first row.
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(src_rs as i32),
        );
        for i0 in (0..rows).step_by(16) {
            let mask = lanes(rows - i0);
            let base = src.as_ptr().add(i0 * src_rs);
            for j in 0..cols {
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, base.add(j));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j * dst_rs + i0), mask, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SALIENT_PORTABLE=1` turns the vector code off, whatever the CPU.
    #[test]
    fn the_portable_switch_turns_the_vector_code_off() {
        if std::env::var("SALIENT_PORTABLE").is_ok_and(|v| v == "1") {
            assert!(!available());
        }
    }

    /// Test values `((i·mul) mod modulus − modulus/2) / scale`: varied, exact
    /// in f32, and the same on every run.
    fn pattern(len: usize, mul: usize, modulus: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * mul % modulus) as f32 - (modulus / 2) as f32) / scale)
            .collect()
    }

    /// `A[m, k]` and `B[k, n]` filled with two different patterns.
    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        (pattern(m * k, 7, 13, 4.0), pattern(k * n, 5, 11, 3.0))
    }

    /// Equal up to f32 rounding of sums of a few hundred terms of size ~1.
    fn close(got: f32, want: f32) -> bool {
        (got - want).abs() <= 1e-4 * (1.0 + want.abs())
    }

    /// A row-major matrix with `cols` columns.
    fn rows(data: &[f32], cols: usize) -> Strided<'_> {
        Strided {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// Both transposes on sizes with tails, strides wider than the data, and
    /// destination rows wider than the source has rows.
    #[test]
    fn transpose_swaps_indices() {
        for &(rows, src_rs, cols, dst_rs) in &[(1, 1, 1, 1), (16, 20, 7, 16), (37, 40, 33, 45)] {
            let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32).collect();
            for path in [transpose, transpose_portable] {
                let mut dst = vec![-1.0f32; cols * dst_rs];
                path(&src, rows, src_rs, cols, &mut dst, dst_rs);
                for j in 0..cols {
                    for i in 0..dst_rs {
                        let want = if i < rows { src[i * src_rs + j] } else { -1.0 };
                        assert_eq!(dst[j * dst_rs + i], want, "({i}, {j})");
                    }
                }
            }
        }
    }

    /// Rows of 1 to 33 values (one vector, a masked tail, several) land
    /// `stride` apart, and the gaps between them keep what they held.
    #[test]
    fn spread_rows_leaves_the_gaps() {
        for &(len, stride, rows) in &[
            (1, 1, 3),
            (11, 13, 5),
            (16, 16, 2),
            (17, 20, 3),
            (33, 40, 2),
        ] {
            let src: Vec<f32> = (0..len * rows).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; (rows - 1) * stride + len + 2];
            spread_rows(&src, len, &mut dst, stride);
            for (at, &v) in dst.iter().enumerate() {
                let (r, c) = (at / stride, at % stride);
                let want = if r < rows && c < len {
                    src[r * len + c]
                } else {
                    -1.0
                };
                assert_eq!(v, want, "len {len}, stride {stride}: dst[{at}]");
            }
        }
    }

    /// Splitting the rows between threads changes no bit of the result: each
    /// element is still one tile's sum in the same order.
    #[test]
    fn parallel_rows_give_the_same_bits() {
        let (m, n, k) = (301, 129, 67);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104_729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 / 100.0).collect();
        let (sa, sb) = (rows(&a, k), rows(&b, n));
        let ep = Epilogue {
            accumulate: true,
            row_bias: Some(&bias),
            affine: None,
            relu: true,
            residual: None,
        };
        let (mut c1, mut c2) = (vec![0.5; m * n], vec![0.5; m * n]);
        matmul(m, n, k, sa, sb, &mut c1, n, ep);
        matmul_par(m, n, k, sa, sb, &mut c2, n, ep);
        assert_eq!(c1, c2);
    }

    /// The run-by-run lane mask equals testing each lane.
    #[test]
    fn kept_lanes_match_a_lane_by_lane_test() {
        for (row, first) in [(1, 1), (5, 3), (13, 11), (32, 30), (70, 2), (7, 7)] {
            let keep = Keep { row, first };
            for j in 0..3 * row {
                for cols in [1, 15, 16, 33, 48] {
                    let want = (0..cols)
                        .filter(|l| (j + l) % row < first)
                        .fold(0u64, |m, l| m | 1 << l);
                    assert_eq!(
                        kept_lanes(keep, j, cols),
                        want,
                        "{keep:?} j {j} cols {cols}"
                    );
                }
            }
        }
    }

    /// A gapped `A` (rows at offsets, columns from a table) against the same
    /// product written out, on both paths.
    #[test]
    fn gapped_rows_and_columns() {
        let (m, n, k) = (11, 40, 30);
        let (data, b) = (pattern(200, 7, 13, 4.0), pattern(k * n, 5, 11, 3.0));
        let offs: Vec<usize> = (0..m).map(|i| 3 * i).collect();
        // Three runs of ten columns, two apart: like real outputs on a wide grid.
        let cols: Vec<usize> = (0..k).map(|j| (j / 10) * 12 + j % 10).collect();
        let a = Gapped {
            data: &data,
            offs: &offs,
            cols: &cols,
        };
        let sb = rows(&b, n);
        for fast in [false, available()] {
            let mut c = vec![0.5f32; m * n];
            let ep = Epilogue::ACCUMULATE;
            matmul_on(
                m,
                n,
                k,
                a.into(),
                sb.into(),
                &mut c,
                Out::Rows(n),
                ep,
                None,
                fast,
            );
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|s| data[offs[i] + cols[s]] * b[s * n + j]).sum();
                    assert!(close(c[i * n + j], 0.5 + dot), "({i},{j}) fast {fast}");
                }
            }
        }
    }

    /// Adding rows at overlapping offsets equals a triple loop adding in turn,
    /// on both paths, with shifted rows of `A` as in a convolution's backward.
    #[test]
    fn add_at_sums_overlapping_rows() {
        let (m, n, k) = (19, 53, 10);
        let offs: Vec<usize> = (0..m).map(|i| (i % 3) * 7 + i / 3).collect();
        let (a, b) = operands(m, n, k);
        let len = offs.iter().max().unwrap() + n + 3;
        let mut want: Vec<f32> = (0..len).map(|i| i as f32 / 10.0).collect();
        for (i, &off) in offs.iter().enumerate() {
            for j in 0..n {
                want[off + j] += (0..k).map(|s| a[i * k + s] * b[s * n + j]).sum::<f32>();
            }
        }
        for fast in [false, available()] {
            let mut c: Vec<f32> = (0..len).map(|i| i as f32 / 10.0).collect();
            let sa = rows(&a, k);
            let sb = rows(&b, n);
            let (ep, out) = (Epilogue::ACCUMULATE, Out::At(&offs));
            matmul_on(m, n, k, sa.into(), sb.into(), &mut c, out, ep, None, fast);
            for (i, (&g, &w)) in c.iter().zip(&want).enumerate() {
                assert!(close(g, w), "at {i}, fast {fast}");
            }
        }
    }

    /// The fused ReLU clamps negatives to zero and keeps a NaN visible (as
    /// `ops::relu` does); without it, values pass unchanged.
    #[test]
    fn relu_epilogue_keeps_nan_and_clamps_negatives() {
        // C = A·B with k = 1: row i is A[i] times a row of ones.
        let a = [f32::NAN, -1.5, 0.25, 2.0];
        let b = [1.0f32; 21];
        let (m, n) = (a.len(), b.len());
        for fast in [false, available()] {
            for relu in [false, true] {
                let ep = Epilogue {
                    accumulate: false,
                    row_bias: None,
                    affine: None,
                    relu,
                    residual: None,
                };
                let (sa, sb) = (rows(&a, 1).into(), rows(&b, n).into());
                for keep in [None, Some(Keep { row: 7, first: 5 })] {
                    let stored = keep.map_or(n, |kp| kp.packed(n));
                    let mut c = vec![7.0f32; m * stored];
                    matmul_on(m, n, 1, sa, sb, &mut c, Out::Rows(stored), ep, keep, fast);
                    for (i, row) in c.chunks(stored).enumerate() {
                        let want = if relu { a[i].max(0.0) } else { a[i] };
                        let at = format!("row {i} relu {relu} keep {keep:?} fast {fast}");
                        assert!(row.iter().all(|v| v.is_nan() == a[i].is_nan()), "{at}");
                        if !a[i].is_nan() {
                            assert!(row.iter().all(|v| v.to_bits() == want.to_bits()), "{at}");
                        }
                    }
                }
            }
        }
    }

    /// The affine epilogue (an inference batch normalisation taken as tiles
    /// are stored) gives the bits of the formula applied to the stored
    /// product, on full and partial tiles, a last panel taken column by
    /// column, several blocks of steps, with and without the ReLU (a zero
    /// scale makes a row flat; NaN stays NaN).
    #[test]
    fn the_affine_epilogue_is_the_formula_on_the_product() {
        for &(m, n, k) in &[(9, 49, 20), (17, 50, 300), (8, 97, 7), (3, 193, 600)] {
            let (mut a, b) = operands(m, n, k);
            a[0] = f32::NAN;
            let bias = pattern(m, 3, 7, 2.0);
            let mean = pattern(m, 5, 9, 3.0);
            let mut scale = pattern(m, 2, 5, 4.0);
            scale[1] = 0.0;
            let shift = pattern(m, 4, 11, 5.0);
            // Column-major A (unit row stride): the last panel of 49 or 193
            // columns then goes column by column.
            let mut at = vec![0.0f32; m * k];
            transpose(&a, m, k, k, &mut at, m);
            let a_ops = [
                rows(&a, k),
                Strided {
                    data: &at,
                    rs: 1,
                    cs: m,
                },
            ];
            for a_op in a_ops {
                let mut plain = vec![0.0f32; m * n];
                let ep = Epilogue {
                    row_bias: Some(&bias),
                    ..Epilogue::STORE
                };
                matmul(m, n, k, a_op, rows(&b, n), &mut plain, n, ep);
                for relu in [false, true] {
                    let affine = Affine {
                        mean: &mean,
                        scale: &scale,
                        shift: &shift,
                    };
                    let ep = Epilogue {
                        row_bias: Some(&bias),
                        affine: Some(affine),
                        relu,
                        ..Epilogue::STORE
                    };
                    let mut got = vec![0.0f32; m * n];
                    matmul(m, n, k, a_op, rows(&b, n), &mut got, n, ep);
                    for (at, (&g, &p)) in got.iter().zip(&plain).enumerate() {
                        let i = at / n;
                        let x = (p - mean[i]) * scale[i] + shift[i];
                        let want = if relu && x < 0.0 { 0.0 } else { x };
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{m}x{n}x{k} at {at}, relu {relu}"
                        );
                    }
                }
            }
        }
    }

    /// Keeping the first 3 of every 5 columns equals computing all and dropping,
    /// in one block of steps and in two (the second adding to kept values).
    #[test]
    fn keep_packs_the_first_columns_of_each_row() {
        for k in [11, KC + 12] {
            keep_packs(9, 103, k);
        }
    }

    fn keep_packs(m: usize, n: usize, k: usize) {
        let (a, b) = operands(m, n, k);
        let mut full = vec![0.0f32; m * n];
        let ep = Epilogue {
            accumulate: false,
            row_bias: None,
            affine: None,
            relu: true,
            residual: None,
        };
        let (sa, sb) = (rows(&a, k), rows(&b, n));
        matmul_portable(m, n, k, sa, sb, &mut full, n, ep);
        // Gaps inside vectors (5, 3), and only at their ends (32, 30).
        for (keep, kept) in [
            (Keep { row: 5, first: 3 }, 20 * 3 + 3),
            (Keep { row: 32, first: 30 }, 3 * 30 + 7),
        ] {
            assert_eq!(keep.packed(n), kept);
            let mut packed = vec![f32::NAN; m * kept];
            matmul_keep(m, n, k, sa, sb, &mut packed, kept, ep, keep);
            for i in 0..m {
                let want: Vec<f32> = (0..n)
                    .filter(|j| j % keep.row < keep.first)
                    .map(|j| full[i * n + j])
                    .collect();
                let got = &packed[i * kept..(i + 1) * kept];
                assert!(
                    want.iter().zip(got).all(|(w, g)| (w - g).abs() < 1e-4),
                    "{keep:?} row {i} k {k}"
                );
            }
        }
    }

    /// A transposed `A` (`rs = 1`) sends a last panel of up to [`NARROW`]
    /// columns down the column-by-column path: with more than one row chunk,
    /// more than one block of steps, a whole product that narrow, kept
    /// columns, and rows stored at offsets.
    #[test]
    fn narrow_last_panels_match_a_triple_loop() {
        for &(m, n, k) in &[(64, 49, 288), (70, 97, 300), (5, 3, 7), (130, 196, 20)] {
            // A as its transpose, Aᵀ[k, m].
            let (at, b) = (pattern(k * m, 7, 13, 4.0), pattern(k * n, 5, 11, 3.0));
            let a = Strided {
                data: &at,
                rs: 1,
                cs: m,
            };
            let dot =
                |i: usize, j: usize| (0..k).map(|s| at[s * m + i] * b[s * n + j]).sum::<f32>();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 / 3.0 - 2.0).collect();
            let ep = Epilogue {
                accumulate: true,
                row_bias: Some(&bias),
                affine: None,
                relu: true,
                residual: None,
            };
            let keep = Keep { row: 7, first: 5 };
            let kept = keep.packed(n);
            // Row i at 3·i: rows overlap, and overlapping rows sum.
            let offs: Vec<usize> = (0..m).map(|i| 3 * i).collect();
            for fast in [false, available()] {
                let sb = rows(&b, n).into();
                let mut c = vec![1.0f32; m * n];
                matmul_on(m, n, k, a.into(), sb, &mut c, Out::Rows(n), ep, None, fast);
                let mut packed = vec![f32::NAN; m * kept];
                let store = Epilogue::STORE;
                let (out, kp) = (Out::Rows(kept), Some(keep));
                matmul_on(m, n, k, a.into(), sb, &mut packed, out, store, kp, fast);
                let mut added = vec![0.5f32; 3 * m + n];
                let (out, acc) = (Out::At(&offs), Epilogue::ACCUMULATE);
                matmul_on(m, n, k, a.into(), sb, &mut added, out, acc, None, fast);
                let mut want_added = vec![0.5f32; 3 * m + n];
                for i in 0..m {
                    for j in 0..n {
                        let d = dot(i, j);
                        let want = (1.0 + d + bias[i]).max(0.0);
                        let at = format!("{m}x{n}x{k} ({i},{j}) fast {fast}");
                        assert!(close(c[i * n + j], want), "{at}");
                        if j % keep.row < keep.first {
                            assert!(close(packed[i * kept + keep.packed(j)], d), "kept {at}");
                        }
                        want_added[3 * i + j] += d;
                    }
                }
                for (g, w) in added.iter().zip(&want_added) {
                    assert!(close(*g, *w), "added {m}x{n}x{k} fast {fast}");
                }
            }
        }
    }

    /// The kernel against a plain triple loop, on sizes that exercise every tail.
    #[test]
    fn matches_a_triple_loop() {
        type Matmul =
            fn(usize, usize, usize, Strided<'_>, Strided<'_>, &mut [f32], usize, Epilogue<'_>);
        let fast: Matmul = |m, n, k, a, b, c, c_rs, ep| matmul(m, n, k, a, b, c, c_rs, ep);
        let paths: [Matmul; 2] = [fast, matmul_portable];
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 32, 5),
            (9, 33, 7),
            (17, 70, 0),
            (3, 5, 300),
            (64, 121, 288),
            (13, 64, 40),
        ] {
            let (a, b) = operands(m, n, k);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 - 2.0).collect();
            for path in paths {
                let mut c = vec![1.0f32; m * n];
                let ep = Epilogue {
                    accumulate: true,
                    row_bias: Some(&bias),
                    affine: None,
                    relu: true,
                    residual: None,
                };
                path(m, n, k, rows(&a, k), rows(&b, n), &mut c, n, ep);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|s| a[i * k + s] * b[s * n + j]).sum();
                        let want = (1.0 + dot + bias[i]).max(0.0);
                        assert!(close(c[i * n + j], want), "{m}x{n}x{k} at ({i},{j})");
                    }
                }
            }
        }
    }
}
