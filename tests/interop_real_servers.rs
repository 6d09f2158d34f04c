//! Real-server tier: ferry's FTPS transport against Debian's vsftpd
//! (explicit and implicit, `require_ssl_reuse=YES`) and ProFTPD (mod_tls
//! with `TLSRequired`, mod_digest), with every TLS version ferry offers.

mod support;

use std::collections::BTreeMap;

use ferry::config::TlsVersion;
use ferry::transport::{FtpsSession, HashCommand, Remote};
use sha2::{Digest, Sha256};
use support::real_servers::{Kind, RealServer, available};

const N: usize = 500;

/// Content with every byte an FTP ASCII transfer would mangle.
fn payload(i: usize) -> Vec<u8> {
    let mut v = format!("ISA*00*{i:06}~\r\nGS*HC*\n").into_bytes();
    v.extend([0u8, 0xff, b'\r', b'\n', b'\n', 0x1a]);
    v.extend((0..(i % 700)).map(|k| (k * 31 + i) as u8));
    v
}

/// `FERRY_TEST_TRACE=FILE`: every FTP command, reply and TLS step of this
/// test binary goes to FILE (to see which side stalled when a run hangs).
fn trace_to_file_when_asked() {
    if let Ok(f) = std::env::var("FERRY_TEST_TRACE") {
        let file = std::fs::File::create(f).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace,rustls=debug")
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
    }
}

/// 500 uploads then 500 downloads in one session (one login: a refused
/// data connection fails the test); returns the TLS library that carried it.
async fn five_hundred_each_way(
    server: &RealServer,
    versions: Option<Vec<TlsVersion>>,
    label: &str,
) -> String {
    let dir = format!("/{label}");
    std::fs::create_dir_all(server.root().join(label)).unwrap();
    // The FTP user must own the folder it writes to.
    let _ = std::process::Command::new("chown")
        .args([
            "-R",
            "ferrytest:",
            server.root().join(label).to_str().unwrap(),
        ])
        .status();
    let mut s = FtpsSession::connect(server.server(label, versions))
        .await
        .unwrap();
    for i in 0..N {
        let data = payload(i);
        let sent = s
            .upload(&format!("{dir}/f{i:04}.837"), 0, &mut &data[..])
            .await
            .unwrap_or_else(|e| panic!("{label}: upload {i}: {e}"));
        assert_eq!(sent, data.len() as u64);
    }
    for i in 0..N {
        let mut got = Vec::new();
        s.download(&format!("{dir}/f{i:04}.837"), 0, &mut got)
            .await
            .unwrap_or_else(|e| panic!("{label}: download {i}: {e}"));
        assert_eq!(got, payload(i), "{label}: download {i} differs");
    }
    let report = s.report();
    s.close().await;
    // On disk, as the server wrote them: all there, none empty, byte-identical.
    let mut on_disk = BTreeMap::new();
    for e in std::fs::read_dir(server.root().join(label)).unwrap() {
        let e = e.unwrap();
        on_disk.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    assert_eq!(on_disk.len(), N, "{label}: files on the server");
    assert!(
        on_disk.values().all(|v| !v.is_empty()),
        "{label}: an empty file was left behind"
    );
    for i in 0..N {
        assert_eq!(
            on_disk[&format!("f{i:04}.837")],
            payload(i),
            "{label}: f{i:04} on disk"
        );
    }
    let tls = report.tls.expect("TLS state");
    assert_eq!(
        tls.data_connections, tls.data_resumed,
        "{label}: every data connection resumed"
    );
    eprintln!(
        "{label}: {N} up + {N} down, 0 failed, {} data connections, {} resumed, {}",
        tls.data_connections,
        tls.data_resumed,
        tls.library.as_deref().unwrap_or("?")
    );
    assert_eq!(
        tls.data_connections,
        2 * N as u64,
        "{label}: one data connection per transfer"
    );
    tls.library.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsftpd_explicit_moves_500_files_each_way_in_one_session_with_tls12_and_tls13() {
    if !available() {
        return;
    }
    trace_to_file_when_asked();
    let srv = RealServer::start(Kind::VsftpdExplicit);
    five_hundred_each_way(&srv, None, "vsftpd-tls12").await;
    five_hundred_each_way(&srv, Some(vec![TlsVersion::V1_3]), "vsftpd-tls13").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proftpd_moves_500_files_each_way_in_one_session_with_tls12_and_tls13() {
    if !available() {
        return;
    }
    trace_to_file_when_asked();
    let srv = RealServer::start(Kind::Proftpd);
    let library = five_hundred_each_way(&srv, None, "proftpd-tls12").await;
    assert_eq!(library, "rustls", "TLS 1.2 resumes on rustls indefinitely");
    // ProFTPD issues no ticket on data connections: OpenSSL presents the
    // control connection's ticket again on each one, in one login.
    let library = five_hundred_each_way(&srv, Some(vec![TlsVersion::V1_3]), "proftpd-tls13").await;
    assert!(library.starts_with("OpenSSL"), "{library}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsftpd_implicit_tls_lists_uploads_and_downloads() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdImplicit);
    std::fs::write(srv.root().join("seed name.999"), b"ISA*ack~").unwrap();
    let _ = std::process::Command::new("chown")
        .args(["-R", "ferrytest:", srv.root().to_str().unwrap()])
        .status();
    for versions in [None, Some(vec![TlsVersion::V1_3])] {
        let mut s = FtpsSession::connect(srv.server("implicit", versions.clone()))
            .await
            .unwrap();
        let listing = s.list("/").await.unwrap();
        assert!(
            listing
                .iter()
                .any(|e| e.name == "seed name.999" && e.size == 8 && e.is_file),
            "{listing:?}"
        );
        let data = payload(7);
        s.upload("/up.837", 0, &mut &data[..]).await.unwrap();
        let mut got = Vec::new();
        s.download("/up.837", 0, &mut got).await.unwrap();
        assert_eq!(got, data);
        s.delete("/up.837").await.unwrap();
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsftpd_without_mlsd_lists_with_list_including_spaces_and_utf8() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    for name in ["claims batch 1.837", "müller.835", "plain.999"] {
        std::fs::write(srv.root().join(name), name.as_bytes()).unwrap();
    }
    std::fs::create_dir(srv.root().join("processed")).unwrap();
    let mut s = FtpsSession::connect(srv.server("vsftpd", None))
        .await
        .unwrap();
    assert!(!s.capabilities().mlsd, "vsftpd offers no MLSD");
    let mut listing = s.list("/").await.unwrap();
    listing.sort_by(|a, b| a.name.cmp(&b.name));
    let files: Vec<(&str, u64)> = listing
        .iter()
        .filter(|e| e.is_file)
        .map(|e| (e.name.as_str(), e.size))
        .collect();
    assert_eq!(
        files,
        [
            ("claims batch 1.837", 18),
            ("müller.835", 11),
            ("plain.999", 9)
        ]
    );
    assert!(listing.iter().any(|e| e.name == "processed" && !e.is_file));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proftpd_server_hash_matches_the_local_sha256() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::Proftpd);
    let _ = std::process::Command::new("chown")
        .args(["-R", "ferrytest:", srv.root().to_str().unwrap()])
        .status();
    let mut s = FtpsSession::connect(srv.server("proftpd", None))
        .await
        .unwrap();
    assert_eq!(s.capabilities().hash, Some(HashCommand::Hash));
    assert!(s.capabilities().mlsd);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.upload("/hashed name.837", 0, &mut &data[..])
        .await
        .unwrap();
    let server_hash = s
        .sha256("/hashed name.837")
        .await
        .unwrap()
        .expect("ProFTPD offers HASH");
    assert_eq!(server_hash.as_slice(), Sha256::digest(&data).as_slice());
    assert_eq!(
        s.size("/hashed name.837").await.unwrap(),
        Some(data.len() as u64)
    );
    assert_eq!(s.size("/missing.837").await.unwrap(), None);
    s.close().await;
}

#[test]
fn ferry_ping_prints_tls_certificate_and_feat_facts_for_each_real_server() {
    if !available() {
        return;
    }
    for kind in [Kind::VsftpdExplicit, Kind::VsftpdImplicit, Kind::Proftpd] {
        let srv = RealServer::start(kind);
        let cfg = tempfile::tempdir().unwrap();
        std::fs::create_dir(cfg.path().join("jobs")).unwrap();
        std::fs::write(
            cfg.path().join("ferry.yaml"),
            format!(
                "servers:\n  partner:\n    host: 127.0.0.1\n    port: {}\n    tls: {}\n    user: ferrytest\n    password: ${{PW}}\n    ca_file: {}\n",
                srv.port,
                if kind == Kind::VsftpdImplicit { "implicit" } else { "explicit" },
                srv.ca_file().display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(support::ferry_bin())
            .arg("--config")
            .arg(cfg.path().join("ferry.yaml"))
            .args(["ping", "partner"])
            .env("PW", support::real_servers::PASSWORD)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let text = support::stdout(&out);
        let all = format!("{text}{}", support::stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{kind:?}: {all}");
        for fact in [
            "tls          TLS 1.2",
            "fingerprint  ",
            "subject      CN=localhost",
            "issuer       CN=ferry test CA",
            "expires      ",
            "WARNING: expires in",
            "features     AUTH TLS",
            "1 of 1 data connection(s) resumed",
        ] {
            assert!(text.contains(fact), "{kind:?}: '{fact}' missing:\n{text}");
        }
        let hash_line = if kind == Kind::Proftpd {
            "server hash  SHA-256 via HASH"
        } else {
            "server hash  not offered"
        };
        assert!(text.contains(hash_line), "{kind:?}:\n{text}");
        assert!(
            !all.contains(support::real_servers::PASSWORD),
            "{kind:?}: password in output"
        );
    }
}
