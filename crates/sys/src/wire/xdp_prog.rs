//! The XDP program that hands an interface's frames to nfhost's AF_XDP socket, and
//! the `bpf(2)` calls that load and attach it.
//!
//! The program is five instructions, assembled here rather than compiled from C or
//! Rust (which would need clang or a nightly toolchain with bpf-linker at build
//! time). It is what libxdp's default program does for a single socket:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)          ; ctx->rx_queue_index
//! r1 = map[xsks]                  ; the XSKMAP (a 64-bit immediate, two slots)
//! r3 = XDP_PASS                   ; what to do if no socket sits at that index
//! call bpf_redirect_map           ; r0 = XDP_REDIRECT, or XDP_PASS
//! exit
//! ```
//!
//! Frames of a queue without a socket go on to the kernel's stack, so nothing is
//! lost between attaching the program and inserting the socket.
//!
//! The program is attached with a **BPF link** (`BPF_LINK_CREATE`), not netlink:
//! a link lives exactly as long as its fd, so when nfhost exits, or is killed, the
//! kernel detaches the program. A killed nfhost leaves nothing behind to stack a
//! second program on, and a second nfhost on the same interface is refused
//! (`EBUSY`) rather than silently replacing the first.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

use super::WireError;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;

/// The program's name, as `bpftool prog` and `ip link` show it.
pub const PROGRAM_NAME: &str = "nfhost_xsk";
/// Sockets the map holds: one per receive queue, indexed by queue.
const MAP_ENTRIES: u32 = 64;

/// `union bpf_attr`, as raw words: each command fills the fields it uses at their
/// offsets in `include/uapi/linux/bpf.h`; the rest must be zero.
#[derive(Default)]
struct Attr([u64; 18]);

impl Attr {
    fn u32_at(&mut self, offset: usize, value: u32) -> &mut Self {
        let word = &mut self.0[offset / 8];
        let shift = (offset % 8) * 8;
        *word = (*word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
        self
    }

    fn u64_at(&mut self, offset: usize, value: u64) -> &mut Self {
        self.0[offset / 8] = value;
        self
    }

    fn name_at(&mut self, offset: usize, name: &str) -> &mut Self {
        let mut bytes = [0u8; 16];
        bytes[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
        for (i, chunk) in bytes.chunks_exact(4).enumerate() {
            let value = u32::from_ne_bytes(chunk.try_into().expect("4 bytes"));
            self.u32_at(offset + 4 * i, value);
        }
        self
    }
}

/// `bpf(cmd, attr)`, returning the fd it creates (or 0).
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> Result<i32, Errno> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` image of the size
    // passed; the kernel reads it and, for the commands used here, writes back
    // nothing beyond it. Pointers inside it (instructions, license, log, key and
    // value) point to buffers the caller keeps alive across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            size_of_val(&attr.0) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(rc as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful `bpf()` that creates an fd
    // (always close-on-exec); nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One encoded `struct bpf_insn`: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst | (src << 4)) as u64) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// The program's instructions, with the XSKMAP's fd in its map load.
fn program(map_fd: i32) -> [u64; 6] {
    [
        // BPF_LDX | BPF_W | BPF_MEM: r2 = ctx->rx_queue_index (offset 16 of xdp_md).
        insn(0x61, 2, 1, 16, 0),
        // BPF_LD | BPF_DW | BPF_IMM with BPF_PSEUDO_MAP_FD: r1 = the map.
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = XDP_PASS (the action without a socket).
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // BPF_JMP | BPF_CALL: bpf_redirect_map(r1, r2, r3).
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT.
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// nfhost's XDP program attached to one interface, with its socket map. Dropping
/// it detaches the program.
#[derive(Debug)]
pub struct XdpProgram {
    /// The BPF link: the attachment, alive while this fd is open.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
}

impl XdpProgram {
    /// Loads the program and attaches it to interface `ifindex` (`name` for
    /// messages), in native (driver) mode where the driver has it, else generic.
    pub fn attach(ifindex: u32, name: &str) -> Result<Self, WireError> {
        let mut attr = Attr::default();
        attr.u32_at(0, BPF_MAP_TYPE_XSKMAP)
            .u32_at(4, 4)
            .u32_at(8, 4)
            .u32_at(12, MAP_ENTRIES)
            .name_at(28, "nfhost_xsks");
        let map = owned(bpf(BPF_MAP_CREATE, &mut attr).map_err(|e| {
            WireError::Io(
                "creating the XSKMAP (bpf(BPF_MAP_CREATE) needs CAP_BPF or CAP_SYS_ADMIN)",
                e,
            )
        })?);

        let insns = program(map.as_raw_fd());
        let license: &CStr = c"Dual MIT/GPL";
        let mut log = vec![0u8; 4096];
        let mut attr = Attr::default();
        attr.u32_at(0, BPF_PROG_TYPE_XDP)
            .u32_at(4, insns.len() as u32)
            .u64_at(8, insns.as_ptr() as u64)
            .u64_at(16, license.as_ptr() as u64)
            .u32_at(24, 1)
            .u32_at(28, log.len() as u32)
            .u64_at(32, log.as_mut_ptr() as u64)
            .name_at(48, PROGRAM_NAME);
        let prog = match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => owned(fd),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let verifier = String::from_utf8_lossy(&log[..end]).trim().to_owned();
                let what = if verifier.is_empty() {
                    "loading the XDP program (bpf(BPF_PROG_LOAD))".to_owned()
                } else {
                    format!("loading the XDP program (verifier: {verifier})")
                };
                return Err(WireError::Bpf(what, e));
            }
        };

        let mut attr = Attr::default();
        attr.u32_at(0, prog.as_raw_fd() as u32)
            .u32_at(4, ifindex)
            .u32_at(8, BPF_XDP);
        let link = match bpf(BPF_LINK_CREATE, &mut attr) {
            Ok(fd) => owned(fd),
            Err(Errno::BUSY) => {
                return Err(WireError::Bpf(
                    format!(
                        "attaching the XDP program to {name}: it already has an XDP program \
                         (another nfhost, or one attached by hand: see `ip link show {name}`, \
                         and `ip link set {name} xdp off` removes one attached with ip)"
                    ),
                    Errno::BUSY,
                ));
            }
            Err(e) => {
                return Err(WireError::Bpf(
                    format!("attaching the XDP program to {name} (bpf(BPF_LINK_CREATE))"),
                    e,
                ));
            }
        };
        Ok(XdpProgram {
            _link: link,
            _prog: prog,
            map,
        })
    }

    /// Puts the AF_XDP socket `socket` in the map at receive queue `queue`: from
    /// now on that queue's frames go to it.
    pub fn insert(&self, queue: u32, socket: BorrowedFd<'_>) -> Result<(), WireError> {
        let key = queue;
        let value = socket.as_raw_fd() as u32;
        let mut attr = Attr::default();
        attr.u32_at(0, self.map.as_fd().as_raw_fd() as u32)
            .u64_at(8, (&raw const key) as u64)
            .u64_at(16, (&raw const value) as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(|_| ())
            .map_err(|e| WireError::Io("putting the socket in the XSKMAP", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_lays_them_out() {
        // r2 = *(u32 *)(r1 + 16): code 0x61, dst 2, src 1, off 16.
        assert_eq!(insn(0x61, 2, 1, 16, 0), 0x0010_1261);
        // A negative offset and immediate keep their two's-complement bits.
        assert_eq!(insn(0x07, 1, 0, -1, -2), 0xffff_fffe_ffff_0107);
        let p = program(7);
        assert_eq!(p[1] >> 32, 7, "the map fd is the load's immediate");
        assert_eq!((p[1] >> 12) & 0xf, 1, "BPF_PSEUDO_MAP_FD in src");
        assert_eq!(p[2], 0, "the second half of the 64-bit load");
    }

    #[test]
    fn attr_fields_land_at_their_offsets() {
        let mut a = Attr::default();
        a.u32_at(0, 1).u32_at(4, 2).u64_at(8, 3).name_at(48, "abc");
        assert_eq!(a.0[0], 1 | (2 << 32));
        assert_eq!(a.0[1], 3);
        assert_eq!(&a.0[6].to_ne_bytes()[..4], b"abc\0");
    }
}
