//! The principals file of `nfhost serve --auth FILE`: who may call, by the
//! SHA-256 of their bearer token (the token itself is never stored).
//!
//! ```toml
//! [[admin]]
//! name = "ops"
//! token_sha256 = "…"        # sha256sum of the token, 64 hex digits
//!
//! [[tenant]]
//! name = "blue"
//! token_sha256 = "…"
//! max_vfs = 8               # VFs held by blue's NFs and chains
//! max_chains = 4
//! ```
//!
//! A token is recognised by comparing its digest with every principal's in
//! constant time ([`subtle`]), all of them every time, so neither the answer's
//! timing nor its order tells which digest came close.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::principal::{Principal, Quota};

/// A principals file could not be used; the service keeps the principals it had
/// (or does not start).
#[derive(Debug, Error)]
pub enum PrincipalsError {
    /// The file could not be read.
    #[error("reading principals file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of this shape.
    #[error("principals file {path} is invalid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// The file parses but says something that cannot hold.
    #[error("principals file {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the principal.
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    admin: Vec<AdminEntry>,
    #[serde(default)]
    tenant: Vec<TenantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminEntry {
    name: String,
    token_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    token_sha256: Option<String>,
    max_vfs: Option<u32>,
    max_chains: Option<u32>,
}

/// One principal and the digest of its token (none: it authenticates only with a
/// client certificate whose CN is its name).
#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    digest: Option<[u8; 32]>,
}

/// The principals of one version of the file.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    entries: Vec<Entry>,
}

/// The SHA-256 of `token`: what the principals file holds for it.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// `token_digest` as the 64 lowercase hex digits `sha256sum` prints.
pub fn token_digest_hex(token: &[u8]) -> String {
    token_digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether `name` can name a principal: what it is recorded as on objects and
/// events, and what a client certificate's CN must say.
fn check_principal_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "principal name {name:?} must be 1-63 of a-z, A-Z, 0-9, '-', '_', '.'"
        ))
    }
}

impl Principals {
    /// Reads and checks a principals file.
    pub fn load(path: &Path) -> Result<Self, PrincipalsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrincipalsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Toml(source) => PrincipalsError::Parse {
                path: path.to_owned(),
                source,
            },
            ParseError::Invalid(problem) => PrincipalsError::Invalid {
                path: path.to_owned(),
                problem,
            },
        })
    }

    fn parse(text: &str) -> Result<Self, ParseError> {
        let file: File = toml::from_str(text).map_err(ParseError::Toml)?;
        let mut entries = Vec::new();
        for a in file.admin {
            entries.push((Principal::admin(a.name), a.token_sha256));
        }
        for t in file.tenant {
            let quota = Quota {
                max_vfs: t.max_vfs,
                max_chains: t.max_chains,
            };
            entries.push((Principal::tenant(t.name, quota), t.token_sha256));
        }
        let mut names = BTreeSet::new();
        let mut digests = BTreeSet::new();
        let mut out = Vec::new();
        for (principal, digest) in entries {
            let name = principal.name().to_owned();
            check_principal_name(&name).map_err(ParseError::Invalid)?;
            if !names.insert(name.clone()) {
                return Err(ParseError::Invalid(format!(
                    "principal {name:?} is named twice (admins and tenants share one namespace)"
                )));
            }
            let digest = match digest {
                None => None,
                Some(hex) => {
                    let d = parse_digest(&hex).ok_or_else(|| {
                        ParseError::Invalid(format!(
                            "{name}: token_sha256 must be 64 hex digits (the output of `sha256sum`)"
                        ))
                    })?;
                    if !digests.insert(d) {
                        return Err(ParseError::Invalid(format!(
                            "{name}: its token_sha256 is another principal's too; every principal needs its own token"
                        )));
                    }
                    Some(d)
                }
            };
            out.push(Entry { principal, digest });
        }
        Ok(Principals { entries: out })
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (then no token is recognised).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal whose token is `token`, comparing its digest with every
    /// principal's in constant time.
    pub fn by_token(&self, token: &[u8]) -> Option<Principal> {
        let digest = token_digest(token);
        let mut found = None;
        for e in &self.entries {
            let Some(d) = &e.digest else { continue };
            if bool::from(d.ct_eq(&digest)) {
                found = Some(e.principal.clone());
            }
        }
        found
    }

    /// The principal called `name` (a client certificate's CN).
    pub fn by_name(&self, name: &str) -> Option<Principal> {
        self.entries
            .iter()
            .find(|e| e.principal.name() == name)
            .map(|e| e.principal.clone())
    }
}

#[derive(Debug)]
enum ParseError {
    Toml(toml::de::Error),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(blue_token: &str) -> String {
        format!(
            "[[admin]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n\n[[tenant]]\nname = \"blue\"\ntoken_sha256 = \"{}\"\nmax_vfs = 8\nmax_chains = 4\n\n[[tenant]]\nname = \"red\"\n",
            token_digest_hex(b"ops-secret"),
            token_digest_hex(blue_token.as_bytes()).to_uppercase(),
        )
    }

    #[test]
    fn tokens_name_their_principals() {
        let p = Principals::parse(&file("blue-secret")).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.by_token(b"ops-secret"), Some(Principal::admin("ops")));
        let blue = p.by_token(b"blue-secret").unwrap();
        assert_eq!(blue.tenant_name(), Some("blue"));
        assert_eq!(
            blue.quota(),
            Quota {
                max_vfs: Some(8),
                max_chains: Some(4)
            }
        );
        assert_eq!(p.by_token(b"blue-secreT"), None);
        assert_eq!(p.by_token(b""), None);
        assert_eq!(p.by_name("red").unwrap().tenant_name(), Some("red"));
        assert_eq!(p.by_name("green"), None);
    }

    #[test]
    fn bad_files_are_refused_naming_the_problem() {
        let err = |text: &str| match Principals::parse(text).unwrap_err() {
            ParseError::Invalid(p) => p,
            ParseError::Toml(e) => e.to_string(),
        };
        assert!(err("[[admin]]\nname = \"ops\"\ntoken_sha256 = \"abc\"\n").contains("64 hex"));
        assert!(err("[[admin]]\nname = \"a\"\n[[tenant]]\nname = \"a\"\n").contains("twice"));
        assert!(err("[[admin]]\nname = \"a b\"\n").contains("principal name"));
        assert!(err("[[admin]]\nname = \"a\"\ntoken = \"x\"\n").contains("unknown field"));
        let d = token_digest_hex(b"same");
        assert!(
            err(&format!(
                "[[admin]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\n[[tenant]]\nname = \"b\"\ntoken_sha256 = \"{d}\"\n"
            ))
            .contains("another principal's")
        );
    }
}
