//! Watched folders on a real file system, with the real engine and the
//! in-process FTPS server: slow writers are never picked early, renames into
//! the folder and files dropped while the agent was down are picked, and a
//! burst of 1000 files moves in a handful of runs.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry::agent::{Agent, Clock, Control, EngineRunner, engine_has_work};
use support::engine::{Setup, inprocess_yaml};
use support::ftps_server::{self, ServerOptions, TestServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

struct Running {
    ctl: mpsc::UnboundedSender<Control>,
    handle: JoinHandle<Agent>,
}

fn start_agent(s: &Setup) -> Running {
    let cfg = s.config();
    let engine = Arc::new(s.engine());
    let alerter = ferry::alert::Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    let agent = Agent::new(
        cfg,
        Arc::new(EngineRunner {
            engine: engine.clone(),
            alerter,
            metrics: None,
        }),
        Clock::system(),
        engine_has_work(engine),
    );
    let (ctl, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(agent.run(rx, HashMap::new()));
    Running { ctl, handle }
}

impl Running {
    async fn stop(self) {
        self.ctl.send(Control::Shutdown).unwrap();
        self.handle.await.unwrap();
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn watched(srv: &TestServer, stable: &str) -> Setup {
    std::fs::create_dir_all(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(srv));
    s.job(
        "out",
        &format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\nstable_for: {stable}\nrescan_interval: 1h\nretry: {{ attempts: 3, initial_delay: 10ms, max_delay: 50ms }}\n"),
    );
    std::fs::create_dir_all(s.local("outbox")).unwrap();
    s
}

fn count_runs(s: &Setup) -> usize {
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_pieces_is_not_picked_before_it_is_complete() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = watched(&srv, "1s");
    let agent = start_agent(&s);
    let remote = srv.root().join("inbound/slow.837");
    let partial_seen = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let checker = {
        let (remote, seen, stop) = (remote.clone(), partial_seen.clone(), stop_watch.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if std::fs::metadata(&remote).is_ok_and(|m| m.len() != 12 * 1000) {
                    seen.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let path = s.local("outbox/slow.837");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..12 {
            f.write_all(&[b'x'; 1000]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300)); // 3.6 s in all, pauses < stable_for
        }
    });
    writer.join().unwrap();
    wait_for("delivery", Duration::from_secs(15), || remote.exists()).await;
    stop_watch.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    assert!(
        !partial_seen.load(Ordering::Relaxed),
        "a partial upload carried the name"
    );
    assert_eq!(std::fs::read(&remote).unwrap().len(), 12 * 1000);
    // Runs may have looked at it while it was being written (the start-up
    // rescan races the writer); none sent it early, and it went once.
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    let sent: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM files WHERE name = 'slow.837'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sent, 1, "one delivery record");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_into_the_folder_is_picked() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = watched(&srv, "200ms");
    let agent = start_agent(&s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(s.local("staging.tmp"), b"ISA*renamed~").unwrap();
    std::fs::rename(s.local("staging.tmp"), s.local("outbox/renamed.837")).unwrap();
    let remote = srv.root().join("inbound/renamed.837");
    wait_for("delivery", Duration::from_secs(10), || remote.exists()).await;
    assert_eq!(std::fs::read(&remote).unwrap(), b"ISA*renamed~");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dropped_while_the_agent_was_stopped_is_picked_at_start() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = watched(&srv, "200ms");
    s.drop_file("outbox/offline.837", b"ISA*dropped while down~");
    let agent = start_agent(&s);
    let remote = srv.root().join("inbound/offline.837");
    wait_for("delivery", Duration::from_secs(10), || remote.exists()).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_files_moves_all_of_them_in_few_runs() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = watched(&srv, "300ms");
    let agent = start_agent(&s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..1000 {
        std::fs::write(s.local(&format!("outbox/b{i:04}.837")), format!("ISA*{i}~")).unwrap();
    }
    let inbound = srv.root().join("inbound");
    wait_for("1000 deliveries", Duration::from_secs(120), || {
        count(&inbound) == 1000
    })
    .await;
    wait_for("the archive", Duration::from_secs(10), || {
        s.archived("out").len() == 1000
    })
    .await;
    let runs = count_runs(&s);
    eprintln!("1000 files in {runs} runs");
    assert!(runs <= 10, "{runs} runs for 1000 files");
    agent.stop().await;
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".part"))
            })
            .count()
        })
        .unwrap_or(0)
}
