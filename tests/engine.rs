//! Fast tier for the transfer engine, against the in-process FTPS server:
//! idempotency, duplicates, never overwriting, and each bad situation giving
//! a clear per-file error while losing nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferry::ledger::Verified;
use ferry::transfer::FileStatus;
use ferry::transport::RemoteEntry;
use support::engine::{Setup, hooked, inprocess_yaml, run, run_forced};
use support::ftps_server::{self, ServerOptions};

const FAST_RETRY: &str = "retry: { attempts: 2, initial_delay: 10ms, max_delay: 20ms }\n";

fn push_job(extra: &str) -> String {
    format!(
        "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n{FAST_RETRY}{extra}"
    )
}

fn pull_job(extra: &str) -> String {
    format!(
        "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\n{FAST_RETRY}{extra}"
    )
}

fn statuses(r: &ferry::transfer::RunReport) -> Vec<(String, FileStatus)> {
    r.files
        .iter()
        .map(|f| (f.name.clone(), f.status.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_push_with_keep_sends_nothing() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job("after_push: keep\n"));
    s.drop_file("outbox/a.837", b"ISA*a~");
    s.drop_file("outbox/b.837", b"ISA*b~");
    let (cfg, engine) = (s.config(), s.engine());
    let first = run(&engine, &cfg, "out").await;
    assert_eq!(first.delivered(), 2);
    // The partner picks the files up; a resend would show up again.
    std::fs::remove_file(srv.root().join("inbound/a.837")).unwrap();
    std::fs::remove_file(srv.root().join("inbound/b.837")).unwrap();
    let second = run(&engine, &cfg, "out").await;
    assert_eq!(second.delivered(), 0, "{second:?}");
    assert!(
        second
            .files
            .iter()
            .all(|f| matches!(f.status, FileStatus::AlreadyDelivered { .. }))
    );
    assert_eq!(
        std::fs::read_dir(srv.root().join("inbound"))
            .unwrap()
            .count(),
        0,
        "nothing was sent again"
    );
    assert!(s.local("outbox/a.837").exists(), "keep leaves the file");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pull_downloads_nothing() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/ack.999"), b"ISA*ack~").unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("in", &pull_job("after_pull: keep\n"));
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "in").await.delivered(), 1);
    std::fs::remove_file(s.local("inbox/ack.999")).unwrap(); // the consumer took it
    let second = run(&engine, &cfg, "in").await;
    assert_eq!(second.delivered(), 0, "{second:?}");
    assert!(!s.local("inbox/ack.999").exists(), "not downloaded twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_name_with_new_content_is_transferred_again_both_ways() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job("after_push: keep\n"));
    s.job("in", &pull_job("after_pull: keep\n"));
    let (cfg, engine) = (s.config(), s.engine());
    s.drop_file("outbox/claims.837", b"ISA*day-1~");
    std::fs::write(srv.root().join("outbound/remit.835"), b"ISA*remit-1~").unwrap();
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    assert_eq!(run(&engine, &cfg, "in").await.delivered(), 1);
    // Partners re-use names: new content under the same name, the next day.
    s.drop_file("outbox/claims.837", b"ISA*day-2, longer~");
    std::fs::write(
        srv.root().join("outbound/remit.835"),
        b"ISA*remit-2, longer~",
    )
    .unwrap();
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let pulled = run(&engine, &cfg, "in").await;
    assert_eq!(pulled.delivered(), 1);
    assert_eq!(
        std::fs::read(srv.root().join("inbound/claims.837")).unwrap(),
        b"ISA*day-2, longer~"
    );
    assert_eq!(
        std::fs::read(s.local("inbox/remit.835")).unwrap(),
        b"ISA*remit-1~",
        "never overwritten"
    );
    assert_eq!(
        std::fs::read(s.local("inbox/remit.1.835")).unwrap(),
        b"ISA*remit-2, longer~"
    );
    let note = pulled.files[0].note.as_deref().unwrap_or("");
    assert!(
        note.contains("saved as remit.1.835"),
        "the operator is told: {note}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_content_dropped_again_is_not_sent_again_unless_forced() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job(""));
    let (cfg, engine) = (s.config(), s.engine());
    s.drop_file("outbox/claims.837", b"ISA*same~");
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    std::fs::remove_file(srv.root().join("inbound/claims.837")).unwrap();
    // Dropped again (a new mtime), same bytes.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(s.local("outbox/claims.837"), b"ISA*same~").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(s.local("outbox/claims.837"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let again = run(&engine, &cfg, "out").await;
    assert!(
        matches!(again.files[0].status, FileStatus::AlreadyDelivered { .. }),
        "{again:?}"
    );
    assert!(!srv.root().join("inbound/claims.837").exists());
    let forced = run_forced(&engine, &cfg, "out").await;
    assert_eq!(forced.delivered(), 1);
    assert!(srv.root().join("inbound/claims.837").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_fails_every_file_together_with_one_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = Setup::new(
        &inprocess_yaml(&srv).replace(&format!("port: {}", srv.port()), &format!("port: {port}")),
    );
    s.job("out", &push_job(""));
    for i in 0..5 {
        s.drop_file(&format!("outbox/c{i}.837"), b"ISA~");
    }
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    let err = r.connection_error.clone().expect("one connection error");
    assert!(err.contains("refused"), "{err}");
    assert_eq!(r.failed(), 5);
    for f in &r.files {
        assert_eq!(f.status, FileStatus::Failed { error: err.clone() });
    }
    for i in 0..5 {
        assert!(
            s.local(&format!("outbox/c{i}.837")).exists(),
            "failed files stay where they were"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_file_deleted_between_list_and_download_fails_alone_and_clearly() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/gone.999"), b"ISA*1~").unwrap();
    std::fs::write(srv.root().join("outbound/kept.999"), b"ISA*2~").unwrap();
    let root = srv.root().to_path_buf();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("in", &pull_job(""));
    let cfg = s.config();
    let engine = s.engine().with_connector(hooked(
        Arc::new(move |path: &str| {
            if path.ends_with("gone.999") {
                let _ = std::fs::remove_file(root.join("outbound/gone.999"));
            }
        }),
        vec![],
    ));
    let r = run(&engine, &cfg, "in").await;
    let gone = r.files.iter().find(|f| f.name == "gone.999").unwrap();
    match &gone.status {
        FileStatus::Failed { error } => {
            assert!(error.contains("disappeared from the server"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gone.attempts, 1, "not retried: it is gone");
    assert_eq!(
        r.files
            .iter()
            .find(|f| f.name == "kept.999")
            .unwrap()
            .status,
        FileStatus::Delivered
    );
    assert!(!s.local("inbox/.gone.999.part").exists());
    assert!(!s.local("inbox/gone.999").exists());
    // A small file's `sending` goes with the steps after it; an attempt
    // that fails records it then, so the ledger counts the attempt.
    let l = engine.ledger.lock().unwrap();
    let id = (1..=2)
        .find(|&i| l.file(i).unwrap().name == "gone.999")
        .unwrap();
    assert_eq!(l.file(id).unwrap().attempts, 1, "counted in the ledger");
    assert_eq!(l.count_events(id, "sending").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_remote_name_is_never_written_outside_local_dir() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/ok.999"), b"ISA*ok~").unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("in", &pull_job(""));
    let cfg = s.config();
    let hostile = [
        "../escape.999",
        "/etc/cron.d/evil",
        "..\\win.999",
        "a\nb.999",
        "..",
    ]
    .iter()
    .map(|n| RemoteEntry {
        name: n.to_string(),
        size: 5,
        mtime: None,
        is_file: true,
    })
    .collect();
    let engine = s
        .engine()
        .with_connector(hooked(Arc::new(|_: &str| {}), hostile));
    let r = run(&engine, &cfg, "in").await;
    assert_eq!(
        statuses(&r),
        vec![("ok.999".to_string(), FileStatus::Delivered)]
    );
    assert!(!s.path().join("escape.999").exists());
    let names: Vec<String> = std::fs::read_dir(s.local("inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ok.999"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_hash_on_a_server_without_hash_fails_at_once_and_says_why() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job("verify: hash\n"));
    s.drop_file("outbox/a.837", b"ISA~");
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    match &r.files[0].status {
        FileStatus::Failed { error } => {
            assert!(error.contains("offers no SHA-256 command"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.files[0].attempts, 1, "permanent: not retried");
    assert!(
        !srv.root().join("inbound/a.837").exists(),
        "an unverifiable upload never gets the final name"
    );
    assert!(!srv.root().join("inbound/a.837.part").exists());
    assert!(s.local("outbox/a.837").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_upload_writes_the_final_name_and_is_verified_by_size() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job("upload: direct\nafter_push: delete\n"));
    s.drop_file("outbox/a.837", b"ISA*direct~");
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(r.files[0].status, FileStatus::Delivered);
    assert_eq!(r.files[0].verified, Verified::Size);
    assert_eq!(
        std::fs::read(srv.root().join("inbound/a.837")).unwrap(),
        b"ISA*direct~"
    );
    assert!(
        !s.local("outbox/a.837").exists(),
        "deleted after verified delivery"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_still_being_written_is_left_for_the_next_run() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job(
        "out",
        &push_job("").replace("stable_for: 0s", "stable_for: 1s"),
    );
    std::fs::create_dir_all(s.local("outbox")).unwrap();
    let path = s.local("outbox/slow.837");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..15 {
            f.write_all(b"ISA*part~\n").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    writer.join().unwrap();
    assert_eq!(
        statuses(&r),
        vec![("slow.837".to_string(), FileStatus::NotReady)]
    );
    assert!(
        std::fs::read_dir(srv.root().join("inbound"))
            .unwrap()
            .next()
            .is_none(),
        "nothing sent early"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(r.delivered(), 1);
    assert_eq!(
        std::fs::read(srv.root().join("inbound/slow.837"))
            .unwrap()
            .len(),
        150
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_batch_shares_max_connections_sessions_instead_of_one_per_file() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&format!("{}    max_connections: 3\n", inprocess_yaml(&srv)));
    s.job("out", &push_job(""));
    for i in 0..60 {
        s.drop_file(
            &format!("outbox/c{i:02}.837"),
            format!("ISA*{i}~").as_bytes(),
        );
    }
    let (cfg, engine) = (s.config(), s.engine());
    let before = srv.connections_accepted();
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(r.delivered(), 60);
    assert_eq!(
        srv.connections_accepted() - before,
        3,
        "three sessions for sixty files"
    );
    assert_eq!(s.archived("out").len(), 60);
}

/// A pull's download sessions log in while its listing is still being read
/// (here: during `stable_for`), not after it, and no more of them than
/// the batch needs; a folder holding only files already pulled logs in
/// none ahead.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_pull_logs_its_download_sessions_in_while_it_lists_and_no_more() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    for i in 0..60 {
        std::fs::write(
            srv.root().join(format!("outbound/r{i:02}.835")),
            format!("ISA*{i}~"),
        )
        .unwrap();
    }
    let s = Setup::new(&format!("{}    max_connections: 3\n", inprocess_yaml(&srv)));
    s.job(
        "in",
        &format!(
            "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 2s\nafter_pull: keep\n{FAST_RETRY}"
        ),
    );
    let (cfg, engine) = (s.config(), s.engine());
    let before = srv.connections_accepted();
    let running = tokio::spawn({
        let (cfg, engine) = (cfg.clone(), engine.clone());
        async move { run(&engine, &cfg, "in").await }
    });
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while srv.connections_accepted() - before < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        srv.connections_accepted() - before,
        3,
        "the two download sessions log in during the listing's stable_for wait"
    );
    assert!(
        !s.local("inbox/r00.835").exists(),
        "nothing is downloaded before the listing is done"
    );
    let r = running.await.unwrap();
    assert_eq!(r.delivered(), 60, "{r:?}");
    assert_eq!(
        srv.connections_accepted() - before,
        3,
        "three sessions for sixty files, none more"
    );
    let before = srv.connections_accepted();
    let second = run(&engine, &cfg, "in").await;
    assert_eq!(second.delivered(), 0, "{second:?}");
    assert_eq!(
        srv.connections_accepted() - before,
        1,
        "only the listing session: every listed file was pulled before"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_file_still_growing_between_two_listings_is_left_for_the_next_run() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/done.835"), b"ISA*complete~").unwrap();
    let growing = srv.root().join("outbound/growing.835");
    std::fs::write(&growing, b"ISA*").unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job(
        "in",
        &pull_job("").replace("stable_for: 0s", "stable_for: 600ms"),
    );
    let (cfg, engine) = (s.config(), s.engine());
    let writer = {
        let growing = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            for _ in 0..12 {
                std::thread::sleep(Duration::from_millis(100));
                f.write_all(b"SEG*more~\n").unwrap();
            }
        })
    };
    let r = run(&engine, &cfg, "in").await;
    writer.join().unwrap();
    let mut st = statuses(&r);
    st.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        st,
        vec![
            ("done.835".to_string(), FileStatus::Delivered),
            ("growing.835".to_string(), FileStatus::NotReady)
        ]
    );
    assert!(
        !s.local("inbox/growing.835").exists(),
        "not pulled while growing"
    );
    let r = run(&engine, &cfg, "in").await;
    assert_eq!(r.delivered(), 1, "pulled once it held still: {r:?}");
    assert_eq!(
        std::fs::read(s.local("inbox/growing.835")).unwrap().len(),
        4 + 12 * 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_shows_progress_bars_on_a_terminal_and_none_when_piped() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", &push_job("after_push: keep\n"));
    let big: Vec<u8> = (0..48 * 1024 * 1024u32).map(|i| (i >> 7) as u8).collect();
    let cmd = |name: &str| {
        format!(
            "{} --config {} once --force out > {} 2>/dev/null",
            support::ferry_bin(),
            s.path().join("ferry.yaml").display(),
            s.path().join(name).display()
        )
    };
    // Piped: plain lines only.
    s.drop_file("outbox/big-1.837", &big);
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd("piped.out"))
        .status()
        .unwrap();
    assert!(st.success());
    let piped = std::fs::read_to_string(s.path().join("piped.out")).unwrap();
    assert!(piped.contains("delivered  big-1.837"), "{piped}");
    assert!(
        !piped.contains("MiB/") && !piped.contains('\u{1b}') && !piped.contains('\r'),
        "no progress when piped: {piped:?}"
    );
    // On a terminal (script(1) gives the command a pty): a bar with sizes.
    let tty = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --config {} once --force out",
            support::ferry_bin(),
            s.path().join("ferry.yaml").display()
        ))
        .arg("/dev/null")
        .env("RUST_LOG", "off")
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("MiB/") && shown.contains("big-1.837"),
        "a progress bar on the terminal: {shown:?}"
    );
}

/// Steps that commit together (a listing's records, sent with verified,
/// renamed with done) still leave every file's whole journey, in order,
/// each step once, in the events and the audit trail, with several
/// sessions recording at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_several_sessions_records_every_step_of_every_file_once() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&format!("{}    max_connections: 3\n", inprocess_yaml(&srv)));
    s.job("out", &push_job("after_push: keep\n"));
    s.job(
        "in",
        "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /inbound\nstable_for: 0s\nafter_pull: keep\n",
    );
    const N: i64 = 30;
    for i in 0..N {
        s.drop_file(
            &format!("outbox/c{i:02}.837"),
            format!("ISA*{i}~").as_bytes(),
        );
    }
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), N as usize);
    assert_eq!(run(&engine, &cfg, "in").await.delivered(), N as usize);
    let l = engine.ledger.lock().unwrap();
    let journey = |id: i64, kinds: &[&str]| {
        let row = l.file(id).unwrap();
        assert_eq!(row.state, ferry::ledger::FileState::Done, "file {id}");
        assert_eq!(row.attempts, 1, "file {id}: one attempt, counted once");
        for k in kinds {
            assert_eq!(l.count_events(id, k).unwrap(), 1, "file {id}: {k}");
        }
        row
    };
    for id in 1..=N {
        let row = journey(
            id,
            &["seen", "sending", "sent", "renaming", "verified", "done"],
        );
        assert_eq!(row.direction, "push");
    }
    for id in N + 1..=2 * N {
        let row = journey(
            id,
            &["seen", "sending", "sent", "verified", "renamed", "done"],
        );
        assert_eq!(row.direction, "pull");
        assert!(row.sha256.is_some(), "the SHA-256 is recorded with sent");
        let placed = std::path::PathBuf::from(row.local_path.expect("the placed path"));
        assert_eq!(
            std::fs::read(&placed).unwrap(),
            std::fs::read(s.local(&format!("outbox/{}", row.name))).unwrap()
        );
    }
    // The audit trail has the same steps, in order, each file's own.
    match l.verify_audit().unwrap() {
        ferry::ledger::Verdict::Intact { .. } => {}
        v => panic!("{v:?}"),
    }
    let rows = l.audit_entries(&Default::default()).unwrap();
    for id in N + 1..=2 * N {
        let kinds: Vec<&str> = rows
            .iter()
            .filter(|r| r.file_id == Some(id))
            .map(|r| r.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["seen", "sending", "sent", "verified", "renamed", "done"],
            "file {id}"
        );
    }
}

/// A pull stopped after recording `sent` (the check not recorded) or
/// `verified` (not yet placed), its `.part` on disk: the next run checks or
/// just places that `.part`, through the same finisher as a fresh download,
/// once, without downloading it again, and ends the journey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_stopped_after_sent_or_verified_places_its_part_once_without_downloading_again() {
    for stopped in ["sent", "verified"] {
        let srv = ftps_server::start(ServerOptions::default()).await;
        std::fs::create_dir(srv.root().join("outbound")).unwrap();
        std::fs::write(srv.root().join("outbound/ack.999"), b"ISA*ack~").unwrap();
        let s = Setup::new(&inprocess_yaml(&srv));
        s.job("in", &pull_job("after_pull: keep\n"));
        let (cfg, engine) = (s.config(), s.engine());
        assert_eq!(run(&engine, &cfg, "in").await.delivered(), 1);
        // Back to the moment of the stop: the file not placed, its .part kept.
        std::fs::rename(s.local("inbox/ack.999"), s.local("inbox/.ack.999.part")).unwrap();
        let db = rusqlite::Connection::open(cfg.state_dir.join("ferry.db")).unwrap();
        db.execute(
            "UPDATE files SET state = ?1, local_path = NULL, finished_at = NULL WHERE id = 1",
            [stopped],
        )
        .unwrap();
        drop(db);
        let r = run(&engine, &cfg, "in").await;
        assert_eq!(
            statuses(&r),
            [("ack.999".into(), FileStatus::Delivered)],
            "{stopped}"
        );
        assert_eq!(
            std::fs::read(s.local("inbox/ack.999")).unwrap(),
            b"ISA*ack~"
        );
        assert_eq!(
            support::real_servers::sorted_names(&s.local("inbox")),
            ["ack.999"],
            "{stopped}: placed once, the .part gone"
        );
        let l = engine.ledger.lock().unwrap();
        let row = l.file(1).unwrap();
        assert_eq!(row.state, ferry::ledger::FileState::Done, "{stopped}");
        assert_eq!(
            l.count_events(1, "sending").unwrap(),
            1,
            "{stopped}: not downloaded again"
        );
        assert_eq!(l.count_events(1, "renamed").unwrap(), 2, "{stopped}");
        let checked_again = if stopped == "sent" { 2 } else { 1 };
        assert_eq!(
            l.count_events(1, "verified").unwrap(),
            checked_again,
            "{stopped}"
        );
    }
}
