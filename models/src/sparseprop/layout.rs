//! The sparse weight layout shared by the linear and conv2d kernels.
//!
//! A weight is viewed as a matrix `W ∈ R^{rows × cols}` with a fixed pattern of non-zeros
//! (for a linear layer in PyTorch layout `[out, in]`; for a conv2d `[OC, IC·K·K]`, i.e. the
//! `[OC, IC, K, K]` weight flattened per output channel).
//!
//! **Layout: CSR plus a CSC index of the same pattern (a "dual index").** The trainable
//! values are stored once, in CSR order (row-major over the non-zeros). The forward pass is
//! parallel over output rows and walks the CSR rows (each thread owns whole output rows,
//! race-free). The backward pass needs, for every input feature `j`, the rows that use it:
//! the CSC index (`col_ptr`, `csc_row`, `csc_pos`, where `csc_pos[e]` is the CSR position of
//! the `e`-th entry in column order) makes the backward parallel over input features, so
//! `dX[j,:]` and the value gradients of column `j` are produced by one thread in one pass,
//! with no barrier per row and no atomics (the reference kernel serialises rows with a
//! barrier per row and never beats dense on the backward, methods.md §4.6-4.7). For a conv
//! weight, the columns of one input channel are consecutive, so the CSC index groups the
//! non-zeros by input channel, which is exactly what the channel-parallel backward needs.
//! The extra index costs `8·nnz + 4·(cols+1)` bytes.

use thiserror::Error;

/// Errors building a [`SparsePattern`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The dense buffer or mask does not have `rows · cols` entries.
    #[error(
        "sparse layout: expected {expected} entries for a {rows}×{cols} weight, got {got} ({what})"
    )]
    Length {
        /// Which buffer was wrong ("weight", "mask", "values").
        what: &'static str,
        /// Number of rows of the weight matrix.
        rows: usize,
        /// Number of columns of the weight matrix.
        cols: usize,
        /// Number of entries expected.
        expected: usize,
        /// Number of entries given.
        got: usize,
    },
    /// The weight is too large for the 32-bit indices of the layout.
    #[error("sparse layout: a {rows}×{cols} weight exceeds the 32-bit index range")]
    TooLarge {
        /// Number of rows of the weight matrix.
        rows: usize,
        /// Number of columns of the weight matrix.
        cols: usize,
    },
}

/// The fixed non-zero pattern of a sparse weight matrix: CSR (value order) plus a CSC index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsePattern {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    col_ptr: Vec<u32>,
    csc_row: Vec<u32>,
    csc_pos: Vec<u32>,
}

impl SparsePattern {
    /// Builds the pattern from a row-major `rows × cols` keep-mask (`true` = non-zero kept).
    #[allow(clippy::needless_range_loop)] // k indexes col_idx, csc_row and csc_pos together
    pub fn from_mask(rows: usize, cols: usize, mask: &[bool]) -> Result<Self, LayoutError> {
        check_len("mask", rows, cols, mask.len())?;
        if rows
            .checked_mul(cols)
            .is_none_or(|n| n >= u32::MAX as usize)
        {
            return Err(LayoutError::TooLarge { rows, cols });
        }
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        row_ptr.push(0u32);
        for r in 0..rows {
            for (c, &keep) in mask[r * cols..(r + 1) * cols].iter().enumerate() {
                if keep {
                    col_idx.push(c as u32);
                }
            }
            row_ptr.push(col_idx.len() as u32);
        }
        let nnz = col_idx.len();
        let mut col_ptr = vec![0u32; cols + 1];
        for &c in &col_idx {
            col_ptr[c as usize + 1] += 1;
        }
        for c in 0..cols {
            col_ptr[c + 1] += col_ptr[c];
        }
        let mut fill: Vec<u32> = col_ptr[..cols].to_vec();
        let mut csc_row = vec![0u32; nnz];
        let mut csc_pos = vec![0u32; nnz];
        for r in 0..rows {
            for k in row_ptr[r] as usize..row_ptr[r + 1] as usize {
                let c = col_idx[k] as usize;
                let e = fill[c] as usize;
                fill[c] += 1;
                csc_row[e] = r as u32;
                csc_pos[e] = k as u32;
            }
        }
        Ok(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            col_ptr,
            csc_row,
            csc_pos,
        })
    }

    /// Builds the pattern and the CSR-ordered values from a dense row-major weight and an
    /// optional keep-mask. Without a mask, the non-zeros of `dense` are kept; with a mask,
    /// exactly the masked positions are kept (even where the dense value happens to be 0).
    pub fn from_dense(
        rows: usize,
        cols: usize,
        dense: &[f32],
        mask: Option<&[bool]>,
    ) -> Result<(Self, Vec<f32>), LayoutError> {
        check_len("weight", rows, cols, dense.len())?;
        let keep: Vec<bool> = match mask {
            Some(m) => {
                check_len("mask", rows, cols, m.len())?;
                m.to_vec()
            }
            None => dense.iter().map(|&v| v != 0.0).collect(),
        };
        let pattern = Self::from_mask(rows, cols, &keep)?;
        let values = pattern.gather(dense);
        Ok((pattern, values))
    }

    /// Number of rows (output features / output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features, or `IC·K·K` for a conv weight).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored non-zeros.
    pub fn nnz(&self) -> usize {
        self.col_idx.len()
    }

    /// Fraction of zeros, in `[0, 1]` (1 for an empty matrix).
    pub fn sparsity(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 {
            return 1.0;
        }
        1.0 - self.nnz() as f64 / total as f64
    }

    /// CSR row pointers (`rows + 1` entries).
    pub fn row_ptr(&self) -> &[u32] {
        &self.row_ptr
    }

    /// CSR column index of every non-zero, in value order.
    pub fn col_idx(&self) -> &[u32] {
        &self.col_idx
    }

    /// CSC column pointers (`cols + 1` entries) into [`Self::csc_row`] / [`Self::csc_pos`].
    pub fn col_ptr(&self) -> &[u32] {
        &self.col_ptr
    }

    /// Row of every non-zero, in column order.
    pub fn csc_row(&self) -> &[u32] {
        &self.csc_row
    }

    /// CSR (value) position of every non-zero, in column order.
    pub fn csc_pos(&self) -> &[u32] {
        &self.csc_pos
    }

    /// Flat row-major index `row·cols + col` of every non-zero, in value order.
    pub fn flat_indices(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nnz());
        for r in 0..self.rows {
            for k in self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize {
                out.push(r * self.cols + self.col_idx[k] as usize);
            }
        }
        out
    }

    /// The values of a dense row-major matrix at the non-zeros, in value order.
    ///
    /// # Panics
    /// If `dense` does not hold `rows × cols` floats.
    pub fn gather(&self, dense: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        assert_eq!(
            dense.len(),
            self.rows * self.cols,
            "SparsePattern::gather: dense length ≠ rows × cols"
        );
        let nnz = self.nnz();
        let mut out = vec![0.0f32; nnz];
        // Blocks of rows in parallel: reading the dense weight is the cost (all of its cache
        // lines, at 90 % sparsity), and one core does not saturate memory.
        let block = self.rows.div_ceil(4 * rayon::current_num_threads()).max(1);
        let mut tasks = Vec::new();
        let mut rest: &mut [f32] = &mut out;
        for r0 in (0..self.rows).step_by(block) {
            let r1 = (r0 + block).min(self.rows);
            let n = (self.row_ptr[r1] - self.row_ptr[r0]) as usize;
            let (head, tail) = rest.split_at_mut(n);
            tasks.push((r0, r1, head));
            rest = tail;
        }
        tasks.into_par_iter().for_each(|(r0, r1, out)| {
            let mut at = 0;
            for r in r0..r1 {
                let row = &dense[r * self.cols..(r + 1) * self.cols];
                let cols = &self.col_idx[self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize];
                for (o, &c) in out[at..at + cols.len()].iter_mut().zip(cols) {
                    *o = row[c as usize];
                }
                at += cols.len();
            }
        });
        out
    }

    /// Scatters CSR-ordered values into a dense row-major `rows × cols` matrix (zeros elsewhere).
    pub fn to_dense(&self, values: &[f32]) -> Result<Vec<f32>, LayoutError> {
        if values.len() != self.nnz() {
            return Err(LayoutError::Length {
                what: "values",
                rows: self.rows,
                cols: self.cols,
                expected: self.nnz(),
                got: values.len(),
            });
        }
        let mut dense = vec![0.0f32; self.rows * self.cols];
        for (r, row) in dense.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let (k0, k1) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
            for (&c, &v) in self.col_idx[k0..k1].iter().zip(&values[k0..k1]) {
                row[c as usize] = v;
            }
        }
        Ok(dense)
    }

    /// The keep-mask of the pattern, row-major.
    pub fn to_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.rows * self.cols];
        for i in self.flat_indices() {
            mask[i] = true;
        }
        mask
    }

    /// Values reordered from CSR (value) order to CSC order.
    pub(crate) fn values_in_csc_order(&self, values: &[f32]) -> Vec<f32> {
        self.csc_pos.iter().map(|&k| values[k as usize]).collect()
    }
}

fn check_len(what: &'static str, rows: usize, cols: usize, got: usize) -> Result<(), LayoutError> {
    let expected = rows.saturating_mul(cols);
    if got != expected {
        return Err(LayoutError::Length {
            what,
            rows,
            cols,
            expected,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_and_csc_describe_the_same_entries() {
        // 3×4 matrix with an empty row and an empty column.
        #[rustfmt::skip]
        let dense = [
            1.0, 0.0, 2.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            3.0, 0.0, 4.0, 5.0,
        ];
        let (p, vals) = SparsePattern::from_dense(3, 4, &dense, None).unwrap();
        assert_eq!(p.nnz(), 5);
        assert_eq!(vals, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(p.row_ptr(), &[0, 2, 2, 5]);
        assert_eq!(p.col_idx(), &[0, 2, 0, 2, 3]);
        assert_eq!(p.col_ptr(), &[0, 2, 2, 4, 5]);
        assert_eq!(p.csc_row(), &[0, 2, 0, 2, 2]);
        assert_eq!(p.csc_pos(), &[0, 2, 1, 3, 4]);
        assert_eq!(p.to_dense(&vals).unwrap(), dense.to_vec());
        assert!((p.sparsity() - 7.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            SparsePattern::from_dense(2, 2, &[1.0; 3], None),
            Err(LayoutError::Length {
                got: 3,
                expected: 4,
                ..
            })
        ));
        let (p, _) = SparsePattern::from_dense(2, 2, &[1.0; 4], None).unwrap();
        assert!(p.to_dense(&[1.0]).is_err());
    }
}
