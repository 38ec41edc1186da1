//! TLS and mutual TLS against the real service (`nfhost serve --auth FILE
//! --tls-cert … --tls-key … --client-ca …`), with certificates made here (rcgen):
//! a client certificate of the CA names its principal by CN, on gRPC and on the
//! dashboard; a certificate of a foreign CA, an expired one, one naming nobody
//! and a cleartext client are served nothing; nfctl's `https://` never falls
//! back to cleartext.

#[path = "common/server.rs"]
mod server;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nfhost::auth::principals::token_digest_hex;
use nfhost_api::proto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use server::{Server, TempDir, nfctl_bin, runtime};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const OPS: &str = "ops-token-tls-4c1e9a";

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

/// A CA that signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`: for `names` (server) or with `cn` (client).
fn leaf(ca: &Ca, names: &[&str], cn: &str, expired: bool) -> Pem {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

struct Tls {
    _data: TempDir,
    server: Server,
    http: u16,
    ca: Ca,
    rt: tokio::runtime::Runtime,
}

fn start() -> Tls {
    let data = TempDir::new("tls");
    let ca = ca("nfhost test CA");
    let server_cert = leaf(&ca, &["localhost", "127.0.0.1"], "nfhost", false);
    let write = |name: &str, text: &str| {
        let path = data.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cert = write("server.pem", &server_cert.cert);
    let key = write("server.key", &server_cert.key);
    let client_ca = write("ca.pem", &ca.pem);
    let auth = write(
        "principals.toml",
        &format!(
            "[[admin]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n\n[[tenant]]\nname = \"blue\"\n",
            token_digest_hex(OPS.as_bytes())
        ),
    );
    let http = server::free_port();
    let server = Server::spawn(
        &data.0.join("state"),
        &[
            "--auth",
            &auth,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &client_ca,
            "--wire",
            "none",
            "--vfs",
            "8",
            "--http",
            &format!("127.0.0.1:{http}"),
        ],
        Stdio::inherit(),
    );
    let rt = runtime();
    let tls = Tls {
        _data: data,
        server,
        http,
        ca,
        rt,
    };
    // Serving once the health service answers over TLS.
    server::wait_until("the service answers over TLS", 30, || {
        let Ok(channel) = tls.channel(None) else {
            return false;
        };
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        tls.rt
            .block_on(health.check(tonic_health::pb::HealthCheckRequest::default()))
            .is_ok_and(|r| r.into_inner().status == 1)
    });
    tls
}

impl Tls {
    fn url(&self) -> String {
        format!("https://localhost:{}", self.server.port)
    }

    /// A TLS channel trusting the test CA, with `identity` as client certificate.
    fn channel(&self, identity: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.pem))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
        }
        let endpoint = Channel::from_shared(self.url())
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5));
        self.rt.block_on(endpoint.connect())
    }

    /// ListNfs over a channel with `identity` and an optional token.
    fn list_nfs(
        &self,
        identity: Option<&Pem>,
        token: Option<&str>,
    ) -> Result<Vec<proto::Nf>, Code> {
        let channel = self.channel(identity).map_err(|_| Code::Unavailable)?;
        let mut nfs = proto::nf_service_client::NfServiceClient::new(channel);
        let mut request = tonic::Request::new(proto::ListNfsRequest::default());
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        self.rt
            .block_on(nfs.list_nfs(request))
            .map(|r| r.into_inner().nfs)
            .map_err(|s| s.code())
    }

    /// `GET path` on the dashboard over TLS: the status line's code, and the body.
    fn https_get(
        &self,
        path: &str,
        identity: Option<&Pem>,
        token: Option<&str>,
    ) -> Result<(u16, String), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let port = self.http;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        self.rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&buf).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no status line in {text:?}"))?;
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Ok((status, body))
        })
    }
}

#[test]
fn client_certificates_name_principals_and_bad_ones_get_nothing() {
    let t = start();
    let blue = leaf(&t.ca, &[], "blue", false);
    let mallory = leaf(&t.ca, &[], "mallory", false);
    let expired = leaf(&t.ca, &[], "blue", true);
    let foreign_ca = ca("someone else's CA");
    let foreign = leaf(&foreign_ca, &[], "blue", false);

    // A certificate of the CA names tenant blue: its NF records it.
    let channel = t.channel(Some(&blue)).expect("mutual TLS handshake");
    let mut nfs = proto::nf_service_client::NfServiceClient::new(channel);
    let created =
        t.rt.block_on(nfs.create_nf(proto::CreateNfRequest {
            nf: Some(proto::Nf {
                name: "nfs/tls1".into(),
                kind: "l2fwd".into(),
                ..Default::default()
            }),
            validate_only: false,
        }))
        .expect("blue creates over mutual TLS")
        .into_inner();
    assert_eq!(created.tenant, "blue");
    assert_eq!(t.list_nfs(Some(&blue), None).unwrap().len(), 1);
    // A token over TLS without a certificate: the admin.
    assert_eq!(t.list_nfs(None, Some(OPS)).unwrap().len(), 1);
    // TLS without any credential, and a certificate naming no principal.
    assert_eq!(t.list_nfs(None, None), Err(Code::Unauthenticated));
    assert_eq!(t.list_nfs(Some(&mallory), None), Err(Code::Unauthenticated));
    // A foreign CA's certificate and an expired one: no call is served (the
    // handshake fails, or the connection is closed).
    for (what, id) in [("foreign CA", &foreign), ("expired", &expired)] {
        let got = t.list_nfs(Some(id), Some(OPS));
        assert!(got.is_err(), "{what}: a call was served: {got:?}");
        assert_ne!(got, Err(Code::PermissionDenied), "{what}");
    }
    // Cleartext to the TLS port: nothing.
    let plain = t.rt.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", t.server.port))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
        match channel {
            Err(e) => Err(e.to_string()),
            Ok(ch) => proto::pf_service_client::PfServiceClient::new(ch)
                .get_pf(proto::GetPfRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        }
    });
    assert!(plain.is_err(), "a cleartext call was served");

    // The dashboard over TLS: the same principals.
    let (status, body) = t
        .https_get("/api/v1/nfs", Some(&blue), None)
        .expect("https");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nfs/tls1"), "{body}");
    let (status, _) = t.https_get("/metrics", Some(&blue), None).expect("https");
    assert_eq!(status, 403, "a tenant's certificate is not an admin's");
    let (status, _) = t.https_get("/metrics", None, Some(OPS)).expect("https");
    assert_eq!(status, 200);
    let (status, _) = t.https_get("/api/v1/nfs", None, None).expect("https");
    assert_eq!(status, 401);
    let (status, _) = t.https_get("/", None, None).expect("https");
    assert_eq!(status, 200, "the page is public");
    for (what, id) in [("foreign CA", &foreign), ("expired", &expired)] {
        let got = t.https_get("/api/v1/nfs", Some(id), Some(OPS));
        assert!(
            !matches!(got, Ok((200, _))),
            "{what}: the dashboard served it: {got:?}"
        );
    }
}

/// nfctl with an `https://` URL against a cleartext server fails, never falls
/// back to cleartext; against the TLS server it works with the CA and a token.
#[test]
fn nfctl_https_is_tls_or_an_error() {
    let data = TempDir::new("tls-nfctl");
    let plain = Server::start(&data.0, &["--wire", "none", "--vfs", "4"]);
    let out = std::process::Command::new(nfctl_bin())
        .args([
            "--server",
            &format!("https://127.0.0.1:{}", plain.port),
            "pf",
            "get",
        ])
        .output()
        .expect("nfctl runs");
    assert!(
        !out.status.success(),
        "nfctl spoke cleartext to an https:// URL"
    );
    plain.stop();

    let t = start();
    let dir = TempDir::new("tls-nfctl-ca");
    let ca_file = dir.0.join("ca.pem");
    std::fs::write(&ca_file, &t.ca.pem).unwrap();
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, format!("{OPS}\n")).unwrap();
    let out = std::process::Command::new(nfctl_bin())
        .args(["--server", &t.url(), "--ca"])
        .arg(&ca_file)
        .arg("--token-file")
        .arg(&token_file)
        .args(["pf", "get"])
        .output()
        .expect("nfctl runs");
    assert!(
        out.status.success(),
        "nfctl over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blue = leaf(&t.ca, &[], "blue", false);
    std::fs::write(dir.0.join("blue.pem"), &blue.cert).unwrap();
    std::fs::write(dir.0.join("blue.key"), &blue.key).unwrap();
    let out = std::process::Command::new(nfctl_bin())
        .args(["--server", &t.url(), "--ca"])
        .arg(&ca_file)
        .arg("--cert")
        .arg(dir.0.join("blue.pem"))
        .arg("--key")
        .arg(dir.0.join("blue.key"))
        .args(["-o", "json", "nf", "list"])
        .output()
        .expect("nfctl runs");
    assert!(
        out.status.success(),
        "nfctl with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(OPS), "no token in nfctl's output");
}
