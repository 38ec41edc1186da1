//! Completing the transport checksum of a frame whose sender left it to an
//! offload (`CHECKSUM_PARTIAL` in the kernel), so that the host wire's peers
//! need not turn checksum offload off.
//!
//! A local sender with checksum offload writes only the pseudo-header's sum into
//! the TCP or UDP checksum field and expects the NIC to finish it. A veth has no
//! NIC, so a frame taken off it by a packet socket or an AF_XDP socket still
//! carries that partial sum. A packet socket says so (`TP_STATUS_CSUMNOTREADY`);
//! AF_XDP does not, so for its frames the field is checked: one that holds
//! exactly the pseudo-header's sum, and does not already verify as a complete
//! checksum, is completed; any other is left alone, unread (a corrupt frame for
//! the receiver to drop). (A corrupt frame whose field happens to equal the
//! pseudo-header's sum, one in 65,536 of corrupt frames, would be "completed":
//! the price of AF_XDP carrying no checksum state.)
//!
//! IPv4 and IPv6 (without extension headers), TCP and UDP, untagged or behind
//! up to two VLAN tags; fragments and anything else are left as they are.

use etherparse::checksum::Sum16BitWords;

/// What [`complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The checksum was partial and is now complete.
    Completed,
    /// The field held the pseudo-header's sum, but as a complete checksum that
    /// verifies (one frame in 65,536 has one): left as it was.
    Valid,
    /// Not a TCP or UDP frame it can check, or a checksum that is not partial:
    /// left as it was, unread.
    Untouched,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Where a frame's transport segment and checksum are.
struct Segment {
    /// The pseudo-header's sum.
    pseudo: Sum16BitWords,
    /// The pseudo-header, as summed (IPv6's is the longest).
    pseudo_bytes: arrayvec::ArrayVec<u8, 40>,
    /// The segment's bytes in the frame.
    start: usize,
    end: usize,
    /// The checksum field's offset in the frame.
    field: usize,
    udp: bool,
}

/// Completes the TCP or UDP checksum of `frame` if it is partial: always when
/// `known_partial` (the kernel said so), else when the field holds exactly the
/// pseudo-header's sum and the checksum does not verify.
pub fn complete(frame: &mut [u8], known_partial: bool) -> Outcome {
    let Some(seg) = locate(frame) else {
        return Outcome::Untouched;
    };
    let field = [frame[seg.field], frame[seg.field + 1]];
    if seg.udp && field == [0, 0] && !known_partial {
        // UDP over IPv4 without a checksum.
        return Outcome::Untouched;
    }
    // A field that does not hold the pseudo-header's sum is not partial: left
    // as it is without reading the segment (whether it verifies is the
    // receiver's business). One that does is read once: with the pseudo-header
    // added the sum verifies a checksum that only happens to equal it; else the
    // segment's own sum completes the partial one, the field already holding the
    // pseudo-header's part (what the kernel's skb_checksum_help does).
    if !known_partial && field != (!seg.pseudo.ones_complement()).to_be().to_be_bytes() {
        return Outcome::Untouched;
    }
    let sum = Sum16BitWords::new().add_slice(&frame[seg.start..seg.end]);
    if !known_partial && sum.clone().add_slice(&seg.pseudo_bytes).ones_complement() == 0 {
        return Outcome::Valid;
    }
    let value = if seg.udp {
        sum.to_ones_complement_with_no_zero()
    } else {
        sum.ones_complement()
    };
    frame[seg.field..seg.field + 2].copy_from_slice(&value.to_be().to_be_bytes());
    Outcome::Completed
}

fn locate(frame: &[u8]) -> Option<Segment> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
    for _ in 0..2 {
        if !matches!(ethertype, 0x8100 | 0x88a8) {
            break;
        }
        at += 4;
        ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
    }
    let l3 = at + 2;
    let ip = frame.get(l3..)?;
    let (proto, start, len, pseudo) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if ip.first()? >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            // A fragment's segment is not all here.
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || total < ihl {
                return None;
            }
            let len = total - ihl;
            let mut pseudo = arrayvec::ArrayVec::new();
            pseudo.try_extend_from_slice(&ip[12..20]).ok()?;
            pseudo.try_extend_from_slice(&[0, ip[9]]).ok()?;
            pseudo
                .try_extend_from_slice(&(len as u16).to_be_bytes())
                .ok()?;
            (ip[9], l3 + ihl, len, pseudo)
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let mut pseudo = arrayvec::ArrayVec::new();
            pseudo.try_extend_from_slice(&ip[8..40]).ok()?;
            pseudo
                .try_extend_from_slice(&(len as u32).to_be_bytes())
                .ok()?;
            // Three zero bytes and the next header.
            pseudo.try_extend_from_slice(&[0, 0, 0, ip[6]]).ok()?;
            (ip[6], l3 + 40, len, pseudo)
        }
        _ => return None,
    };
    let (field, min) = match proto {
        TCP => (16, 20),
        UDP => (6, 8),
        _ => return None,
    };
    let end = start.checked_add(len)?;
    if len < min || end > frame.len() {
        return None;
    }
    Some(Segment {
        pseudo: Sum16BitWords::new().add_slice(&pseudo),
        pseudo_bytes: pseudo,
        start,
        end,
        field: start + field,
        udp: proto == UDP,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_v4(vlan: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if vlan {
            eth.single_vlan(etherparse::VlanId::try_new(100).unwrap())
                .ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
        } else {
            eth.ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
        };
        let b = ip.tcp(40000, 5201, 7, 65535).ack(9);
        let payload = b"iperf3 payload, odd length!";
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn udp_v6() -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5353, 53);
        let mut out = Vec::new();
        b.write(&mut out, &[1, 2, 3, 4, 5]).unwrap();
        out
    }

    /// What a sender with checksum offload puts in the field: the folded
    /// pseudo-header sum.
    fn make_partial(frame: &mut [u8]) {
        let seg = locate(frame).unwrap();
        let partial = (!seg.pseudo.ones_complement()).to_be().to_be_bytes();
        frame[seg.field..seg.field + 2].copy_from_slice(&partial);
    }

    fn verifies(frame: &[u8]) -> bool {
        let seg = locate(frame).unwrap();
        seg.pseudo
            .add_slice(&frame[seg.start..seg.end])
            .ones_complement()
            == 0
    }

    #[test]
    fn partial_checksums_are_completed_exactly_as_a_nic_would() {
        for good in [tcp_v4(false), tcp_v4(true), udp_v6()] {
            assert!(verifies(&good));
            let mut partial = good.clone();
            make_partial(&mut partial);
            assert_ne!(partial, good);
            assert!(!verifies(&partial));
            // Seen through AF_XDP: recognised by its field.
            let mut guessed = partial.clone();
            assert_eq!(complete(&mut guessed, false), Outcome::Completed);
            assert_eq!(guessed, good);
            // Said by the kernel (TP_STATUS_CSUMNOTREADY).
            let mut told = partial.clone();
            assert_eq!(complete(&mut told, true), Outcome::Completed);
            assert_eq!(told, good);
        }
    }

    #[test]
    fn valid_corrupt_and_other_frames_are_left_alone() {
        let mut good = tcp_v4(true);
        let before = good.clone();
        assert_eq!(complete(&mut good, false), Outcome::Untouched);
        assert_eq!(good, before);

        // A complete checksum that happens to equal the pseudo-header's sum:
        // the payload is chosen so that it does, and it is recognised as valid.
        let mut lucky = tcp_v4(false);
        make_partial(&mut lucky);
        // Two payload bytes are searched for that make the whole verify with
        // the field as it is.
        let at = locate(&lucky).unwrap().start + 20;
        let word = (0..=u16::MAX)
            .find(|w| {
                lucky[at..at + 2].copy_from_slice(&w.to_be_bytes());
                verifies(&lucky)
            })
            .expect("some payload word makes it verify");
        lucky[at..at + 2].copy_from_slice(&word.to_be_bytes());
        assert!(verifies(&lucky), "the adjusted frame verifies");
        let before = lucky.clone();
        assert_eq!(complete(&mut lucky, false), Outcome::Valid);
        assert_eq!(lucky, before);

        // A corrupt payload: not partial, so it stays for the receiver to drop.
        let mut corrupt = tcp_v4(false);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        let before = corrupt.clone();
        assert_eq!(complete(&mut corrupt, false), Outcome::Untouched);
        assert_eq!(corrupt, before);

        // ARP, a truncated frame, a fragment.
        let mut arp = vec![0xffu8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(complete(&mut arp, true), Outcome::Untouched);
        let mut short = tcp_v4(false);
        short.truncate(40);
        assert_eq!(complete(&mut short, true), Outcome::Untouched);
        let mut fragment = tcp_v4(false);
        fragment[14 + 6] = 0x20; // more fragments
        assert_eq!(complete(&mut fragment, true), Outcome::Untouched);
    }
}
