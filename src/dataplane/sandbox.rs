//! Who NF processes run as, and the sandbox they enter before they touch anything
//! (ARCHITECTURE.md §5): an unprivileged user and group, no supplementary groups,
//! no capabilities, `no_new_privs`, and nothing inherited but the attach socket.
//!
//! The host resolves the user once ([`resolve`]); the child drops to it itself,
//! first thing after exec, while it is still single-threaded ([`enter`]). Dropping in
//! the child rather than before exec lets the child start from an `nfhost` binary
//! that only root can reach (a checkout under `/root`), and makes the drop the
//! same for every NF kind.

use std::path::Path;

use rustix::process::{Gid, Uid};
use thiserror::Error;

/// The user NF processes run as when nothing else is said.
pub const DEFAULT_NF_USER: &str = "nobody";

/// An unprivileged identity for NF processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfUser {
    /// User id.
    pub uid: u32,
    /// Group id (also the only group).
    pub gid: u32,
}

/// The NF user could not be resolved or entered.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// No such user in `/etc/passwd`.
    #[error("NF user {0:?} is not in /etc/passwd (give a name or a numeric uid)")]
    UnknownUser(String),
    /// No such group in `/etc/group`.
    #[error("NF group {0:?} is not in /etc/group (give a name or a numeric gid)")]
    UnknownGroup(String),
    /// The user resolves to root and running NFs as root was not allowed.
    #[error(
        "NF user {0:?} is root: NF processes would run with every privilege; \
         give an unprivileged --nf-user, or --allow-root-nfs to accept that"
    )]
    Root(String),
    /// A file could not be read.
    #[error("reading {path} failed")]
    Read {
        /// Which.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A system call of the drop failed.
    #[error("{call} failed while dropping privileges")]
    Drop {
        /// Which call.
        call: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process has threads besides the caller, which would keep root.
    #[error("the NF process has {0} threads before dropping privileges; it must have 1")]
    Threads(usize),
    /// Capabilities were left after the drop.
    #[error("capabilities are left after dropping to uid {0}")]
    CapsLeft(u32),
    /// nfhost is root but lacks what switching users takes, so every NF would fail
    /// to start (a container that dropped capabilities, for example).
    #[error(
        "nfhost runs as root without {0}: NF processes could not switch to the NF user; \
         grant CAP_SETUID, CAP_SETGID and CAP_KILL (the last to stop NFs of another uid)"
    )]
    CannotSwitch(&'static str),
}

/// Finds `user` (a name or a uid) and `group` (a name or a gid; by default the
/// user's primary group) for NF processes. `None`: NFs run as this process does,
/// which is the case when this process is not root (it could not switch) or when
/// the user is root and `allow_root` says that is wanted.
pub fn resolve(
    user: &str,
    group: Option<&str>,
    allow_root: bool,
) -> Result<Option<NfUser>, SandboxError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let resolved = resolve_in(Path::new("/etc"), user, group, allow_root)?;
    if resolved.is_some() {
        can_switch()?;
    }
    Ok(resolved)
}

/// Checks that this root process holds the capabilities NF processes need to
/// drop to another user (they inherit them until the drop), and to signal them
/// afterwards.
fn can_switch() -> Result<(), SandboxError> {
    use rustix::thread::CapabilitySet as Cap;
    let caps = rustix::thread::capabilities(None).map_err(|e| SandboxError::Drop {
        call: "capget",
        source: e.into(),
    })?;
    for (cap, name) in [
        (Cap::SETUID, "CAP_SETUID"),
        (Cap::SETGID, "CAP_SETGID"),
        (Cap::KILL, "CAP_KILL"),
    ] {
        if !caps.effective.contains(cap) {
            return Err(SandboxError::CannotSwitch(name));
        }
    }
    Ok(())
}

fn resolve_in(
    etc: &Path,
    user: &str,
    group: Option<&str>,
    allow_root: bool,
) -> Result<Option<NfUser>, SandboxError> {
    let passwd = read(&etc.join("passwd"))?;
    let (uid, primary) = lookup(&passwd, user)
        .map(|fields| (fields.0, fields.1))
        .or_else(|| user.parse::<u32>().ok().map(|uid| (uid, uid)))
        .ok_or_else(|| SandboxError::UnknownUser(user.to_owned()))?;
    let gid = match group {
        None => primary,
        Some(g) => group_in(etc, g)?,
    };
    if uid == 0 {
        return if allow_root {
            Ok(None)
        } else {
            Err(SandboxError::Root(user.to_owned()))
        };
    }
    Ok(Some(NfUser { uid, gid }))
}

/// The gid of `group` (a name in `/etc/group` or a number).
pub fn group_id(group: &str) -> Result<u32, SandboxError> {
    group_in(Path::new("/etc"), group)
}

fn group_in(etc: &Path, group: &str) -> Result<u32, SandboxError> {
    let groups = read(&etc.join("group"))?;
    lookup(&groups, group)
        .map(|fields| fields.0)
        .or_else(|| group.parse().ok())
        .ok_or_else(|| SandboxError::UnknownGroup(group.to_owned()))
}

fn read(path: &Path) -> Result<String, SandboxError> {
    std::fs::read_to_string(path).map_err(|source| SandboxError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// In a `passwd` or `group` file, the third and fourth fields of the line whose
/// first field is `name` (the fourth is 0 where it is not a number, as in
/// `group`).
fn lookup(file: &str, name: &str) -> Option<(u32, u32)> {
    file.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let id = fields.nth(1)?.parse().ok()?;
        let second = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        Some((id, second))
    })
}

/// In the NF child, first thing: become `user` (no supplementary groups), and set
/// `no_new_privs` whatever the user, so that nothing the NF executes can gain
/// privileges. With a user, the process must still be single-threaded (Linux
/// switches credentials per thread), and no capability may be left afterwards.
pub fn enter(user: Option<NfUser>) -> Result<(), SandboxError> {
    let drop = |call| {
        move |e: rustix::io::Errno| SandboxError::Drop {
            call,
            source: e.into(),
        }
    };
    if let Some(NfUser { uid, gid }) = user {
        let threads = std::fs::read_dir("/proc/self/task")
            .map_err(|source| SandboxError::Read {
                path: "/proc/self/task".into(),
                source,
            })?
            .count();
        if threads != 1 {
            return Err(SandboxError::Threads(threads));
        }
        // Groups first: once the uid is dropped the process may not change them.
        rustix::thread::set_thread_groups(&[]).map_err(drop("setgroups"))?;
        let g = Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(g, g, g).map_err(drop("setresgid"))?;
        let u = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(u, u, u).map_err(drop("setresuid"))?;
        // Leaving uid 0 for good clears the permitted and effective sets; check.
        let caps = rustix::thread::capabilities(None).map_err(drop("capget"))?;
        if !caps.effective.is_empty() || !caps.permitted.is_empty() {
            return Err(SandboxError::CapsLeft(uid));
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(drop("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
             nf:x:1200:1300::/:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nnogroup:x:65534:\nnfs:x:1400:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve() {
        let etc = etc();
        let r = |u, g| resolve_in(etc.path(), u, g, false);
        let nobody = Some(NfUser {
            uid: 65534,
            gid: 65534,
        });
        assert_eq!(r("nobody", None).unwrap(), nobody);
        assert_eq!(r("65534", Some("nogroup")).unwrap(), nobody);
        assert_eq!(
            r("nf", None).unwrap(),
            Some(NfUser {
                uid: 1200,
                gid: 1300
            })
        );
        assert_eq!(
            r("nf", Some("nfs")).unwrap(),
            Some(NfUser {
                uid: 1200,
                gid: 1400
            })
        );
        assert_eq!(
            r("4000", Some("4001")).unwrap(),
            Some(NfUser {
                uid: 4000,
                gid: 4001
            })
        );
        assert!(matches!(r("ghost", None), Err(SandboxError::UnknownUser(u)) if u == "ghost"));
        assert!(matches!(
            r("nf", Some("ghosts")),
            Err(SandboxError::UnknownGroup(_))
        ));
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let etc = etc();
        let refused = resolve_in(etc.path(), "root", None, false).unwrap_err();
        assert!(
            refused.to_string().contains("--allow-root-nfs"),
            "{refused}"
        );
        assert!(matches!(
            resolve_in(etc.path(), "0", None, false),
            Err(SandboxError::Root(_))
        ));
        assert_eq!(resolve_in(etc.path(), "root", None, true).unwrap(), None);
    }
}
