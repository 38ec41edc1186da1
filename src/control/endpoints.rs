//! The files of external NFs' endpoints: under the run directory (`--run-dir`,
//! `/run/nfhost` by default), one directory per VF, `pf0-vf<N>/`, holding the VF's
//! attach socket `attach.sock` (nfhost's own protocol) and `memif.sock` (the memif
//! protocol, for DPDK and VPP clients), so that one VF's directory can be handed to
//! one container and nothing else.
//!
//! The directory is `0700` (or `0750` with `--endpoint-group`) and the socket `0600`
//! (`0660`): only root, or that group, may connect; connecting is not attaching,
//! which still takes the VF's secret. The directory is made before the socket is
//! bound, so the socket is never reachable with looser permissions.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::nic::VfId;

/// The run directory when nothing else is said.
pub const DEFAULT_RUN_DIR: &str = "/run/nfhost";
/// Connections an endpoint queues before it accepts them.
const BACKLOG: i32 = 4;

/// Where endpoints live and who may reach them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The group that may connect, besides root; `None`: root only.
    pub group: Option<u32>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            group: None,
        }
    }
}

impl Endpoints {
    /// The directory of `vf`'s endpoint.
    pub fn dir(&self, vf: VfId) -> PathBuf {
        self.run_dir.join(format!("pf0-vf{}", vf.0))
    }

    /// `vf`'s attach socket.
    pub fn socket(&self, vf: VfId) -> PathBuf {
        self.dir(vf).join("attach.sock")
    }

    /// `vf`'s memif socket.
    pub fn memif_socket(&self, vf: VfId) -> PathBuf {
        self.dir(vf).join("memif.sock")
    }

    /// Creates `vf`'s directory and its two sockets (stale sockets of an earlier
    /// run are replaced) and returns them listening, nonblocking: the attach
    /// socket, then the memif socket.
    pub fn open(&self, vf: VfId) -> std::io::Result<(OwnedFd, OwnedFd)> {
        std::fs::create_dir_all(&self.run_dir)?;
        let dir = self.dir(vf);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let (dir_mode, sock_mode) = if self.group.is_some() {
            (0o750, 0o660)
        } else {
            (0o700, 0o600)
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode))?;
        self.chgrp(&dir)?;
        let attach = self.bind(&self.socket(vf), sock_mode)?;
        let memif = self.bind(&self.memif_socket(vf), sock_mode)?;
        Ok((attach, memif))
    }

    /// A listening socket at `path`, replacing a stale one.
    fn bind(&self, path: &Path, sock_mode: u32) -> std::io::Result<OwnedFd> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&sock, &SocketAddrUnix::new(path)?)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(sock_mode))?;
        self.chgrp(path)?;
        rustix::net::listen(&sock, BACKLOG)?;
        Ok(sock)
    }

    fn chgrp(&self, path: &Path) -> std::io::Result<()> {
        if let Some(gid) = self.group {
            rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))?;
        }
        Ok(())
    }

    /// Removes `vf`'s socket and directory, if they are there.
    pub fn remove(&self, vf: VfId) {
        let dir = self.dir(vf);
        if dir.exists() {
            let _ = std::fs::remove_file(self.socket(vf));
            let _ = std::fs::remove_file(self.memif_socket(vf));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_private_replaces_a_stale_one_and_goes_away() {
        let run = tempfile::tempdir().unwrap();
        let endpoints = Endpoints {
            run_dir: run.path().join("nfhost"),
            group: None,
        };
        let vf = VfId(7);
        let first = endpoints.open(vf).unwrap();
        let path = endpoints.socket(vf);
        assert!(path.ends_with("pf0-vf7/attach.sock"), "{path:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&endpoints.dir(vf)), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&endpoints.memif_socket(vf)), 0o600);
        // A client can connect while it listens.
        let client = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&client, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        // A restarted nfhost replaces the stale socket file.
        drop(first);
        let _second = endpoints.open(vf).unwrap();
        endpoints.remove(vf);
        assert!(!endpoints.dir(vf).exists());
    }
}
