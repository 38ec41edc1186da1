//! Resource names (AIP-122), the one place they are spelled: the PF `pfs/0`, a VF
//! `pfs/0/vfs/3`, an NF `nfs/fw`, a chain `chains/edge`. A person may type the short
//! form (`3`, `fw`, `edge`); the API always answers with the full one.
//!
//! NF and chain ids follow one rule, [`check_name`]: an RFC 1123 label that starts
//! with a letter, because they become DNS-safe parts of resource names.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The longest NF or chain id (an RFC 1123 label).
pub const MAX_NAME_LEN: usize = 63;

/// The only PF nfhost serves.
pub const PF: &str = "pfs/0";

/// Why a name is not an RFC 1123 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    /// Empty.
    #[error("must not be empty")]
    Empty,
    /// Over 63 characters.
    #[error("is longer than 63 characters")]
    TooLong,
    /// The first character is not `a`-`z`.
    #[error("must start with a lowercase letter")]
    BadStart,
    /// Ends with `-`.
    #[error("must end with a lowercase letter or a digit")]
    BadEnd,
    /// A character outside `a`-`z`, `0`-`9`, `-`.
    #[error("may contain only lowercase letters, digits and '-'")]
    BadChar,
}

/// Checks that `name` is an RFC 1123 label that starts with a letter, the rule for
/// chain and NF ids (they become `chains/ID`, `nfs/ID`).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (None, _) | (_, None) => Err(NameError::Empty),
        _ if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') =>
        {
            Err(NameError::BadChar)
        }
        _ if bytes.len() > MAX_NAME_LEN => Err(NameError::TooLong),
        (Some(first), _) if !first.is_ascii_lowercase() => Err(NameError::BadStart),
        (_, Some(b'-')) => Err(NameError::BadEnd),
        _ => Ok(()),
    }
}

/// A collection of named resources, and the prefix of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `nfs/ID`.
    Nfs,
    /// `chains/ID`.
    Chains,
}

impl Collection {
    /// The collection id, `nfs` or `chains`.
    pub const fn id(self) -> &'static str {
        match self {
            Collection::Nfs => "nfs",
            Collection::Chains => "chains",
        }
    }

    /// The full name of the resource `id` of this collection.
    pub fn name(self, id: &str) -> String {
        format!("{}/{id}", self.id())
    }

    /// The id in `name`, given full (`nfs/fw`) or short (`fw`).
    pub fn short(self, name: &str) -> &str {
        name.strip_prefix(self.id())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(name)
    }
}

/// `nfs/ID`, the full name of the NF `id`.
pub fn nf_name(id: &str) -> String {
    Collection::Nfs.name(id)
}

/// `nfs/ID`, or empty when there is no NF (a free VF, an event about no NF): the
/// form of the API's optional NF fields.
pub fn nf_name_or_none(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        nf_name(id)
    }
}

/// The id of an NF named `nfs/fw` or `fw`.
pub fn nf_id(name: &str) -> &str {
    Collection::Nfs.short(name)
}

/// `chains/ID`, the full name of the chain `id`.
pub fn chain_name(id: &str) -> String {
    Collection::Chains.name(id)
}

/// The id of a chain named `chains/edge` or `edge`.
pub fn chain_id(name: &str) -> &str {
    Collection::Chains.short(name)
}

/// A VF of PF 0 by index: `pfs/0/vfs/3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VfName(pub u16);

impl fmt::Display for VfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PF}/vfs/{}", self.0)
    }
}

/// Not a VF name such as `pfs/0/vfs/3` or `3`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a VF: give its index (3) or name (pfs/0/vfs/3)")]
pub struct ParseVfError(pub String);

impl FromStr for VfName {
    type Err = ParseVfError;

    /// `pfs/0/vfs/3` or `3`: a decimal index of PF 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let index = s.strip_prefix("pfs/0/vfs/").unwrap_or(s);
        let digits = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| index.parse().ok())
            .flatten()
            .map(VfName)
            .ok_or_else(|| ParseVfError(s.to_owned()))
    }
}

/// The resource name of VF `index`.
pub fn vf_name(index: u16) -> String {
    VfName(index).to_string()
}

/// The index of a VF named `pfs/0/vfs/3` or `3`.
pub fn parse_vf(name: &str) -> Option<u16> {
    name.parse::<VfName>().ok().map(|v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_rfc_1123_labels() {
        for good in ["a", "fw", "edge-1", "a1", &"a".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        for (bad, why) in [
            ("", NameError::Empty),
            ("1a", NameError::BadStart),
            ("-a", NameError::BadStart),
            ("a-", NameError::BadEnd),
            ("A", NameError::BadChar),
            ("a_b", NameError::BadChar),
            ("a/b", NameError::BadChar),
            (&"a".repeat(64), NameError::TooLong),
        ] {
            assert_eq!(check_name(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn names_go_both_ways() {
        assert_eq!(nf_name("fw"), "nfs/fw");
        assert_eq!(nf_id("nfs/fw"), "fw");
        assert_eq!(nf_id("fw"), "fw");
        assert_eq!(nf_name_or_none("fw"), "nfs/fw");
        assert_eq!(nf_name_or_none(""), "");
        assert_eq!(chain_name("edge"), "chains/edge");
        assert_eq!(chain_id("chains/edge"), "edge");
        assert_eq!(vf_name(3), "pfs/0/vfs/3");
        assert_eq!(parse_vf("pfs/0/vfs/3"), Some(3));
        assert_eq!(parse_vf("3"), Some(3));
        for bad in ["", "pfs/0/vfs/", "pfs/1/vfs/3", "x", "-1", "+1", "70000"] {
            assert_eq!(parse_vf(bad), None, "{bad:?}");
        }
    }
}
