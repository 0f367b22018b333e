//! Exclusive use of the device random generator.
//!
//! burn's backends keep one random generator per process (`Device::seed` replaces it for
//! every device of the backend), and dropout and fresh initialisation draw from it. Two
//! runs in one process (a test harness running tests in parallel, a user driving two
//! trainings from threads) would otherwise interleave their draws, and a run would no
//! longer be a function of its seed: resume would stop being bit-exact. Whoever seeds the
//! generator holds [`seeded`]'s guard until its last draw.

use std::sync::{Mutex, MutexGuard};

use burn::tensor::Device;

static DEVICE_RNG: Mutex<()> = Mutex::new(());

/// Seeds the process's device generator with `seed` and returns the guard that keeps
/// every other seeded user out until it is dropped.
pub fn seeded(device: &Device, seed: u64) -> MutexGuard<'static, ()> {
    // A panic while the lock was held leaves nothing to repair: the next user reseeds.
    let guard = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    guard
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
}
