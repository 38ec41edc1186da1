//! TLS for an `https://` server: whom to trust (`--ca`, else the system's roots) and
//! who nfctl is (`--cert` and `--key`, for mutual TLS). The PEM files are read and
//! checked here, before connecting, so a wrong file is named as such rather than
//! surfacing as a handshake failure.

use std::error::Error;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {flag} {}", path.display())]
    Read {
        /// `--ca`, `--cert` or `--key`.
        flag: &'static str,
        /// As given.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// No certificate in a file that should hold some.
    #[error("{flag} {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// `--ca` or `--cert`.
        flag: &'static str,
        /// As given.
        path: PathBuf,
    },
    /// No private key in the `--key` file.
    #[error("--key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey {
        /// As given.
        path: PathBuf,
    },
}

/// The files given for TLS; all optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// `--ca`: the CA certificates to trust instead of the system's.
    pub ca: Option<&'a Path>,
    /// `--cert` and `--key`, given together.
    pub identity: Option<(&'a Path, &'a Path)>,
}

impl TlsFiles<'_> {
    /// True when any file is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// The flags given, for a message: `--ca, --cert, --key`.
    pub fn flags(&self) -> String {
        let mut flags = Vec::new();
        if self.ca.is_some() {
            flags.push("--ca");
        }
        if self.identity.is_some() {
            flags.extend(["--cert", "--key"]);
        }
        flags.join(", ")
    }

    /// The TLS settings for a server called `host` (the URL's host, which its
    /// certificate must name).
    pub fn config(&self, host: &str) -> Result<ClientTlsConfig, PemError> {
        // `[::1]` in a URL, `::1` in a certificate.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let mut config = ClientTlsConfig::new().domain_name(name);
        config = match self.ca {
            Some(path) => config.ca_certificate(Certificate::from_pem(certificates("--ca", path)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = self.identity {
            let cert = certificates("--cert", cert)?;
            let key = private_key(key)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The file, if it holds at least one certificate and nothing unreadable.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read(flag, path)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(PemError::NoCertificate {
            flag,
            path: path.to_owned(),
        }),
    }
}

/// The file, if it holds a private key.
fn private_key(path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read("--key", path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(_) => Err(PemError::NoKey {
            path: path.to_owned(),
        }),
    }
}

/// True when connecting to an `https://` server failed in the TLS handshake:
/// rustls refused it (a certificate it does not trust, an answer that is not TLS),
/// or the server hung up in the middle of it. A TCP connect fails with "refused"
/// or a timeout, never with a reset or an early end, so those are the handshake's.
pub fn is_handshake_failure(error: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind;
    crate::fail::sources(error).any(|e| {
        let Some(io) = e.downcast_ref::<std::io::Error>() else {
            return e.is::<rustls::Error>();
        };
        // tokio-rustls wraps rustls's error in an io::Error, whose `source` skips it.
        io.get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
            || matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_file as file;

    #[test]
    fn a_file_without_pem_is_named() {
        let junk = file("junk.pem", "not a certificate\n");
        let files = TlsFiles {
            ca: Some(&junk),
            identity: None,
        };
        let e = files.config("localhost").expect_err("junk CA");
        assert!(
            matches!(e, PemError::NoCertificate { flag: "--ca", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("junk.pem"), "{e}");

        let files = TlsFiles {
            ca: None,
            identity: Some((Path::new("/nonexistent/c.pem"), &junk)),
        };
        let e = files.config("localhost").expect_err("absent cert");
        assert!(
            e.to_string()
                .starts_with("cannot read --cert /nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn flags_name_what_was_given() {
        let p = Path::new("x");
        assert_eq!(TlsFiles::default().flags(), "");
        assert!(!TlsFiles::default().any());
        let files = TlsFiles {
            ca: Some(p),
            identity: Some((p, p)),
        };
        assert!(files.any());
        assert_eq!(files.flags(), "--ca, --cert, --key");
    }

    #[test]
    fn a_rustls_refusal_or_a_hang_up_is_a_handshake_failure() {
        let refusal = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_handshake_failure(&refusal));
        let hung_up = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_handshake_failure(&hung_up));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_handshake_failure(&refused));
    }
}
