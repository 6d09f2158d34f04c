//! The ledger: file modes, migrations, the state-folder lock, and the JSON
//! shapes `history` and `status` promise in SPEC.md.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ferry::ledger::{FileState, Ledger, NewFile, SCHEMA_VERSION, StateLock, Verified};
use support::{Fixture, stderr, stdout};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn ledger_is_created_0600_inside_a_0700_state_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let ledger = Ledger::open(&state).unwrap();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("ferry.db")), 0o600);
    ledger.start_run("a", "once").unwrap(); // forces the WAL file into existence
    assert_eq!(mode(&state.join("ferry.db-wal")), 0o600);
}

#[test]
fn ledger_runs_in_wal_mode_with_foreign_keys_enforced() {
    let tmp = support::private_dir();
    drop(Ledger::open(tmp.path()).unwrap());
    let conn = rusqlite::Connection::open(tmp.path().join("ferry.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "WAL is persistent in the file");
    // Foreign keys are per connection: the ledger's own connection enforces them.
    let ledger = Ledger::open(tmp.path()).unwrap();
    let err = ledger
        .insert_file(&NewFile {
            job: "a",
            direction: "push",
            name: "x.837",
            size: 1,
            mtime: None,
            sha256: None,
            remote_path: "/in/x.837",
            local_path: None,
            run_id: Some(424242),
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("FOREIGN KEY"), "{err:#}");
}

#[test]
fn migrations_apply_from_empty_and_from_every_earlier_version() {
    for start in 0..=SCHEMA_VERSION {
        let tmp = support::private_dir();
        let old = Ledger::open_at_version(tmp.path(), start).unwrap();
        assert_eq!(old.schema_version().unwrap(), start);
        if start >= 1 {
            // Data written by the older schema survives the upgrade.
            old.start_run("kept", "once").unwrap();
        }
        drop(old);
        let ledger = Ledger::open(tmp.path()).unwrap();
        assert_eq!(
            ledger.schema_version().unwrap(),
            SCHEMA_VERSION,
            "from v{start}"
        );
        let tables = ledger.tables().unwrap();
        for t in ["events", "files", "runs"] {
            assert!(tables.contains(&t.to_string()), "from v{start}: {tables:?}");
        }
        if start >= 1 {
            assert!(ledger.last_run("kept").unwrap().is_some(), "from v{start}");
        }
        // Opening again is a no-op.
        drop(ledger);
        assert_eq!(
            Ledger::open(tmp.path()).unwrap().schema_version().unwrap(),
            SCHEMA_VERSION
        );
    }
}

#[test]
fn ledger_from_a_newer_ferry_is_refused_not_downgraded() {
    let tmp = support::private_dir();
    drop(Ledger::open(tmp.path()).unwrap());
    let conn = rusqlite::Connection::open(tmp.path().join("ferry.db")).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 7)
        .unwrap();
    drop(conn);
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("newer than this ferry understands"),
        "{err:#}"
    );
}

#[test]
fn second_ferry_on_the_same_state_exits_3_naming_the_holder() {
    let fx = Fixture::new(&[]);
    let lock = StateLock::acquire(&fx.state_dir(), "run").unwrap();
    for cmd in [&["run"][..], &["once", "a"][..]] {
        let out = fx.ferry(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}: {err}");
        assert!(
            err.contains(&format!("pid {} (ferry run)", std::process::id())),
            "{cmd:?} does not name the holder: {err}"
        );
        assert!(err.contains("in use by another ferry"), "{err}");
    }
    drop(lock);
    // Once released, the next one gets past the lock (and fails to connect: exit 1).
    let out = fx
        .ferry_cmd(&["once", "a"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn lock_held_by_a_killed_process_does_not_block_a_restart() {
    let fx = Fixture::new(&[]);
    std::fs::create_dir_all(fx.state_dir()).unwrap();
    let lock_file = fx.state_dir().join("ferry.lock");
    // Another process takes the same kind of lock (flock(2)) and is then killed.
    let script = "import fcntl, sys, time\n\
f = open(sys.argv[1], 'a')\n\
fcntl.flock(f, fcntl.LOCK_EX)\n\
print('locked', flush=True)\n\
time.sleep(60)\n";
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(&lock_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    assert!(
        StateLock::acquire(&fx.state_dir(), "test").is_err(),
        "the other process holds it"
    );
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if StateLock::acquire(&fx.state_dir(), "test").is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lock not released after kill -9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three transfers as the engine would leave them: delivered, failed, pending.
fn seed(ledger: &Ledger) {
    let run = ledger.start_run("acme-837-out", "once").unwrap();
    let mtime = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let f = |name: &'static str, job: &'static str, direction: &'static str| NewFile {
        job,
        direction,
        name,
        size: 4,
        mtime: Some(mtime),
        sha256: Some(sha),
        remote_path: Box::leak(format!("/inbound/{name}").into_boxed_str()),
        local_path: None,
        run_id: Some(run),
    };
    let a = ledger
        .insert_file(&f("claims-1.837", "acme-837-out", "push"))
        .unwrap();
    ledger
        .set_file_state(a, FileState::Sending, None, None)
        .unwrap();
    ledger
        .set_file_state(a, FileState::Sent, None, None)
        .unwrap();
    ledger
        .set_file_state(a, FileState::Verified, Some(Verified::Hash), None)
        .unwrap();
    ledger
        .set_file_state(a, FileState::Done, None, None)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let b = ledger
        .insert_file(&f("claims-2.837", "acme-837-out", "push"))
        .unwrap();
    for _ in 0..3 {
        ledger
            .set_file_state(b, FileState::Sending, None, None)
            .unwrap();
    }
    ledger
        .set_file_state(b, FileState::Failed, None, Some("550 Permission denied"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let c = ledger
        .insert_file(&f("ack-1.999", "ch-999-in", "pull"))
        .unwrap();
    ledger
        .set_file_state(c, FileState::Sending, None, None)
        .unwrap();
    ledger
        .finish_run(run, "failed", 1, 1, 4, Some("1 file failed"))
        .unwrap();
}

#[test]
fn history_json_has_the_shape_spec_promises() {
    let fx = Fixture::new(&[]);
    seed(&Ledger::open(&fx.state_dir()).unwrap());
    let out = fx.ferry(&["history", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let arr = v.as_array().expect("a JSON array");
    assert_eq!(arr.len(), 3);
    let names: Vec<&str> = arr.iter().map(|t| t["file"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ack-1.999", "claims-2.837", "claims-1.837"],
        "newest first"
    );
    for t in arr {
        for key in [
            "job",
            "direction",
            "file",
            "remote_path",
            "bytes",
            "sha256",
            "verified",
            "status",
            "attempts",
            "started_at",
            "finished_at",
            "error",
        ] {
            assert!(t.get(key).is_some(), "missing '{key}' in {t}");
        }
        assert!(["push", "pull"].contains(&t["direction"].as_str().unwrap()));
        assert!(t["bytes"].is_u64());
        assert!(t["attempts"].is_u64());
        let sha = t["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64
                && sha
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        let started = t["started_at"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(started).is_ok() && started.ends_with('Z'),
            "{started}"
        );
    }
    let (pending, failed, delivered) = (&arr[0], &arr[1], &arr[2]);
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["verified"], "hash");
    assert_eq!(delivered["attempts"], 1);
    assert!(delivered["error"].is_null());
    assert!(
        chrono::DateTime::parse_from_rfc3339(delivered["finished_at"].as_str().unwrap()).is_ok()
    );
    assert_eq!(delivered["remote_path"], "/inbound/claims-1.837");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["verified"], "none");
    assert_eq!(failed["error"], "550 Permission denied");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["direction"], "pull");
    assert!(pending["error"].is_null());
    assert!(pending["finished_at"].is_null());
}

#[test]
fn history_filters_by_job_and_limits_the_count() {
    let fx = Fixture::new(&[]);
    seed(&Ledger::open(&fx.state_dir()).unwrap());
    let out = fx.ferry(&["history", "--json", "--job", "acme-837-out", "--limit", "1"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["file"], "claims-2.837");
    let table = stdout(&fx.ferry(&["history"]));
    assert!(table.starts_with("STARTED (UTC)"), "{table}");
    assert!(
        table.contains("claims-2.837") && table.contains("failed"),
        "{table}"
    );
    assert!(
        table.contains("550 Permission denied"),
        "errors are spelled out: {table}"
    );
}

#[test]
fn status_json_shows_last_run_next_run_and_counts_per_job() {
    let fx = Fixture::new(&[
        ("jobs/acme-837-out.yaml", b"direction: push\nserver: ch\nlocal_dir: ../out\nremote_dir: /in\nschedule: \"*/5 * * * *\"\n"),
        ("out/waiting.837", b"ISA*00*"),
        ("out/.hidden", b"x"),
        ("out/partial.837.part", b"x"),
    ]);
    seed(&Ledger::open(&fx.state_dir()).unwrap());
    let out = fx.ferry(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let job = v
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "acme-837-out")
        .expect("job listed");
    assert_eq!(job["direction"], "push");
    assert_eq!(job["server"], "ch");
    assert_eq!(job["state"], "idle");
    assert_eq!(job["last_run"]["result"], "failed");
    assert_eq!(job["last_run"]["files_ok"], 1);
    assert_eq!(job["failed"], 1);
    assert_eq!(job["waiting"], 1, "dot-files and .part files never count");
    let next = job["next_run"]
        .as_str()
        .expect("a scheduled job has a next run");
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    assert!(next > Utc::now() && next < Utc::now() + chrono::Duration::minutes(6));
    let other = v
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "a")
        .unwrap();
    assert!(other["last_run"].is_null());
    assert!(other["next_run"].is_null());
}

#[test]
fn status_and_history_do_not_create_state() {
    let fx = Fixture::new(&[]);
    assert_eq!(stdout(&fx.ferry(&["history", "--json"])).trim(), "[]");
    let out = fx.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("never"));
    assert!(
        !fx.state_dir().exists(),
        "read-only commands created the state folder"
    );
}

#[test]
fn history_since_and_failed_filter_transfers() {
    let fx = Fixture::new(&[]);
    seed(&Ledger::open(&fx.state_dir()).unwrap());
    let failed: serde_json::Value =
        serde_json::from_str(&stdout(&fx.ferry(&["history", "--json", "--failed"]))).unwrap();
    let names: Vec<&str> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["claims-2.837"]);
    let recent: serde_json::Value =
        serde_json::from_str(&stdout(&fx.ferry(&["history", "--json", "--since", "1h"]))).unwrap();
    assert_eq!(recent.as_array().unwrap().len(), 3);
    let future: serde_json::Value = serde_json::from_str(&stdout(&fx.ferry(&[
        "history",
        "--json",
        "--since",
        "2999-01-01",
    ])))
    .unwrap();
    assert!(future.as_array().unwrap().is_empty());
    let bad = fx.ferry(&["history", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("invalid --since 'yesterday-ish'"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn history_table_fits_100_columns_and_has_no_colour_when_piped() {
    let fx = Fixture::new(&[]);
    let ledger = Ledger::open(&fx.state_dir()).unwrap();
    let run = ledger.start_run("acme-837-out", "once").unwrap();
    let long = "a-very-long-claim-file-name-from-a-billing-system-with-member-ids-0123456789.837";
    ledger
        .insert_file(&NewFile {
            job: "acme-837-out",
            direction: "push",
            name: long,
            size: 123_456_789,
            mtime: None,
            sha256: None,
            remote_path: "/inbound/x",
            local_path: None,
            run_id: Some(run),
        })
        .unwrap();
    let out = stdout(&fx.ferry(&["history"]));
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(out.contains("a-very-long-claim"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no escape codes when not a terminal"
    );
}
