//! Wall time of this crate's own CPU kernels, per op (`shears bench train`'s "top ops").
//!
//! The kernels that shears runs instead of burn's (im2col + GEMM conv2d, fused batch norm,
//! GELU, dropout, the squared-norm reduction, SparseProp's linear and conv2d) report each
//! call to [`time`]; nothing is recorded unless a [`Recording`] is active (one relaxed
//! atomic load per call otherwise). Times are wall-clock around the kernel, including its
//! reads of the input tensors and the write of its output; the ops burn computes itself
//! (matmul, softmax, layer norm, element-wise ops) are not seen here, which is why the
//! bench reports them as one remainder. Only CPU kernels report: on a GPU the table is empty.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

thread_local! {
    /// The totals of the recording active on this thread, if any.
    static TOTALS: RefCell<Option<BTreeMap<&'static str, OpTime>>> = const { RefCell::new(None) };
}

/// Time and calls of one op over a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpTime {
    /// Seconds inside the op, summed over its calls.
    pub seconds: f64,
    /// Number of calls.
    pub calls: u64,
}

/// Runs `f`, charging its wall time to the op `name` when a recording is active on this
/// thread (the thread that calls the op: the training loop's, for the forward and, with
/// burn's autodiff, the backward).
#[inline]
pub fn time<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    if !TOTALS.with(|t| t.borrow().is_some()) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let dt = start.elapsed().as_secs_f64();
    TOTALS.with(|t| {
        if let Some(totals) = t.borrow_mut().as_mut() {
            let e = totals.entry(name).or_default();
            e.seconds += dt;
            e.calls += 1;
        }
    });
    out
}

/// An active recording of op times on this thread (other threads' calls, e.g. concurrent
/// tests, are not counted). Starting one replaces any recording active on the thread.
#[must_use = "the recording stops when this is dropped"]
pub struct Recording(());

impl Recording {
    /// Starts recording with empty totals.
    pub fn start() -> Self {
        TOTALS.with(|t| *t.borrow_mut() = Some(BTreeMap::new()));
        Recording(())
    }

    /// Stops recording and returns the time of every op that ran, by name.
    pub fn finish(self) -> BTreeMap<&'static str, OpTime> {
        TOTALS.with(|t| t.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        TOTALS.with(|t| t.borrow_mut().take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls are counted exactly and charged their own time; nothing is recorded outside a
    /// recording, and another thread's calls are not counted.
    #[test]
    fn records_calls_and_time_only_while_active() {
        time("outside", || ());
        let rec = Recording::start();
        for _ in 0..3 {
            time("sleep", || {
                std::thread::sleep(std::time::Duration::from_millis(2))
            });
        }
        let v = time("value", || 41 + 1);
        std::thread::spawn(|| time("other thread", || ()))
            .join()
            .unwrap();
        assert_eq!(v, 42);
        let totals = rec.finish();
        assert!(!totals.contains_key("outside") && !totals.contains_key("other thread"));
        assert_eq!(totals["sleep"].calls, 3);
        assert!(totals["sleep"].seconds >= 0.006, "{:?}", totals["sleep"]);
        assert_eq!(totals["value"].calls, 1);
        time("after", || ());
        let again = Recording::start().finish();
        assert!(again.is_empty(), "{again:?}");
    }
}
