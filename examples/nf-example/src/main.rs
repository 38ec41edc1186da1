//! `nf-example`: a network function of your own, on `nf-sdk` and nothing else.
//!
//! It forwards every frame, optionally swapping its MAC addresses, counts frames
//! by EtherType, and reports its counts to nfhost once a second. It runs two ways:
//!
//! - as an **`exec`** NF, started and supervised by nfhost
//!   (`nfctl nf create mine --kind exec --path /path/to/nf-example`): it finds its VF
//!   socket in `NFHOST_VF_FD` and its token in `NFHOST_VF_TOKEN`;
//! - as an **`external`** NF, started by you, systemd or a container
//!   (`nfctl nf create theirs --kind external`, then
//!   `nf-example --socket PATH --secret SECRET` with the `socket` and `secret` that
//!   `nfctl -o json nf get theirs` shows; or `NFHOST_VF_SOCKET` and
//!   `NFHOST_VF_SECRET` in the environment).
//!
//! Either way its configuration comes from nfhost over the socket: `{}` or
//! `{"swap_macs": true}`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use nf_sdk::runtime::{Options, run_configured};
use nf_sdk::{Batch, EthernetFrame, NetworkFunction, VfClient};

/// The example NF.
#[derive(Debug, Default)]
struct Example {
    swap_macs: bool,
    by_ethertype: BTreeMap<u16, u64>,
}

impl Example {
    /// From the config nfhost holds for this NF: empty or a JSON object whose only
    /// key is `swap_macs` (this example parses it by hand to depend on nf-sdk
    /// alone; a real NF would use serde).
    fn from_config(config: &str) -> Result<Self, String> {
        let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
        let swap_macs = match compact.as_str() {
            "" | "{}" | r#"{"swap_macs":false}"# => false,
            r#"{"swap_macs":true}"# => true,
            other => {
                return Err(format!(
                    "expected {{}} or {{\"swap_macs\": true|false}}, got {other}"
                ));
            }
        };
        Ok(Example {
            swap_macs,
            ..Default::default()
        })
    }
}

impl NetworkFunction for Example {
    fn process(&mut self, batch: &mut Batch<'_>) {
        for packet in batch.iter_mut() {
            let Ok(mut frame) = EthernetFrame::new_checked(packet.data_mut()) else {
                continue;
            };
            *self.by_ethertype.entry(frame.ethertype()).or_default() += 1;
            if self.swap_macs {
                frame.swap_addresses();
            }
        }
    }

    fn report(&self) -> Option<String> {
        let counts: Vec<String> = self
            .by_ethertype
            .iter()
            .map(|(t, n)| format!("\"0x{t:04x}\":{n}"))
            .collect();
        Some(format!(
            "{{\"swap_macs\":{},\"by_ethertype\":{{{}}}}}",
            self.swap_macs,
            counts.join(",")
        ))
    }

    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        self.swap_macs = Example::from_config(config)?.swap_macs;
        Ok(())
    }
}

/// Where the VF is: inherited from nfhost, or an endpoint to connect to.
enum Attach {
    Inherited { token: String },
    Endpoint { socket: PathBuf, secret: String },
}

fn attach_from(args: &[String]) -> Result<Attach, String> {
    let mut socket = std::env::var_os("NFHOST_VF_SOCKET").map(PathBuf::from);
    let mut secret = std::env::var("NFHOST_VF_SECRET").ok();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--socket" => socket = it.next().map(PathBuf::from),
            "--secret" => secret = it.next().cloned(),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    match (socket, secret) {
        (Some(socket), Some(secret)) => Ok(Attach::Endpoint { socket, secret }),
        (Some(_), None) | (None, Some(_)) => {
            Err(format!("--socket and --secret go together\n{USAGE}"))
        }
        (None, None) => match std::env::var("NFHOST_VF_TOKEN") {
            Ok(token) => Ok(Attach::Inherited { token }),
            Err(_) => Err(format!(
                "not started by nfhost (no NFHOST_VF_TOKEN) and no endpoint given\n{USAGE}"
            )),
        },
    }
}

const USAGE: &str = "usage: nf-example                               (started by nfhost as an exec NF)
       nf-example --socket PATH --secret SECRET   (an external NF; or NFHOST_VF_SOCKET, NFHOST_VF_SECRET)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (client, token) = match attach_from(&args) {
        Ok(Attach::Inherited { token }) => (VfClient::from_env(), token),
        Ok(Attach::Endpoint { socket, secret }) => (VfClient::connect(&socket), secret),
        Err(message) => {
            eprintln!("nf-example: {message}");
            return ExitCode::from(2);
        }
    };
    let result = client
        .map_err(nf_sdk::runtime::RuntimeError::from)
        .and_then(|client| {
            run_configured(client, &token, Options::default(), Example::from_config)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("nf-example: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs() {
        assert!(!Example::from_config("").unwrap().swap_macs);
        assert!(!Example::from_config("{}").unwrap().swap_macs);
        assert!(
            Example::from_config("{ \"swap_macs\": true }")
                .unwrap()
                .swap_macs
        );
        assert!(Example::from_config("{\"other\": 1}").is_err());
    }
}
