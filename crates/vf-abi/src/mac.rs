//! MAC addresses: the VF's identity on the wire, set by the host and read by the NF.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, "no address".
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The I/G bit: set for group (multicast and broadcast) addresses.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// All ones.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// A usable station address: not a group address and not all zeros.
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && self != Self::ZERO
    }

    /// A locally administered unicast address derived from a base and an index, used
    /// for a VF's power-on MAC. Its first octet always differs from the base's, so no VF
    /// ever shares the PF's address.
    pub fn derived(base: MacAddr, index: u16) -> MacAddr {
        let [b0, b1, b2, b3, _, _] = base.0;
        // Locally administered (bit 1), unicast (bit 0 clear).
        let mut first = (b0 | 0x02) & !0x01;
        if first == b0 {
            first ^= 0x04;
        }
        let [hi, lo] = index.to_be_bytes();
        MacAddr([first, b1, b2, b3, hi, lo])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address string that is not six `:`-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid MAC address {0:?}: expected six hex octets such as 02:00:00:00:00:01")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Six `:`-separated pairs of hex digits, either case: the one form the API,
    /// chain files and nfctl take.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: MacAddr = "02:1a:2B:3c:4d:5e".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]));
        assert_eq!(mac.to_string(), "02:1a:2b:3c:4d:5e");
    }

    #[test]
    fn mac_rejects_malformed_text() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "zz:00:00:00:00:00",
            "2:00:00:00:00:000",
            "02-00-00-00-00-01",
            "+2:00:00:00:00:01",
            "02:00:00:00:00:0g",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr::ZERO.is_unicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
    }

    #[test]
    fn derived_macs_are_unique_local_unicast() {
        let base = MacAddr([0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc]);
        let a = MacAddr::derived(base, 0);
        let b = MacAddr::derived(base, 255);
        assert!(a.is_unicast() && b.is_unicast());
        assert_ne!(a, b);
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
        for base in [
            MacAddr([0x02, 0, 0, 0, 0, 0]),
            MacAddr([0x06, 0, 0, 0, 0, 1]),
        ] {
            for i in 0..4 {
                assert_ne!(MacAddr::derived(base, i), base, "VF MAC equals the PF's");
            }
        }
    }
}
