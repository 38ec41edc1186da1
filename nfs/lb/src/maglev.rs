//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4), with weights.
//!
//! Each backend gets a permutation of the `M` table positions from two hashes
//! of its address: `offset = h1 mod M`, `skip = h2 mod (M - 1) + 1`, position
//! `j` being `(offset + j · skip) mod M`. With `M` prime every skip is coprime
//! to `M`, so each permutation visits every position. Backends then take turns
//! claiming their next preferred position that is still empty until the table
//! is full (the paper's Pseudocode 1). A flow's hash indexes the table.
//!
//! Weights follow the paper's remark that a backend's share follows how often
//! it takes a turn: in each round a backend of weight `w` takes `w` turns, so
//! it ends up with `w / Σw` of the table (to within one round's worth of
//! entries).
//!
//! Backends take their turns in address order, not configuration order, so
//! two load balancers given the same backends in a different order build the
//! same table and send every flow to the same backend.

use std::fmt;

use crate::{
    Backend, ConfigError, MAX_BACKENDS, MAX_TABLE_SIZE, MAX_WEIGHT, MIN_ENTRIES_PER_BACKEND,
};

/// The murmur3 64-bit finalizer (`fmix64`): a bijection on `u64` where every
/// input bit flips each output bit with probability about 1/2.
///
/// Ours rather than std's `DefaultHasher`, whose output may change between
/// Rust releases: a table must not change when the binary is rebuilt, or a
/// restart would move flows.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Maps a uniform 64-bit hash onto `0..n` with a multiply and a shift
/// (Lemire, "Fast Random Integer Generation in an Interval", 2019), avoiding a
/// division per packet.
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    // Lossless: the result is below `n`, a `usize`.
    ((u128::from(hash) * n as u128) >> 64) as usize
}

// Arbitrary distinct constants (digits of pi), so h1 and h2 are unrelated.
const OFFSET_SEED: u64 = 0x243f_6a88_85a3_08d3;
const SKIP_SEED: u64 = 0x1319_8a2e_0370_7344;

/// Whether `n` is prime, by trial division (n ≤ 2^24 here: at most 2^11 steps).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Index of a backend in the list a [`Maglev`] was built from.
pub type BackendIndex = u16;

/// A Maglev lookup table.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[BackendIndex]>,
    entries: Vec<u32>,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.table.len())
            .field("entries", &self.entries)
            .finish()
    }
}

impl Maglev {
    /// Checks that `backends` and `size` make a usable table: 1 to
    /// [`MAX_BACKENDS`] backends, weights in `1..=`[`MAX_WEIGHT`], `size` a
    /// prime of at least [`MIN_ENTRIES_PER_BACKEND`] per backend and at most
    /// [`MAX_TABLE_SIZE`]. Duplicate addresses are the caller's to reject.
    pub fn validate(backends: &[Backend], size: u64) -> Result<(), ConfigError> {
        if !(1..=MAX_BACKENDS).contains(&backends.len()) {
            return Err(ConfigError::BackendCount(backends.len()));
        }
        for (index, backend) in backends.iter().enumerate() {
            if !(1..=MAX_WEIGHT).contains(&backend.weight) {
                return Err(ConfigError::Weight {
                    index,
                    weight: backend.weight,
                });
            }
        }
        if size > MAX_TABLE_SIZE {
            return Err(ConfigError::TableSizeTooLarge(size));
        }
        if !is_prime(size) {
            return Err(ConfigError::TableSizeNotPrime(size));
        }
        // Lossless: at most 1000 backends.
        let min = MIN_ENTRIES_PER_BACKEND * backends.len() as u64;
        if size < min {
            return Err(ConfigError::TableSizeTooSmall { size, min });
        }
        Ok(())
    }

    /// Builds the table of `size` entries for `backends` (see
    /// [`Maglev::validate`]). Runs in O(M log M) expected time (paper §3.4),
    /// tens of milliseconds for the default M = 65537.
    pub fn new(backends: &[Backend], size: u64) -> Result<Self, ConfigError> {
        Self::validate(backends, size)?;
        // Lossless: validated to be at most 2^24 and 1000.
        let m = size as usize;
        let n = backends.len();

        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| backends[i].addr);
        let step = |key: u64| {
            let offset = reduce(mix64(key ^ OFFSET_SEED), m);
            let skip = reduce(mix64(key ^ SKIP_SEED), m - 1) + 1;
            (offset, skip)
        };
        // Per backend: next position to try and the skip between positions.
        // `pos += skip (mod M)` walks the same permutation as the paper's
        // `(offset + j · skip) mod M` without a division.
        let mut cursor: Vec<(usize, usize)> = backends.iter().map(|b| step(b.addr.key())).collect();

        const EMPTY: BackendIndex = BackendIndex::MAX;
        let mut table = vec![EMPTY; m].into_boxed_slice();
        let mut entries = vec![0u32; n];
        let mut filled = 0;
        // Terminates: every round claims Σw ≥ 1 empty positions, and a
        // backend's permutation visits all of them, so its inner walk finds
        // one within M steps while any remain.
        'fill: loop {
            for &i in &order {
                for _ in 0..backends[i].weight {
                    let (pos, skip) = &mut cursor[i];
                    while table[*pos] != EMPTY {
                        *pos += *skip;
                        if *pos >= m {
                            *pos -= m;
                        }
                    }
                    // Lossless: i < 1000.
                    table[*pos] = i as BackendIndex;
                    entries[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ok(Self { table, entries })
    }

    /// The backend (index into the list the table was built from) for a flow
    /// of hash `hash`.
    pub fn lookup(&self, hash: u64) -> BackendIndex {
        // `reduce` stays below the length, and the table is never empty.
        self.table
            .get(reduce(hash, self.table.len()))
            .copied()
            .unwrap_or(0)
    }

    /// Table size M.
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// The table: backend index per entry.
    pub fn table(&self) -> &[BackendIndex] {
        &self.table
    }

    /// Entries per backend, by backend index.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let primes: Vec<u64> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65_537));
        assert!(is_prime(16_777_213));
        assert!(!is_prime(65_536));
        assert!(!is_prime(65_539 * 3));
        // 251 · 257: odd, no small factor.
        assert!(!is_prime(64_507));
    }

    #[test]
    fn reduce_covers_the_range() {
        assert_eq!(reduce(0, 7), 0);
        assert_eq!(reduce(u64::MAX, 7), 6);
        assert_eq!(reduce(1 << 63, 10), 5);
    }
}
