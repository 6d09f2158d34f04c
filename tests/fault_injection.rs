//! Fault injection: a proxy between ferry and the in-process FTPS server
//! cuts connections at random points (data and control, mid-file and just
//! before the server's final reply). Whatever the cut, each file ends up
//! delivered exactly once and byte-identical, and nothing partial ever
//! carries a final name. Server-side faults (permission denied, refused
//! rename) fail only their file.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::transfer::FileStatus;
use support::cut_proxy::{CutPlan, CutProxy};
use support::engine::{Setup, run};
use support::faults::{Faults, Rule};
use support::ftps_server::{self, ServerOptions, TestServer};

const CUTS: usize = 50;
const FILE_LEN: usize = 768 * 1024;

fn content(i: usize) -> Vec<u8> {
    let mut v = format!("ISA*00*{i:04}~\r\n").into_bytes();
    v.extend((0..FILE_LEN).map(|k| ((k * 131 + i * 7) % 251) as u8));
    v
}

fn proxied_yaml(srv: &TestServer, proxy: &CutProxy) -> String {
    format!(
        "    host: 127.0.0.1\n    port: {}\n    user: {}\n    password: {}\n    ca_file: {}\n    timeout: 5s\n",
        proxy.port(),
        srv.user,
        srv.password,
        srv.ca_file().display()
    )
}

/// A cut plan for iteration `i`: mostly data cuts at random byte counts,
/// some control-connection cuts, some lost final replies.
fn plan(i: usize, rng: &mut fastrand::Rng, upload: bool, control_bytes: u64) -> (CutPlan, String) {
    // Within the file's bytes on the wire; the very end is the reply-lost case.
    let total = FILE_LEN as u64;
    match i % 10 {
        0 => {
            let n = rng.u64(100..control_bytes);
            (
                CutPlan::control_after(n).once(),
                format!("control after {n}"),
            )
        }
        1 => {
            let p = if upload {
                CutPlan::upload_reply_lost(FILE_LEN as u64)
            } else {
                CutPlan::download_reply_lost(FILE_LEN as u64)
            };
            (p.once(), "final reply lost".to_string())
        }
        _ => {
            let n = rng.u64(1..total);
            let p = if upload {
                CutPlan::upload_after(n)
            } else {
                CutPlan::download_after(n)
            };
            let p = if i.is_multiple_of(3) {
                p.with_control()
            } else {
                p
            };
            (p.once(), format!("data after {n}"))
        }
    }
}

/// Runs one clean transfer and returns the control-connection bytes a run
/// takes, so control cuts land inside a run rather than after it.
async fn warm_up<F: std::future::Future<Output = ()>>(
    proxy: &CutProxy,
    f: impl FnOnce() -> F,
) -> u64 {
    let before = proxy.stats();
    f().await;
    let after = proxy.stats();
    let control = (after.bytes_up + after.bytes_down)
        - (after.data_bytes_up + after.data_bytes_down)
        - ((before.bytes_up + before.bytes_down) - (before.data_bytes_up + before.data_bytes_down));
    assert!(control > 200, "a run moved {control} control bytes");
    control
}

/// Watches `path` while a run goes on: if it ever exists with fewer bytes
/// than `len`, something partial carried the final name.
fn watch_final(path: PathBuf, len: u64) -> (Arc<AtomicBool>, std::thread::JoinHandle<Option<u64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Ok(m) = std::fs::metadata(&path)
                && m.len() != len
            {
                return Some(m.len());
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        None
    });
    (stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_50_random_cuts_delivering_each_file_exactly_once() {
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let proxy = CutProxy::start(&srv, CutPlan::none()).await;
    let s = Setup::new(&proxied_yaml(&srv, &proxy));
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nretry: { attempts: 6, initial_delay: 5ms, max_delay: 20ms }\n");
    let (cfg, engine) = (s.config(), s.engine());
    let control_bytes = warm_up(&proxy, || async {
        s.drop_file("outbox/warm-up.837", b"ISA~");
        assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    })
    .await;
    for i in 0..CUTS {
        let name = format!("c{i:03}.837");
        let data = content(i);
        s.drop_file(&format!("outbox/{name}"), &data);
        let (p, what) = plan(i, &mut rng, true, control_bytes);
        proxy.set_plan(p);
        let cuts_before = proxy.cuts();
        let (stop, watcher) =
            watch_final(srv.root().join("inbound").join(&name), data.len() as u64);
        let r = run(&engine, &cfg, "out").await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            watcher.join().unwrap(),
            None,
            "iteration {i} ({what}): a partial file carried the final name"
        );
        assert_eq!(r.delivered(), 1, "iteration {i} ({what}): {r:?}");
        assert_eq!(
            std::fs::read(srv.root().join("inbound").join(&name)).unwrap(),
            data,
            "iteration {i} ({what})"
        );
        assert!(
            proxy.cuts() > cuts_before,
            "iteration {i} ({what}): the cut happened"
        );
    }
    // Exactly once: every file once on the server, no temp left, one ledger record each, one archive copy each.
    let on_server: BTreeSet<String> = std::fs::read_dir(srv.root().join("inbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected: BTreeSet<String> = (0..CUTS).map(|i| format!("c{i:03}.837")).collect();
    expected.insert("warm-up.837".into());
    assert_eq!(on_server, expected);
    let history = engine
        .ledger
        .lock()
        .unwrap()
        .history(&ferry::ledger::HistoryQuery {
            job: Some("out"),
            limit: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(history.len(), CUTS + 1, "one record per file");
    assert!(
        history
            .iter()
            .all(|t| t.status == ferry::ledger::Status::Delivered)
    );
    assert_eq!(s.archived("out").len(), CUTS + 1);
    eprintln!("{} cuts over {CUTS} pushes", proxy.cuts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_survives_50_random_cuts_downloading_each_file_exactly_once() {
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    let proxy = CutProxy::start(&srv, CutPlan::none()).await;
    let s = Setup::new(&proxied_yaml(&srv, &proxy));
    s.job("in", "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\nafter_pull: delete\nretry: { attempts: 6, initial_delay: 5ms, max_delay: 20ms }\n");
    let (cfg, engine) = (s.config(), s.engine());
    let control_bytes = warm_up(&proxy, || async {
        std::fs::write(srv.root().join("outbound/warm-up.835"), b"ISA~").unwrap();
        assert_eq!(run(&engine, &cfg, "in").await.delivered(), 1);
    })
    .await;
    for i in 0..CUTS {
        let name = format!("r{i:03}.835");
        let data = content(i);
        std::fs::write(srv.root().join("outbound").join(&name), &data).unwrap();
        let (p, what) = plan(i, &mut rng, false, control_bytes);
        proxy.set_plan(p);
        let (stop, watcher) = watch_final(s.local("inbox").join(&name), data.len() as u64);
        let r = run(&engine, &cfg, "in").await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            watcher.join().unwrap(),
            None,
            "iteration {i} ({what}): a partial file carried the final name"
        );
        assert_eq!(r.delivered(), 1, "iteration {i} ({what}): {r:?}");
        assert_eq!(
            std::fs::read(s.local("inbox").join(&name)).unwrap(),
            data,
            "iteration {i} ({what})"
        );
        assert!(
            !srv.root().join("outbound").join(&name).exists(),
            "iteration {i}: deleted after the verified pull"
        );
    }
    let local: BTreeSet<String> = std::fs::read_dir(s.local("inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected: BTreeSet<String> = (0..CUTS).map(|i| format!("r{i:03}.835")).collect();
    expected.insert("warm-up.835".into());
    assert_eq!(
        local, expected,
        "each file once, no .part and no suffixed duplicate"
    );
    eprintln!("{} cuts over {CUTS} pulls", proxy.cuts());
}

#[tokio::test(flavor = "multi_thread")]
async fn permission_denied_on_the_server_fails_only_that_file() {
    let srv = ftps_server::start(ServerOptions {
        faults: Faults {
            deny_writes_to: Rule::matching(["/inbound/secret*"]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&support::engine::inprocess_yaml(&srv));
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nretry: { attempts: 2, initial_delay: 5ms, max_delay: 10ms }\n");
    s.drop_file("outbox/secret.837", b"ISA*1~");
    s.drop_file("outbox/open.837", b"ISA*2~");
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    let denied = r.files.iter().find(|f| f.name == "secret.837").unwrap();
    match &denied.status {
        FileStatus::Failed { error } => assert!(
            error.to_ascii_lowercase().contains("permission denied"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.files
            .iter()
            .find(|f| f.name == "open.837")
            .unwrap()
            .status,
        FileStatus::Delivered
    );
    assert!(
        s.local("outbox/secret.837").exists(),
        "the failed file stays"
    );
    assert!(!srv.root().join("inbound/secret.837").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_rename_fails_only_that_file_and_nothing_carries_its_name() {
    let srv = ftps_server::start(ServerOptions {
        faults: Faults {
            refuse_rename: Rule::matching(["/inbound/stuck*"]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&support::engine::inprocess_yaml(&srv));
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nretry: { attempts: 2, initial_delay: 5ms, max_delay: 10ms }\n");
    s.drop_file("outbox/stuck.837", b"ISA*1~");
    s.drop_file("outbox/fine.837", b"ISA*2~");
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    let stuck = r.files.iter().find(|f| f.name == "stuck.837").unwrap();
    match &stuck.status {
        FileStatus::Failed { error } => assert!(error.contains("553"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stuck.attempts, 2);
    assert_eq!(
        r.files
            .iter()
            .find(|f| f.name == "fine.837")
            .unwrap()
            .status,
        FileStatus::Delivered
    );
    assert!(
        !srv.root().join("inbound/stuck.837").exists(),
        "never under its final name"
    );
    assert!(s.local("outbox/stuck.837").exists(), "not archived");
    // Once the partner fixes the rename, the next run finishes it from the complete temp file.
    srv.set_faults(Faults::default());
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(r.delivered(), 1, "{r:?}");
    assert_eq!(
        std::fs::read(srv.root().join("inbound/stuck.837")).unwrap(),
        b"ISA*1~"
    );
    assert!(!srv.root().join("inbound/stuck.837.part").exists());
}
