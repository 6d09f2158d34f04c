//! `cargo bench --bench audit_verify`: how long `ferry audit verify` takes
//! over a chain of 100,000 rows (the target is under 2 s).
//!
//! The chain is written straight into a fresh ledger in one transaction
//! (realistic rows: a file step's facts), then verified by the same code
//! `ferry audit verify` runs. Prints the median of 5 runs.

use std::time::Instant;

use ferry::ledger::{Ledger, Verdict, row_hash};

const ROWS: i64 = 100_000;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    drop(Ledger::open(&state).expect("ledger"));
    let mut conn = rusqlite::Connection::open(state.join("ferry.db")).expect("open");
    let tx = conn.transaction().expect("tx");
    let (mut prev, start): (String, i64) = tx
        .query_row(
            "SELECT hash, seq FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("head");
    let built = Instant::now();
    for seq in start + 1..=start + ROWS {
        let at = format!(
            "2026-12-01T{:02}:{:02}:{:02}.000Z",
            (seq / 3600) % 24,
            (seq / 60) % 60,
            seq % 60
        );
        let file = format!("claim-{seq}.837");
        let detail = format!(
            r#"{{"direction":"push","local_path":null,"note":null,"remote_path":"/inbound/{file}","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","size":{},"state":"done","verified":"hash"}}"#,
            1000 + seq
        );
        let hash = row_hash(
            &prev,
            seq,
            &at,
            "done",
            Some("out"),
            Some("payer sftp.example:990"),
            Some(seq),
            Some(&file),
            "ferry",
            &detail,
        );
        tx.execute(
            "INSERT INTO audit (seq, at, kind, job, server, file_id, file, actor, detail, prev, hash)
             VALUES (?1, ?2, 'done', 'out', 'payer sftp.example:990', ?1, ?3, 'ferry', ?4, ?5, ?6)",
            rusqlite::params![seq, at, file, detail, prev, hash],
        )
        .expect("insert");
        prev = hash;
    }
    tx.commit().expect("commit");
    drop(conn);
    eprintln!(
        "built {ROWS} rows in {:.2} s",
        built.elapsed().as_secs_f64()
    );

    let ledger = Ledger::open(&state).expect("ledger");
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let verdict = ledger.verify_audit().expect("verify");
        times.push(t.elapsed().as_secs_f64());
        match verdict {
            Verdict::Intact { rows, .. } => assert_eq!(rows as i64, ROWS + start),
            v => panic!("the untouched chain must verify: {v:?}"),
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "audit verify, {} rows: median {:.3} s (min {:.3}, max {:.3}); target < 2 s",
        ROWS + start,
        times[2],
        times[0],
        times[4]
    );
}
