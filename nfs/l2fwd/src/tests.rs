use nf_sdk::Verdict;
use nf_testkit::{MAC_A, MAC_B, run, tagged, tcp6, udp4};
use proptest::prelude::*;

use super::*;

/// A UDP/IPv4 frame carrying `payload`: what the forwarder sees most.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    udp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 5678, payload)
}

#[test]
fn swaps_macs_and_keeps_the_rest() {
    let frames = [
        udp_frame(b"hello"),
        tagged(&tcp6([1; 16], [2; 16], 40000, 443, b"data"), &[100]),
    ];
    let mut nf = L2Fwd::from_config("").expect("defaults");
    let out = run(&mut nf, &frames);
    for ((verdict, after), before) in out.iter().zip(&frames) {
        assert_eq!(*verdict, Verdict::Forward);
        assert_eq!(after.len(), before.len());
        assert_eq!(after[0..6], MAC_A, "dst is the old src");
        assert_eq!(after[6..12], MAC_B, "src is the old dst");
        assert_eq!(after[12..], before[12..], "everything after the MACs");
    }
    assert_eq!(
        nf.counters(),
        Counters {
            forwarded: 2,
            dropped_runts: 0
        }
    );
}

#[test]
fn swapping_twice_restores_the_frame() {
    let frame = udp_frame(&[0xab; 100]);
    let mut nf = L2Fwd::default();
    let once = run(&mut nf, std::slice::from_ref(&frame));
    let twice = run(&mut nf, &[once[0].1.clone()]);
    assert_eq!(twice[0].1, frame);
}

#[test]
fn drops_and_counts_runts() {
    let full = udp_frame(b"x");
    let frames = [
        full[..10].to_vec(),
        Vec::new(),
        full[..13].to_vec(),
        full[..14].to_vec(),
    ];
    let mut nf = L2Fwd::default();
    let out = run(&mut nf, &frames);
    let verdicts: Vec<_> = out.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Drop,
            Verdict::Drop,
            Verdict::Drop,
            Verdict::Forward
        ]
    );
    assert_eq!(out[0].1, full[..10], "a dropped runt is not touched");
    assert_eq!(
        nf.counters(),
        Counters {
            forwarded: 1,
            dropped_runts: 3
        }
    );
    assert_eq!(
        nf.report().as_deref(),
        Some(r#"{"forwarded":1,"dropped_runts":3}"#)
    );
}

#[test]
fn mac_rewrite_none_forwards_unchanged() {
    let frame = udp_frame(b"hello");
    let mut nf = L2Fwd::from_config(r#"{"mac_rewrite":"none"}"#).expect("config");
    assert_eq!(nf.config().mac_rewrite, MacRewrite::None);
    let out = run(&mut nf, &[frame.clone(), frame[..5].to_vec()]);
    assert_eq!(out[0], (Verdict::Forward, frame));
    assert_eq!(out[1].0, Verdict::Drop);
}

#[test]
fn config_defaults() {
    for json in ["", "  \n", "{}", r#"{"mac_rewrite":"swap"}"#] {
        let nf = L2Fwd::from_config(json).expect(json);
        assert_eq!(nf.config().mac_rewrite, MacRewrite::Swap, "{json:?}");
    }
}

#[test]
fn bad_configs_are_rejected_readably() {
    let cases = [
        (
            r#"{"mac_rewrite":"rotate"}"#,
            r#"unknown mac_rewrite "rotate", expected "swap" or "none""#,
        ),
        (r#"{"mac_rewrite":"swap","ttl":3}"#, "unknown field `ttl`"),
        (
            r#"{"mac_rewrite":1}"#,
            "invalid type: integer `1`, expected a string",
        ),
        ("{", "EOF"),
        ("[]", "expected a JSON object"),
        (r#"["none"]"#, "expected a JSON object"),
        ("null", "expected a JSON object"),
    ];
    for (json, needle) in cases {
        let err = L2Fwd::from_config(json).expect_err(json).to_string();
        assert!(err.starts_with("invalid l2fwd config: "), "{err}");
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn reconfigure_switches_mac_rewrite_and_keeps_counting() {
    let frame = udp_frame(b"hello");
    let mut nf = L2Fwd::default();
    assert_eq!(run(&mut nf, std::slice::from_ref(&frame))[0].1[..6], MAC_A);

    nf.reconfigure(r#"{"mac_rewrite":"none"}"#)
        .expect("valid config");
    assert_eq!(nf.config().mac_rewrite, MacRewrite::None);
    assert_eq!(
        run(&mut nf, std::slice::from_ref(&frame))[0],
        (Verdict::Forward, frame.clone())
    );
    assert_eq!(nf.counters().forwarded, 2, "counters survive the change");

    nf.reconfigure("").expect("empty means defaults");
    assert_eq!(nf.config().mac_rewrite, MacRewrite::Swap);
}

#[test]
fn reconfigure_with_a_bad_config_changes_nothing() {
    let frame = udp_frame(b"hello");
    let mut nf = L2Fwd::from_config(r#"{"mac_rewrite":"none"}"#).expect("config");
    run(&mut nf, std::slice::from_ref(&frame));
    for json in [r#"{"mac_rewrite":"rotate"}"#, "{", "[]"] {
        let err = nf.reconfigure(json).expect_err(json);
        assert!(err.starts_with("invalid l2fwd config: "), "{err}");
    }
    assert_eq!(nf.config().mac_rewrite, MacRewrite::None);
    assert_eq!(nf.counters().forwarded, 1);
    assert_eq!(
        run(&mut nf, std::slice::from_ref(&frame))[0],
        (Verdict::Forward, frame)
    );
}

proptest! {
    #[test]
    fn any_bytes_are_forwarded_or_dropped_as_runts(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..100)
    ) {
        let mut nf = L2Fwd::default();
        let out = run(&mut nf, &frames);
        for ((verdict, after), before) in out.iter().zip(&frames) {
            if before.len() < 14 {
                prop_assert_eq!(*verdict, Verdict::Drop);
                prop_assert_eq!(after, before);
            } else {
                prop_assert_eq!(*verdict, Verdict::Forward);
                prop_assert_eq!(&after[..6], &before[6..12]);
                prop_assert_eq!(&after[6..12], &before[..6]);
                prop_assert_eq!(&after[12..], &before[12..]);
            }
        }
        let runts = frames.iter().filter(|f| f.len() < 14).count() as u64;
        prop_assert_eq!(nf.counters().dropped_runts, runts);
        prop_assert_eq!(nf.counters().forwarded, frames.len() as u64 - runts);
    }
}
