//! Real-server tier for the transfer engine: push to vsftpd (verified by
//! size) and pull from ProFTPD (verified by its HASH), a byte corrupted in
//! transit caught by ProFTPD's hash, and a full local disk during a pull.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use ferry::transfer::{ConnectFn, FileStatus};
use ferry::transport::{self, Capabilities, Remote, RemoteEntry};
use sha2::{Digest, Sha256};
use support::engine::{Setup, run};
use support::real_servers::{Kind, PASSWORD, RealServer, USER, available};
use tokio::io::{AsyncRead, AsyncWrite};

fn server_yaml(srv: &RealServer) -> String {
    format!(
        "    host: 127.0.0.1\n    port: {}\n    tls: {}\n    user: {USER}\n    password: {PASSWORD}\n    ca_file: {}\n",
        srv.port,
        if srv.kind == Kind::VsftpdImplicit {
            "implicit"
        } else {
            "explicit"
        },
        srv.ca_file().display()
    )
}

fn chown(path: &std::path::Path) {
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(path)
        .status();
}

fn claim(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("ISA*00*{i}~\r\nGS*HC~\n").into_bytes();
    v.extend((0..len).map(|k| (k * 13 + i) as u8));
    v
}

#[test]
fn ferry_once_pushes_to_vsftpd_verified_by_size_and_pulls_from_proftpd_verified_by_hash() {
    if !available() {
        return;
    }
    let vs = RealServer::start(Kind::VsftpdExplicit);
    let pro = RealServer::start(Kind::Proftpd);
    std::fs::create_dir_all(vs.root().join("inbound")).unwrap();
    std::fs::create_dir_all(pro.root().join("outbound")).unwrap();
    for i in 0..3 {
        std::fs::write(
            pro.root().join(format!("outbound/ack-{i}.999")),
            claim(i, 5000),
        )
        .unwrap();
    }
    chown(&vs.root());
    chown(&pro.root());
    let setup = Setup::new(&server_yaml(&vs));
    let cfg_text = std::fs::read_to_string(setup.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        setup.path().join("ferry.yaml"),
        format!("{cfg_text}  pro:\n{}", server_yaml(&pro)),
    )
    .unwrap();
    setup.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nverify: size\nstable_for: 0s\n");
    setup.job("in", "direction: pull\nserver: pro\nlocal_dir: ../inbox\nremote_dir: /outbound\nverify: hash\nstable_for: 0s\nafter_pull: delete\n");
    for i in 0..4 {
        setup.drop_file(&format!("outbox/claims-{i}.837"), &claim(i, 200_000));
    }
    let out = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(setup.path().join("ferry.yaml"))
        .args(["once", "out", "in"])
        .output()
        .unwrap();
    let text = support::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        support::stderr(&out)
    );
    assert!(
        text.contains("out: 4 delivered") && text.contains("verified by hash 0, size 4"),
        "{text}"
    );
    assert!(
        text.contains("in: 3 delivered") && text.contains("verified by hash 3, size 0"),
        "{text}"
    );
    for i in 0..4 {
        assert_eq!(
            std::fs::read(vs.root().join(format!("inbound/claims-{i}.837"))).unwrap(),
            claim(i, 200_000)
        );
    }
    assert!(
        std::fs::read_dir(vs.root().join("inbound"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part"))
    );
    for i in 0..3 {
        assert_eq!(
            std::fs::read(setup.local(&format!("inbox/ack-{i}.999"))).unwrap(),
            claim(i, 5000)
        );
        assert!(
            !pro.root().join(format!("outbound/ack-{i}.999")).exists(),
            "deleted after a verified pull"
        );
    }
    assert_eq!(setup.archived("out").len(), 4);
    assert_eq!(std::fs::read_dir(setup.local("outbox")).unwrap().count(), 0);
}

/// Wraps a real session and flips one byte of the first `uploads` uploads.
struct CorruptUploads {
    inner: Box<dyn Remote>,
    remaining: Arc<std::sync::atomic::AtomicUsize>,
}

struct FlipFirstByte<'a> {
    inner: &'a mut (dyn AsyncRead + Unpin + Send),
    flipped: bool,
}

impl AsyncRead for FlipFirstByte<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if !self.flipped && buf.filled().len() > before {
            buf.filled_mut()[before] ^= 0x01;
            self.flipped = true;
        }
        r
    }
}

#[async_trait]
impl Remote for CorruptUploads {
    async fn list(&mut self, dir: &str) -> transport::Result<Vec<RemoteEntry>> {
        self.inner.list(dir).await
    }
    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> transport::Result<u64> {
        let corrupt = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if corrupt {
            let mut flip = FlipFirstByte {
                inner: src,
                flipped: false,
            };
            self.inner.upload(path, offset, &mut flip).await
        } else {
            self.inner.upload(path, offset, src).await
        }
    }
    async fn download(
        &mut self,
        path: &str,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> transport::Result<u64> {
        self.inner.download(path, offset, dst).await
    }
    async fn rename(&mut self, from: &str, to: &str) -> transport::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn delete(&mut self, path: &str) -> transport::Result<()> {
        self.inner.delete(path).await
    }
    async fn mkdir(&mut self, path: &str) -> transport::Result<()> {
        self.inner.mkdir(path).await
    }
    async fn size(&mut self, path: &str) -> transport::Result<Option<u64>> {
        self.inner.size(path).await
    }
    async fn sha256(&mut self, path: &str) -> transport::Result<Option<[u8; 32]>> {
        self.inner.sha256(path).await
    }
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
}

fn corrupting(n: usize) -> ConnectFn {
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(n));
    Arc::new(move |server| {
        let remaining = remaining.clone();
        Box::pin(async move {
            let inner = transport::connect(server).await?;
            Ok(Box::new(CorruptUploads { inner, remaining }) as Box<dyn Remote>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_corrupted_in_transit_is_caught_by_the_server_hash_and_the_retry_delivers() {
    if !available() {
        return;
    }
    let pro = RealServer::start(Kind::Proftpd);
    std::fs::create_dir_all(pro.root().join("inbound")).unwrap();
    chown(&pro.root());
    let setup = Setup::new(&server_yaml(&pro));
    setup.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nverify: auto\nstable_for: 0s\nretry: { attempts: 3, initial_delay: 10ms, max_delay: 50ms }\n");
    let data = claim(1, 100_000);
    setup.drop_file("outbox/claims.837", &data);
    let cfg = setup.config();
    let engine = setup.engine().with_connector(corrupting(1));
    let report = run(&engine, &cfg, "out").await;
    let f = &report.files[0];
    assert_eq!(f.status, FileStatus::Delivered, "{report:?}");
    assert_eq!(f.attempts, 2, "the corrupted attempt was retried");
    assert_eq!(f.verified, ferry::ledger::Verified::Hash);
    assert_eq!(
        std::fs::read(pro.root().join("inbound/claims.837")).unwrap(),
        data
    );
    assert_eq!(
        f.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&data)).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_on_every_attempt_fails_the_file_and_nothing_carries_its_name() {
    if !available() {
        return;
    }
    let pro = RealServer::start(Kind::Proftpd);
    std::fs::create_dir_all(pro.root().join("inbound")).unwrap();
    chown(&pro.root());
    let setup = Setup::new(&server_yaml(&pro));
    setup.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nverify: hash\nstable_for: 0s\nretry: { attempts: 2, initial_delay: 10ms, max_delay: 50ms }\n");
    setup.drop_file("outbox/bad.837", &claim(2, 50_000));
    setup.drop_file("outbox/good.837", &claim(3, 50_000));
    let cfg = setup.config();
    // Corrupt the two attempts at the first file (they come in name order: bad, bad, good).
    let engine = setup.engine().with_connector(corrupting(2));
    let report = run(&engine, &cfg, "out").await;
    let bad = report.files.iter().find(|f| f.name == "bad.837").unwrap();
    let good = report.files.iter().find(|f| f.name == "good.837").unwrap();
    match &bad.status {
        FileStatus::Failed { error } => assert!(error.contains("hash mismatch"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(good.status, FileStatus::Delivered, "the batch goes on");
    let names: Vec<String> = std::fs::read_dir(pro.root().join("inbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["good.837"],
        "no corrupted file under its name, no temp left"
    );
    assert!(
        setup.local("outbox/bad.837").exists(),
        "a failed file stays where it was"
    );
    assert_eq!(setup.archived("out").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_disk_during_a_pull_fails_the_file_and_loses_nothing() {
    if !available() {
        return;
    }
    let pro = RealServer::start(Kind::Proftpd);
    std::fs::create_dir_all(pro.root().join("outbound")).unwrap();
    let big = claim(9, 300_000);
    std::fs::write(pro.root().join("outbound/remit.835"), &big).unwrap();
    chown(&pro.root());
    let setup = Setup::new(&server_yaml(&pro));
    let inbox = setup.local("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs"])
        .arg(&inbox)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 128 KiB tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(inbox.clone());
    setup.job("in", "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\nafter_pull: delete\nretry: { attempts: 2, initial_delay: 10ms, max_delay: 20ms }\n");
    let cfg = setup.config();
    let engine = setup.engine();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("ferry=debug")
        .try_init();
    let report = run(&engine, &cfg, "in").await;
    match &report.files[0].status {
        FileStatus::Failed { error } => assert!(error.contains("No space left"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(pro.root().join("outbound/remit.835")).unwrap(),
        big,
        "the remote file is untouched"
    );
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        0,
        "no partial file left behind"
    );
}
