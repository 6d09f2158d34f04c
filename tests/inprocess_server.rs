//! Proves the in-process FTPS test server (tests/support/ftps_server.rs)
//! works with a real client: suppaftp's tokio API over rustls (ring), the
//! way ferry itself talks to servers.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use suppaftp::FtpError;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::certs::{Leaf, TestPki};
use support::ftps_server::{self, ClientCerts, ServerOptions, TestServer, TlsVersions};

/// Every network step gets this long; a hang fails the test instead of CI.
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out after {STEP:?}"))
}

/// Bytes an ASCII-mode transfer or a text-minded server would mangle.
fn awkward_bytes() -> Vec<u8> {
    let mut bytes = b"ISA*00*\r\nline2\nline3\r\0\xff\xfe\x00\r\r\n\n".to_vec();
    bytes.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    bytes.extend_from_slice(b"\r\n\xff");
    bytes
}

struct ClientSetup<'a> {
    trust: &'a TestPki,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    client_cert: Option<&'a Leaf>,
}

impl<'a> ClientSetup<'a> {
    fn trusting(trust: &'a TestPki) -> Self {
        ClientSetup {
            trust,
            versions: rustls::DEFAULT_VERSIONS,
            client_cert: None,
        }
    }

    /// One `ClientConfig` (and so one session store) per control connection,
    /// as DESIGN.md asks.
    fn connector(&self) -> AsyncRustlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.trust.ca_der.clone()))
            .expect("add test CA");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(self.versions)
                .expect("protocol versions")
                .with_root_certificates(roots);
        let config = match self.client_cert {
            None => builder.with_no_client_auth(),
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
                )
                .expect("client cert"),
        };
        AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// Connects, upgrades with AUTH TLS (suppaftp then sends PBSZ 0 and PROT P).
    async fn secure(&self, server: &TestServer) -> Result<AsyncRustlsFtpStream, FtpError> {
        let ftp = within("connect", AsyncRustlsFtpStream::connect(server.addr)).await?;
        within("AUTH TLS", ftp.into_secure(self.connector(), "localhost")).await
    }
}

/// Connected, secured, logged in, binary.
async fn session(server: &TestServer) -> AsyncRustlsFtpStream {
    let mut ftp = ClientSetup::trusting(&server.pki)
        .secure(server)
        .await
        .expect("secure control connection");
    within("login", ftp.login(&server.user, &server.password))
        .await
        .expect("login");
    within("TYPE I", ftp.transfer_type(FileType::Binary))
        .await
        .expect("TYPE I");
    ftp
}

async fn upload(ftp: &mut AsyncRustlsFtpStream, name: &str, bytes: &[u8]) {
    let mut stream = within("STOR", ftp.put_with_stream(name))
        .await
        .expect("STOR accepted");
    within("write data", stream.write_all(bytes))
        .await
        .expect("write data");
    within("finish upload", stream.finish())
        .await
        .expect("226 after upload");
}

async fn download(ftp: &mut AsyncRustlsFtpStream, name: &str) -> Vec<u8> {
    let mut stream = within("RETR", ftp.retr_as_stream(name))
        .await
        .expect("RETR accepted");
    let mut got = Vec::new();
    within("read data", stream.read_to_end(&mut got))
        .await
        .expect("read data");
    within("finish download", stream.finish())
        .await
        .expect("226 after download");
    got
}

/// The three-digit code of a refusal. suppaftp maps codes it does not know
/// (534, 232, ...) to a `Status` whose `code()` is 0, so read the text.
fn reply_code(err: &FtpError) -> Option<u32> {
    match err {
        FtpError::UnexpectedResponse(resp) => String::from_utf8_lossy(&resp.body)
            .get(..3)
            .and_then(|code| code.parse().ok()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_round_trips_binary_bytes_over_explicit_ftps() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = session(&server).await;
    let bytes = awkward_bytes();

    upload(&mut ftp, "x12.bin", &bytes).await;
    let on_disk = std::fs::read(server.root().join("x12.bin")).expect("file in server root");
    assert!(on_disk == bytes, "server stored different bytes");

    let size = within("SIZE", ftp.size("x12.bin")).await.expect("SIZE");
    assert_eq!(size, bytes.len());
    assert!(
        download(&mut ftp, "x12.bin").await == bytes,
        "downloaded different bytes"
    );

    // Many data connections on one session: each PASV gets a fresh port.
    for i in 0..10 {
        let name = format!("small-{i}.bin");
        upload(&mut ftp, &name, &bytes[..1000 + i]).await;
        assert_eq!(download(&mut ftp, &name).await, &bytes[..1000 + i]);
    }
    within("QUIT", ftp.quit()).await.expect("QUIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_lists_renames_and_deletes_files() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = session(&server).await;
    upload(&mut ftp, "invoice.tmp", b"ST*810*0001~\r\n").await;

    let list = within("LIST", ftp.list(None)).await.expect("LIST");
    assert!(
        list.iter().any(|l| l.ends_with("invoice.tmp")),
        "LIST: {list:?}"
    );
    let mlsd = within("MLSD", ftp.mlsd(None)).await.expect("MLSD");
    assert!(
        mlsd.iter().any(|l| l.ends_with("invoice.tmp")),
        "MLSD: {mlsd:?}"
    );

    within("RNFR/RNTO", ftp.rename("invoice.tmp", "invoice.x12"))
        .await
        .expect("rename");
    assert!(!server.root().join("invoice.tmp").exists());
    assert_eq!(
        std::fs::read(server.root().join("invoice.x12")).unwrap(),
        b"ST*810*0001~\r\n"
    );
    let names = within("NLST", ftp.nlst(None)).await.expect("NLST");
    assert!(
        names.iter().any(|n| n.ends_with("invoice.x12")),
        "NLST: {names:?}"
    );

    within("DELE", ftp.rm("invoice.x12")).await.expect("DELE");
    assert!(!server.root().join("invoice.x12").exists());
    let err = within("DELE missing", ftp.rm("invoice.x12"))
        .await
        .expect_err("deleting a missing file fails");
    assert_eq!(reply_code(&err), Some(550), "{err}");

    within("MKD", ftp.mkdir("inbound")).await.expect("MKD");
    within("CWD", ftp.cwd("inbound")).await.expect("CWD");
    upload(&mut ftp, "nested.bin", b"nested").await;
    assert!(server.root().join("inbound/nested.bin").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_honours_rest_for_upload_and_download() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = session(&server).await;
    let bytes = awkward_bytes();
    let half = bytes.len() / 2;

    // An interrupted upload left the first half; resume at its size.
    upload(&mut ftp, "resume.bin", &bytes[..half]).await;
    let have = within("SIZE", ftp.size("resume.bin")).await.expect("SIZE");
    within("REST", ftp.resume_transfer(have))
        .await
        .expect("REST");
    upload(&mut ftp, "resume.bin", &bytes[have..]).await;
    assert!(std::fs::read(server.root().join("resume.bin")).unwrap() == bytes);

    within("REST", ftp.resume_transfer(half))
        .await
        .expect("REST");
    assert!(download(&mut ftp, "resume.bin").await == bytes[half..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_refuses_wrong_password_with_530() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = ClientSetup::trusting(&server.pki)
        .secure(&server)
        .await
        .expect("secure control connection");
    let err = within("login", ftp.login(server.user.as_str(), "not-the-password"))
        .await
        .expect_err("wrong password refused");
    assert_eq!(reply_code(&err), Some(530), "{err}");

    let mut ftp = ClientSetup::trusting(&server.pki)
        .secure(&server)
        .await
        .expect("secure control connection");
    let err = within("login", ftp.login("intruder", server.password.as_str()))
        .await
        .expect_err("unknown user refused");
    assert_eq!(reply_code(&err), Some(530), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_refuses_plaintext_login_when_ftps_is_required() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = within("connect", AsyncRustlsFtpStream::connect(server.addr))
        .await
        .expect("connect");
    let err = within("login", ftp.login(&server.user, &server.password))
        .await
        .expect_err("plaintext login refused");
    // libunftp answers USER with "534 A TLS connection is required on the
    // control channel".
    assert_eq!(reply_code(&err), Some(534), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_certificate_only_verifies_against_its_own_ca() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let other_ca = TestPki::new();
    let err = ClientSetup::trusting(&other_ca)
        .secure(&server)
        .await
        .map(|_| ())
        .expect_err("a client trusting another CA must refuse the server");
    assert!(matches!(err, FtpError::SecureError(_)), "{err}");
    // ...while a client trusting the test CA gets through.
    session(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_presents_an_expired_leaf_when_asked() {
    let pki = Arc::new(TestPki::new());
    let expired = pki.expired_leaf(&["localhost", "127.0.0.1"]);
    let server = ftps_server::start(ServerOptions {
        pki: pki.clone(),
        leaf: Some(expired),
        ..ServerOptions::default()
    })
    .await;
    let err = ClientSetup::trusting(&pki)
        .secure(&server)
        .await
        .map(|_| ())
        .expect_err("expired certificate refused");
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_requires_a_ca_signed_client_certificate_when_configured() {
    let server = ftps_server::start(ServerOptions {
        client_certs: ClientCerts::Require,
        ..ServerOptions::default()
    })
    .await;
    let without = ClientSetup::trusting(&server.pki).secure(&server).await;
    assert!(without.is_err(), "a client without a certificate got in");

    let client = server.pki.client_leaf("ferry-client");
    let mut ftp = ClientSetup {
        client_cert: Some(&client),
        ..ClientSetup::trusting(&server.pki)
    }
    .secure(&server)
    .await
    .expect("client certificate accepted");
    within("login", ftp.login(&server.user, &server.password))
        .await
        .expect("login");
    within("TYPE I", ftp.transfer_type(FileType::Binary))
        .await
        .expect("TYPE I");
    // The data connection needs the client certificate too.
    upload(&mut ftp, "with-client-cert.bin", b"abc").await;
    assert_eq!(download(&mut ftp, "with-client-cert.bin").await, b"abc");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_speaks_tls12_by_default_and_tls13_when_asked() {
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let tls13_only = TLS13_ONLY;
    let tls12_server = ftps_server::start(ServerOptions::default()).await;
    let refused = ClientSetup {
        versions: tls13_only,
        ..ClientSetup::trusting(&tls12_server.pki)
    }
    .secure(&tls12_server)
    .await;
    assert!(refused.is_err(), "default server must not speak TLS 1.3");

    let tls13_server = ftps_server::start(ServerOptions {
        tls_versions: TlsVersions::Tls13,
        ..ServerOptions::default()
    })
    .await;
    let mut ftp = ClientSetup {
        versions: tls13_only,
        ..ClientSetup::trusting(&tls13_server.pki)
    }
    .secure(&tls13_server)
    .await
    .expect("TLS 1.3 handshake");
    within(
        "login",
        ftp.login(&tls13_server.user, &tls13_server.password),
    )
    .await
    .expect("login");
    within("TYPE I", ftp.transfer_type(FileType::Binary))
        .await
        .expect("TYPE I");
    for i in 0..5 {
        let name = format!("t13-{i}.bin");
        upload(&mut ftp, &name, &awkward_bytes()).await;
        assert!(download(&mut ftp, &name).await == awkward_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_server_feat_lists_size_mdtm_mlsd_rest_and_no_hash() {
    let server = ftps_server::start(ServerOptions::default()).await;
    let mut ftp = session(&server).await;
    let feat = within("FEAT", ftp.feat()).await.expect("FEAT");
    let mut names: Vec<&String> = feat.keys().collect();
    names.sort();
    eprintln!("libunftp FEAT: {feat:?}");
    for expected in [
        "SIZE", "MDTM", "MLSD", "MLST", "EPSV", "UTF8", "REST", "AUTH", "PBSZ", "PROT",
    ] {
        assert!(
            feat.contains_key(expected),
            "FEAT lacks {expected}: {names:?}"
        );
    }
    assert!(!feat.contains_key("HASH"), "libunftp grew HASH: {names:?}");
    upload(&mut ftp, "dated.bin", b"x").await;
    within("MDTM", ftp.mdtm("dated.bin")).await.expect("MDTM");
}

#[tokio::test(flavor = "multi_thread")]
async fn inprocess_servers_run_side_by_side_and_stop_cleanly() {
    let a = ftps_server::start(ServerOptions::default()).await;
    let b = ftps_server::start(ServerOptions::default()).await;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.root(), b.root());

    let mut on_a = session(&a).await;
    let mut on_b = session(&b).await;
    upload(&mut on_a, "a.bin", b"from a").await;
    upload(&mut on_b, "b.bin", b"from b").await;
    assert!(a.root().join("a.bin").is_file() && !a.root().join("b.bin").exists());
    assert!(b.root().join("b.bin").is_file() && !b.root().join("a.bin").exists());
    assert_eq!(a.connections_accepted(), 1);

    let addr = a.addr;
    a.stop().await;
    // The open session is closed...
    let after = within("NOOP after stop", on_a.noop()).await;
    assert!(after.is_err(), "session survived stop()");
    // ...and nobody listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The other server is untouched.
    within("NOOP", on_b.noop()).await.expect("b still serves");
}
