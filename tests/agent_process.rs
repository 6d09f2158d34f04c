//! `ferry run` as a process: SIGTERM during a large upload exits 0 within
//! the grace period and the next start completes the file exactly once;
//! SIGHUP with an invalid configuration keeps the agent on the old one, and
//! with a valid one adds jobs.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::engine::{Setup, inprocess_yaml, signal, spawn_agent, wait_for};
use support::ftps_server::{self, ServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_upload_exits_0_within_grace_and_the_next_start_delivers_once() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("shutdown_grace: 1s\n{cfg}"),
    )
    .unwrap();
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\nstable_for: 0s\n");
    let data: Vec<u8> = (0..160 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    let want = Sha256::digest(&data);
    s.drop_file("outbox/big.837", &data);
    drop(data);
    let inbound = srv.root().join("inbound");
    let part_len = || support::temp_len(&inbound, "big.837");
    let fin = srv.root().join("inbound/big.837");

    let mut agent = spawn_agent(&s, "agent1.log");
    wait_for("the upload to start", Duration::from_secs(30), || {
        part_len() > 4 * 1024 * 1024
    })
    .await;
    let sent_at_term = part_len();
    let t = Instant::now();
    signal(&agent, libc::SIGTERM);
    let status = loop {
        if let Some(st) = agent.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t.elapsed();
    let log = std::fs::read_to_string(s.path().join("agent1.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took < Duration::from_millis(2500),
        "exit took {took:?} with a 1 s grace"
    );
    eprintln!("SIGTERM at {sent_at_term} bytes; exited 0 after {took:?}");
    if !fin.exists() {
        assert!(log.contains("grace expired"), "{log}");
        assert!(
            s.local("outbox/big.837").exists(),
            "not archived: not delivered yet"
        );
    }

    // The next start resumes and completes it, exactly once.
    let mut agent = spawn_agent(&s, "agent2.log");
    wait_for("delivery", Duration::from_secs(60), || {
        fin.exists() && !s.local("outbox/big.837").exists()
    })
    .await;
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    assert_eq!(Sha256::digest(std::fs::read(&fin).unwrap()), want);
    let names: Vec<String> = std::fs::read_dir(srv.root().join("inbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.837"]);
    assert_eq!(s.archived("out").len(), 1);
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM files WHERE name = 'big.837'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_configuration_keeps_the_agent_on_the_old_one() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\nstable_for: 200ms\n");
    std::fs::create_dir_all(s.local("outbox")).unwrap();
    let mut agent = spawn_agent(&s, "agent.log");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Break the configuration, then reload.
    s.job("broken", "direction: sideways\n");
    signal(&agent, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    let log = std::fs::read_to_string(s.path().join("agent.log")).unwrap();
    assert!(log.contains("invalid; keeping the running one"), "{log}");
    assert!(
        log.contains("jobs/broken.yaml:1:12: unknown variant 'sideways'"),
        "every error is logged: {log}"
    );
    // The old configuration still works.
    std::fs::write(s.local("outbox/still.837"), b"ISA*still~").unwrap();
    wait_for(
        "delivery on the old configuration",
        Duration::from_secs(10),
        || srv.root().join("inbound/still.837").exists(),
    )
    .await;

    // A valid reload adds a job without a restart.
    std::fs::remove_file(s.path().join("jobs/broken.yaml")).unwrap();
    s.job("second", "direction: push\nserver: srv\nlocal_dir: ../outbox2\nremote_dir: /inbound\nwatch: true\nstable_for: 200ms\n");
    std::fs::create_dir_all(s.local("outbox2")).unwrap();
    signal(&agent, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(s.local("outbox2/added.837"), b"ISA*added~").unwrap();
    wait_for("delivery by the added job", Duration::from_secs(10), || {
        srv.root().join("inbound/added.837").exists()
    })
    .await;
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    let log = std::fs::read_to_string(s.path().join("agent.log")).unwrap();
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ferry_run_on_the_same_state_exits_3() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job(
        "out",
        "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\n",
    );
    let mut first = spawn_agent(&s, "first.log");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(3),
        "{}",
        support::stderr(&second)
    );
    assert!(support::stderr(&second).contains(&format!("pid {} (ferry run)", first.id())));
    signal(&first, libc::SIGTERM);
    assert_eq!(first.wait().unwrap().code(), Some(0));
}
