//! Crash safety: the `ferry` binary killed with SIGKILL in the middle of a
//! large upload, then run again, delivers the file exactly once.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::engine::{Setup, inprocess_yaml};
use support::ftps_server::{self, ServerOptions};

fn once(s: &Setup) -> Command {
    let mut c = Command::new(support::ferry_bin());
    c.arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["once", "out"]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_rerun_delivers_exactly_once_and_archives_once() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nretry: { attempts: 3, initial_delay: 10ms, max_delay: 50ms }\n");
    let data: Vec<u8> = (0..128 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let want = Sha256::digest(&data);
    s.drop_file("outbox/big.837", &data);
    drop(data);
    let inbound = srv.root().join("inbound");
    let part_len = || support::temp_len(&inbound, "big.837");
    let fin = srv.root().join("inbound/big.837");

    // Run 1: killed once a few MB are on the server.
    let mut child = once(&s)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = part_len();
        if sent > 8 * 1024 * 1024 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "upload never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // let the server notice the cut
    let partial = part_len();
    assert!(
        !fin.exists(),
        "nothing under the final name after the crash"
    );
    assert!(
        partial < 128 * 1024 * 1024,
        "the kill came mid-transfer ({partial} bytes)"
    );
    assert!(
        s.local("outbox/big.837").exists(),
        "not archived before delivery"
    );

    // Run 2: completes it, resuming the partial upload.
    let out = once(&s).output().unwrap();
    let text = support::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        support::stderr(&out)
    );
    assert!(text.contains("delivered  big.837"), "{text}");
    assert!(
        text.contains("(resumed at byte "),
        "the partial upload was resumed with REST: {text}"
    );
    let names: Vec<String> = std::fs::read_dir(srv.root().join("inbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.837"], "exactly one file, no temp left");
    assert_eq!(
        Sha256::digest(std::fs::read(&fin).unwrap()),
        want,
        "byte-identical"
    );

    // The ledger says delivered once; the local file was archived once.
    let hist = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["history", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    let rows: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["file"] == "big.837")
        .collect();
    assert_eq!(rows.len(), 1, "{v:#}");
    assert_eq!(rows[0]["status"], "delivered");
    assert_eq!(rows[0]["sha256"], hex::encode(want));
    assert_eq!(s.archived("out").len(), 1);
    assert!(!s.local("outbox/big.837").exists());

    // Run 3: nothing more to do.
    let out = once(&s).output().unwrap();
    assert!(
        support::stdout(&out).contains("out: 0 delivered"),
        "{}",
        support::stdout(&out)
    );
    assert_eq!(
        std::fs::read_dir(srv.root().join("inbound"))
            .unwrap()
            .count(),
        1
    );
}
