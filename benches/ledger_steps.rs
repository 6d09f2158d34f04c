//! `cargo bench --bench ledger_steps`: what the ledger costs per file.
//!
//! Records the journey of 2,000 files in a fresh ledger on this machine's
//! disk the way a pull with `after_pull: keep` records them, in four
//! commits: seen; sending; sent with its SHA-256 and verified; renamed with
//! its local path and done. Prints the time per file and per commit,
//! median of 3. The last two commits are durable (fsynced), like in a run.

use std::time::{Duration, Instant};

use ferry::ledger::{FileState, Ledger, NewFile, Step, Verified};

const FILES: usize = 2_000;

fn journey(l: &Ledger, n: usize, times: &mut [Duration; 4]) {
    let name = format!("claim-{n:05}.837");
    let remote = format!("/outbound/{name}");
    let local = std::path::PathBuf::from(format!("/srv/inbound/{name}"));
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let mut t = Instant::now();
    let mut lap = |i: usize, t: &mut Instant| {
        times[i] += t.elapsed();
        *t = Instant::now();
    };
    let id = l
        .insert_file(&NewFile {
            job: "in",
            direction: "pull",
            name: &name,
            size: 10_240,
            mtime: Some(chrono::Utc::now()),
            sha256: None,
            remote_path: &remote,
            local_path: None,
            run_id: None,
        })
        .expect("insert");
    lap(0, &mut t);
    l.set_file_state(id, FileState::Sending, None, None)
        .expect("sending");
    lap(1, &mut t);
    l.steps(
        id,
        &[
            Step {
                state: FileState::Sent,
                sha256: Some(sha),
                ..Step::default()
            },
            Step {
                state: FileState::Verified,
                verified: Some(Verified::Size),
                ..Step::default()
            },
        ],
    )
    .expect("sent, verified");
    lap(2, &mut t);
    l.steps(
        id,
        &[
            Step {
                state: FileState::Renamed,
                verified: Some(Verified::Size),
                local_path: Some(&local),
                ..Step::default()
            },
            Step {
                state: FileState::Done,
                ..Step::default()
            },
        ],
    )
    .expect("renamed, done");
    lap(3, &mut t);
}

fn main() {
    let base = std::env::var_os("FERRY_BENCH_DIR").map(std::path::PathBuf::from);
    let mut per_file = Vec::new();
    let mut steps = [Duration::ZERO; 4];
    for _ in 0..3 {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
        }
        .expect("tempdir");
        let l = Ledger::open(&dir.path().join("state")).expect("ledger");
        let mut times = [Duration::ZERO; 4];
        let start = Instant::now();
        for n in 0..FILES {
            journey(&l, n, &mut times);
        }
        per_file.push(start.elapsed() / FILES as u32);
        for (s, t) in steps.iter_mut().zip(times) {
            *s += t / 3;
        }
    }
    per_file.sort();
    println!(
        "ledger, one pull journey ({FILES} files): median {:.0} us per file",
        per_file[1].as_secs_f64() * 1e6
    );
    for (name, t) in [
        "seen",
        "sending",
        "sent + verified (fsync)",
        "renamed + done (fsync)",
    ]
    .iter()
    .zip(steps)
    {
        println!(
            "  {name:<24} {:>6.0} us",
            t.as_secs_f64() * 1e6 / FILES as f64
        );
    }
}
