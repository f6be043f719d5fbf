//! General matrix multiply, `C ← α·A·B + β·C`, on `matrixmultiply::sgemm`:
//! the portable product behind [`super::kernel`] on machines without AVX-512.
//! The products themselves are the ones the reference ops of [`crate::ops`]
//! define.
//!
//! `sgemm` takes raw pointers and arbitrary row and column strides, which is what
//! lets callers read a matrix transposed (swap the strides) without copying it.
//! This wrapper checks, once per call, that every element the strides can reach
//! lies inside the slice, so the `unsafe` call below is sound.

/// A read-only matrix view: `rows × cols`, element `(i, j)` at
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// The backing data.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

/// A writable matrix view, laid out like [`Mat`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The backing data.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

#[cfg(test)]
impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view: the strides swap, nothing is copied.
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

#[cfg(test)]
impl<'a> MatMut<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// Whether every element of a `rows × cols` view with these strides is inside `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `C ← α·A·B + β·C` with `A: m×k`, `B: k×n`, `C: m×n`.
///
/// With `β = 0` the old contents of `C` are ignored (even NaN), as BLAS does.
///
/// # Panics
/// If the dimensions disagree or a view reaches outside its slice. Callers are
/// the crate's ops, which check user-facing shapes first; a panic here is a bug.
pub fn gemm(alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "gemm: A {}x{}, B {}x{}, C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    assert!(fits(a.data.len(), m, k, a.row_stride, a.col_stride));
    assert!(fits(b.data.len(), k, n, b.row_stride, b.col_stride));
    assert!(fits(c.data.len(), m, n, c.row_stride, c.col_stride));
    // Overlapping C rows or columns would make the result depend on write order.
    assert!(m <= 1 || n <= 1 || (c.row_stride != 0 && c.col_stride != 0));
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above show every index sgemm forms lies within the
    // slices, and `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.data.as_mut_ptr(),
            c.row_stride as isize,
            c.col_stride as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_by_two_by_hand() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0; 4];
        gemm(
            1.0,
            Mat::rows(&a, 2, 2),
            Mat::rows(&b, 2, 2),
            0.0,
            MatMut::rows(&mut c, 2, 2),
        );
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // Aᵀ · B = [1 3; 2 4] · [5 6; 7 8] = [26 30; 38 44], read through swapped strides.
        gemm(
            1.0,
            Mat::rows(&a, 2, 2).t(),
            Mat::rows(&b, 2, 2),
            0.0,
            MatMut::rows(&mut c, 2, 2),
        );
        assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
        // β = 1 accumulates: C + A·B.
        gemm(
            1.0,
            Mat::rows(&a, 2, 2),
            Mat::rows(&b, 2, 2),
            1.0,
            MatMut::rows(&mut c, 2, 2),
        );
        assert_eq!(c, [45.0, 52.0, 81.0, 94.0]);
    }
}
