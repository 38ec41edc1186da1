//! Chain files: a chain written as TOML, checked in full and turned into the
//! [`proto::Chain`] that `CreateChain` and `UpdateChain` take (`nfctl chain apply`
//! creates the chain, or updates it in place if it exists; the server says what
//! may change in place).
//!
//! ```toml
//! name = "edge"                 # RFC 1123 label: [a-z0-9-], 1-63, starts with a letter
//! isolation = "shared"          # or "strict" (the default)
//! restart = "always"            # optional: always | on-failure | never
//! [classifier]
//! vlan = 100                    # 1-4094; omit for any
//! dst_mac = "02:00:00:00:ff:01" # optional
//! [egress]
//! vlan = 200                    # optional re-tag, 1-4094
//! two_way = false               # optional: true = NF on a stick, see below
//! [[nf]]                        # 1 to 16 hops, in order from the wire
//! name = "mon"                  # same rules as the chain name, unique in the file
//! kind = "monitor"
//! [nf.config]                   # optional; any table, sent to the NF as JSON
//! top = 5
//! [[nf]]
//! name = "mine"
//! kind = "exec"                 # a user binary on nf-sdk, run and supervised by nfhost
//! path = "/opt/nf/bin/my-nf"    # absolute, executable by the NF user
//! args = ["--verbose"]          # optional
//! env = { MY_NF_MODE = "fast" } # optional
//! [[nf]]
//! name = "theirs"
//! kind = "external"             # a process started elsewhere attaches at the endpoint
//! ```
//!
//! With `two_way = true` the chain carries both directions between two VLANs through
//! the same NFs (a stateful firewall sees both): frames of `classifier.vlan` leave on
//! `egress.vlan`, frames of `egress.vlan` enter the same first NF and leave on
//! `classifier.vlan`. Which way a frame goes is decided by the VLAN its source MAC
//! came in on, so both VLANs must be given and differ, `dst_mac` must be left out, and
//! frames whose source was never seen on either VLAN (made up by an NF, or with a
//! source MAC an NF rewrote) are dropped. See `examples/stick.toml`.
//!
//! Everything the client can check is checked here, so a person learns about a typo
//! before anything is sent; the server checks again (kinds, free VFs, clashes).
//! Every error names the field (`nf[1].name`) and, where the file has it, the
//! line and column.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::names::{NameError, chain_name, check_name};
use crate::proto;
use crate::validate::{MAX_NFS, TwoWayError, two_way_problems};
use vf_abi::MacAddr;

/// A place in the chain file; line and column count from 1, the column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Pos {
    /// The position of byte `offset` of `text`.
    fn at(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A chain file could not be read or is not a valid chain.
#[derive(Debug, Error)]
pub enum ChainFileError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not shaped like a chain file: a value of the wrong type, a
    /// missing key, an unknown key (the message names it).
    #[error("{}{message}", at.map(|p| format!("{p}: ")).unwrap_or_default())]
    Syntax {
        /// Where the parser stopped, if it knows.
        at: Option<Pos>,
        /// The parser's explanation.
        message: String,
    },
    /// A chain or NF name is not an RFC 1123 label.
    #[error("{field} = {value:?} ({at}): {reason}")]
    BadName {
        /// `name` or `nf[i].name`.
        field: String,
        /// The name as written.
        value: String,
        /// Where.
        at: Pos,
        /// What is wrong with it.
        reason: NameError,
    },
    /// Two hops share a name; NF names are global (`nfs/NAME`).
    #[error("nf[{index}].name = {name:?} ({at}): duplicate NF name, nf[{first}] already uses it")]
    DuplicateNf {
        /// The name.
        name: String,
        /// The hop that used it first.
        first: usize,
        /// The hop that repeats it.
        index: usize,
        /// Where the repeat is.
        at: Pos,
    },
    /// A hop without a kind.
    #[error("nf[{index}].kind ({at}): must not be empty")]
    EmptyKind {
        /// The hop.
        index: usize,
        /// Where.
        at: Pos,
    },
    /// A VLAN id outside 1-4094 (0 means "no VLAN" and 4095 is reserved, IEEE 802.1Q).
    #[error("{field} = {value} ({at}): VLAN id must be 1-4094; omit the key for none")]
    BadVlan {
        /// `classifier.vlan` or `egress.vlan`.
        field: &'static str,
        /// The value as written.
        value: i64,
        /// Where.
        at: Pos,
    },
    /// A MAC not written as six colon-separated hex pairs.
    #[error(
        "{field} = {value:?} ({at}): not a MAC address; write six hex pairs, like 02:00:00:00:ff:01"
    )]
    BadMac {
        /// `classifier.dst_mac`.
        field: &'static str,
        /// The value as written.
        value: String,
        /// Where.
        at: Pos,
    },
    /// `egress.two_way = true` without what a two-way chain needs.
    #[error("egress.two_way ({at}): {reason}")]
    BadTwoWay {
        /// What is missing or in the way.
        reason: TwoWayError,
        /// Where `two_way` is.
        at: Pos,
    },
    /// An `isolation` other than `strict` or `shared`.
    #[error("isolation = {value:?} ({at}): must be \"strict\" or \"shared\"")]
    BadIsolation {
        /// The value as written.
        value: String,
        /// Where.
        at: Pos,
    },
    /// A `restart` other than `always`, `on-failure` or `never`.
    #[error("restart = {value:?} ({at}): must be \"always\", \"on-failure\" or \"never\"")]
    BadRestart {
        /// The value as written.
        value: String,
        /// Where.
        at: Pos,
    },
    /// No `[[nf]]` table.
    #[error("nf: a chain needs at least one [[nf]]")]
    NoNfs,
    /// More than [`MAX_NFS`] hops.
    #[error("nf: {count} hops, a chain has at most {MAX_NFS}")]
    TooManyNfs {
        /// How many the file has.
        count: usize,
    },
    /// An NF config that JSON cannot carry.
    #[error("{field}: {reason}")]
    BadConfig {
        /// `nf[i].config.KEY…`.
        field: String,
        /// Why.
        reason: &'static str,
    },
}

/// The file as written. Strings and numbers that need checking keep their span, so
/// an error can say where they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainToml {
    name: Spanned<String>,
    isolation: Option<Spanned<String>>,
    restart: Option<Spanned<String>>,
    #[serde(default)]
    classifier: ClassifierToml,
    #[serde(default)]
    egress: EgressToml,
    #[serde(default)]
    nf: Vec<NfToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifierToml {
    vlan: Option<Spanned<i64>>,
    dst_mac: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressToml {
    vlan: Option<Spanned<i64>>,
    two_way: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NfToml {
    name: Spanned<String>,
    kind: Spanned<String>,
    config: Option<toml::Table>,
    /// For `kind = "exec"`: the binary, its arguments and environment.
    path: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

/// Parses and checks a chain file's text.
pub fn parse_chain(text: &str) -> Result<proto::Chain, ChainFileError> {
    let file: ChainToml = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let pos = |span: Range<usize>| Pos::at(text, span.start);

    check_name(file.name.get_ref()).map_err(|reason| ChainFileError::BadName {
        field: "name".into(),
        value: file.name.get_ref().clone(),
        at: pos(file.name.span()),
        reason,
    })?;

    let isolation = match &file.isolation {
        None => proto::Isolation::Strict,
        Some(v) => match v.get_ref().as_str() {
            "strict" => proto::Isolation::Strict,
            "shared" => proto::Isolation::Shared,
            other => {
                return Err(ChainFileError::BadIsolation {
                    value: other.into(),
                    at: pos(v.span()),
                });
            }
        },
    };

    let restart = match &file.restart {
        None => proto::RestartPolicy::Unspecified,
        Some(v) => parse_restart(v.get_ref()).ok_or_else(|| ChainFileError::BadRestart {
            value: v.get_ref().clone(),
            at: pos(v.span()),
        })?,
    };

    let vlan = |field: &'static str, v: &Option<Spanned<i64>>| match v {
        None => Ok(0),
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(id @ 1..=4094) => Ok(id),
            _ => Err(ChainFileError::BadVlan {
                field,
                value: *v.get_ref(),
                at: pos(v.span()),
            }),
        },
    };
    let classifier_vlan = vlan("classifier.vlan", &file.classifier.vlan)?;
    let dst_mac = match &file.classifier.dst_mac {
        None => String::new(),
        Some(v) => v
            .get_ref()
            .parse::<MacAddr>()
            .map_err(|_| ChainFileError::BadMac {
                field: "classifier.dst_mac",
                value: v.get_ref().clone(),
                at: pos(v.span()),
            })?
            .to_string(),
    };
    let egress_vlan = vlan("egress.vlan", &file.egress.vlan)?;
    let two_way = match &file.egress.two_way {
        Some(v) if *v.get_ref() => {
            let reason = two_way_problems(classifier_vlan, &dst_mac, egress_vlan)
                .into_iter()
                .next();
            if let Some(reason) = reason {
                return Err(ChainFileError::BadTwoWay {
                    reason,
                    at: pos(v.span()),
                });
            }
            true
        }
        _ => false,
    };

    if file.nf.is_empty() {
        return Err(ChainFileError::NoNfs);
    }
    if file.nf.len() > MAX_NFS {
        return Err(ChainFileError::TooManyNfs {
            count: file.nf.len(),
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut nfs = Vec::with_capacity(file.nf.len());
    for (index, nf) in file.nf.iter().enumerate() {
        let name = nf.name.get_ref();
        check_name(name).map_err(|reason| ChainFileError::BadName {
            field: format!("nf[{index}].name"),
            value: name.clone(),
            at: pos(nf.name.span()),
            reason,
        })?;
        if let Some(&first) = seen.get(name.as_str()) {
            return Err(ChainFileError::DuplicateNf {
                name: name.clone(),
                first,
                index,
                at: pos(nf.name.span()),
            });
        }
        seen.insert(name, index);
        if nf.kind.get_ref().trim().is_empty() {
            return Err(ChainFileError::EmptyKind {
                index,
                at: pos(nf.kind.span()),
            });
        }
        let config = match &nf.config {
            None => String::new(),
            Some(table) => config_json(table, &format!("nf[{index}].config"))?,
        };
        let exec = (nf.path.is_some() || !nf.args.is_empty() || !nf.env.is_empty()).then(|| {
            proto::ExecSpec {
                path: nf.path.clone().unwrap_or_default(),
                args: nf.args.clone(),
                env: nf.env.clone().into_iter().collect(),
            }
        });
        nfs.push(proto::ChainNf {
            name: name.clone(),
            kind: nf.kind.get_ref().clone(),
            config,
            exec,
        });
    }

    Ok(proto::Chain {
        name: chain_name(file.name.get_ref()),
        isolation: isolation.into(),
        classifier: Some(proto::Classifier {
            vlan: classifier_vlan,
            dst_mac,
        }),
        egress: Some(proto::Egress {
            vlan: egress_vlan,
            two_way,
        }),
        nfs,
        vfs: Vec::new(),
        restart_policy: restart.into(),
        // Output only: the server records the caller's tenant.
        tenant: String::new(),
    })
}

/// Reads and checks a chain file.
pub fn load_chain(path: &Path) -> Result<proto::Chain, ChainFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ChainFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_chain(&text)
}

/// The restart policy named `always`, `on-failure` or `never`.
pub fn parse_restart(text: &str) -> Option<proto::RestartPolicy> {
    match text {
        "always" => Some(proto::RestartPolicy::Always),
        "on-failure" => Some(proto::RestartPolicy::OnFailure),
        "never" => Some(proto::RestartPolicy::Never),
        _ => None,
    }
}

/// Parses the text of a TOML NF config file into the JSON text an NF takes; errors
/// say where in the file.
pub fn config_from_toml(text: &str) -> Result<String, ChainFileError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    config_json(&table, "config")
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ChainFileError {
    ChainFileError::Syntax {
        at: e.span().map(|s| Pos::at(text, s.start)),
        message: e.message().trim_end().to_owned(),
    }
}

/// Turns a TOML table into the JSON text an NF takes as its config. `field` names
/// the table in errors (`nf[0].config`).
///
/// TOML has two things JSON lacks: dates become their RFC 3339 text, and non-finite
/// floats (`nan`, `inf`) are refused, as JSON (RFC 8259 §6) has no form for them.
pub fn config_json(table: &toml::Table, field: &str) -> Result<String, ChainFileError> {
    let value = table_to_json(table, field)?;
    Ok(serde_json::Value::Object(value).to_string())
}

fn table_to_json(
    table: &toml::Table,
    field: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ChainFileError> {
    table
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(v, &format!("{field}.{k}"))?)))
        .collect()
}

fn value_to_json(value: &toml::Value, field: &str) -> Result<serde_json::Value, ChainFileError> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f)
                .map(J::Number)
                .ok_or(ChainFileError::BadConfig {
                    field: field.to_owned(),
                    reason: "nan and inf have no JSON form",
                })?
        }
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(table_to_json(t, field)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE: &str = include_str!("../../../examples/edge.toml");

    fn err(text: &str) -> ChainFileError {
        match parse_chain(text) {
            Ok(chain) => panic!("accepted: {chain:?}"),
            Err(e) => e,
        }
    }

    /// A valid one-hop chain with `extra` spliced in before the hop.
    fn with(extra: &str) -> String {
        format!("name = \"c\"\n{extra}\n[[nf]]\nname = \"a\"\nkind = \"l2fwd\"\n")
    }

    #[test]
    fn the_example_parses_to_the_expected_message() {
        let chain = parse_chain(EDGE).expect("example parses");
        assert_eq!(
            chain,
            proto::Chain {
                name: "chains/edge".into(),
                isolation: proto::Isolation::Shared.into(),
                classifier: Some(proto::Classifier {
                    vlan: 100,
                    dst_mac: "02:00:00:00:ff:01".into(),
                }),
                egress: Some(proto::Egress {
                    vlan: 200,
                    two_way: false,
                }),
                nfs: vec![
                    proto::ChainNf {
                        name: "mon".into(),
                        kind: "monitor".into(),
                        config: r#"{"top":5}"#.into(),
                        exec: None,
                    },
                    proto::ChainNf {
                        name: "fwd".into(),
                        kind: "l2fwd".into(),
                        config: String::new(),
                        exec: None,
                    },
                ],
                vfs: vec![],
                restart_policy: proto::RestartPolicy::Always.into(),
                tenant: String::new(),
            }
        );
    }

    #[test]
    fn the_two_way_example_parses() {
        let chain = parse_chain(include_str!("../../../examples/stick.toml")).expect("parses");
        assert_eq!(
            (
                chain.classifier.as_ref().map(|c| c.vlan),
                chain.egress.as_ref()
            ),
            (
                Some(100),
                Some(&proto::Egress {
                    vlan: 200,
                    two_way: true
                })
            )
        );
    }

    #[test]
    fn defaults_are_strict_any_traffic_and_the_servers_restart_policy() {
        let chain = parse_chain(&with("")).expect("parses");
        assert_eq!(chain.isolation, proto::Isolation::Strict as i32);
        assert_eq!(
            chain.restart_policy,
            proto::RestartPolicy::Unspecified as i32
        );
        assert_eq!(chain.classifier, Some(proto::Classifier::default()));
        assert_eq!(chain.egress, Some(proto::Egress::default()));
    }

    #[test]
    fn bad_names_are_refused_with_the_field_and_reason() {
        for (name, reason) in [
            ("", NameError::Empty),
            ("Edge", NameError::BadChar),
            ("1edge", NameError::BadStart),
            ("-edge", NameError::BadStart),
            ("edge-", NameError::BadEnd),
            ("chains/edge", NameError::BadChar),
            ("ed_ge", NameError::BadChar),
            (&"a".repeat(64), NameError::TooLong),
        ] {
            let text = format!("name = \"{name}\"\n[[nf]]\nname = \"a\"\nkind = \"l2fwd\"\n");
            match err(&text) {
                ChainFileError::BadName {
                    field,
                    reason: r,
                    at,
                    ..
                } => {
                    assert_eq!((field.as_str(), r), ("name", reason), "{name:?}");
                    assert_eq!(at, Pos { line: 1, column: 8 });
                }
                other => panic!("{name:?}: {other}"),
            }
        }
        assert!(check_name(&"a".repeat(63)).is_ok());
        let e = err("name = \"c\"\n[[nf]]\nname = \"Fw\"\nkind = \"l2fwd\"\n");
        assert!(
            matches!(&e, ChainFileError::BadName { field, .. } if field == "nf[0].name"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "nf[0].name = \"Fw\" (line 3, column 8): may contain only lowercase letters, digits and '-'"
        );
    }

    #[test]
    fn a_duplicate_nf_name_is_refused() {
        let text = format!("{}[[nf]]\nname = \"a\"\nkind = \"monitor\"\n", with(""));
        let e = err(&text);
        assert!(
            matches!(
                &e,
                ChainFileError::DuplicateNf { name, first: 0, index: 1, at }
                    if name == "a" && at.line == 7
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("duplicate NF name"), "{e}");
    }

    #[test]
    fn vlans_outside_1_to_4094_are_refused() {
        for (extra, field, value) in [
            ("[classifier]\nvlan = 0", "classifier.vlan", 0),
            ("[classifier]\nvlan = 4095", "classifier.vlan", 4095),
            ("[classifier]\nvlan = -1", "classifier.vlan", -1),
            ("[egress]\nvlan = 0", "egress.vlan", 0),
            ("[egress]\nvlan = 4095", "egress.vlan", 4095),
        ] {
            match err(&with(extra)) {
                ChainFileError::BadVlan {
                    field: f, value: v, ..
                } => assert_eq!((f, v), (field, value), "{extra}"),
                other => panic!("{extra}: {other}"),
            }
        }
        for ok in ["[classifier]\nvlan = 1", "[egress]\nvlan = 4094"] {
            assert!(parse_chain(&with(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_bad_mac_is_refused_and_a_good_one_lowercased() {
        for mac in [
            "02:00:00:00:ff",
            "02:00:00:00:ff:01:02",
            "02-00-00-00-ff-01",
            "02:00:00:00:ff:0g",
            "2:00:00:00:ff:01",
            "",
        ] {
            let e = err(&with(&format!("[classifier]\ndst_mac = \"{mac}\"")));
            assert!(
                matches!(&e, ChainFileError::BadMac { field: "classifier.dst_mac", value, .. } if value == mac),
                "{mac:?}: {e}"
            );
        }
        let chain =
            parse_chain(&with("[classifier]\ndst_mac = \"02:AB:00:00:FF:01\"")).expect("parses");
        assert_eq!(
            chain.classifier.map(|c| c.dst_mac).as_deref(),
            Some("02:ab:00:00:ff:01")
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name_and_place() {
        for (text, key, line) in [
            (with("colour = \"red\""), "colour", 2),
            (with("[classifier]\nvid = 100"), "vid", 3),
            (with("[egress]\nvlan = 2\npcp = 3"), "pcp", 4),
            (format!("{}image = \"x\"\n", with("")), "image", 6),
        ] {
            match err(&text) {
                ChainFileError::Syntax {
                    at: Some(at),
                    message,
                } => {
                    assert!(
                        message.contains(&format!("unknown field `{key}`")),
                        "{message}"
                    );
                    assert_eq!(at.line, line, "{key}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_parse_error_says_where() {
        let e = err("name = \"c\"\nisolation = shared\n");
        assert!(
            matches!(
                &e,
                ChainFileError::Syntax {
                    at: Some(Pos { line: 2, .. }),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("line 2, column "), "{e}");
        let e = err("name = \"c\"\n[[nf]]\nname = \"a\"\n");
        assert!(e.to_string().contains("missing field `kind`"), "{e}");
        let e =
            err("name = \"c\"\n[classifier]\nvlan = \"100\"\n[[nf]]\nname = \"a\"\nkind = \"x\"\n");
        assert!(
            matches!(
                &e,
                ChainFileError::Syntax {
                    at: Some(Pos { line: 3, .. }),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn zero_or_too_many_nfs_are_refused() {
        assert!(matches!(err("name = \"c\"\n"), ChainFileError::NoNfs));
        assert!(matches!(
            err("name = \"c\"\nnf = []\n"),
            ChainFileError::NoNfs
        ));
        let hops = |n: usize| {
            (0..n)
                .map(|i| format!("[[nf]]\nname = \"n{i}\"\nkind = \"l2fwd\"\n"))
                .collect::<String>()
        };
        assert_eq!(
            parse_chain(&format!("name = \"c\"\n{}", hops(MAX_NFS)))
                .map(|c| c.nfs.len())
                .ok(),
            Some(MAX_NFS)
        );
        assert!(matches!(
            err(&format!("name = \"c\"\n{}", hops(MAX_NFS + 1))),
            ChainFileError::TooManyNfs { count: 17 }
        ));
    }

    #[test]
    fn unknown_isolation_and_restart_are_refused() {
        let e = err(&with("isolation = \"loose\""));
        assert!(
            matches!(&e, ChainFileError::BadIsolation { value, at } if value == "loose" && at.line == 2),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "isolation = \"loose\" (line 2, column 13): must be \"strict\" or \"shared\""
        );
        let e = err(&with("restart = \"sometimes\""));
        assert!(
            matches!(&e, ChainFileError::BadRestart { value, .. } if value == "sometimes"),
            "{e:?}"
        );
        for (word, policy) in [
            ("always", proto::RestartPolicy::Always),
            ("on-failure", proto::RestartPolicy::OnFailure),
            ("never", proto::RestartPolicy::Never),
        ] {
            let chain = parse_chain(&with(&format!("restart = \"{word}\""))).expect(word);
            assert_eq!(chain.restart_policy, policy as i32);
        }
    }

    #[test]
    fn two_way_needs_two_different_vlans_and_no_mac() {
        let chain = parse_chain(&with(
            "[classifier]\nvlan = 100\n[egress]\nvlan = 200\ntwo_way = true",
        ))
        .expect("parses");
        assert_eq!(
            chain.egress,
            Some(proto::Egress {
                vlan: 200,
                two_way: true
            })
        );
        for (extra, reason) in [
            (
                "[egress]\nvlan = 200\ntwo_way = true",
                TwoWayError::NoClassifierVlan,
            ),
            (
                "[classifier]\nvlan = 100\n[egress]\ntwo_way = true",
                TwoWayError::NoEgressVlan,
            ),
            (
                "[classifier]\nvlan = 100\n[egress]\nvlan = 100\ntwo_way = true",
                TwoWayError::SameVlan(100),
            ),
            (
                "[classifier]\nvlan = 100\ndst_mac = \"02:00:00:00:ff:01\"\n\
                 [egress]\nvlan = 200\ntwo_way = true",
                TwoWayError::DstMac,
            ),
        ] {
            match err(&with(extra)) {
                ChainFileError::BadTwoWay { reason: r, at } => {
                    assert_eq!(r, reason, "{extra}");
                    assert_eq!(at.column, 11, "{extra}: points at the value");
                }
                other => panic!("{extra}: {other}"),
            }
        }
        let e = err(&with("[egress]\ntwo_way = true"));
        assert_eq!(
            e.to_string(),
            "egress.two_way (line 3, column 11): a two-way chain needs classifier.vlan, the VLAN of one side"
        );
        // `two_way = false` is the one-way default, whatever else is set.
        let chain = parse_chain(&with(
            "[classifier]\ndst_mac = \"02:00:00:00:ff:01\"\n[egress]\ntwo_way = false",
        ))
        .expect("parses");
        assert_eq!(chain.egress, Some(proto::Egress::default()));
        assert!(matches!(
            err(&with("[egress]\ntwo_way = \"yes\"")),
            ChainFileError::Syntax { .. }
        ));
    }

    #[test]
    fn an_empty_kind_is_refused() {
        let e = err("name = \"c\"\n[[nf]]\nname = \"a\"\nkind = \"\"\n");
        assert!(
            matches!(e, ChainFileError::EmptyKind { index: 0, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn configs_become_json_with_dates_as_text_and_nan_refused() {
        let text = "name = \"c\"\n[[nf]]\nname = \"a\"\nkind = \"monitor\"\n\
                    [nf.config]\nmax_flows = 10\nratio = 0.5\non = true\nat = 1979-05-27T07:32:00Z\n\
                    ports = [1, 2]\n[nf.config.inner]\nx = \"y\"\n";
        let chain = parse_chain(text).expect("parses");
        let json: serde_json::Value =
            serde_json::from_str(&chain.nfs[0].config).expect("config is JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "max_flows": 10, "ratio": 0.5, "on": true, "at": "1979-05-27T07:32:00Z",
                "ports": [1, 2], "inner": {"x": "y"}
            })
        );
        let e =
            err("name = \"c\"\n[[nf]]\nname = \"a\"\nkind = \"x\"\n[nf.config]\nv = [1.0, nan]\n");
        assert!(
            matches!(&e, ChainFileError::BadConfig { field, .. } if field == "nf[0].config.v[1]"),
            "{e:?}"
        );
        let e = err("name = \"c\"\n[[nf]]\nname = \"a\"\nkind = \"x\"\nconfig = 5\n");
        assert!(
            matches!(
                e,
                ChainFileError::Syntax {
                    at: Some(Pos { line: 5, .. }),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_toml_config_file_becomes_json() {
        assert_eq!(
            config_from_toml("top = 3\n[x]\ny = \"z\"\n")
                .ok()
                .as_deref(),
            Some(r#"{"top":3,"x":{"y":"z"}}"#)
        );
        assert!(matches!(
            config_from_toml("top = \n"),
            Err(ChainFileError::Syntax {
                at: Some(Pos { line: 1, .. }),
                ..
            })
        ));
    }

    #[test]
    fn positions_count_characters_from_one() {
        let text = "ab\ncdé f";
        assert_eq!(Pos::at(text, 0), Pos { line: 1, column: 1 });
        assert_eq!(Pos::at(text, 3), Pos { line: 2, column: 1 });
        assert_eq!(
            Pos::at(text, text.find('f').unwrap_or(0)),
            Pos { line: 2, column: 5 }
        );
        assert_eq!(Pos::at(text, 100), Pos { line: 2, column: 6 });
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let e = load_chain(Path::new("/nonexistent/chain.toml"));
        assert!(
            matches!(&e, Err(ChainFileError::Read { path, .. }) if path == Path::new("/nonexistent/chain.toml")),
            "{e:?}"
        );
    }
}
