//! Push exactly once on real servers with their stock behaviour: every
//! scenario that once lost, doubled or stuck a file on vsftpd, ProFTPD
//! (compiled defaults), Pure-FTPd or the pyftpdlib quirk server, as a test.
//! Uploads are cut with a session wrapper that fails the data stream after
//! a number of bytes, as a dropped connection or a kill would.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ferry::transfer::{ConnectFn, FileStatus, RunReport};
use ferry::transport::{self, Capabilities, Quirks, Remote, RemoteEntry};
use sha2::{Digest, Sha256};
use support::engine::{Setup, run};
use support::real_servers::{
    Kind, PROFTPD_DIGEST, PROFTPD_EXTRA, RealServer, USER, VSFTPD_EXTRA, available,
    chown_to_test_user, sorted_names,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn inbox(srv: &RealServer) -> std::path::PathBuf {
    let p = srv.root().join("inbound");
    std::fs::create_dir_all(&p).unwrap();
    chown_to_test_user(&p);
    p
}

fn claim(seed: u8, len: usize) -> Vec<u8> {
    let mut v = b"ISA*00*".to_vec();
    v.extend((0..len).map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

const JOB: &str = "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nretry: { attempts: 3, initial_delay: 50ms, max_delay: 200ms }\n";

/// Cuts the data stream of the next uploads after `after` bytes.
struct Cut {
    inner: Box<dyn Remote>,
    /// Uploads still to cut.
    left: Arc<AtomicU64>,
    after: u64,
    /// Deletes still to fail with a lost connection (the session dies).
    deletes_lost: Arc<AtomicU64>,
    /// What the server offers, as this wrapper tells ferry.
    caps: Capabilities,
    dead: bool,
}

struct CutReader<'a> {
    inner: &'a mut (dyn AsyncRead + Unpin + Send),
    left: u64,
}

impl AsyncRead for CutReader<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("cut by the test")));
        }
        let max = (buf.remaining() as u64).min(self.left) as usize;
        let mut small = ReadBuf::new(&mut buf.initialize_unfilled()[..max]);
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, &mut small);
        let n = small.filled().len();
        buf.advance(n);
        self.left -= n as u64;
        r
    }
}

#[async_trait]
impl Remote for Cut {
    async fn list(&mut self, dir: &str) -> transport::Result<Vec<RemoteEntry>> {
        self.inner.list(dir).await
    }
    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> transport::Result<u64> {
        let cut = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if cut {
            let mut r = CutReader {
                inner: src,
                left: self.after,
            };
            self.inner.upload(path, offset, &mut r).await
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
        let lost = self
            .deletes_lost
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            self.dead = true;
            return Err(transport::TransportError::Connection {
                step: format!("deleting {path}"),
                detail: "cut by the test".into(),
            });
        }
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
        &self.caps
    }
    fn quirks(&self) -> Quirks {
        self.inner.quirks()
    }
    fn set_quirks(&mut self, q: Quirks) {
        self.inner.set_quirks(q)
    }
    fn is_open(&self) -> bool {
        !self.dead && self.inner.is_open()
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
}

/// A connector whose next `n` uploads are cut after `after` bytes.
fn cutting(n: u64, after: u64) -> ConnectFn {
    faulty(n, after, 0, true)
}

/// Like [`cutting`]; also loses the connection on the next `deletes_lost`
/// deletes, and with `resume: false` hides `REST STREAM`.
fn faulty(n: u64, after: u64, deletes_lost: u64, resume: bool) -> ConnectFn {
    let left = Arc::new(AtomicU64::new(n));
    let deletes_lost = Arc::new(AtomicU64::new(deletes_lost));
    Arc::new(move |server| {
        let (left, deletes_lost) = (left.clone(), deletes_lost.clone());
        Box::pin(async move {
            let inner = transport::connect(server).await?;
            let mut caps = inner.capabilities().clone();
            caps.resume &= resume;
            Ok(Box::new(Cut {
                inner,
                left,
                after,
                deletes_lost,
                caps,
                dead: false,
            }) as Box<dyn Remote>)
        })
    })
}

fn only(r: &RunReport) -> &FileStatus {
    assert_eq!(r.files.len(), 1, "{r:?}");
    &r.files[0].status
}

fn quirks(s: &Setup) -> Vec<(String, u64, Option<String>)> {
    ferry::ledger::Ledger::open(&s.path().join("state"))
        .unwrap()
        .quirks("srv")
        .unwrap()
}

/// Scenario 1: a missing or empty temp file is known from the listing on
/// every server, whatever its SIZE reply says (vsftpd, Pure-FTPd, IIS
/// wording), and an empty one is removed before the upload starts again
/// (ProFTPD's stock `AllowOverwrite off` refuses a STOR onto it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_before_any_byte_recovers_on_vsftpd_proftpd_pure_ftpd_and_iis_wording() {
    if !available() {
        return;
    }
    for srv in [
        RealServer::start(Kind::VsftpdExplicit),
        RealServer::start(Kind::ProftpdStock),
        RealServer::start(Kind::PureFtpd),
        RealServer::quirky("iis-size"),
    ] {
        let inbound = inbox(&srv);
        let s = Setup::new(&srv.yaml(""));
        s.job("out", &JOB.replace("attempts: 3", "attempts: 1"));
        let data = claim(1, 40_000);
        s.drop_file("outbox/a.837", &data);
        // Run 1: the upload is cut before its first byte; the file fails.
        let engine = s.engine().with_connector(cutting(1, 0));
        let r = run(&engine, &s.config(), "out").await;
        assert!(matches!(only(&r), FileStatus::Failed { .. }), "{r:?}");
        // Run 2: the recorded intent and the listing decide; no reply wording.
        let r = run(&s.engine(), &s.config(), "out").await;
        assert_eq!(only(&r), &FileStatus::Delivered, "{:?}: {r:?}", srv.kind);
        assert_eq!(std::fs::read(inbound.join("a.837")).unwrap(), data);
        assert_eq!(sorted_names(&inbound), ["a.837"], "{:?}", srv.kind);
        // And SIZE of a missing file is "absent", however the server words it.
        let mut session = transport::connect(srv.server("srv", None)).await.unwrap();
        assert_eq!(session.size("/inbound/none.837").await.unwrap(), None);
        session.close().await;
    }
}

/// Scenario 2: yesterday's file of the same size under the final name is
/// never taken for today's cut upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yesterdays_same_size_file_is_not_taken_for_todays_cut_upload_on_vsftpd() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let inbound = inbox(&srv);
    let yesterday = claim(7, 300_000);
    let today = claim(9, 300_000);
    std::fs::write(inbound.join("claims.837"), &yesterday).unwrap();
    chown_to_test_user(&inbound);
    let s = Setup::new(&srv.yaml(""));
    s.job("out", JOB);
    s.drop_file("outbox/claims.837", &today);
    let engine = s.engine().with_connector(cutting(1, 100_000));
    let r = run(&engine, &s.config(), "out").await;
    assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
    assert_eq!(
        std::fs::read(inbound.join("claims.837")).unwrap(),
        today,
        "today's bytes reached the partner"
    );
    assert_eq!(sorted_names(&inbound), ["claims.837"], "no temp file left");
    assert_eq!(s.archived("out").len(), 1);
}

/// Scenario 3: a file replaced during its upload by one of the same size is
/// delivered as the new file, with the new file's SHA-256 recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_mid_upload_by_one_of_the_same_size_is_delivered_as_itself() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    s.job("out", &JOB.replace("attempts: 3", "attempts: 1"));
    let old = claim(1, 200_000);
    let new = claim(2, 200_000);
    s.drop_file("outbox/r.837", &old);
    let engine = s.engine().with_connector(cutting(1, 50_000));
    let r = run(&engine, &s.config(), "out").await;
    assert!(matches!(only(&r), FileStatus::Failed { .. }), "{r:?}");
    // The operator's system writes a corrected file of the same size.
    let tmp = s.local("outbox/.r.837.tmp");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, s.local("outbox/r.837")).unwrap();
    let r = run(&s.engine(), &s.config(), "out").await;
    let delivered: Vec<_> = r
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Delivered)
        .collect();
    assert_eq!(delivered.len(), 1, "{r:?}");
    assert_eq!(
        delivered[0].sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&new)).as_str())
    );
    assert_eq!(std::fs::read(inbound.join("r.837")).unwrap(), new);
    assert_eq!(
        sorted_names(&inbound),
        ["r.837"],
        "the stale temp file is gone"
    );
    // A third run sends nothing.
    let r = run(&s.engine(), &s.config(), "out").await;
    assert_eq!(r.delivered(), 0, "{r:?}");
}

/// Scenario 4: an inbox that takes each file away as soon as it is closed,
/// with `upload: direct`: never a second copy. Without `consumes` the file
/// is held for a person; with it, the complete upload is the proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consuming_inbox_gets_one_copy_held_without_the_setting_delivered_with_it() {
    if !available() {
        return;
    }
    for consumes in [false, true] {
        // vsftpd with a mover taking each file as soon as it appears (a big
        // file, so the mover takes it while it is written), and the quirk
        // server removing each file right after its 226.
        let srv = RealServer::start(Kind::VsftpdExplicit);
        inbox(&srv);
        let taken = tempfile::tempdir().unwrap();
        let mover = srv.mover("inbound", taken.path());
        let quirky = RealServer::quirky("consume");
        inbox(&quirky);
        for (label, server) in [("vsftpd", &srv), ("pyftpdlib", &quirky)] {
            let s = Setup::new(&server.yaml(&format!("    consumes: {consumes}\n")));
            s.job("out", &format!("{JOB}upload: direct\n"));
            s.drop_file("outbox/w.837", &claim(3, 20_000_000));
            let r = run(&s.engine(), &s.config(), "out").await;
            let r2 = run(&s.engine(), &s.config(), "out").await;
            if consumes {
                assert_eq!(only(&r), &FileStatus::Delivered, "{label}: {r:?}");
                assert_eq!(r2.delivered(), 0, "{label}: {r2:?}");
            } else {
                assert!(
                    matches!(only(&r), FileStatus::Held { .. }),
                    "{label}: {r:?}"
                );
                assert!(
                    matches!(only(&r2), FileStatus::Held { .. }),
                    "{label}: {r2:?}"
                );
                assert!(s.local("outbox/w.837").exists(), "a held file stays");
            }
        }
        mover.wait_for(1, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(mover.copies("w.837"), 1, "consumes {consumes}");
        let log = std::fs::read_to_string(quirky.dir().join("pyftpdlib.log")).unwrap_or_default();
        assert_eq!(
            log.matches("consume: removed /inbound/w.837").count(),
            1,
            "{log}"
        );
    }
}

/// Scenario 5: the RNTO reply is lost and the inbox consumes on rename: the
/// recorded rename intent and the listing decide; nothing is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_rename_reply_to_a_consuming_inbox_never_sends_a_second_copy() {
    if !available() {
        return;
    }
    for consumes in [true, false] {
        let srv = RealServer::quirky("rnto-drop,consume");
        inbox(&srv);
        let s = Setup::new(&srv.yaml(&format!("    consumes: {consumes}\n")));
        s.job("out", JOB);
        s.drop_file("outbox/n.837", &claim(5, 30_000));
        let r = run(&s.engine(), &s.config(), "out").await;
        let r2 = run(&s.engine(), &s.config(), "out").await;
        let log = std::fs::read_to_string(srv.dir().join("pyftpdlib.log")).unwrap_or_default();
        let taken = log.matches("consume: removed /inbound/n.837").count();
        if consumes {
            assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
        } else {
            assert!(matches!(only(&r), FileStatus::Held { .. }), "{r:?}");
        }
        assert_eq!(r2.delivered(), 0, "{r2:?}");
        assert_eq!(
            taken, 1,
            "consumes {consumes}: the partner took {taken} copies\n{log}"
        );
    }
}

/// Scenario 6: ProFTPD with its compiled defaults refuses a resumed upload
/// and an overwrite: the partial is deleted and the file sent whole, once,
/// and the quirk is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proftpd_stock_refusing_resume_and_overwrite_still_delivers_once() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::ProftpdStock);
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    s.job("out", JOB);
    let data = claim(6, 3_000_000);
    s.drop_file("outbox/big.837", &data);
    let engine = s.engine().with_connector(cutting(1, 1_000_000));
    let r = run(&engine, &s.config(), "out").await;
    assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
    assert_eq!(r.files[0].verified, ferry::ledger::Verified::Hash);
    assert_eq!(std::fs::read(inbound.join("big.837")).unwrap(), data);
    assert_eq!(sorted_names(&inbound), ["big.837"]);
    let q = quirks(&s);
    assert!(q.iter().any(|(k, _, _)| k == "rest_refused"), "{q:?}");
}

/// Scenario 7: SIZE refused (vsftpd `cmds_denied=SIZE`) and HASH refused
/// (ProFTPD `DigestMaxSize`) fall back to listings and sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_size_and_refused_hash_fall_back_instead_of_failing() {
    if !available() {
        return;
    }
    let vs = RealServer::start_with(Kind::VsftpdExplicit, &[(VSFTPD_EXTRA, "cmds_denied=SIZE")]);
    let inbound = inbox(&vs);
    let s = Setup::new(&vs.yaml(""));
    s.job("out", &format!("{JOB}verify: size\n"));
    s.drop_file("outbox/s.837", &claim(1, 10_000));
    // A cut upload makes recovery look at the server too.
    let engine = s.engine().with_connector(cutting(1, 4_000));
    let r = run(&engine, &s.config(), "out").await;
    assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
    assert_eq!(r.files[0].verified, ferry::ledger::Verified::Size);
    assert_eq!(sorted_names(&inbound), ["s.837"]);
    assert!(quirks(&s).iter().any(|(k, _, _)| k == "size_refused"));
    // ferry ping shows what the ledger remembers.
    let ping = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["ping", "srv"])
        .output()
        .unwrap();
    let text = support::stdout(&ping);
    assert!(
        text.contains("refuses SIZE: sizes are read from listings"),
        "{text}"
    );

    let pro = RealServer::start_with(
        Kind::ProftpdStock,
        &[(
            PROFTPD_DIGEST,
            "DigestEngine on\nDigestAlgorithms all\nDigestMaxSize 1024",
        )],
    );
    let inbound = inbox(&pro);
    let s = Setup::new(&pro.yaml(""));
    s.job("out", JOB);
    s.drop_file("outbox/small.837", &claim(1, 500));
    s.drop_file("outbox/large.837", &claim(2, 50_000));
    let r = run(&s.engine(), &s.config(), "out").await;
    assert_eq!(r.delivered(), 2, "{r:?}");
    let level = |n: &str| r.files.iter().find(|f| f.name == n).unwrap().verified;
    assert_eq!(level("small.837"), ferry::ledger::Verified::Hash);
    assert_eq!(level("large.837"), ferry::ledger::Verified::Size);
    assert_eq!(sorted_names(&inbound), ["large.837", "small.837"]);
    assert!(quirks(&s).iter().any(|(k, _, _)| k == "hash_refused_from"));
}

/// Scenario 8: one refused extra session (vsftpd `max_per_ip=1`: 421 at
/// connect; ProFTPD `MaxClientsPerUser 1`: 530 at login) shrinks the pool;
/// the batch is delivered through the sessions the server accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_session_limit_shrinks_the_pool_and_delivers_every_file() {
    if !available() {
        return;
    }
    for srv in [
        RealServer::start_with(Kind::VsftpdExplicit, &[(VSFTPD_EXTRA, "max_per_ip=1")]),
        RealServer::start_with(
            Kind::ProftpdStock,
            &[(PROFTPD_EXTRA, "MaxClientsPerUser 1")],
        ),
    ] {
        let inbound = inbox(&srv);
        let s = Setup::new(&srv.yaml("    max_connections: 3\n"));
        s.job("out", JOB);
        for i in 0..30 {
            s.drop_file(&format!("outbox/m{i:02}.837"), &claim(i as u8, 2_000));
        }
        let r = run(&s.engine(), &s.config(), "out").await;
        assert_eq!(r.delivered(), 30, "{:?}: {r:?}", srv.kind);
        assert!(r.connection_error.is_none(), "{r:?}");
        assert_eq!(sorted_names(&inbound).len(), 30);
        let q = quirks(&s);
        assert!(
            q.iter().any(|(k, v, _)| k == "max_sessions" && *v == 1),
            "{:?}: {q:?}",
            srv.kind
        );
    }
}

/// Scenario 10: two jobs sending the same name to one folder never share a
/// temp file: a cut delivery of one resumes its own bytes, not the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_sending_one_name_to_one_folder_never_share_a_temp_file() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    s.job(
        "a",
        &JOB.replace("../outbox", "../out-a")
            .replace("attempts: 3", "attempts: 1"),
    );
    s.job("b", &JOB.replace("../outbox", "../out-b"));
    let a = claim(1, 500_000);
    let b = claim(2, 500_000);
    s.drop_file("out-a/same.837", &a);
    s.drop_file("out-b/same.837", &b);
    let cfg = s.config();
    // a is cut mid-way and leaves its partial temp file.
    let r = run(&s.engine().with_connector(cutting(1, 200_000)), &cfg, "a").await;
    assert!(matches!(only(&r), FileStatus::Failed { .. }), "{r:?}");
    // b delivers the same name whole.
    let r = run(&s.engine(), &cfg, "b").await;
    assert_eq!(only(&r), &FileStatus::Delivered);
    assert_eq!(std::fs::read(inbound.join("same.837")).unwrap(), b);
    // a resumes its own temp file: what arrives is byte for byte a's file.
    let r = run(&s.engine(), &cfg, "a").await;
    assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
    assert_eq!(std::fs::read(inbound.join("same.837")).unwrap(), a);
    assert_eq!(sorted_names(&inbound), ["same.837"]);
}

/// Held files wait for a person: `ferry resend` sends one again, `ferry
/// confirm` records one delivered and archives it, each with the OS user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_files_are_resent_or_confirmed_by_an_operator_and_the_ledger_says_who() {
    if !available() {
        return;
    }
    // A server that takes each file right after its upload, a job that does
    // not know it: both files are held.
    let srv = RealServer::quirky("consume");
    inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    s.job("out", &format!("{JOB}upload: direct\n"));
    s.drop_file("outbox/h1.837", &claim(1, 100_000));
    s.drop_file("outbox/h2.837", &claim(2, 100_000));
    let r = run(&s.engine(), &s.config(), "out").await;
    assert_eq!(r.held(), 2, "{r:?}");
    let ferry = |args: &[&str]| {
        Command::new(support::ferry_bin())
            .arg("--config")
            .arg(s.path().join("ferry.yaml"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = ferry(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|t| t["status"] == "held"),
        "{v:#}"
    );
    let out = ferry(&["confirm", "out", "h1.837"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    assert!(support::stdout(&out).contains("recorded as delivered"));
    assert_eq!(s.archived("out").len(), 1);
    let out = ferry(&["resend", "out", "h2.837"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let out = ferry(&["resend", "out", "nothing.837"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(support::stderr(&out).contains("has no held file 'nothing.837'"));
    // The resent file goes out again, and is taken again: held again, never silently doubled.
    let r = run(&s.engine(), &s.config(), "out").await;
    let h2 = r.files.iter().find(|f| f.name == "h2.837").unwrap();
    assert!(matches!(h2.status, FileStatus::Held { .. }), "{r:?}");
    let log = std::fs::read_to_string(srv.dir().join("pyftpdlib.log")).unwrap_or_default();
    assert_eq!(
        log.matches("consume: removed /inbound/h2.837").count(),
        2,
        "sent twice, as the operator asked"
    );
    assert_eq!(log.matches("consume: removed /inbound/h1.837").count(), 1);
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    let who: Vec<(String, String)> = conn
        .prepare(
            "SELECT kind, detail FROM events WHERE kind IN ('confirmed', 'resend') ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(who.len(), 2, "{who:?}");
    assert!(who.iter().all(|(_, d)| d.starts_with("by root")), "{who:?}");
}

/// The crash suite on real servers with their stock settings: `ferry once`
/// killed with SIGKILL in the middle of a large upload, then run again,
/// delivers the file exactly once, byte for byte, with no temp file left
/// (ProFTPD with its compiled defaults refuses the resume: sent whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_rerun_delivers_exactly_once_on_vsftpd_proftpd_and_pure_ftpd() {
    if !available() {
        return;
    }
    for kind in [Kind::VsftpdExplicit, Kind::ProftpdStock, Kind::PureFtpd] {
        let srv = RealServer::start(kind);
        let inbound = inbox(&srv);
        let s = Setup::new(&srv.yaml(""));
        s.job("out", JOB);
        let data: Vec<u8> = (0..96 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
            .collect();
        let want = Sha256::digest(&data);
        s.drop_file("outbox/big.837", &data);
        drop(data);
        let once = || {
            let mut c = Command::new(support::ferry_bin());
            c.arg("--config")
                .arg(s.path().join("ferry.yaml"))
                .args(["once", "out"]);
            c
        };
        let mut child = once()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while support::temp_len(&inbound, "big.837") < 8 * 1024 * 1024 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{kind:?}: finished before the kill"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{kind:?}: upload never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !inbound.join("big.837").exists(),
            "{kind:?}: no final name after the kill"
        );
        let out = once().output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind:?}: {}{}",
            support::stdout(&out),
            support::stderr(&out)
        );
        assert_eq!(
            sorted_names(&inbound),
            ["big.837"],
            "{kind:?}: one file, no temp left"
        );
        assert_eq!(
            Sha256::digest(std::fs::read(inbound.join("big.837")).unwrap()),
            want,
            "{kind:?}"
        );
        assert_eq!(s.archived("out").len(), 1, "{kind:?}");
        let out = once().output().unwrap();
        assert!(
            support::stdout(&out).contains("out: 0 delivered"),
            "{kind:?}"
        );
    }
}

/// Fault injection on real servers: every upload of a batch is cut at a
/// random byte (client side), or the server's session processes are killed
/// at a random moment (server side); each file still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_random_cuts_and_killed_sessions_on_vsftpd_proftpd_and_pure_ftpd() {
    if !available() {
        return;
    }
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for kind in [Kind::VsftpdExplicit, Kind::ProftpdStock, Kind::PureFtpd] {
        let srv = Arc::new(RealServer::start(kind));
        let inbound = inbox(&srv);
        let s = Setup::new(&srv.yaml(""));
        s.job("out", &JOB.replace("attempts: 3", "attempts: 6"));
        let cfg = s.config();
        let mut want = Vec::new();
        for i in 0..12u8 {
            let len = rng.usize(20_000..3_000_000);
            let data = claim(i, len);
            let name = format!("c{i:02}.837");
            s.drop_file(&format!("outbox/{name}"), &data);
            want.push((name, data));
            let engine = if i % 3 == 2 {
                // Server side: the session processes die mid-run.
                let srv2 = srv.clone();
                let at = Duration::from_millis(rng.u64(5..60));
                std::thread::spawn(move || {
                    std::thread::sleep(at);
                    srv2.kill_sessions();
                });
                s.engine()
            } else {
                s.engine()
                    .with_connector(cutting(1, rng.u64(1..len as u64)))
            };
            let r = run(&engine, &cfg, "out").await;
            assert_eq!(r.failed(), 0, "{kind:?} iteration {i}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = run(&s.engine(), &cfg, "out").await;
        assert_eq!(r.failed() + r.delivered(), 0, "{kind:?}: {r:?}");
        let mut expect: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
        expect.sort();
        assert_eq!(
            sorted_names(&inbound),
            expect,
            "{kind:?}: each once, no temp left"
        );
        for (name, data) in &want {
            assert_eq!(
                &std::fs::read(inbound.join(name)).unwrap(),
                data,
                "{kind:?} {name}"
            );
        }
    }
}

/// A partial temp file is removed before the file is sent whole; when the
/// connection is lost during that DELE, the next attempt removes it then,
/// instead of leaving it behind under a second temp name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_while_removing_a_partial_temp_file_leaves_no_temp_behind() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    s.job("out", JOB);
    let data = claim(4, 400_000);
    s.drop_file("outbox/d.837", &data);
    // No REST: the partial must be deleted; the first DELE loses the connection.
    let engine = s.engine().with_connector(faulty(1, 100_000, 1, false));
    let r = run(&engine, &s.config(), "out").await;
    assert_eq!(only(&r), &FileStatus::Delivered, "{r:?}");
    assert_eq!(std::fs::read(inbound.join("d.837")).unwrap(), data);
    assert_eq!(
        sorted_names(&inbound),
        ["d.837"],
        "no temp file left behind"
    );
}

/// Scenario 9: a file that cannot be read, whose name and size match an
/// earlier delivery, fails alone; the rest of the batch is delivered. (Run
/// as the unprivileged test user: root reads everything.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_fails_alone_and_the_rest_of_the_batch_goes_out() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml(""));
    let ca = s.path().join("ca.pem");
    std::fs::copy(srv.ca_file(), &ca).unwrap();
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        cfg.replace(
            &srv.ca_file().display().to_string(),
            &ca.display().to_string(),
        ),
    )
    .unwrap();
    s.job("out", &JOB.replace("attempts: 3", "attempts: 1"));
    s.drop_file("outbox/x.837", &claim(1, 5_000));
    let _ = Command::new("chmod").arg("755").arg(s.path()).status();
    chown_to_test_user(s.path());
    let once = || {
        Command::new("runuser")
            .args(["-u", USER, "--"])
            .arg(support::ferry_bin())
            .arg("--config")
            .arg(s.path().join("ferry.yaml"))
            .args(["once", "out"])
            .output()
            .unwrap()
    };
    let out = once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        support::stdout(&out),
        support::stderr(&out)
    );
    // Today's x.837: same name and size, other content, and unreadable to ferry.
    let x = s.local("outbox/x.837");
    std::fs::write(&x, claim(2, 5_000)).unwrap();
    let _ = Command::new("chown").arg("root:root").arg(&x).status();
    let _ = Command::new("chmod").arg("000").arg(&x).status();
    s.drop_file("outbox/ok.837", &claim(3, 5_000));
    chown_to_test_user(&s.local("outbox/ok.837"));
    let out = once();
    let text = support::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        support::stderr(&out)
    );
    assert!(text.contains("delivered  ok.837"), "{text}");
    assert!(text.contains("FAILED     x.837"), "{text}");
    assert!(inbound.join("ok.837").exists());
}

/// A data connection the server cannot open (`425 EPSV: Address already in
/// use`, ProFTPD's reply when the passive port it picked is taken, which
/// happens under thousands of transfers) is tried again within a second,
/// not after the job's backoff (here 60 s), for uploads, the pull's
/// listing and downloads alike; every file arrives once each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_data_connection_is_tried_again_within_a_second_not_after_the_backoff() {
    if !available() {
        return;
    }
    let srv = RealServer::quirky("epsv-425");
    let inbound = inbox(&srv);
    let s = Setup::new(&srv.yaml("    max_connections: 1\n"));
    let retry = "retry: { attempts: 3, initial_delay: 60s, max_delay: 60s }\n";
    s.job(
        "out",
        &format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n{retry}"),
    );
    s.job(
        "in",
        &format!("direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /inbound\nstable_for: 0s\nafter_pull: keep\n{retry}"),
    );
    let names: Vec<String> = (0..6).map(|i| format!("c{i}.837")).collect();
    for (i, n) in names.iter().enumerate() {
        s.drop_file(&format!("outbox/{n}"), &claim(i as u8, 2_000));
    }
    let started = std::time::Instant::now();
    let pushed = run(&s.engine(), &s.config(), "out").await;
    let pulled = run(&s.engine(), &s.config(), "in").await;
    let took = started.elapsed();
    let log = std::fs::read_to_string(srv.dir().join("pyftpdlib.log")).unwrap_or_default();
    let refused = log.matches("epsv-425: refused").count();
    assert_eq!(pushed.delivered(), 6, "{pushed:?}");
    assert_eq!(pulled.delivered(), 6, "{pulled:?}");
    assert_eq!(sorted_names(&inbound), names);
    assert_eq!(sorted_names(&s.path().join("inbox")), names);
    assert!(
        refused >= 4,
        "the server refused {refused} data connections\n{log}"
    );
    assert!(
        took < Duration::from_secs(15),
        "{refused} refused data connections took {took:?}: the job's backoff was waited"
    );
}
