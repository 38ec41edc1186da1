//! Resource names (AIP-122) as a person may type them, short or full: a VF as `3` or
//! `pfs/0/vfs/3`, an NF as `fw` or `nfs/fw`, a chain as `edge` or `chains/edge`.
//! These are clap value parsers, so a malformed name is a usage error.

use nfhost::chain_file::check_name;

/// The only PF nfhost serves.
pub const PF: &str = "pfs/0";

/// `3` or `pfs/0/vfs/3` → `pfs/0/vfs/3`.
pub fn vf(arg: &str) -> Result<String, String> {
    let full = match arg.strip_prefix("pfs/") {
        None => {
            number(arg).ok_or_else(|| {
                format!("{arg:?} is not a VF: give its index (3) or name (pfs/0/vfs/3)")
            })?;
            return Ok(format!("{PF}/vfs/{arg}"));
        }
        Some(rest) => rest,
    };
    let ok = full
        .split_once("/vfs/")
        .is_some_and(|(pf, vf)| number(pf).is_some() && number(vf).is_some());
    if ok {
        Ok(arg.to_owned())
    } else {
        Err(format!(
            "{arg:?} is not a VF name: write pfs/<pf>/vfs/<index>, or just the index"
        ))
    }
}

/// `fw` or `nfs/fw` → `nfs/fw`.
pub fn nf(arg: &str) -> Result<String, String> {
    labelled("nfs", "an NF", arg)
}

/// `edge` or `chains/edge` → `chains/edge`.
pub fn chain(arg: &str) -> Result<String, String> {
    labelled("chains", "a chain", arg)
}

fn labelled(collection: &str, what: &str, arg: &str) -> Result<String, String> {
    let id = arg
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(arg);
    check_name(id).map_err(|reason| format!("{arg:?} is not {what} name: {reason}"))?;
    Ok(format!("{collection}/{id}"))
}

/// Decimal digits only (no sign, no spaces), as a number.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
