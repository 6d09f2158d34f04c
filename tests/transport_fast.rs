//! Fast tier for the FTPS transport: ferry's `FtpsSession` against the
//! in-process FTPS server with certificates made at test time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferry::config::{Secret, Server, TlsVersion};
use ferry::transport::{ErrorKind, FtpsSession, Remote, TransportError};
use sha2::{Digest, Sha256};
use support::certs::{TestPki, self_signed};
use support::ftps_server::{self, ServerOptions, TestServer, TlsVersions};

fn server_for(srv: &TestServer, host: &str) -> Server {
    Server {
        user: srv.user.clone(),
        password: Some(Secret::new(srv.password.clone())),
        ca_file: Some(srv.ca_file().to_path_buf()),
        timeout: Duration::from_secs(10),
        ..Server::new("inproc", host, srv.port())
    }
}

async fn connect(srv: &TestServer) -> FtpsSession {
    FtpsSession::connect(Arc::new(server_for(srv, "127.0.0.1")))
        .await
        .expect("connect")
}

async fn connect_err(server: Server) -> TransportError {
    match FtpsSession::connect(Arc::new(server)).await {
        Ok(_) => panic!("connected although it should not"),
        Err(e) => e,
    }
}

/// Connects (panicking with `why` if refused) and uploads one small file.
async fn connect_and_upload(server: Server, path: &str, why: &str) {
    let mut s = FtpsSession::connect(Arc::new(server)).await.expect(why);
    s.upload(path, 0, &mut &b"ok"[..]).await.unwrap();
    s.close().await;
}

fn tricky_bytes() -> Vec<u8> {
    let mut v = b"ISA*00*~\r\nGS*HC~\nST*837\r\r\n".to_vec();
    v.extend([0u8, 0, 0xff, 0xfe, b'\n', 0x1a, b'\r']);
    v.extend((0..=255u8).cycle().take(70_000));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_lf_nul_and_ff_bytes_arrive_byte_identical_both_ways() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = connect(&srv).await;
    let data = tricky_bytes();
    assert_eq!(
        s.upload("/tricky.837", 0, &mut &data[..]).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(
        std::fs::read(srv.root().join("tricky.837")).unwrap(),
        data,
        "on the server's disk"
    );
    let mut back = Vec::new();
    assert_eq!(
        s.download("/tricky.837", 0, &mut back).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(back, data);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_files_go_up_and_come_down_empty() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = connect(&srv).await;
    assert_eq!(s.upload("/empty.837", 0, &mut &b""[..]).await.unwrap(), 0);
    assert_eq!(
        std::fs::metadata(srv.root().join("empty.837"))
            .unwrap()
            .len(),
        0
    );
    let mut back = Vec::new();
    assert_eq!(s.download("/empty.837", 0, &mut back).await.unwrap(), 0);
    assert!(back.is_empty());
    assert_eq!(s.size("/empty.837").await.unwrap(), Some(0));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_50_mb_file_streams_up_and_down_intact() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = connect(&srv).await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.837");
    let data: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let want = Sha256::digest(&data);
    let mut f = tokio::fs::File::open(&src).await.unwrap();
    assert_eq!(
        s.upload("/big.837", 0, &mut f).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(
        Sha256::digest(std::fs::read(srv.root().join("big.837")).unwrap()),
        want
    );
    let dst = tmp.path().join("back.837");
    let mut out = tokio::fs::File::create(&dst).await.unwrap();
    assert_eq!(
        s.download("/big.837", 0, &mut out).await.unwrap(),
        data.len() as u64
    );
    drop(out);
    assert_eq!(Sha256::digest(std::fs::read(&dst).unwrap()), want);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_rename_delete_mkdir_and_size_work() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = connect(&srv).await;
    s.mkdir("/inbound").await.unwrap();
    s.upload("/inbound/a b.837.part", 0, &mut &b"hello"[..])
        .await
        .unwrap();
    s.rename("/inbound/a b.837.part", "/inbound/a b.837")
        .await
        .unwrap();
    let listing = s.list("/inbound").await.unwrap();
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_eq!(
        (
            listing[0].name.as_str(),
            listing[0].size,
            listing[0].is_file
        ),
        ("a b.837", 5, true)
    );
    assert!(listing[0].mtime.is_some());
    assert_eq!(s.size("/inbound/a b.837").await.unwrap(), Some(5));
    assert_eq!(s.size("/inbound/nope.837").await.unwrap(), None);
    s.delete("/inbound/a b.837").await.unwrap();
    assert!(s.list("/inbound").await.unwrap().is_empty());
    let err = s.delete("/inbound/a b.837").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FileUnavailable, "{err}");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_and_download_resume_from_an_offset() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = connect(&srv).await;
    let data = tricky_bytes();
    let half = data.len() / 2;
    s.upload("/r.837", 0, &mut &data[..half]).await.unwrap();
    s.upload("/r.837", half as u64, &mut &data[half..])
        .await
        .unwrap();
    assert_eq!(std::fs::read(srv.root().join("r.837")).unwrap(), data);
    let mut tail = Vec::new();
    s.download("/r.837", 1000, &mut tail).await.unwrap();
    assert_eq!(tail, &data[1000..]);
    assert!(s.capabilities().resume);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls13_data_connections_all_resume_the_control_session() {
    let srv = ftps_server::start(ServerOptions {
        tls_versions: TlsVersions::Tls13,
        ..Default::default()
    })
    .await;
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.tls_versions = Some(vec![TlsVersion::V1_3]);
    let mut s = FtpsSession::connect(Arc::new(cfg)).await.unwrap();
    for i in 0..30 {
        s.upload(&format!("/t{i}.837"), 0, &mut &b"x"[..])
            .await
            .unwrap();
    }
    let r = s.report();
    let tls = r.tls.unwrap();
    assert_eq!(tls.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.data_connections, tls.data_resumed);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_tls_falls_back_to_13_when_the_server_refuses_12() {
    let srv = ftps_server::start(ServerOptions {
        tls_versions: TlsVersions::Tls13,
        ..Default::default()
    })
    .await;
    let mut s = connect(&srv).await;
    let r = s.report();
    assert_eq!(
        r.tls.unwrap().version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(r.tls_reason.contains("refused TLS 1.2"), "{}", r.tls_reason);
    s.upload("/x.837", 0, &mut &b"x"[..]).await.unwrap();
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_from_another_ca_is_untrusted_and_names_its_fingerprint() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let other = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.ca_file = Some(other.write_ca_to(dir.path()));
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::UntrustedCertificate, "{err}");
    assert!(err.to_string().contains(&srv.leaf.fingerprint()), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_for_another_host_name_is_refused() {
    let pki = Arc::new(TestPki::new());
    let leaf = pki.leaf(&["partner.example"]);
    let srv = ftps_server::start(ServerOptions {
        pki,
        leaf: Some(leaf),
        ..Default::default()
    })
    .await;
    let err = connect_err(server_for(&srv, "127.0.0.1")).await;
    assert_eq!(err.kind(), ErrorKind::WrongHostName, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_certificate_is_refused() {
    let pki = Arc::new(TestPki::new());
    let leaf = pki.expired_leaf(&["localhost", "127.0.0.1"]);
    let srv = ftps_server::start(ServerOptions {
        pki,
        leaf: Some(leaf),
        ..Default::default()
    })
    .await;
    let err = connect_err(server_for(&srv, "127.0.0.1")).await;
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_self_signed_certificate_is_accepted() {
    let leaf = self_signed(&["localhost"]);
    let srv = ftps_server::start(ServerOptions {
        leaf: Some(leaf.clone()),
        ..Default::default()
    })
    .await;
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.ca_file = None;
    cfg.pin_sha256 = Some(ferry::config::parse_fingerprint(&leaf.fingerprint()).unwrap());
    connect_and_upload(cfg, "/pinned.837", "a matching pin is trusted").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_mismatch_is_refused_even_for_a_ca_signed_certificate() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.pin_sha256 = Some([0x11; 32]);
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::PinMismatch, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&srv.leaf.fingerprint()),
        "names the presented fingerprint: {msg}"
    );
    assert!(msg.contains("11:11:11"), "names the expected pin: {msg}");
}

/// A TLS 1.3 session runs on OpenSSL; it trusts and refuses exactly what
/// the rustls (TLS 1.2) session does, with the same named problems.
#[tokio::test(flavor = "multi_thread")]
async fn the_openssl_tls13_stack_trusts_and_refuses_what_rustls_does() {
    let tls13 = |srv: &TestServer| {
        let mut cfg = server_for(srv, "127.0.0.1");
        cfg.tls_versions = Some(vec![TlsVersion::V1_3]);
        cfg
    };
    let opts = |pki: Arc<TestPki>, leaf| ServerOptions {
        tls_versions: TlsVersions::Tls13,
        pki,
        leaf,
        ..Default::default()
    };
    let pki = Arc::new(TestPki::new());
    // Trusted: the session works, on OpenSSL, and every data connection resumes.
    let srv = ftps_server::start(opts(pki.clone(), None)).await;
    let mut s = FtpsSession::connect(Arc::new(tls13(&srv))).await.unwrap();
    for i in 0..5 {
        s.upload(&format!("/o{i}.837"), 0, &mut &b"x"[..])
            .await
            .unwrap();
    }
    let tls = s.report().tls.unwrap();
    assert!(
        tls.library.as_deref().unwrap_or("").starts_with("OpenSSL"),
        "{tls:?}"
    );
    assert_eq!((tls.data_connections, tls.data_resumed), (5, 5), "{tls:?}");
    s.close().await;
    // Another CA: untrusted, naming the presented fingerprint.
    let other = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tls13(&srv);
    cfg.ca_file = Some(other.write_ca_to(dir.path()));
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::UntrustedCertificate, "{err}");
    assert!(err.to_string().contains(&srv.leaf.fingerprint()), "{err}");
    // A pin that does not match, even for a CA-signed certificate.
    let mut cfg = tls13(&srv);
    cfg.pin_sha256 = Some([0x11; 32]);
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::PinMismatch, "{err}");
    assert!(err.to_string().contains("11:11:11"), "{err}");
    // Another host name, an expired certificate.
    let srv = ftps_server::start(opts(pki.clone(), Some(pki.leaf(&["partner.example"])))).await;
    let err = connect_err(tls13(&srv)).await;
    assert_eq!(err.kind(), ErrorKind::WrongHostName, "{err}");
    let expired = pki.expired_leaf(&["localhost", "127.0.0.1"]);
    let srv = ftps_server::start(opts(pki.clone(), Some(expired))).await;
    let err = connect_err(tls13(&srv)).await;
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
    // A pinned self-signed certificate is trusted.
    let leaf = self_signed(&["localhost"]);
    let srv = ftps_server::start(opts(pki.clone(), Some(leaf.clone()))).await;
    let mut cfg = tls13(&srv);
    cfg.ca_file = None;
    cfg.pin_sha256 = Some(ferry::config::parse_fingerprint(&leaf.fingerprint()).unwrap());
    connect_and_upload(cfg, "/pinned.837", "pinned").await;
    // A client certificate is presented when configured.
    let srv = ftps_server::start(ServerOptions {
        client_certs: support::ftps_server::ClientCerts::Require,
        ..opts(pki.clone(), None)
    })
    .await;
    assert!(FtpsSession::connect(Arc::new(tls13(&srv))).await.is_err());
    let client = pki.client_leaf("acme").write_to(dir.path(), "client");
    let mut cfg = tls13(&srv);
    cfg.client_cert = Some(client.cert);
    cfg.client_key = Some(client.key);
    connect_and_upload(cfg, "/c.837", "client certificate accepted over OpenSSL").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_login_refused_without_the_password_in_the_message() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.password = Some(Secret::new("Wr0ng-Secret-77".into()));
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::LoginRefused, "{err}");
    assert!(!format!("{err} {err:?}").contains("Wr0ng-Secret-77"));
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_port_is_connection_refused_and_bad_host_is_resolve() {
    // The server first: started after the closed port was picked, it could
    // be given that very port by the kernel (seen once in CI).
    let srv = ftps_server::start(ServerOptions::default()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.port = port;
    assert_eq!(connect_err(cfg.clone()).await.kind(), ErrorKind::Refused);
    cfg.host = "no-such-host.invalid".into();
    assert_eq!(connect_err(cfg).await.kind(), ErrorKind::Resolve);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_times_out_within_the_configured_step_timeout() {
    // Accepts TCP but never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        }
    });
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.port = port;
    cfg.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = connect_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_is_presented_when_configured() {
    let pki = Arc::new(TestPki::new());
    let srv = ftps_server::start(ServerOptions {
        pki: pki.clone(),
        client_certs: support::ftps_server::ClientCerts::Require,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = pki.client_leaf("acme").write_to(dir.path(), "client");
    // Without it the handshake fails...
    assert!(
        FtpsSession::connect(Arc::new(server_for(&srv, "127.0.0.1")))
            .await
            .is_err()
    );
    // ...with it, the session works.
    let mut cfg = server_for(&srv, "127.0.0.1");
    cfg.client_cert = Some(client.cert);
    cfg.client_key = Some(client.key);
    connect_and_upload(cfg, "/c.837", "client certificate accepted").await;
}

/// Leaves this task exactly `left` units of tokio's cooperative budget
/// (128 per poll), so the `left`-th socket or lock operation after this is
/// told "not now" (Pending) although the socket is ready: how a long run of
/// ready operations ends.
async fn leave_coop_budget(left: u32) {
    tokio::task::yield_now().await;
    for _ in left..128 {
        tokio::task::coop::consume_budget().await;
    }
}

/// Regression: suppaftp writes a command and then only reads the reply, it
/// never flushes. When the socket write was deferred (tokio's budget ran
/// out, or the send buffer was full), rustls kept the command buffered and
/// the session waited for the reply to a command the server never got,
/// until the step timed out (seen in CI as "timed out after 20s while
/// uploading" in the middle of 500 transfers).
#[tokio::test(flavor = "multi_thread")]
async fn a_command_whose_socket_write_was_deferred_still_reaches_the_server() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::write(srv.root().join("a.837"), b"ISA*00~").unwrap();
    let mut server = server_for(&srv, "127.0.0.1");
    server.timeout = Duration::from_secs(2);
    let mut s = FtpsSession::connect(Arc::new(server)).await.unwrap();
    // Every position of the deferred operation within the next command.
    for left in 1..12 {
        leave_coop_budget(left).await;
        assert_eq!(
            s.size("/a.837")
                .await
                .unwrap_or_else(|e| panic!("SIZE with {left} left: {e}")),
            Some(7)
        );
        leave_coop_budget(left).await;
        let mut got = Vec::new();
        s.download("/a.837", 0, &mut got)
            .await
            .unwrap_or_else(|e| panic!("download with {left} left: {e}"));
        assert_eq!(got, b"ISA*00~");
        leave_coop_budget(left).await;
        s.upload(&format!("/up{left}.837"), 0, &mut &b"ST*837~"[..])
            .await
            .unwrap_or_else(|e| panic!("upload with {left} left: {e}"));
    }
    s.close().await;
}
