//! The generator's randomness: ChaCha8 keyed by the population's seed, one stream per
//! patient (so patient `i` is the same whatever the population's size), and the few
//! draws the generator needs, in integer arithmetic only (no floating-point
//! transcendental functions, whose last bits may differ between platforms).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use uuid::Uuid;

pub(crate) struct Rng(ChaCha8Rng);

impl Rng {
    /// The stream of patient `index` of the population `seed`.
    pub(crate) fn for_patient(seed: u64, index: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(index);
        Rng(r)
    }

    /// Uniform in `0..n` (`0` when `n` is 0), without modulo bias.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.0.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `per_mille / 1000`.
    pub(crate) fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// One of `items`, uniformly. `items` must not be empty (every table is a constant).
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One of `items` by weight.
    pub(crate) fn weighted<'a, T>(&mut self, items: &'a [(u32, T)]) -> &'a T {
        let total: u64 = items.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (w, item) in items {
            if x < u64::from(*w) {
                return item;
            }
            x -= u64::from(*w);
        }
        &items[items.len() - 1].1
    }

    /// Roughly normal around `mean` with standard deviation `sd` (Irwin–Hall: the sum
    /// of four uniforms), clamped to `lo..=hi`.
    pub(crate) fn normal(&mut self, mean: i64, sd: i64, lo: i64, hi: i64) -> i64 {
        // The sum of 4 uniforms on [0, 1) has mean 2 and variance 1/3; scaled by
        // sqrt(3) ≈ 1732/1000 its standard deviation is 1.
        let sum: i64 = (0..4).map(|_| self.below(10_000) as i64).sum();
        let z_milli = (sum - 20_000) * 1732 / 10_000;
        (mean + z_milli * sd / 1000).clamp(lo, hi)
    }

    /// A random (version 4) UUID.
    pub(crate) fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.0.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_their_bounds_and_streams_differ() {
        let mut r = Rng::for_patient(7, 0);
        for _ in 0..1000 {
            assert!(r.below(3) < 3);
            assert!((5..=9).contains(&r.between(5, 9)));
            assert!((60..=200).contains(&r.normal(120, 15, 60, 200)));
        }
        let a = Rng::for_patient(7, 0).uuid();
        assert_eq!(a, Rng::for_patient(7, 0).uuid());
        assert_ne!(a, Rng::for_patient(7, 1).uuid());
        assert_ne!(a, Rng::for_patient(8, 0).uuid());
        assert_eq!(a.get_version_num(), 4);
    }
}
