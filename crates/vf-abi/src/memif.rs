//! The memif protocol, version 2.0: the shared-memory packet interface of DPDK
//! (`drivers/net/memif/memif.h`) and VPP, which nfhost speaks as the server on each
//! external NF's `memif.sock` (ARCHITECTURE.md §2, "memif").
//!
//! What is fixed by the protocol and defined here:
//!
//! - the control messages: 128 bytes each on a `SOCK_SEQPACKET` socket, a 16-bit
//!   type and a packed body ([`Msg`]), fds passed with `SCM_RIGHTS`;
//! - the ring header in the client's region: [`COOKIE`] at 0, flags (u16) at 4,
//!   `head` (u16) at 6, `tail` (u16) at [`TAIL_OFFSET`], descriptors from
//!   [`DESCS_OFFSET`];
//! - the descriptor ([`MemifDesc`]), 16 bytes: flags u16, region u16, length u32,
//!   offset u32, metadata u32.
//!
//! Everything is little-endian on the wire (memif peers share one host, and the
//! C structs are native; this crate targets little-endian Linux).
//!
//! Plain definitions and a codec: decoding never trusts a length or an index, and a
//! message that is not exactly [`MSG_LEN`] bytes, or of an unknown type, is a
//! [`MemifError`].

use thiserror::Error;

/// The ring header's cookie.
pub const COOKIE: u32 = 0x3E31F20;
/// Protocol version 2.0 (`major << 8 | minor`).
pub const VERSION: u16 = 2 << 8;
/// Every control message is this long.
pub const MSG_LEN: usize = 128;
/// Length of the names in `HELLO`, `INIT`, `CONNECT` and `CONNECTED`.
pub const NAME_LEN: usize = 32;
/// Length of `INIT`'s secret.
pub const SECRET_LEN: usize = 24;
/// Length of `DISCONNECT`'s reason.
pub const REASON_LEN: usize = 96;
/// `INIT.mode`: Ethernet frames (the only mode nfhost serves).
pub const MODE_ETHERNET: u8 = 0;
/// `ADD_RING.flags`: the ring carries client → server (`S2M`, called `C2S` in newer
/// DPDK); without it the ring is server → client (`M2S`).
pub const RING_FLAG_S2M: u16 = 1;
/// Ring header flag: the ring's receiver polls and wants no interrupt.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// Descriptor flag: the buffer continues in the next descriptor (chained).
pub const DESC_FLAG_NEXT: u16 = 1;

/// Ring header: offset of the cookie (u32).
pub const COOKIE_OFFSET: usize = 0;
/// Ring header: offset of the flags (u16).
pub const FLAGS_OFFSET: usize = 4;
/// Ring header: offset of `head` (u16).
pub const HEAD_OFFSET: usize = 6;
/// Ring header: offset of `tail` (u16), on the second cache line.
pub const TAIL_OFFSET: usize = 64;
/// Offset of the first descriptor, on the third cache line.
pub const DESCS_OFFSET: usize = 128;
/// Length of one descriptor.
pub const DESC_LEN: usize = 16;
/// The largest ring any peer may ask for (2^15 slots: 16-bit indices need a size
/// below 2^16 to tell a full ring from an empty one).
pub const MAX_LOG2_RING_SIZE: u8 = 15;

/// Bytes a ring of `2^log2` slots takes in its region.
pub fn ring_len(log2: u8) -> usize {
    DESCS_OFFSET + (DESC_LEN << log2)
}

/// One buffer descriptor, as it sits in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemifDesc {
    /// [`DESC_FLAG_NEXT`] or 0.
    pub flags: u16,
    /// The region holding the buffer.
    pub region: u16,
    /// On an empty buffer, its size; on a filled one, the frame's length.
    pub length: u32,
    /// The buffer's offset in its region.
    pub offset: u32,
    /// Free for the application.
    pub metadata: u32,
}

impl MemifDesc {
    /// The descriptor as two native 8-byte words (for atomic access).
    pub fn to_words(self) -> [u64; 2] {
        [
            u64::from(self.flags) | u64::from(self.region) << 16 | u64::from(self.length) << 32,
            u64::from(self.offset) | u64::from(self.metadata) << 32,
        ]
    }

    /// The descriptor from its two native 8-byte words.
    pub fn from_words([a, b]: [u64; 2]) -> Self {
        MemifDesc {
            flags: a as u16,
            region: (a >> 16) as u16,
            length: (a >> 32) as u32,
            offset: b as u32,
            metadata: (b >> 32) as u32,
        }
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Acknowledges `INIT`, `ADD_REGION` and `ADD_RING`.
    Ack,
    /// Server → client, first on a connection: what the server supports.
    Hello {
        /// The server's name.
        name: String,
        /// Lowest version spoken.
        min_version: u16,
        /// Highest version spoken.
        max_version: u16,
        /// Highest region index accepted.
        max_region: u16,
        /// Highest server → client ring index accepted.
        max_m2s_ring: u16,
        /// Highest client → server ring index accepted.
        max_s2m_ring: u16,
        /// Largest ring accepted, as log2 of its slots.
        max_log2_ring_size: u8,
    },
    /// Client → server: which interface, with which secret.
    Init {
        /// The client's version.
        version: u16,
        /// The interface id asked for.
        id: u32,
        /// [`MODE_ETHERNET`], IP (1) or punt/inject (2).
        mode: u8,
        /// The secret, NUL-padded.
        secret: [u8; SECRET_LEN],
        /// The client's name.
        name: String,
    },
    /// Client → server, with the region's memfd: a region of the client's memory.
    AddRegion {
        /// Its index (regions come in order from 0).
        index: u16,
        /// Its size in bytes.
        size: u64,
    },
    /// Client → server, with the ring's interrupt eventfd: a ring in a region.
    AddRing {
        /// [`RING_FLAG_S2M`] or 0.
        flags: u16,
        /// The ring's index among those of its direction.
        index: u16,
        /// The region holding it.
        region: u16,
        /// Its offset in the region.
        offset: u32,
        /// log2 of its slots.
        log2_ring_size: u8,
        /// Bytes of private header before each buffer (nfhost accepts 0).
        private_hdr_size: u16,
    },
    /// Client → server: set-up complete.
    Connect {
        /// The client's interface name.
        if_name: String,
    },
    /// Server → client: connected.
    Connected {
        /// The server's interface name.
        if_name: String,
    },
    /// Either way: the connection ends, and why.
    Disconnect {
        /// An error code (0 in DPDK and nfhost).
        code: u32,
        /// Why.
        reason: String,
    },
}

/// A control message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemifError {
    /// Not [`MSG_LEN`] bytes.
    #[error("a memif message is {MSG_LEN} bytes, not {0}")]
    Length(usize),
    /// A type this protocol does not define.
    #[error("unknown memif message type {0}")]
    Type(u16),
}

/// Message types.
mod kind {
    pub const ACK: u16 = 1;
    pub const HELLO: u16 = 2;
    pub const INIT: u16 = 3;
    pub const ADD_REGION: u16 = 4;
    pub const ADD_RING: u16 = 5;
    pub const CONNECT: u16 = 6;
    pub const CONNECTED: u16 = 7;
    pub const DISCONNECT: u16 = 8;
}

/// Fields at fixed offsets of a 128-byte message (the body starts at 2).
struct Cursor<'a> {
    buf: &'a [u8; MSG_LEN],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn text<const N: usize>(&mut self) -> String {
        let bytes = self.take::<N>();
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(N);
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

struct Writer {
    buf: [u8; MSG_LEN],
    at: usize,
}

impl Writer {
    fn new(kind: u16) -> Self {
        let mut w = Writer {
            buf: [0; MSG_LEN],
            at: 0,
        };
        w.put(&kind.to_le_bytes());
        w
    }
    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
        self
    }
    /// A NUL-padded text field of `n` bytes; longer text is cut, keeping a NUL.
    fn text(&mut self, text: &str, n: usize) -> &mut Self {
        let len = text.len().min(n - 1);
        self.buf[self.at..self.at + len].copy_from_slice(&text.as_bytes()[..len]);
        self.at += n;
        self
    }
}

impl Msg {
    /// The message as it goes on the socket.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut w;
        match self {
            Msg::Ack => w = Writer::new(kind::ACK),
            Msg::Hello {
                name,
                min_version,
                max_version,
                max_region,
                max_m2s_ring,
                max_s2m_ring,
                max_log2_ring_size,
            } => {
                w = Writer::new(kind::HELLO);
                w.text(name, NAME_LEN)
                    .put(&min_version.to_le_bytes())
                    .put(&max_version.to_le_bytes())
                    .put(&max_region.to_le_bytes())
                    .put(&max_m2s_ring.to_le_bytes())
                    .put(&max_s2m_ring.to_le_bytes())
                    .put(&[*max_log2_ring_size]);
            }
            Msg::Init {
                version,
                id,
                mode,
                secret,
                name,
            } => {
                w = Writer::new(kind::INIT);
                w.put(&version.to_le_bytes())
                    .put(&id.to_le_bytes())
                    .put(&[*mode])
                    .put(secret)
                    .text(name, NAME_LEN);
            }
            Msg::AddRegion { index, size } => {
                w = Writer::new(kind::ADD_REGION);
                w.put(&index.to_le_bytes()).put(&size.to_le_bytes());
            }
            Msg::AddRing {
                flags,
                index,
                region,
                offset,
                log2_ring_size,
                private_hdr_size,
            } => {
                w = Writer::new(kind::ADD_RING);
                w.put(&flags.to_le_bytes())
                    .put(&index.to_le_bytes())
                    .put(&region.to_le_bytes())
                    .put(&offset.to_le_bytes())
                    .put(&[*log2_ring_size])
                    .put(&private_hdr_size.to_le_bytes());
            }
            Msg::Connect { if_name } => {
                w = Writer::new(kind::CONNECT);
                w.text(if_name, NAME_LEN);
            }
            Msg::Connected { if_name } => {
                w = Writer::new(kind::CONNECTED);
                w.text(if_name, NAME_LEN);
            }
            Msg::Disconnect { code, reason } => {
                w = Writer::new(kind::DISCONNECT);
                w.put(&code.to_le_bytes()).text(reason, REASON_LEN);
            }
        }
        w.buf
    }

    /// Decodes one message as received.
    pub fn decode(bytes: &[u8]) -> Result<Msg, MemifError> {
        let buf: &[u8; MSG_LEN] = bytes
            .try_into()
            .map_err(|_| MemifError::Length(bytes.len()))?;
        let mut c = Cursor { buf, at: 0 };
        let kind = c.u16();
        Ok(match kind {
            kind::ACK => Msg::Ack,
            kind::HELLO => Msg::Hello {
                name: c.text::<NAME_LEN>(),
                min_version: c.u16(),
                max_version: c.u16(),
                max_region: c.u16(),
                max_m2s_ring: c.u16(),
                max_s2m_ring: c.u16(),
                max_log2_ring_size: c.u8(),
            },
            kind::INIT => Msg::Init {
                version: c.u16(),
                id: c.u32(),
                mode: c.u8(),
                secret: c.take(),
                name: c.text::<NAME_LEN>(),
            },
            kind::ADD_REGION => Msg::AddRegion {
                index: c.u16(),
                size: c.u64(),
            },
            kind::ADD_RING => Msg::AddRing {
                flags: c.u16(),
                index: c.u16(),
                region: c.u16(),
                offset: c.u32(),
                log2_ring_size: c.u8(),
                private_hdr_size: c.u16(),
            },
            kind::CONNECT => Msg::Connect {
                if_name: c.text::<NAME_LEN>(),
            },
            kind::CONNECTED => Msg::Connected {
                if_name: c.text::<NAME_LEN>(),
            },
            kind::DISCONNECT => Msg::Disconnect {
                code: c.u32(),
                reason: c.text::<REASON_LEN>(),
            },
            other => return Err(MemifError::Type(other)),
        })
    }

    /// How many fds travel with this message: one with `ADD_REGION` (the memfd) and
    /// `ADD_RING` (the eventfd), none with the others.
    pub fn fds(&self) -> usize {
        usize::from(matches!(self, Msg::AddRegion { .. } | Msg::AddRing { .. }))
    }
}

/// The secret as `INIT` carries it: NUL-padded to [`SECRET_LEN`] bytes. `None` if it
/// is longer.
pub fn secret_field(secret: &str) -> Option<[u8; SECRET_LEN]> {
    let bytes = secret.as_bytes();
    if bytes.len() > SECRET_LEN {
        return None;
    }
    let mut out = [0; SECRET_LEN];
    out[..bytes.len()].copy_from_slice(bytes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_at_128_bytes() {
        let all = [
            Msg::Ack,
            Msg::Hello {
                name: "nfhost".into(),
                min_version: VERSION,
                max_version: VERSION,
                max_region: 15,
                max_m2s_ring: 0,
                max_s2m_ring: 0,
                max_log2_ring_size: 14,
            },
            Msg::Init {
                version: VERSION,
                id: 7,
                mode: MODE_ETHERNET,
                secret: secret_field("s3cret").unwrap(),
                name: "DPDK 22.11.11".into(),
            },
            Msg::AddRegion {
                index: 1,
                size: 5 << 30,
            },
            Msg::AddRing {
                flags: RING_FLAG_S2M,
                index: 0,
                region: 0,
                offset: 0x1_0000,
                log2_ring_size: 10,
                private_hdr_size: 0,
            },
            Msg::Connect {
                if_name: "net_memif0".into(),
            },
            Msg::Connected {
                if_name: "pf0-vf3".into(),
            },
            Msg::Disconnect {
                code: 0,
                reason: "Incorrect secret".into(),
            },
        ];
        for msg in all {
            let bytes = msg.encode();
            assert_eq!(Msg::decode(&bytes), Ok(msg));
        }
    }

    /// The packed C layout: checked against offsets read off DPDK's `memif.h`.
    #[test]
    fn fields_sit_where_memif_h_puts_them() {
        let init = Msg::Init {
            version: 0x0200,
            id: 0x0403_0201,
            mode: 9,
            secret: [0xAA; SECRET_LEN],
            name: "n".into(),
        }
        .encode();
        assert_eq!(&init[..2], &[3, 0]);
        assert_eq!(&init[2..4], &[0, 2]);
        assert_eq!(&init[4..8], &[1, 2, 3, 4]);
        assert_eq!(init[8], 9);
        assert_eq!(&init[9..33], &[0xAA; SECRET_LEN]);
        assert_eq!(init[33], b'n');
        let ring = Msg::AddRing {
            flags: 1,
            index: 2,
            region: 3,
            offset: 4,
            log2_ring_size: 5,
            private_hdr_size: 6,
        }
        .encode();
        assert_eq!(&ring[..15], &[5, 0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 5, 6, 0]);
        let hello = Msg::decode(&{
            let mut b = [0u8; MSG_LEN];
            b[0] = 2;
            b[34] = 0;
            b[35] = 2;
            b[44] = 10;
            b
        })
        .unwrap();
        assert!(matches!(
            hello,
            Msg::Hello {
                min_version: 0x0200,
                max_log2_ring_size: 10,
                ..
            }
        ));
    }

    #[test]
    fn wrong_lengths_and_types_are_errors() {
        assert_eq!(Msg::decode(&[0; 64]), Err(MemifError::Length(64)));
        let mut b = [0u8; MSG_LEN];
        b[0] = 99;
        assert_eq!(Msg::decode(&b), Err(MemifError::Type(99)));
        assert_eq!(Msg::decode(&[0; MSG_LEN]), Err(MemifError::Type(0)));
    }

    #[test]
    fn long_names_are_cut_and_long_secrets_refused() {
        let long = "x".repeat(100);
        let Msg::Connect { if_name } = Msg::decode(
            &Msg::Connect {
                if_name: long.clone(),
            }
            .encode(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(if_name.len(), NAME_LEN - 1);
        assert!(secret_field(&long).is_none());
        assert!(secret_field(&"y".repeat(SECRET_LEN)).is_some());
    }

    #[test]
    fn descriptors_round_trip_through_words() {
        let d = MemifDesc {
            flags: DESC_FLAG_NEXT,
            region: 3,
            length: 2048,
            offset: 0xDEAD_BEEF,
            metadata: 7,
        };
        assert_eq!(MemifDesc::from_words(d.to_words()), d);
        assert_eq!(ring_len(10), 128 + 16 * 1024);
    }
}
