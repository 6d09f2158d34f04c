//! The audit trail: a hash chain an auditor can check. Tampering with a copy
//! of a ledger (edit, delete, insert, reorder) is found and the row named;
//! exports round-trip through independent JSON and CSV parsers; retention
//! prunes without breaking the chain; operator actions carry the OS user;
//! the state folder's permissions are enforced; a server's certificate
//! change is recorded.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry::ledger::{AuditQuery, FileState, Ledger, NewFile, Step, Verdict, Verified, row_hash};
use support::engine::{Setup, inprocess_yaml, run};
use support::ftps_server::{self, ServerOptions};
use support::{Fixture, stderr, stdout};

/// Records a pushed file `name` of `size` bytes, sent to `dir/name`, in state `seen`.
fn seen(ledger: &Ledger, job: &str, dir: &str, name: &str, size: u64) -> i64 {
    ledger
        .insert_file(&NewFile {
            job,
            direction: "push",
            name,
            size,
            mtime: None,
            sha256: Some("ab"),
            remote_path: &format!("{dir}/{name}"),
            local_path: None,
            run_id: None,
        })
        .unwrap()
}

/// A ledger in `dir` with `files` pushed files, each through a full journey.
fn ledger_with_files(dir: &Path, files: usize) -> Ledger {
    let ledger = Ledger::open(dir).unwrap();
    for i in 0..files {
        let name = format!("claim-{i}.837");
        let id = seen(&ledger, "out", "/in", &name, 100 + i as u64);
        for state in [FileState::Sending, FileState::Sent, FileState::Verified] {
            ledger
                .step(
                    id,
                    &Step {
                        state,
                        verified: (state == FileState::Verified).then_some(Verified::Hash),
                        ..Step::default()
                    },
                )
                .unwrap();
        }
        ledger
            .set_file_state(id, FileState::Done, None, None)
            .unwrap();
    }
    ledger
}

fn broken_at(ledger: &Ledger) -> (i64, String) {
    match ledger.verify_audit().unwrap() {
        Verdict::Broken { seq, why } => (seq, why),
        v => panic!("expected a broken chain, got {v:?}"),
    }
}

fn sql(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("ferry.db")).unwrap()
}

#[test]
fn an_untouched_chain_verifies_with_every_file_step_in_it() {
    let dir = support::private_dir();
    let ledger = ledger_with_files(dir.path(), 3);
    match ledger.verify_audit().unwrap() {
        // trail_started + 3 files x (seen, sending, sent, verified, done)
        Verdict::Intact { rows, head } => {
            assert_eq!(rows, 1 + 3 * 5);
            assert_eq!(head.unwrap().seq, 16);
        }
        v => panic!("{v:?}"),
    }
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let verified: Vec<_> = rows.iter().filter(|r| r.kind == "verified").collect();
    assert_eq!(verified.len(), 3);
    let d: serde_json::Value = serde_json::from_str(&verified[0].detail).unwrap();
    assert_eq!(d["verified"], "hash", "the level is recorded: {d}");
    assert_eq!(d["size"], 100);
    assert_eq!(verified[0].file.as_deref(), Some("claim-0.837"));
}

#[test]
fn editing_a_row_is_found_and_the_row_named() {
    let dir = support::private_dir();
    drop(ledger_with_files(dir.path(), 3));
    // The change an insider would make: a failed delivery shown as verified.
    sql(dir.path())
        .execute(
            "UPDATE audit SET detail = replace(detail, '\"size\":101', '\"size\":999') WHERE seq = 8",
            [],
        )
        .unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (seq, why) = broken_at(&ledger);
    assert_eq!(seq, 8, "{why}");
    assert!(why.contains("edited"), "{why}");
}

#[test]
fn deleting_a_row_is_found_at_the_row_after_it() {
    let dir = support::private_dir();
    drop(ledger_with_files(dir.path(), 3));
    sql(dir.path())
        .execute("DELETE FROM audit WHERE seq = 5", [])
        .unwrap();
    let (seq, why) = broken_at(&Ledger::open(dir.path()).unwrap());
    assert_eq!(seq, 6, "{why}");
    assert!(why.contains("deleted"), "{why}");
}

#[test]
fn deleting_the_newest_rows_is_found() {
    let dir = support::private_dir();
    drop(ledger_with_files(dir.path(), 2));
    sql(dir.path())
        .execute("DELETE FROM audit WHERE seq >= 10", [])
        .unwrap();
    let (seq, why) = broken_at(&Ledger::open(dir.path()).unwrap());
    assert_eq!(seq, 10, "{why}");
    assert!(why.contains("newest rows were deleted"), "{why}");
}

#[test]
fn inserting_a_row_is_found_even_with_a_correct_hash_of_its_own() {
    let dir = support::private_dir();
    drop(ledger_with_files(dir.path(), 3));
    let conn = sql(dir.path());
    // Make room after row 4 and insert a forged row that links to row 4
    // and hashes correctly: the row after it no longer links.
    conn.execute("UPDATE audit SET seq = -seq WHERE seq > 4", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0", [])
        .unwrap();
    let prev: String = conn
        .query_row("SELECT hash FROM audit WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    let at = "2026-01-01T00:00:00.000Z";
    let detail = r#"{"state":"done"}"#;
    let hash = row_hash(
        &prev,
        5,
        at,
        "done",
        Some("out"),
        None,
        None,
        Some("forged.837"),
        "ferry",
        detail,
    );
    conn.execute(
        "INSERT INTO audit (seq, at, kind, job, file, actor, detail, prev, hash)
         VALUES (5, ?1, 'done', 'out', 'forged.837', 'ferry', ?2, ?3, ?4)",
        rusqlite::params![at, detail, prev, hash],
    )
    .unwrap();
    let (seq, why) = broken_at(&Ledger::open(dir.path()).unwrap());
    assert_eq!(seq, 6, "{why}");
    assert!(why.contains("does not link"), "{why}");
}

#[test]
fn reordering_two_rows_is_found() {
    let dir = support::private_dir();
    drop(ledger_with_files(dir.path(), 3));
    let conn = sql(dir.path());
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 7", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 7 WHERE seq = 8", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 8 WHERE seq = -1", [])
        .unwrap();
    let (seq, why) = broken_at(&Ledger::open(dir.path()).unwrap());
    assert_eq!(seq, 7, "{why}");
}

#[test]
fn audit_verify_exits_1_naming_the_row_and_0_when_intact() {
    let fx = Fixture::new(&[]);
    std::fs::create_dir_all(fx.path().join("out")).unwrap();
    drop(ledger_with_files(&fx.state_dir(), 2));
    let ok = fx.ferry(&["audit", "verify"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("audit trail intact: 11 rows"),
        "{}",
        stdout(&ok)
    );
    let head = Ledger::open(&fx.state_dir())
        .unwrap()
        .audit_head()
        .unwrap()
        .unwrap();
    let with_head = fx.ferry(&["audit", "verify", "--head", &head.hash]);
    assert_eq!(with_head.status.code(), Some(0), "{}", stdout(&with_head));
    let unknown = fx.ferry(&["audit", "verify", "--head", &"f".repeat(64)]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stdout(&unknown));
    assert!(stdout(&unknown).contains("is not in the trail"));

    sql(&fx.state_dir())
        .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
        .unwrap();
    let bad = fx.ferry(&["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stdout(&bad).contains("BROKEN at row 3"), "{}", stdout(&bad));
    let json = fx.ferry(&["audit", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["broken_row"], 3);
}

/// Rows with a name that needs quoting in CSV (comma, quote, newline).
fn awkward_fixture() -> Fixture {
    let fx = Fixture::new(&[]);
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let name = "a,\"b\"\nc.837";
    let id = ledger
        .insert_file(&NewFile {
            job: "a",
            direction: "push",
            name,
            size: 5,
            mtime: None,
            sha256: None,
            remote_path: "/inbound/x",
            local_path: None,
            run_id: None,
        })
        .unwrap();
    ledger
        .step(
            id,
            &Step {
                state: FileState::Failed,
                error: Some("550 denied, \"really\""),
                ..Step::default()
            },
        )
        .unwrap();
    drop(ledger);
    fx
}

#[test]
fn a_json_export_round_trips_and_ends_with_the_chain_head() {
    let fx = awkward_fixture();
    let out = fx.ferry(&["audit", "export", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let parsed: Vec<ferry::ledger::AuditEntry> =
        serde_json::from_value(v["entries"].clone()).unwrap();
    assert_eq!(parsed, rows);
    let head = ledger.audit_head().unwrap().unwrap();
    assert_eq!(v["chain_head"]["hash"], head.hash);
    assert_eq!(v["chain_head"]["seq"], head.seq);
    // Each exported row's hash is recomputable from the exported fields.
    for e in &parsed {
        let h = row_hash(
            &e.prev,
            e.seq,
            &e.at,
            &e.kind,
            e.job.as_deref(),
            e.server.as_deref(),
            e.file_id,
            e.file.as_deref(),
            &e.actor,
            &e.detail,
        );
        assert_eq!(h, e.hash, "row {}", e.seq);
    }
}

#[test]
fn a_csv_export_round_trips_through_pythons_csv_reader() {
    let fx = awkward_fixture();
    let out = fx.ferry(&["audit", "export", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv_path = fx.path().join("export.csv");
    std::fs::write(&csv_path, &out.stdout).unwrap();
    // An independent parser: Python's csv module, rows back as JSON.
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             with open(sys.argv[1], newline='') as f:\n\
             \x20   print(json.dumps(list(csv.reader(f))))",
        )
        .arg(&csv_path)
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(
        rows[0],
        [
            "seq", "at", "kind", "job", "server", "file_id", "file", "actor", "detail", "prev",
            "hash"
        ]
    );
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let entries = ledger.audit_entries(&AuditQuery::default()).unwrap();
    assert_eq!(rows.len(), entries.len() + 2, "header, rows, chain head");
    for (row, e) in rows[1..].iter().zip(&entries) {
        assert_eq!(row[0], e.seq.to_string());
        assert_eq!(row[2], e.kind);
        assert_eq!(row[6], e.file.clone().unwrap_or_default());
        assert_eq!(row[8], e.detail);
        assert_eq!(row[10], e.hash);
    }
    assert!(
        entries
            .iter()
            .any(|e| e.file.as_deref() == Some("a,\"b\"\nc.837"))
    );
    let last = rows.last().unwrap();
    assert_eq!(last[2], "chain_head");
    assert_eq!(last[10], ledger.audit_head().unwrap().unwrap().hash);
}

#[test]
fn an_export_filters_by_job_and_time() {
    let fx = awkward_fixture();
    let all = fx.ferry(&["audit", "export"]);
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert!(v["entries"].as_array().unwrap().len() >= 3);
    let job = fx.ferry(&["audit", "export", "--job", "a"]);
    let v: serde_json::Value = serde_json::from_slice(&job.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["job"] == "a"), "{entries:?}");
    let future = fx.ferry(&["audit", "export", "--since", "2999-01-01"]);
    let v: serde_json::Value = serde_json::from_slice(&future.stdout).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 0);
    assert!(
        v["chain_head"]["hash"].is_string(),
        "the head is always there"
    );
    let bad = fx.ferry(&["audit", "export", "--until", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("invalid --until 'soon'"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn pruning_leaves_a_checkpoint_and_the_chain_still_verifies() {
    let dir = support::private_dir();
    let ledger = ledger_with_files(dir.path(), 4);
    // An unfinished file from before the cutoff is never pruned.
    let open = seen(&ledger, "out", "/in", "in-flight.837", 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = ferry::ledger::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(ledger);
    let ledger = ledger_with_files(dir.path(), 1);
    let before = ledger.audit_head().unwrap().unwrap();
    let pruned = ledger.prune_before(&cutoff, "ferry", &[]).unwrap();
    assert_eq!(pruned.files, 4, "{pruned:?}");
    assert_eq!(pruned.audit_rows, 1 + 4 * 5 + 1, "{pruned:?}");
    assert!(ledger.file(open).is_ok(), "the unfinished file stays");
    match ledger.verify_audit().unwrap() {
        Verdict::Intact { head, .. } => assert_eq!(head.unwrap().seq, before.seq + 1),
        v => panic!("{v:?}"),
    }
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let cp = rows.iter().find(|r| r.kind == "checkpoint").unwrap();
    let d: serde_json::Value = serde_json::from_str(&cp.detail).unwrap();
    assert_eq!(d["through_seq"], 22);
    // A head copied out before pruning is still accounted for.
    assert!(ledger.audit_contains(&before.hash).unwrap().is_some());
    // Deleting rows behind the checkpoint's back is found (in a copy).
    let copy = support::private_dir();
    let copy_db = copy.path().join("ferry.db");
    sql(dir.path())
        .execute("VACUUM INTO ?1", [copy_db.to_str().unwrap()])
        .unwrap();
    std::fs::set_permissions(&copy_db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conn = sql(copy.path());
    let first: i64 = conn
        .query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM audit WHERE seq = ?1", [first])
        .unwrap();
    drop(conn);
    let (seq, why) = broken_at(&Ledger::open(copy.path()).unwrap());
    assert_eq!(seq, first + 1, "{why}");
    // A second pass, past the first checkpoint, still verifies.
    ledger
        .prune_before(&ferry::ledger::now(), "ferry", &[])
        .unwrap();
    assert!(matches!(
        ledger.verify_audit().unwrap(),
        Verdict::Intact { .. }
    ));
}

#[test]
fn retention_keeps_the_records_of_jobs_that_keep_their_files() {
    let dir = support::private_dir();
    let ledger = ledger_with_files(dir.path(), 2);
    let pruned = ledger
        .prune_before("2999-01-01T00:00:00.000Z", "ferry", &["out".to_string()])
        .unwrap();
    assert_eq!(pruned.files, 0, "{pruned:?}");
    assert!(pruned.audit_rows > 0);
    assert!(matches!(
        ledger.verify_audit().unwrap(),
        Verdict::Intact { .. }
    ));
}

#[test]
fn retention_removes_old_archive_days_with_an_audit_row_each() {
    let fx = Fixture::new(&[(
        "ferry.yaml",
        format!(
            "{}retention: {{ archive: 90d, ledger: 6y }}\n",
            support::BASE_AGENT
        )
        .as_bytes(),
    )]);
    std::fs::create_dir_all(fx.path().join("out")).unwrap();
    let old = fx.state_dir().join("archive/a/2001-02-03");
    let recent = fx
        .state_dir()
        .join("archive/a")
        .join(chrono::Utc::now().format("%Y-%m-%d").to_string());
    for d in [&old, &recent] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("x.837"), b"ISA").unwrap();
    }
    std::fs::set_permissions(fx.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = ferry::config::load(&fx.path().join("ferry.yaml")).unwrap();
    assert_eq!(
        cfg.retention.ledger,
        Some(std::time::Duration::from_secs(6 * 365 * 86_400))
    );
    let ledger = Ledger::open(&cfg.state_dir).unwrap();
    let report = ferry::audit::apply_retention(&cfg, &ledger, chrono::Utc::now()).unwrap();
    assert_eq!((report.archive_days, report.archive_files), (1, 1));
    assert!(!old.exists());
    assert!(recent.join("x.837").exists());
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let pruned = rows.iter().find(|r| r.kind == "archive_pruned").unwrap();
    assert!(pruned.detail.contains("2001-02-03"), "{}", pruned.detail);
    assert!(matches!(
        ledger.verify_audit().unwrap(),
        Verdict::Intact { .. }
    ));
}

#[test]
fn a_retention_too_short_to_be_safe_is_refused_with_its_location() {
    let fx = Fixture::new(&[(
        "ferry.yaml",
        format!("{}retention:\n  ledger: 2d\n", support::BASE_AGENT).as_bytes(),
    )]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ferry.yaml:7:11: retention.ledger is 2d; it must be at least 30d"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_operators_resend_is_in_the_trail_with_the_os_user() {
    let fx = Fixture::new(&[]);
    std::fs::create_dir_all(fx.path().join("out")).unwrap();
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let id = seen(&ledger, "a", "/inbound", "held.837", 3);
    ledger
        .set_file_state(id, FileState::Held, None, Some("cannot know"))
        .unwrap();
    drop(ledger);
    let out = fx.ferry(&["resend", "a", "held.837"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let user = ferry::transfer::operator::os_user();
    let resend = rows
        .iter()
        .find(|r| r.kind == "resend")
        .expect("resend row");
    assert_eq!(resend.actor, user);
    assert_eq!(resend.file.as_deref(), Some("held.837"));
    assert_eq!(resend.server.as_deref(), Some("ch 127.0.0.1:21"));
    let loaded = rows.iter().rfind(|r| r.kind == "config_loaded").unwrap();
    assert_eq!(loaded.actor, user);
    let d: serde_json::Value = serde_json::from_str(&loaded.detail).unwrap();
    let files = d["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "ferry.yaml and jobs/a.yaml: {d}");
    let yaml = std::fs::read(fx.path().join("ferry.yaml")).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&yaml));
    assert_eq!(files[0]["sha256"], sha);
    assert_eq!(d["jobs"]["a"]["server"], "ch");
}

#[test]
fn a_state_folder_or_ledger_open_to_others_is_refused_with_the_fix() {
    let fx = Fixture::new(&[]);
    drop(Ledger::open(&fx.state_dir()).unwrap());
    let state = fx.state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = fx.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the state folder state is open to other users (mode 0755)")
            && stderr(&out).contains("run `chmod 700 state`"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = state.join("ferry.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fx.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `chmod 600 state/ferry.db`"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fx.ferry(&["status"]).status.code(), Some(0));
}

#[test]
fn an_inline_password_in_a_readable_ferry_yaml_is_warned_of() {
    let fx = Fixture::new(&[]);
    let yaml = fx.path().join("ferry.yaml");
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fx.ferry(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("holds a password inline (line 5) and is readable by its group and all users (mode 0644)"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret-Pa55word"),
        "never the password itself"
    );
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = fx.ferry(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("password inline"), "{text}");
    // A password from the environment is not inline.
    let fx = Fixture::new(&[(
        "ferry.yaml",
        b"servers:\n  ch:\n    host: 127.0.0.1\n    user: acme\n    password: \"${CH_PASSWORD}\"\n",
    )]);
    let out = fx
        .ferry_cmd(&["check"])
        .env("CH_PASSWORD", "x")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("password inline"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_server_certificate_is_recorded_in_the_trail() {
    // Two servers with different certificates from the same CA: the partner
    // renewed its certificate (and, here, moved port).
    let first = ftps_server::start(ServerOptions::default()).await;
    let second = ftps_server::start(ServerOptions {
        pki: first.pki.clone(),
        ..ServerOptions::default()
    })
    .await;
    for srv in [&first, &second] {
        std::fs::create_dir(srv.root().join("inbound")).unwrap();
    }
    let s = Setup::new(&inprocess_yaml(&first));
    let job = "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n";
    s.job("out", job);
    s.drop_file("outbox/a.837", b"ISA*a~");
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    drop(engine);
    // Same partner name, now reached at the second server.
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("servers:\n  srv:\n{}", inprocess_yaml(&second)),
    )
    .unwrap();
    s.drop_file("outbox/b.837", b"ISA*b~");
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let ledger = engine.ledger.lock().unwrap();
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let certs: Vec<_> = rows
        .iter()
        .filter(|r| r.kind.starts_with("certificate_"))
        .collect();
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert_eq!(certs[0].kind, "certificate_seen");
    assert_eq!(certs[1].kind, "certificate_changed");
    let d0: serde_json::Value = serde_json::from_str(&certs[0].detail).unwrap();
    let d1: serde_json::Value = serde_json::from_str(&certs[1].detail).unwrap();
    assert_eq!(d0["fingerprint"], first.leaf.fingerprint());
    assert_eq!(d1["fingerprint"], second.leaf.fingerprint());
    assert_eq!(d1["previous"], first.leaf.fingerprint());
    assert!(matches!(
        ledger.verify_audit().unwrap(),
        Verdict::Intact { .. }
    ));
}

#[test]
fn ferry_run_records_its_configuration_start_and_stop_and_logs_the_head() {
    use std::time::{Duration, Instant};
    let fx = Fixture::new(&[]);
    std::fs::create_dir_all(fx.path().join("out")).unwrap();
    let child = fx
        .ferry_cmd(&["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let kinds = |fx: &Fixture| -> Vec<String> {
        match Ledger::open_existing(&fx.state_dir()) {
            Ok(Some(l)) => l
                .audit_entries(&AuditQuery::default())
                .unwrap()
                .into_iter()
                .map(|e| e.kind)
                .collect(),
            _ => Vec::new(),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kinds(&fx).iter().any(|k| k == "agent_started") {
        assert!(
            Instant::now() < deadline,
            "ferry run never recorded its start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("audit trail head"),
        "{}",
        stderr(&out)
    );
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let rows = ledger.audit_entries(&AuditQuery::default()).unwrap();
    let pos = |k: &str| {
        rows.iter()
            .position(|r| r.kind == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert!(pos("config_loaded") < pos("agent_started"));
    assert!(pos("agent_started") < pos("agent_stopped"));
    let user = ferry::transfer::operator::os_user();
    assert_eq!(rows[pos("agent_stopped")].actor, user);
    assert!(matches!(
        ledger.verify_audit().unwrap(),
        Verdict::Intact { .. }
    ));
}
