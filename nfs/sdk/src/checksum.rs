//! Incremental update of the Internet checksum (RFC 1071) after rewriting
//! some 16-bit words of the data it covers, by RFC 1624 §3 eqn. 3:
//!
//! ```text
//! HC' = ~(~HC + ~m + m')
//! ```
//!
//! summed in one's complement over every changed word `m` → `m'`. Eqn. 3,
//! not RFC 1141's eqn. 2 (`HC - ~m - m'`), which can give `0xFFFF` where a
//! recomputation gives `0x0000` (RFC 1624 §4). Eqn. 3 gives what
//! recomputing gives for any data that is not all zeros, which an IP header
//! never is. An incremental update also keeps a wrong checksum wrong, so a
//! packet corrupted before a rewrite stays detectably corrupted after it.

use std::net::Ipv4Addr;
use std::ops::Add;

/// The one's-complement sum of `~m + m'` over changed words: the change to
/// apply to every checksum that covers them.
///
/// Kept unfolded in a `u32`: each word adds at most `0x1FFFE`, and a
/// translation changes at most a dozen words, far from overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    /// Records that a word changed from `old` to `new`.
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// Records that an IPv4 address (two words) changed.
    pub fn addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let (old, new) = (old.octets(), new.octets());
        self.word(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        );
        self.word(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        );
    }

    /// The checksum after the recorded changes, given the one before.
    pub fn apply(self, checksum: u16) -> u16 {
        let mut sum = u64::from(!checksum) + u64::from(self.0);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // The loop leaves at most 16 bits.
        !(sum as u16)
    }

    /// [`Delta::apply`] for a UDP checksum: 0 means "no checksum" and stays
    /// 0, and a computed 0 is sent as `0xFFFF` (RFC 768).
    pub fn apply_udp(self, checksum: u16) -> u16 {
        match checksum {
            0 => 0,
            c => match self.apply(c) {
                0 => 0xffff,
                c => c,
            },
        }
    }
}

/// Whether `data`, checksum field included, verifies: its one's-complement
/// sum is all ones (RFC 1071 §1). An odd last byte is padded with zero.
pub fn verifies(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = (&mut chunks)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

impl Add for Delta {
    type Output = Delta;

    fn add(self, other: Delta) -> Delta {
        Delta(self.0 + other.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 1071 checksum of `data` (even length) from scratch.
    fn full(data: &[u8]) -> u16 {
        let mut sum: u64 = data
            .chunks(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1624_section_4_example() {
        // RFC 1624 §4: the other header words sum to 0xCD7A, and a word
        // 0x5555 becomes 0x3285. HC = ~(0xCD7A + 0x5555) = 0xDD2F; eqn. 3
        // gives 0x0000, as recomputing does, where eqn. 2 gives 0xFFFF.
        let mut d = Delta::default();
        d.word(0x5555, 0x3285);
        assert_eq!(d.apply(0xdd2f), 0x0000);
    }

    #[test]
    fn unchanged_words_leave_the_checksum_alone() {
        let mut d = Delta::default();
        d.word(0x1234, 0x1234);
        d.addr(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 1));
        for c in [0x0000, 0x0001, 0x8000, 0xfffe] {
            assert_eq!(d.apply(c), c);
        }
    }

    #[test]
    fn verifies_what_full_computes() {
        let mut data = [
            0x45, 0x00, 0x00, 0x1c, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 10, 0, 0, 1, 1, 2, 3, 4,
        ];
        let c = full(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(&data));
        data[19] ^= 1;
        assert!(!verifies(&data));
        // Odd length: the last byte counts as the high half of a word.
        assert!(verifies(&[0x00, 0xff, 0xff]));
    }

    #[test]
    fn udp_zero_means_none() {
        let mut d = Delta::default();
        d.word(1, 2);
        assert_eq!(d.apply_udp(0), 0);
    }

    proptest! {
        /// Data followed by its checksum verifies; flip a bit and it does not.
        #[test]
        fn computed_checksums_verify(
            data in proptest::collection::vec(any::<u8>(), 0..32usize)
                .prop_map(|mut v| { v.truncate(v.len() & !1); v }),
            flip in any::<prop::sample::Index>(),
            bit in 0..8u8,
        ) {
            let mut data = data;
            data.extend_from_slice(&full(&data).to_be_bytes());
            prop_assert!(verifies(&data));
            let i = flip.index(data.len());
            data[i] ^= 1 << bit;
            prop_assert!(!verifies(&data));
        }

        /// Rewriting any words of any (not all-zero) data: the incremental
        /// result equals a recomputation.
        #[test]
        fn incremental_equals_recomputed(
            mut data in proptest::collection::vec(any::<u8>(), 2..64usize)
                .prop_map(|mut v| { v.truncate(v.len() & !1); v })
                .prop_filter("not all zero", |v| v.iter().any(|&b| b != 0)),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u16>()), 1..8),
        ) {
            let before = full(&data);
            let mut d = Delta::default();
            for (at, new) in edits {
                let i = at.index(data.len() / 2) * 2;
                let old = u16::from_be_bytes([data[i], data[i + 1]]);
                d.word(old, new);
                data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            }
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_eq!(d.apply(before), full(&data));
        }
    }
}
