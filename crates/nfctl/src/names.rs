//! Resource names as a person may type them, short or full: a VF as `3` or
//! `pfs/0/vfs/3`, an NF as `fw` or `nfs/fw`, a chain as `edge` or `chains/edge`.
//! These are clap value parsers over the API's own names, so a malformed name is a
//! usage error, by the rule the server applies.

use nfhost_api::names::{Collection, VfName, check_name};

pub use nfhost_api::names::PF;

/// `3` or `pfs/0/vfs/3` → `pfs/0/vfs/3`.
pub fn vf(arg: &str) -> Result<String, String> {
    arg.parse::<VfName>()
        .map(|vf| vf.to_string())
        .map_err(|e| e.to_string())
}

/// `fw` or `nfs/fw` → `nfs/fw`.
pub fn nf(arg: &str) -> Result<String, String> {
    labelled(Collection::Nfs, "an NF", arg)
}

/// `edge` or `chains/edge` → `chains/edge`.
pub fn chain(arg: &str) -> Result<String, String> {
    labelled(Collection::Chains, "a chain", arg)
}

fn labelled(collection: Collection, what: &str, arg: &str) -> Result<String, String> {
    let id = collection.short(arg);
    check_name(id).map_err(|reason| format!("{arg:?} is not {what} name: {reason}"))?;
    Ok(collection.name(id))
}

/// The short form of a full name for tables: `pfs/0/vfs/3` → `3`, `nfs/fw` → `fw`,
/// `chains/edge` → `edge`; empty → `-`. Anything else is shown as it is.
pub fn short(name: &str) -> &str {
    if name.is_empty() {
        return "-";
    }
    name.strip_prefix("pfs/0/vfs/")
        .or_else(|| name.strip_prefix("nfs/"))
        .or_else(|| name.strip_prefix("chains/"))
        .unwrap_or(name)
}
