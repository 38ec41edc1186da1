//! The bearer token: where it comes from (`--token-file`, else `NFHOST_TOKEN`) and
//! how it goes out (`authorization: Bearer TOKEN` on every call, RFC 6750 §2.1).
//!
//! The token is a secret: no `Debug`, error or report of this module shows it.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The environment variable holding the token itself.
pub const TOKEN_ENV: &str = "NFHOST_TOKEN";

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {}", path.display())]
    Read {
        /// As given to `--token-file`.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The token file's first line is blank.
    #[error("the token file {} is empty: its first line must hold the token", path.display())]
    Empty {
        /// As given to `--token-file`.
        path: PathBuf,
    },
    /// The token has a character a gRPC header cannot carry, or a space.
    #[error("{from} holds an unusable token: it must be printable ASCII without spaces")]
    Unusable {
        /// `the token file PATH` or `NFHOST_TOKEN`.
        from: String,
    },
}

/// A bearer token, kept as the header value it will be sent as.
#[derive(Clone)]
pub struct Token(AsciiMetadataValue);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token of `--token-file PATH`, else of `NFHOST_TOKEN` (unset or blank: none).
    pub fn find(file: Option<&Path>) -> Result<Option<Token>, TokenError> {
        match file {
            Some(path) => Token::from_file(path).map(Some),
            None => match std::env::var(TOKEN_ENV) {
                Ok(text) if !text.trim().is_empty() => {
                    Token::new(&text, || TOKEN_ENV.into()).map(Some)
                }
                _ => Ok(None),
            },
        }
    }

    /// The first line of the file, surrounding whitespace trimmed.
    fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default();
        if line.trim().is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        Token::new(line, || format!("the token file {}", path.display()))
    }

    /// `text` trimmed, checked, as `Bearer TEXT`; `from` names where it came from.
    fn new(text: &str, from: impl FnOnce() -> String) -> Result<Token, TokenError> {
        let token = text.trim();
        // RFC 6750's b64token is narrower; this is what a header can carry, so a
        // server's own token format is never second-guessed.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unusable { from: from() });
        }
        let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| TokenError::Unusable { from: from() })?;
        // Kept out of HPACK's dynamic table and out of `http`'s Debug output.
        value.set_sensitive(true);
        Ok(Token(value))
    }
}

/// Puts `authorization: Bearer TOKEN` on every call, when there is a token.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Token>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("token", &self.token).finish()
    }
}

impl Auth {
    /// Sends `token` with every call, or nothing.
    pub fn new(token: Option<Token>) -> Self {
        Auth { token }
    }

    /// True when calls carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(Token(value)) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_file as file;

    fn header(token: Token) -> String {
        let mut auth = Auth::new(Some(token));
        let request = auth.call(Request::new(())).expect("call");
        let value = request.metadata().get("authorization").expect("header");
        value.to_str().expect("ascii").to_owned()
    }

    #[test]
    fn the_first_line_trimmed_is_the_token() {
        let path = file("token", "  s3cret-t0ken \nsecond line\n");
        let token = Token::find(Some(&path)).expect("read").expect("token");
        assert_eq!(header(token), "Bearer s3cret-t0ken");
    }

    #[test]
    fn an_empty_file_is_named() {
        for text in ["", "\n", "   \nsecond\n"] {
            let path = file("empty", text);
            let e = Token::find(Some(&path)).expect_err("empty");
            assert!(matches!(e, TokenError::Empty { .. }), "{e:?}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        let e = Token::find(Some(Path::new("/nonexistent/token"))).expect_err("absent");
        assert!(e.to_string().contains("/nonexistent/token"), "{e}");
    }

    #[test]
    fn an_unusable_token_is_refused_without_showing_it() {
        for text in ["two words", "caf\u{e9}", "tab\there"] {
            let e = Token::new(text, || "the test".into()).expect_err(text);
            assert!(!e.to_string().contains(text), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = Token::new("hunter2", || "the test".into()).expect("token");
        let auth = Auth::new(Some(token));
        let debug = format!("{auth:?} {auth:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn without_a_token_no_header_is_sent() {
        let mut auth = Auth::default();
        let request = auth.call(Request::new(())).expect("call");
        assert!(request.metadata().get("authorization").is_none());
    }
}
