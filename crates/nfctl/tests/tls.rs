//! How `nfctl` reaches a server: TLS, mutual TLS and bearer tokens, with the real
//! binary against an in-process double of `VfService` on `127.0.0.1:0` that
//! records the `authorization` header and the client certificate of each call.
//! The certificates are made by each test with rcgen.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{serve_on_a_thread, stderr, stdout};
use nfhost_api::proto::{
    self,
    vf_service_server::{VfService, VfServiceServer},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

// ------------------------------------------------------------- certificates

/// PEM files in a directory of the test's own: a CA, a server certificate for
/// `localhost` and 127.0.0.1 signed by it, and a client certificate signed by it.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    server_pem: String,
    server_key: String,
    /// The client certificate as DER, to compare with what the server saw.
    client_der: Vec<u8>,
}

impl Pki {
    fn new(test: &str) -> Pki {
        Pki::naming(test, &["localhost", "127.0.0.1"])
    }

    /// With a server certificate for `names` only.
    fn naming(test: &str, names: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("nfctl-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = new_ca("nfctl test CA");

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, "nfhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &ca).expect("server cert");

        let client_key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tenant-a");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = params.signed_by(&client_key, &ca).expect("client cert");

        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key: server_key.serialize_pem(),
            client_der: client.der().to_vec(),
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki.write("client.pem", &client.pem());
        pki.write("client.key", &client_key.serialize_pem());
        pki.write("other-ca.pem", &new_ca("another CA").pem());
        pki
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// The server's TLS; a client certificate is asked for and checked against the
    /// CA, and required when `required`.
    fn server_tls(&self, required: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.server_pem, &self.server_key))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(!required)
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

// ------------------------------------------------------------- the double

/// What the double answers every call with.
#[derive(Debug, Clone, Copy, Default)]
enum Answer {
    #[default]
    Serve,
    Unauthenticated,
    PermissionDenied,
}

/// What one call came with.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    authorization: Option<String>,
    client_cert: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
struct Door {
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Answer,
}

impl Door {
    fn answering(answer: Answer) -> Door {
        Door {
            answer,
            ..Door::default()
        }
    }

    /// Records the call, then answers as told.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let seen = Seen {
            authorization: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_cert: request
                .peer_certs()
                .and_then(|certs| certs.first().map(|c| c.to_vec())),
        };
        if let Ok(mut all) = self.seen.lock() {
            all.push(seen);
        }
        match self.answer {
            Answer::Serve => Ok(()),
            Answer::Unauthenticated => Err(Status::unauthenticated("no credentials")),
            Answer::PermissionDenied => Err(Status::permission_denied(
                "tenant-a may not read pfs/0/vfs/3",
            )),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn vf(index: u32) -> proto::Vf {
    proto::Vf {
        name: format!("pfs/0/vfs/{index}"),
        index,
        mac: format!("02:4e:46:00:00:{:02x}", index + 1),
        mtu: 1500,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl VfService for Door {
    async fn list_vfs(
        &self,
        r: Request<proto::ListVfsRequest>,
    ) -> Result<Response<proto::ListVfsResponse>, Status> {
        self.check(&r)?;
        // Two pages: two calls, each must carry the token.
        let (vfs, next) = match r.get_ref().page_token.as_str() {
            "" => (vec![vf(0)], "page-2"),
            _ => (vec![vf(1)], ""),
        };
        Ok(Response::new(proto::ListVfsResponse {
            vfs,
            next_page_token: next.into(),
        }))
    }

    async fn get_vf(&self, r: Request<proto::GetVfRequest>) -> Result<Response<proto::Vf>, Status> {
        self.check(&r)?;
        Ok(Response::new(vf(3)))
    }

    async fn update_vf(
        &self,
        r: Request<proto::UpdateVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        self.check(&r)?;
        Err(Status::unimplemented("not in this double"))
    }

    async fn reset_vf(
        &self,
        r: Request<proto::ResetVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        self.check(&r)?;
        Err(Status::unimplemented("not in this double"))
    }
}

/// Serves `door` on `127.0.0.1:0`, with `tls` or in cleartext, from a thread of its
/// own for the rest of the test. The listener is bound before this returns.
fn serve(door: Door, tls: Option<ServerTlsConfig>) -> SocketAddr {
    serve_on_a_thread(move |incoming| async move {
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("server TLS");
        }
        server
            .serve_with_incoming(VfServiceServer::new(door), incoming)
            .await
            .expect("serve");
    })
}

// ------------------------------------------------------------- running nfctl

/// Tokens the tests use: none may ever be printed.
const SECRETS: [&str; 3] = ["abc", "env-t0ken-5ecret", "file-t0ken-5ecret"];

/// Runs nfctl with `args` and `env` only (no NFHOST_SERVER or NFHOST_TOKEN from the
/// test's own environment), and checks that no token was printed.
fn nfctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nfctl"));
    command
        .args(args)
        .env_remove("NFHOST_SERVER")
        .env_remove("NFHOST_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let o = within_a_time_limit(command, args);
    let printed = format!("{}{}", stdout(&o), stderr(&o));
    for secret in SECRETS {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    o
}

/// How long nfctl may take: a broken refusal would otherwise leave it waiting
/// for an answer from a listener nobody serves.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `command`, killed (and the test failed) if it is not done within `LIMIT`.
fn within_a_time_limit(mut command: Command, args: &[&str]) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nfctl runs");
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = finished.recv_timeout(LIMIT).is_err();
        if late {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        late
    });
    let o = child.wait_with_output().expect("nfctl ends");
    let _ = done.send(());
    let late = watchdog.join().expect("watchdog");
    assert!(!late, "nfctl {args:?} took longer than {LIMIT:?}");
    o
}

fn token_file(pki: &Pki, text: &str) -> String {
    pki.write("token", text).to_string_lossy().into_owned()
}

/// A listener nobody serves: after nfctl ran, `assert_untouched` tells whether it
/// tried to connect (the kernel queues the connection even if nobody accepts it).
fn trap() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

fn assert_untouched(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("nfctl connected: {other:?}"),
    }
}

// ------------------------------------------------------------- TLS

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new("mtls");
    let door = Door::default();
    let addr = serve(door.clone(), Some(pki.server_tls(true)));
    let server = format!("https://localhost:{}", addr.port());
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let o = nfctl(
        &[
            "vf", "get", "3", "--server", &server, "--ca", &ca, "--cert", &cert, "--key", &key,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("02:4e:46:00:00:04"), "{}", stdout(&o));
    let seen = door.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].client_cert.as_deref(), Some(&pki.client_der[..]));
    assert_eq!(seen[0].authorization, None);
}

#[test]
fn a_server_that_wants_a_client_certificate_refuses_nfctl_without_one() {
    let pki = Pki::new("nocert");
    let door = Door::default();
    let addr = serve(door.clone(), Some(pki.server_tls(true)));
    let server = format!("https://localhost:{}", addr.port());
    let o = nfctl(
        &[
            "vf",
            "get",
            "3",
            "--server",
            &server,
            "--ca",
            &pki.path("ca.pem"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    // TLS 1.3: the server says so after nfctl's side of the handshake, so the
    // first call fails; with the server's alert, or only with a closed connection
    // when the hang-up overtakes it.
    assert!(err.starts_with("nfctl: get pfs/0/vfs/3: "), "{err}");
    assert!(
        err.contains(
            "if the server wants a client certificate, give one it trusts with --cert/--key"
        ),
        "{err}"
    );
    assert!(door.seen().is_empty());
}

#[test]
fn an_untrusted_server_certificate_is_named_as_the_cause() {
    let pki = Pki::new("untrusted");
    let door = Door::default();
    let addr = serve(door.clone(), Some(pki.server_tls(false)));
    let server = format!("https://localhost:{}", addr.port());
    let o = nfctl(
        &[
            "vf",
            "get",
            "3",
            "--server",
            &server,
            "--ca",
            &pki.path("other-ca.pem"),
        ],
        &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "nfctl: TLS handshake with nfhost at {server} failed: "
        )),
        "{err}"
    );
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    assert!(door.seen().is_empty());

    // A certificate for localhost only, and nfctl asked for 127.0.0.1.
    let pki = Pki::naming("wrong-name", &["localhost"]);
    let addr = serve(Door::default(), Some(pki.server_tls(false)));
    let server = format!("https://127.0.0.1:{}", addr.port());
    let o = nfctl(
        &[
            "vf",
            "get",
            "3",
            "--server",
            &server,
            "--ca",
            &pki.path("ca.pem"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn https_to_a_cleartext_server_fails_and_sends_nothing() {
    let pki = Pki::new("cleartext");
    let door = Door::default();
    let addr = serve(door.clone(), None);
    let server = format!("https://127.0.0.1:{}", addr.port());
    let started = Instant::now();
    let o = nfctl(
        &[
            "vf",
            "list",
            "--server",
            &server,
            "--ca",
            &pki.path("ca.pem"),
        ],
        &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains(&server), "{err}");
    assert!(door.seen().is_empty(), "{:?}", door.seen());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------- tokens

#[test]
fn the_token_goes_with_every_call_and_the_file_wins_over_the_environment() {
    let pki = Pki::new("token");
    let door = Door::default();
    let addr = serve(door.clone(), Some(pki.server_tls(false)));
    let server = format!("https://localhost:{}", addr.port());
    let ca = pki.path("ca.pem");

    let o = nfctl(
        &["vf", "list", "--server", &server, "--ca", &ca],
        &[("NFHOST_TOKEN", "abc")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bearer = |token: &str| Seen {
        authorization: Some(format!("Bearer {token}")),
        client_cert: None,
    };
    // `vf list` reads two pages: two calls.
    assert_eq!(door.seen(), vec![bearer("abc"), bearer("abc")]);

    let file = token_file(&pki, "  file-t0ken-5ecret \nnot this line\n");
    let o = nfctl(
        &[
            "vf",
            "get",
            "3",
            "--server",
            &server,
            "--ca",
            &ca,
            "--token-file",
            &file,
        ],
        &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(door.seen().last(), Some(&bearer("file-t0ken-5ecret")));
    assert_eq!(door.seen().len(), 3);
}

#[test]
fn an_empty_or_absent_token_file_is_named() {
    let pki = Pki::new("empty");
    let (listener, port) = trap();
    let server = format!("http://127.0.0.1:{port}");
    let file = token_file(&pki, "\n  \n");
    let absent = pki.path("absent");
    for (path, expect) in [(&file, "is empty"), (&absent, "cannot read the token file")] {
        let o = nfctl(
            &["vf", "get", "3", "--server", &server, "--token-file", path],
            &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with("nfctl: "), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(err.contains(path.as_str()), "{err}");
    }
    assert_untouched(&listener);
}

#[test]
fn a_token_over_http_goes_only_to_this_machine() {
    // Refused before connecting: 0.0.0.0 is not loopback, yet a connection to it
    // would reach the trap on this machine, so the test sends nothing elsewhere.
    let (listener, port) = trap();
    let pki = Pki::new("cleartext-token");
    let file = token_file(&pki, "file-t0ken-5ecret\n");
    for (flags, env) in [
        (&[][..], &[("NFHOST_TOKEN", "env-t0ken-5ecret")][..]),
        (&["--token-file", file.as_str()][..], &[][..]),
    ] {
        let server = format!("http://0.0.0.0:{port}");
        let mut args = vec!["vf", "get", "3", "--server", &server];
        args.extend(flags);
        let started = Instant::now();
        let o = nfctl(&args, env);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(started.elapsed() < Duration::from_secs(3));
        let err = stderr(&o);
        assert!(err.contains("cleartext"), "{err}");
        assert!(err.contains("use https://"), "{err}");
        assert!(!err.contains("connect"), "{err}");
    }
    assert_untouched(&listener);

    // To 127.0.0.1 it is allowed, and sent.
    let door = Door::default();
    let addr = serve(door.clone(), None);
    let o = nfctl(
        &["vf", "get", "3", "--server", &format!("http://{addr}")],
        &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = door.seen();
    assert_eq!(
        seen.first().and_then(|s| s.authorization.as_deref()),
        Some("Bearer env-t0ken-5ecret")
    );
}

// ------------------------------------------------------------- refusals

#[test]
fn tls_options_with_http_are_refused_before_connecting() {
    let pki = Pki::new("tls-over-http");
    let (listener, port) = trap();
    let server = format!("http://127.0.0.1:{port}");
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    for (flags, named) in [
        (vec!["--ca", ca.as_str()], "(--ca)"),
        (vec!["--cert", &cert, "--key", &key], "(--cert, --key)"),
    ] {
        let mut args = vec!["vf", "get", "3", "--server", &server];
        args.extend(flags);
        let o = nfctl(&args, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            format!(
                "nfctl: TLS options given {named} but the server URL is {server}: use https://\n"
            )
        );
    }
    assert_untouched(&listener);
}

#[test]
fn cert_without_key_is_a_usage_error() {
    let pki = Pki::new("half");
    let cert = pki.path("client.pem");
    for flags in [["--cert", &cert], ["--key", &cert]] {
        let mut args = vec!["vf", "get", "3", "--server", "https://localhost:1"];
        args.extend(flags);
        let o = nfctl(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("--cert and --key go together"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn a_file_that_is_not_pem_is_named() {
    let pki = Pki::new("not-pem");
    let junk = pki
        .write("junk.pem", "not PEM\n")
        .to_string_lossy()
        .into_owned();
    let (listener, port) = trap();
    let server = format!("https://127.0.0.1:{port}");
    for (flag, args) in [
        ("--ca", vec!["--ca", junk.as_str()]),
        ("--cert", vec!["--cert", &junk, "--key", &junk]),
    ] {
        let mut all = vec!["vf", "get", "3", "--server", &server];
        all.extend(args);
        let o = nfctl(&all, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with(&format!("nfctl: {flag} {junk}: ")), "{err}");
    }
    let cert = pki.path("client.pem");
    let o = nfctl(
        &[
            "vf", "get", "3", "--server", &server, "--cert", &cert, "--key", &cert,
        ],
        &[],
    );
    assert!(stderr(&o).contains("no PEM private key"), "{}", stderr(&o));
    assert_untouched(&listener);
}

// ------------------------------------------------------------- refused calls

#[test]
fn unauthenticated_says_how_to_give_credentials() {
    let door = Door::answering(Answer::Unauthenticated);
    let addr = serve(door.clone(), None);
    let o = nfctl(
        &["vf", "get", "3", "--server", &format!("http://{addr}")],
        &[("NFHOST_TOKEN", "env-t0ken-5ecret")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("nfctl: get pfs/0/vfs/3: UNAUTHENTICATED: no credentials\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "give a token with --token-file or NFHOST_TOKEN, or a client certificate with --cert/--key"
        ),
        "{err}"
    );
    assert_eq!(door.seen().len(), 1);
}

#[test]
fn permission_denied_shows_the_servers_message_only() {
    let door = Door::answering(Answer::PermissionDenied);
    let addr = serve(door, None);
    let o = nfctl(
        &["vf", "get", "3", "--server", &format!("http://{addr}")],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "nfctl: get pfs/0/vfs/3: PERMISSION_DENIED: tenant-a may not read pfs/0/vfs/3\n"
    );
}

#[test]
fn help_documents_the_connection_flags() {
    let o = nfctl(&["--help"], &[]);
    let out = stdout(&o);
    for flag in [
        "--ca <FILE>",
        "--cert <FILE>",
        "--key <FILE>",
        "--token-file <FILE>",
        "NFHOST_TOKEN",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
    // Documented on the subcommands too (global flags).
    assert!(stdout(&nfctl(&["vf", "get", "--help"], &[])).contains("--token-file"));
}
