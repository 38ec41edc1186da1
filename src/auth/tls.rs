//! TLS for both listeners: the gRPC API (through tonic) and the dashboard
//! (through tokio-rustls), from the same `--tls-cert`, `--tls-key` and
//! `--client-ca` files, and the subject CN of a verified client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// TLS could not be set up from the files given.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {what} {path}")]
    Read {
        /// `--tls-cert`, `--tls-key` or `--client-ca`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the kind expected.
    #[error("{what} {path}: {problem}")]
    Pem {
        /// Which flag's file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify client certificates.
    #[error("client CA")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The PEM files of the service's TLS, read once at start.
#[derive(Clone)]
pub struct TlsMaterial {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    /// Without `--auth`, a client certificate is the only credential: TLS
    /// itself turns away clients without one.
    client_auth_required: bool,
    /// The dashboard's configuration, built from the same files at load.
    http: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs and panics.
        f.debug_struct("TlsMaterial")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("client_auth_required", &self.client_auth_required)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(problem("holds no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Reads the files and builds the server configuration from them, which
    /// checks that they work together.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        client_auth_required: bool,
    ) -> Result<Self, TlsError> {
        let cert_pem = read("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let client_ca_pem = client_ca.map(|p| read("--client-ca", p)).transpose()?;
        let certs = certificates("--tls-cert", cert, &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "--tls-key",
            path: key.to_owned(),
            problem: format!("holds no PEM private key ({e})"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match (client_ca, &client_ca_pem) {
            (Some(path), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates("--client-ca", path, pem)? {
                    roots.add(c)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if client_auth_required {
                    verifier.build()?
                } else {
                    verifier.allow_unauthenticated().build()?
                };
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut http = builder.with_single_cert(certs, private_key)?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            cert_pem,
            key_pem,
            client_ca_pem,
            client_auth_required,
            http: Arc::new(http),
        })
    }

    /// Whether client certificates are verified (`--client-ca`).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// The gRPC server's TLS (tonic, rustls underneath).
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_pem {
            tls = tls
                .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                .client_auth_optional(!self.client_auth_required);
        }
        tls
    }

    /// The dashboard's TLS (HTTP/1.1).
    pub fn http(&self) -> Arc<rustls::ServerConfig> {
        self.http.clone()
    }
}

/// The subject common name of a (verified) client certificate: `None` when the
/// DER cannot be read, `Some(None)` when it has no CN.
pub fn common_name(der: &[u8]) -> Option<Option<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "blue");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), Some(Some("blue".to_owned())));
        let bare = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // rcgen names a certificate without a CN "rcgen self signed cert".
        assert!(common_name(bare.der()).is_some());
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
