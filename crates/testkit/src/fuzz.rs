//! One fuzz input through an NF, and [`fuzz_nf!`](crate::fuzz_nf) that makes a
//! whole fuzz target of it.

use nf_sdk::{Batch, NetworkFunction, Packet};

use crate::harness::FRAME;

/// Processes `data` as one received frame with stripped TCI `vlan`, exactly as
/// the runtime hands an NF a batch: copied into a [`FRAME`]-byte buffer, cut
/// to fit.
pub fn fuzz_one(nf: &mut impl NetworkFunction, data: &[u8], vlan: u16) {
    let mut buf = [0u8; FRAME];
    let len = data.len().min(FRAME);
    buf[..len].copy_from_slice(&data[..len]);
    let mut packets = [Packet::new(&mut buf, len, vlan)];
    let mut batch = Batch::new(&mut packets);
    nf.process(&mut batch);
}

/// The stripped TCI the fuzz targets use: VLAN 100 when the input's first
/// byte is odd, none otherwise, so that VLAN rules are reached from the
/// same corpus.
pub fn fuzz_vlan(data: &[u8]) -> u16 {
    data.first().map_or(0, |b| u16::from(*b & 1) * 100)
}

/// A cargo-fuzz target for one NF: `fuzz_nf!(nf_firewall::Firewall, CONFIG);`
/// in a `#![no_main]` binary that depends on `libfuzzer-sys`.
///
/// One NF is built with `from_config(CONFIG)` on the first input and kept for
/// the whole run, so its state (flow tables, buckets) is fuzzed too; each input
/// goes through [`fuzz_one`]. The stripped TCI comes from [`fuzz_vlan`], or
/// from `vlan = |data| ...` (a function of the input) when given.
#[macro_export]
macro_rules! fuzz_nf {
    ($nf:ty, $config:expr $(,)?) => {
        $crate::fuzz_nf!($nf, $config, vlan = $crate::fuzz_vlan);
    };
    ($nf:ty, $config:expr, vlan = $vlan:expr $(,)?) => {
        /// One NF for the whole run, so its state is fuzzed too.
        static NF: ::std::sync::Mutex<::std::option::Option<$nf>> =
            ::std::sync::Mutex::new(::std::option::Option::None);

        ::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            let vlan: fn(&[u8]) -> u16 = $vlan;
            let mut guard = NF.lock().unwrap_or_else(|e| e.into_inner());
            let nf = guard
                .get_or_insert_with(|| <$nf>::from_config($config).expect("fuzz config is valid"));
            $crate::fuzz_one(nf, data, vlan(data));
        });
    };
}
