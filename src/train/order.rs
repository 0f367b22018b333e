//! Deterministic example order: each epoch is a permutation drawn from the run's seed and
//! the epoch number alone, so a resumed run sees exactly the batches an uninterrupted one
//! would, on any machine and thread count.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// SplitMix64 finaliser: decorrelates `(seed, stream)` pairs into one RNG seed.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order of `n` examples in `epoch` (a Fisher–Yates shuffle seeded by `seed` and
/// `epoch`), or `0..n` when `shuffle` is false.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(mix(seed, epoch));
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
    }
    order
}

/// Number of batches of an epoch of `n` examples (the last batch may be smaller).
pub fn batches_per_epoch(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size.max(1))
}

/// The examples of batch `index` of an epoch with the given order.
pub fn batch(order: &[usize], batch_size: usize, index: usize) -> &[usize] {
    let start = (index * batch_size).min(order.len());
    let end = (start + batch_size).min(order.len());
    &order[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(1000, 42, 3, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1000, 42, 3, true));
        assert_ne!(a, epoch_order(1000, 42, 4, true));
        assert_ne!(a, epoch_order(1000, 43, 3, true));
        assert_eq!(epoch_order(5, 1, 1, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn batches_cover_the_epoch_once() {
        let order = epoch_order(103, 7, 0, true);
        assert_eq!(batches_per_epoch(103, 10), 11);
        let mut seen: Vec<usize> = (0..11)
            .flat_map(|i| batch(&order, 10, i).to_vec())
            .collect();
        assert_eq!(batch(&order, 10, 10).len(), 3);
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        assert!(batch(&order, 10, 11).is_empty());
    }
}
