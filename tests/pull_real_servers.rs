//! Pull exactly once on real servers: every scenario that once doubled,
//! missed or stuck an acknowledgement or a remittance on vsftpd, as a test.
//! Crash points are set up precisely by putting the ledger where a kill
//! between two steps would have left it.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ferry::transfer::{ConnectFn, FileStatus};
use ferry::transport::{self, Capabilities, Quirks, Remote, RemoteEntry, TransportError};
use support::engine::{Setup, run};
use support::real_servers::{Kind, RealServer, available, chown_to_test_user, sorted_names};
use tokio::io::{AsyncRead, AsyncWrite};

/// The partner drops `name` into /outbound with `data`, its time set to
/// `age_secs` ago.
fn partner_drops(srv: &RealServer, name: &str, data: &[u8], age_secs: i64) {
    let dir = srv.root().join("outbound");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data).unwrap();
    let t = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_secs(age_secs.max(0) as u64))
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(t)
        .unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    chown_to_test_user(&dir);
}

const JOB: &str = "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\nretry: { attempts: 3, initial_delay: 50ms, max_delay: 200ms }\n";

fn sql(s: &Setup, stmt: &str) {
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    conn.execute_batch(stmt).unwrap();
}

fn history(s: &Setup) -> serde_json::Value {
    let out = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["history", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Scenario 1: a crash between placing a downloaded file and recording it
/// (or between the hard link and the removal of the `.part`) neither
/// downloads it again nor leaves a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_placing_adopts_the_placed_file_instead_of_downloading_it_again() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let s = Setup::new(&srv.yaml(""));
    s.job("in", JOB);
    partner_drops(&srv, "ack.999", b"ISA*00*ack~", 60);
    partner_drops(&srv, "remit.835", b"ISA*00*remit~", 60);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.delivered(), 2, "{r:?}");
    // As if ferry had died right after placing each file, before recording it;
    // for remit.835 also before the .part was removed.
    sql(
        &s,
        "UPDATE files SET state = 'verified', local_path = NULL;",
    );
    // Verified but not placed: pending, not delivered.
    let v = history(&s);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "pending"),
        "{v:#}"
    );
    std::fs::copy(s.local("inbox/remit.835"), s.local("inbox/.remit.835.part")).unwrap();
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.failed(), 0, "{r:?}");
    assert_eq!(
        sorted_names(&s.local("inbox")),
        ["ack.999", "remit.835"],
        "no second copy, no .part left"
    );
    let v = history(&s);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "delivered"),
        "{v:#}"
    );
    assert_eq!(v.as_array().unwrap().len(), 2);
}

/// Scenario 2: a pulled file keeps its identity (MDTM seconds, not LIST
/// minutes), the same bytes are never placed twice, and a name reused with
/// the same size within the same listed minute is pulled as a new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_name_is_pulled_and_the_same_bytes_are_never_placed_twice_on_vsftpd() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let s = Setup::new(&srv.yaml(""));
    s.job("in", &format!("{JOB}after_pull: keep\n"));
    partner_drops(&srv, "x.999", b"ISA*00*first~", 30);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.delivered(), 1, "{r:?}");
    // Kept: later runs take nothing.
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.delivered(), 0, "{r:?}");
    // Same name, same size, new content, 10 s later (same listed minute).
    partner_drops(&srv, "x.999", b"ISA*00*secnd~", 20);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.delivered(), 1, "the reused name is a new file: {r:?}");
    assert_eq!(sorted_names(&s.local("inbox")), ["x.1.999", "x.999"]);
    assert_eq!(
        std::fs::read(s.local("inbox/x.1.999")).unwrap(),
        b"ISA*00*secnd~"
    );
    // The partner touches the file (a new time, the same bytes): fetched, never placed twice.
    partner_drops(&srv, "x.999", b"ISA*00*secnd~", 0);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.failed(), 0, "{r:?}");
    assert_eq!(
        sorted_names(&s.local("inbox")),
        ["x.1.999", "x.999"],
        "{r:?}"
    );
}

/// A session whose next `n` deletes are refused (`550`).
struct DenyDeletes {
    inner: Box<dyn Remote>,
    left: Arc<AtomicU64>,
}

#[async_trait]
impl Remote for DenyDeletes {
    async fn list(&mut self, dir: &str) -> transport::Result<Vec<RemoteEntry>> {
        self.inner.list(dir).await
    }
    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> transport::Result<u64> {
        self.inner.upload(path, offset, src).await
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
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TransportError::FileUnavailable {
                path: path.into(),
                code: 550,
                reply: "550 Delete operation failed.".into(),
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
    async fn mdtm(
        &mut self,
        path: &str,
    ) -> transport::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.mdtm(path).await
    }
    async fn sha256(&mut self, path: &str) -> transport::Result<Option<[u8; 32]>> {
        self.inner.sha256(path).await
    }
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn quirks(&self) -> Quirks {
        self.inner.quirks()
    }
    fn set_quirks(&mut self, q: Quirks) {
        self.inner.set_quirks(q)
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
}

fn denying(n: u64) -> ConnectFn {
    let left = Arc::new(AtomicU64::new(n));
    Arc::new(move |server| {
        let left = left.clone();
        Box::pin(async move {
            let inner = transport::connect(server).await?;
            Ok(Box::new(DenyDeletes { inner, left }) as Box<dyn Remote>)
        })
    })
}

/// Scenarios 3 and 4: a failed delete is retried by later runs, shown as
/// pending (not delivered); when the partner has meanwhile dropped a new
/// file under the same name, the retry never deletes it unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delete_never_removes_a_new_file_of_the_same_name_unread() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let s = Setup::new(&srv.yaml(""));
    s.job("in", &format!("{JOB}after_pull: delete\n"));
    partner_drops(&srv, "remit.835", b"ISA*00*monday~", 120);
    let r = run(&s.engine().with_connector(denying(100)), &s.config(), "in").await;
    assert_eq!(r.delivered(), 0, "the delete failed: {r:?}");
    assert!(matches!(r.files[0].status, FileStatus::NotReady), "{r:?}");
    let v = history(&s);
    assert_eq!(v[0]["status"], "pending", "downloaded, not yet done: {v:#}");
    // The partner drops Tuesday's remittance under the same name.
    partner_drops(&srv, "remit.835", b"ISA*00*tuesday~", 10);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.failed(), 0, "{r:?}");
    assert_eq!(
        sorted_names(&s.local("inbox")),
        ["remit.1.835", "remit.835"],
        "{r:?}"
    );
    assert_eq!(
        std::fs::read(s.local("inbox/remit.835")).unwrap(),
        b"ISA*00*monday~"
    );
    assert_eq!(
        std::fs::read(s.local("inbox/remit.1.835")).unwrap(),
        b"ISA*00*tuesday~"
    );
    assert!(
        !srv.root().join("outbound/remit.835").exists(),
        "Tuesday's deleted once read"
    );
}

/// vsftpd, a pull job that deletes what it pulled (`attempts` as given),
/// and `a.999` in the partner's outbound folder.
fn pulled_then_deleted(attempts: &str) -> (RealServer, Setup) {
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let s = Setup::new(&srv.yaml(""));
    s.job(
        "in",
        &format!(
            "{}after_pull: delete\n",
            JOB.replace("attempts: 3", attempts)
        ),
    );
    partner_drops(&srv, "a.999", b"ISA*00*a~", 60);
    (srv, s)
}

/// Scenario 4: an after-action that keeps failing is reported failed once
/// its attempts run out (so `once` exits 1 and an alert goes out); a
/// remote file already gone ends the journey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_after_pull_that_keeps_failing_is_reported_failed_then_a_gone_file_ends_it() {
    if !available() {
        return;
    }
    let (srv, s) = pulled_then_deleted("attempts: 2");
    let engine = s.engine().with_connector(denying(100));
    let r1 = run(&engine, &s.config(), "in").await;
    assert!(matches!(r1.files[0].status, FileStatus::NotReady), "{r1:?}");
    let r2 = run(&engine, &s.config(), "in").await;
    assert!(
        matches!(r2.files[0].status, FileStatus::Failed { .. }),
        "{r2:?}"
    );
    assert_eq!(
        sorted_names(&s.local("inbox")),
        ["a.999"],
        "never downloaded twice"
    );
    // The partner removes it themselves: the next run ends the journey.
    std::fs::remove_file(srv.root().join("outbound/a.999")).unwrap();
    let r3 = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r3.delivered(), 1, "{r3:?}");
    assert_eq!(history(&s)[0]["status"], "delivered");
}

/// A connector to a port nobody listens on: the partner is unreachable.
fn unreachable() -> ConnectFn {
    Arc::new(|server| {
        Box::pin(async move {
            let mut away = (*server).clone();
            away.port = 1;
            transport::connect(Arc::new(away)).await
        })
    })
}

/// A placed file whose delete failed, then a run that cannot reach the
/// partner: the record stays `renamed` (placed), so when the partner is
/// back the delete is retried and nothing is downloaded again, even though
/// the downstream system has taken the placed file meanwhile. Before, the
/// unreachable run recorded it `failed` and the next run placed a second
/// copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_partner_after_placing_never_places_the_file_twice() {
    if !available() {
        return;
    }
    let (srv, s) = pulled_then_deleted("attempts: 3");
    let r1 = run(&s.engine().with_connector(denying(100)), &s.config(), "in").await;
    assert!(matches!(r1.files[0].status, FileStatus::NotReady), "{r1:?}");
    // The downstream system takes the placed acknowledgement.
    std::fs::remove_file(s.local("inbox/a.999")).unwrap();
    let r2 = run(&s.engine().with_connector(unreachable()), &s.config(), "in").await;
    assert!(r2.connection_error.is_some(), "{r2:?}");
    assert!(
        matches!(r2.files[0].status, FileStatus::Failed { .. }),
        "{r2:?}"
    );
    assert_eq!(history(&s)[0]["status"], "pending", "placed, not failed");
    let r3 = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r3.delivered(), 1, "{r3:?}");
    assert_eq!(
        sorted_names(&s.local("inbox")),
        Vec::<String>::new(),
        "never placed twice"
    );
    assert!(!srv.root().join("outbound/a.999").exists(), "{r3:?}");
    assert_eq!(history(&s)[0]["status"], "delivered");
}

/// Scenarios 5 and 6: a missing remote folder is an error on vsftpd (which
/// lists it as empty with a success reply), so `ferry once` exits 1; so
/// does a pull job that cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_remote_dir_or_an_unreachable_server_fails_a_pull_with_exit_1() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    let s = Setup::new(&srv.yaml(""));
    s.job("in", &JOB.replace("/outbound", "/no-such-folder"));
    let once = |job: &str| {
        Command::new(support::ferry_bin())
            .arg("--config")
            .arg(s.path().join("ferry.yaml"))
            .args(["once", job])
            .output()
            .unwrap()
    };
    let out = once("in");
    assert_eq!(out.status.code(), Some(1), "{}", support::stdout(&out));
    assert!(
        support::stdout(&out).contains("/no-such-folder"),
        "{}",
        support::stdout(&out)
    );
    // The server goes away (its CA file is kept for the configuration).
    let ca = s.path().join("ca.pem");
    std::fs::copy(srv.ca_file(), &ca).unwrap();
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    let cfg = cfg.replace(
        &srv.ca_file().display().to_string(),
        &ca.display().to_string(),
    );
    std::fs::write(s.path().join("ferry.yaml"), cfg).unwrap();
    drop(srv);
    s.job("in", JOB);
    let out = once("in");
    assert_eq!(out.status.code(), Some(1), "{}", support::stdout(&out));
    assert!(
        support::stdout(&out).contains("cannot reach"),
        "{}",
        support::stdout(&out)
    );
}

/// Scenario 7: a listing is bounded: past `max_listing` entries the run
/// stops reading with a clear error instead of growing without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_longer_than_max_listing_is_a_clear_error() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    for i in 0..12 {
        partner_drops(&srv, &format!("f{i}.999"), b"ISA~", 60);
    }
    let s = Setup::new(&srv.yaml("    max_listing: 5\n"));
    s.job("in", JOB);
    let r = run(&s.engine(), &s.config(), "in").await;
    let err = r.connection_error.clone().expect("the listing is refused");
    assert!(err.contains("more than 5 entries"), "{err}");
    assert!(sorted_names(&s.local("inbox")).is_empty());
}

/// Scenario 8: vsftpd answers `550 Failed to open file.` for a forbidden
/// file too; the listing shows it is there, so it is retried and reported
/// with the server's reply, never as "disappeared".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_file_on_vsftpd_is_a_failure_not_a_disappearance() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    partner_drops(&srv, "locked.999", b"ISA*00*locked~", 60);
    let p = srv.root().join("outbound/locked.999");
    let _ = Command::new("chown").arg("root:root").arg(&p).status();
    let _ = Command::new("chmod").arg("600").arg(&p).status();
    let s = Setup::new(&srv.yaml(""));
    s.job("in", JOB);
    let r = run(&s.engine(), &s.config(), "in").await;
    match &r.files[0].status {
        FileStatus::Failed { error } => {
            assert!(!error.contains("disappeared"), "{error}");
            assert!(error.contains("550"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.files[0].attempts, 3, "retried like any refusal");
}

/// Scenario 5: DOS listings with four-digit years and Unix listings with ACL
/// markers are read; a symlink is not a file; a line ferry cannot read is a
/// warning counted in the run's report and shown by `ferry once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_listings_are_read_and_unreadable_lines_are_counted_and_shown() {
    if !available() {
        return;
    }
    let srv = RealServer::quirky("odd-list,no-mlst");
    for i in 0..4 {
        partner_drops(
            &srv,
            &format!("r{i}.835"),
            format!("ISA*00*{i}~").as_bytes(),
            600,
        );
    }
    let s = Setup::new(&srv.yaml(""));
    s.job("in", JOB);
    let r = run(&s.engine(), &s.config(), "in").await;
    assert_eq!(r.delivered(), 4, "{r:?}");
    // The bad line, and the symlink line just before it (it might be the
    // start of a name the bad line continues).
    assert_eq!(r.listing_unparsed, 2, "{r:?}");
    assert_eq!(
        sorted_names(&s.local("inbox")),
        ["r0.835", "r1.835", "r2.835", "r3.835"]
    );
    partner_drops(&srv, "r4.835", b"ISA*00*4~", 600);
    let out = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["once", "in"])
        .output()
        .unwrap();
    let text = support::stdout(&out);
    assert!(
        text.contains("2 line(s) of the server's listing could not be read"),
        "{text}"
    );
    assert!(text.contains("delivered  r4.835"), "{text}");
}

/// Scenario 7: a remote name with a line feed inside never becomes phantom
/// entries: the line after the break cannot be read, so the entry before it
/// is not trusted either; both are counted, nothing is downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_line_feed_never_becomes_phantom_entries() {
    if !available() {
        return;
    }
    for quirks in ["no-mlst", ""] {
        let srv = if quirks.is_empty() {
            RealServer::quirky("sha256")
        } else {
            RealServer::quirky(quirks)
        };
        partner_drops(&srv, "a\nb.835", b"ISA*00*lf~", 60);
        partner_drops(&srv, "fine.835", b"ISA*00*ok~", 60);
        let s = Setup::new(&srv.yaml(""));
        s.job("in", JOB);
        let r = run(&s.engine(), &s.config(), "in").await;
        assert_eq!(r.failed(), 0, "{quirks}: no phantom download fails: {r:?}");
        assert_eq!(r.delivered(), 1, "{quirks}: {r:?}");
        assert_eq!(r.listing_unparsed, 2, "{quirks}: {r:?}");
        assert_eq!(sorted_names(&s.local("inbox")), ["fine.835"], "{quirks}");
    }
}
