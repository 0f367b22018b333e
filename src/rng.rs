//! Exclusive use of the device random generator.
//!
//! burn's backends keep one random generator per process (`Device::seed` replaces it for
//! every device of the backend), and dropout and fresh initialisation draw from it. Two
//! runs in one process (a test harness running tests in parallel, a user driving two
//! trainings from threads) would otherwise interleave their draws, and a run would no
//! longer be a function of its seed: resume would stop being bit-exact. So every draw
//! happens under one process-wide lock: whoever needs reproducible draws seeds the
//! generator and holds [`seeded`]'s guard until its last draw; whoever draws without
//! caring about the values (initialising a module whose weights are loaded right after)
//! holds [`exclusive`]'s guard so as not to shift anyone else's stream. The lock is
//! re-entrant: a thread holding it may take it again (a seeded section that loads a
//! model).
//!
//! burn initialises parameters lazily, at their first use; [`materialize`] draws them
//! all at once, under the caller's guard, so that no draw happens later outside it.

use std::marker::PhantomData;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

/// Which thread holds the lock, and how many times.
struct Owner {
    thread: Option<ThreadId>,
    depth: usize,
}

static OWNER: Mutex<Owner> = Mutex::new(Owner {
    thread: None,
    depth: 0,
});
static RELEASED: Condvar = Condvar::new();

/// Exclusive use of the device generator until dropped (re-entrant within a thread).
#[must_use = "the generator is exclusive only while the guard lives"]
pub struct RngGuard {
    /// Dropped on the thread that took it.
    _not_send: PhantomData<*const ()>,
}

fn acquire() -> RngGuard {
    let me = std::thread::current().id();
    // A panic while the lock was held leaves nothing to repair: the next user reseeds.
    let mut o = OWNER.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match o.thread {
            None => {
                o.thread = Some(me);
                o.depth = 1;
                break;
            }
            Some(t) if t == me => {
                o.depth += 1;
                break;
            }
            Some(_) => o = RELEASED.wait(o).unwrap_or_else(|e| e.into_inner()),
        }
    }
    RngGuard {
        _not_send: PhantomData,
    }
}

impl Drop for RngGuard {
    fn drop(&mut self) {
        let mut o = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        o.depth -= 1;
        if o.depth == 0 {
            o.thread = None;
            RELEASED.notify_one();
        }
    }
}

/// Seeds the process's device generator with `seed` and returns the guard that keeps
/// every other user out until it is dropped.
pub fn seeded(device: &Device, seed: u64) -> RngGuard {
    let guard = acquire();
    device.seed(seed);
    guard
}

/// The guard alone, for draws whose values do not matter but must not shift a seeded
/// user's stream (a module initialised before its weights are loaded).
pub fn exclusive() -> RngGuard {
    acquire()
}

/// Runs every pending lazy initialisation of `module`'s parameters now (call it with a
/// guard held).
pub fn materialize<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    /// With the guard held, a seed fixes the draws even while other threads reseed and
    /// draw concurrently.
    #[test]
    fn seeded_draws_are_a_function_of_the_seed_under_contention() {
        let device = Device::flex();
        let draw = |seed: u64| {
            let _g = seeded(&device, seed);
            Tensor::<1>::random([64], Distribution::Default, &device)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let reference = draw(5);
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let device = device.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let _g = seeded(&device, 100 + k * 1000 + i);
                        let _ =
                            Tensor::<1>::random([64], Distribution::Default, &device).into_data();
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            assert_eq!(draw(5), reference);
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_ne!(draw(6), reference);
    }

    /// A thread may take the lock again (seeded or not) while holding it, and draws made
    /// by other threads under [`exclusive`] do not shift a seeded stream.
    #[test]
    fn the_lock_is_reentrant_and_exclusive_draws_leave_seeded_streams_alone() {
        let device = Device::flex();
        let draw = |seed: u64| {
            let _outer = seeded(&device, seed);
            let _inner = exclusive();
            let first = Tensor::<1>::random([32], Distribution::Default, &device).into_data();
            let _again = seeded(&device, seed);
            let second = Tensor::<1>::random([32], Distribution::Default, &device).into_data();
            assert_eq!(first, second);
            first
        };
        let reference = draw(21);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (device, stop) = (device.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _g = exclusive();
                        let _ =
                            Tensor::<1>::random([16], Distribution::Default, &device).into_data();
                    }
                })
            })
            .collect();
        for _ in 0..30 {
            assert_eq!(draw(21), reference);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
    }

    /// A module initialised and materialised under a seeded guard has the same weights
    /// whatever other threads draw afterwards (burn initialises lazily, at first use).
    #[test]
    fn materialized_modules_are_a_function_of_the_seed() {
        use burn::nn::LinearConfig;
        let device = Device::flex();
        let make = || {
            let _g = seeded(&device, 3);
            let linear = LinearConfig::new(8, 4).init(&device);
            materialize(&linear);
            linear
        };
        let a = make();
        let b = make();
        {
            let _g = seeded(&device, 99);
            let _ = Tensor::<1>::random([64], Distribution::Default, &device).into_data();
        }
        assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
        let c = make();
        let _g = seeded(&device, 4);
        let _ = Tensor::<1>::random([64], Distribution::Default, &device).into_data();
        assert_eq!(a.weight.val().into_data(), c.weight.val().into_data());
    }
}
