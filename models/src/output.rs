//! Output buffers of the CPU kernels, allocated without a serial clear.
//!
//! `vec![0.0; n]` is a `calloc`. Once a training step has run, the allocator hands back
//! reused heap blocks (the binary keeps freed buffers, see its `mallopt`), and glibc clears
//! those with one `memset` on the calling thread while every worker of the pool waits: on a
//! 2-core AVX2 EPYC that serial clear of conv and batch-norm outputs was ≈ 5 % of the CPU
//! samples of a ResNet-20 training step, and moving it into the workers made the step 11–14 %
//! faster (the clear had the machine to itself for its duration). Here the clearing moves into
//! the parallel workers: [`zeroed`] clears in parallel, [`build`] clears each chunk in the
//! worker that fills it, just before it does, while the chunk is in its cache, and
//! [`map_copy`] / [`map_copy_zip`] copy a borrowed input chunk by chunk for kernels that work
//! in place (burn's buffers are 16-byte aligned, so turning one into a `Vec<f32>` is itself a
//! serial copy).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Elements one worker clears at a time in [`zeroed`] (256 KiB).
const CLEAR_CHUNK: usize = 1 << 16;

/// Views initialised elements as floats.
///
/// # Safety
/// Every element of `s` is initialised.
unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller guarantees that
    // every element is initialised.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `n` zeros, cleared in parallel (for outputs a kernel accumulates into or writes through
/// a GEMM whose own parallel split differs from any chunking here).
pub fn zeroed(n: usize) -> Vec<f32> {
    build(n, CLEAR_CHUNK, || (), |_, _, _| {})
}

/// `n` floats computed chunk by chunk in parallel: `f(state, i, chunk)` receives chunk `i`
/// (elements `i·chunk ..`, the last one shorter), zeroed, and writes it; `init` makes one
/// `state` per worker (scratch buffers), as in rayon's `for_each_init`.
///
/// # Panics
/// If `chunk` is 0 while `n` is not.
pub fn build<T, I, F>(n: usize, chunk: usize, init: I, f: F) -> Vec<f32>
where
    I: Fn() -> T + Sync + Send,
    F: Fn(&mut T, usize, &mut [f32]) + Sync + Send,
{
    let chunks = rayon::iter::repeat_n((), n.div_ceil(chunk.max(1)));
    fill(n, chunk, None, chunks, init, |state, i, c, ()| {
        f(state, i, c)
    })
}

/// A copy of `src` transformed in place, chunk by chunk in parallel: `f(offset, chunk)`
/// receives the copy of `src[offset..][..chunk.len()]` (for element-wise ops whose kernels
/// work in place on a borrowed input).
///
/// # Panics
/// If `chunk` is 0 while `src` is not empty.
pub fn map_copy<F>(src: &[f32], chunk: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let chunks = rayon::iter::repeat_n((), src.len().div_ceil(chunk.max(1)));
    fill(
        src.len(),
        chunk,
        Some(src),
        chunks,
        || (),
        |_, i, c, ()| f(i * chunk, c),
    )
}

/// [`map_copy`] with a second parallel iterator zipped chunk for chunk (for example other
/// buffers updated in place, split into the same chunks): `f(offset, chunk, item)`.
///
/// # Panics
/// If `chunk` is 0 while `src` is not empty, or `with` does not yield one item per chunk.
pub fn map_copy_zip<W, F>(src: &[f32], chunk: usize, with: W, f: F) -> Vec<f32>
where
    W: IndexedParallelIterator,
    F: Fn(usize, &mut [f32], W::Item) + Sync + Send,
{
    fill(
        src.len(),
        chunk,
        Some(src),
        with,
        || (),
        |_, i, c, item| f(i * chunk, c, item),
    )
}

/// The three above: chunk `i` of `n` new floats is initialised in its worker (a copy of the
/// same chunk of `source`, or zeros), then handed to `f` with item `i` of `with`.
fn fill<T, W, I, F>(
    n: usize,
    chunk: usize,
    source: Option<&[f32]>,
    with: W,
    init: I,
    f: F,
) -> Vec<f32>
where
    W: IndexedParallelIterator,
    I: Fn() -> T + Sync + Send,
    F: Fn(&mut T, usize, &mut [f32], W::Item) + Sync + Send,
{
    let mut out: Vec<f32> = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    assert!(chunk > 0, "output: chunk of 0 elements");
    assert_eq!(with.len(), n.div_ceil(chunk), "output: one item per chunk");
    if let Some(src) = source {
        assert_eq!(src.len(), n, "output: source length");
    }
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .zip(with)
        .enumerate()
        .for_each_init(init, |state, (i, (c, item))| {
            match source {
                Some(src) => {
                    for (d, &v) in c.iter_mut().zip(&src[i * chunk..]) {
                        d.write(v);
                    }
                }
                None => c.fill(MaybeUninit::new(0.0)),
            }
            // SAFETY: every element of `c` was just written (`src` has `n` elements, so its
            // part from `i·chunk` is at least as long as `c`).
            f(state, i, unsafe { assume_init(c) }, item);
        });
    // SAFETY: the chunks cover the first `n` elements and every one was initialised (a panic
    // in `f` propagates out of `for_each_init` before this line).
    unsafe { out.set_len(n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_all_zero_for_lengths_around_the_chunk() {
        for n in [
            0,
            1,
            CLEAR_CHUNK - 1,
            CLEAR_CHUNK,
            CLEAR_CHUNK + 1,
            3 * CLEAR_CHUNK + 7,
        ] {
            let v = zeroed(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0), "n = {n}");
        }
    }

    #[test]
    fn map_copy_hands_each_chunk_its_source_and_offset() {
        let (n, chunk) = (1003, 100);
        let src: Vec<f32> = (0..n).map(|j| (j * 3) as f32).collect();
        let v = map_copy(&src, chunk, |at, c| {
            assert_eq!(at % chunk, 0);
            for (k, x) in c.iter_mut().enumerate() {
                assert_eq!(*x, ((at + k) * 3) as f32, "copied source");
                *x += at as f32;
            }
        });
        assert_eq!(v.len(), n);
        for (j, &x) in v.iter().enumerate() {
            assert_eq!(x, (j * 3 + j / chunk * chunk) as f32, "element {j}");
        }
    }

    #[test]
    fn map_copy_zip_pairs_chunk_i_with_item_i() {
        // Item i of the zipped side is a slice of another buffer split into the same chunks:
        // each output chunk becomes its copied source plus twice its partner, and the partner
        // is negated in place.
        let (n, chunk) = (1000, 96);
        let src: Vec<f32> = (0..n).map(|j| (7 * j) as f32).collect();
        let mut other: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let v = map_copy_zip(&src, chunk, other.par_chunks_mut(chunk), |at, c, o| {
            assert_eq!(c.len(), o.len(), "chunk at {at}");
            for (x, y) in c.iter_mut().zip(o.iter_mut()) {
                *x += 2.0 * *y;
                *y = -*y;
            }
        });
        assert_eq!(v.len(), n);
        for (j, (&x, &y)) in v.iter().zip(&other).enumerate() {
            assert_eq!((x, y), ((9 * j) as f32, -(j as f32)), "element {j}");
        }
    }

    #[test]
    fn build_hands_each_chunk_once_zeroed_with_its_index() {
        // Chunk i is filled with i + 1 + its position in the chunk, after checking it arrives
        // zeroed: the result is then known element by element.
        let (n, chunk) = (1000, 64);
        let v = build(
            n,
            chunk,
            || 0usize,
            |calls, i, c| {
                *calls += 1;
                assert!(c.iter().all(|&x| x == 0.0));
                assert_eq!(c.len(), chunk.min(n - i * chunk));
                for (k, x) in c.iter_mut().enumerate() {
                    *x = (i + 1 + k) as f32;
                }
            },
        );
        assert_eq!(v.len(), n);
        for (j, &x) in v.iter().enumerate() {
            assert_eq!(x, (j / chunk + 1 + j % chunk) as f32, "element {j}");
        }
    }
}
