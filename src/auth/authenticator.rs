//! From credentials to a [`Principal`]: the one decision both the gRPC API and
//! the HTTP side make for every request.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use thiserror::Error;

use super::principal::Principal;
use super::principals::{Principals, PrincipalsError};

/// Why a request is not authenticated (gRPC `UNAUTHENTICATED`, HTTP 401). The
/// messages never hold a token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unauthenticated {
    /// Neither a bearer token nor a client certificate came with the request.
    #[error(
        "no credentials: send `authorization: Bearer TOKEN` (nfctl: --token-file or NFHOST_TOKEN) or a client certificate"
    )]
    Missing,
    /// The `authorization` value is not `Bearer TOKEN`.
    #[error("the authorization header is not of the form `Bearer TOKEN`")]
    Malformed,
    /// The token is not one of the principals'.
    #[error("the bearer token is not recognised")]
    UnknownToken,
    /// The client certificate's CN names no principal.
    #[error("the client certificate's subject CN {0:?} names no principal")]
    UnknownCertificate(String),
    /// The client certificate has no subject CN to name a principal with.
    #[error("the client certificate has no subject common name (CN)")]
    NoCommonName,
}

/// How callers are told apart.
#[derive(Debug)]
enum Mode {
    /// No `--auth` and no `--client-ca`: every caller is [`Principal::anonymous`],
    /// an admin (serve allows this on loopback only, or with `--insecure`).
    Open,
    /// No `--auth`, but `--client-ca`: TLS admits only clients with a certificate
    /// of that CA, and each is an admin named by its CN.
    CertificatesOnly,
    /// `--auth FILE`: a token or a client certificate must name a principal of
    /// the file.
    Principals {
        path: PathBuf,
        principals: RwLock<Arc<Principals>>,
    },
}

/// Decides who a request comes from. Shared by the gRPC interceptor and the HTTP
/// middleware; [`Authenticator::reload`] swaps the principals in place (SIGHUP),
/// connections stay up.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
}

impl Authenticator {
    /// Everyone is an admin.
    pub fn open() -> Self {
        Authenticator { mode: Mode::Open }
    }

    /// Client certificates alone: each verified client is an admin named by its CN.
    pub fn certificates_only() -> Self {
        Authenticator {
            mode: Mode::CertificatesOnly,
        }
    }

    /// The principals of the file at `path`.
    pub fn from_file(path: PathBuf) -> Result<Self, PrincipalsError> {
        let principals = Principals::load(&path)?;
        tracing::info!(
            file = %path.display(),
            principals = principals.len(),
            "principals loaded"
        );
        Ok(Authenticator {
            mode: Mode::Principals {
                path,
                principals: RwLock::new(Arc::new(principals)),
            },
        })
    }

    /// Whether requests must authenticate (false: everyone is an admin).
    pub fn enforced(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    /// Reads the principals file again. A file that cannot be used leaves the
    /// principals as they were. Without a file there is nothing to read.
    pub fn reload(&self) -> Result<usize, PrincipalsError> {
        let Mode::Principals { path, principals } = &self.mode else {
            return Ok(0);
        };
        let fresh = Principals::load(path)?;
        let n = fresh.len();
        *principals.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(n)
    }

    /// Who sends a request with this `authorization` value (header or metadata)
    /// over a connection whose verified client certificate has this subject CN
    /// (`Some(None)`: a certificate without a CN). A token, when given, decides;
    /// otherwise the certificate.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate_cn: Option<Option<&str>>,
    ) -> Result<Principal, Unauthenticated> {
        match &self.mode {
            Mode::Open => Ok(Principal::anonymous()),
            Mode::CertificatesOnly => match certificate_cn {
                Some(Some(cn)) => Ok(Principal::admin(cn)),
                Some(None) => Err(Unauthenticated::NoCommonName),
                None => Err(Unauthenticated::Missing),
            },
            Mode::Principals { principals, .. } => {
                let principals = principals.read().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(value) = authorization {
                    let token = bearer(value).ok_or(Unauthenticated::Malformed)?;
                    return principals
                        .by_token(token)
                        .ok_or(Unauthenticated::UnknownToken);
                }
                match certificate_cn {
                    Some(Some(cn)) => principals
                        .by_name(cn)
                        .ok_or_else(|| Unauthenticated::UnknownCertificate(cn.to_owned())),
                    Some(None) => Err(Unauthenticated::NoCommonName),
                    None => Err(Unauthenticated::Missing),
                }
            }
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme in any case, RFC 7235), or `None`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && token.iter().all(|b| b.is_ascii_graphic())).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principals::token_digest_hex;

    fn with_file(text: &str) -> (Authenticator, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("nfhost-auth-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("principals.toml");
        std::fs::write(&path, text).unwrap();
        (Authenticator::from_file(path.clone()).unwrap(), path)
    }

    #[test]
    fn a_token_or_a_certificate_names_the_principal() {
        let text = format!(
            "[[admin]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n[[tenant]]\nname = \"blue\"\n",
            token_digest_hex(b"t0k3n")
        );
        let (auth, path) = with_file(&text);
        assert!(auth.enforced());
        let ops = auth.authenticate(Some(b"Bearer t0k3n"), None).unwrap();
        assert_eq!(ops, Principal::admin("ops"));
        assert_eq!(
            auth.authenticate(Some(b"bearer   t0k3n "), None).unwrap(),
            ops
        );
        assert_eq!(
            auth.authenticate(Some(b"Basic dDBrM24="), None),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer "), None),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer wrong"), Some(Some("ops"))),
            Err(Unauthenticated::UnknownToken),
            "a token given decides, even beside a good certificate"
        );
        assert_eq!(auth.authenticate(None, None), Err(Unauthenticated::Missing));
        assert_eq!(
            auth.authenticate(None, Some(Some("blue")))
                .unwrap()
                .tenant_name(),
            Some("blue")
        );
        assert_eq!(
            auth.authenticate(None, Some(Some("mallory"))),
            Err(Unauthenticated::UnknownCertificate("mallory".into()))
        );

        // A new file takes effect on reload; a broken one leaves the old.
        std::fs::write(
            &path,
            format!(
                "[[admin]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n",
                token_digest_hex(b"rotated")
            ),
        )
        .unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        assert_eq!(
            auth.authenticate(Some(b"Bearer t0k3n"), None),
            Err(Unauthenticated::UnknownToken)
        );
        assert!(auth.authenticate(Some(b"Bearer rotated"), None).is_ok());
        std::fs::write(&path, "[[admin]]\nname = 3\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some(b"Bearer rotated"), None).is_ok());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn open_and_certificate_modes() {
        assert_eq!(
            Authenticator::open().authenticate(None, None).unwrap(),
            Principal::anonymous()
        );
        let certs = Authenticator::certificates_only();
        assert_eq!(
            certs.authenticate(None, Some(Some("ops"))).unwrap(),
            Principal::admin("ops")
        );
        assert_eq!(
            certs.authenticate(None, Some(None)),
            Err(Unauthenticated::NoCommonName)
        );
        assert_eq!(
            certs.authenticate(None, None),
            Err(Unauthenticated::Missing)
        );
    }
}
