//! Where the transfer engine meets claims awareness: the envelope gate and
//! duplicate control before a push sends a file, and after a run the
//! acknowledgements a pull placed, the deadlines passed and the expected
//! files that never came (`crate::edi` decides; this only wires it in).

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::local::LocalFile;
use super::{Engine, FileOutcome, FileStatus, remote_join};
use crate::config::{Edi, Job};
use crate::edi::{self, Interchange, Notice, Rules, gate, track};
use crate::ledger::Verified;

/// What the gate decided about one outbound file.
pub(super) enum Gate {
    /// Send it; record this envelope once the file has a ledger record.
    Pass {
        interchange: Option<Box<Interchange>>,
        sha256: String,
        /// The operator who let a duplicate go (`ferry resend`).
        override_by: Option<String>,
    },
    /// Not sent: the outcome says why.
    Blocked(Box<FileOutcome>),
}

fn blocked(job: &Job, f: &LocalFile, sha: &str, status: FileStatus) -> Gate {
    Gate::Blocked(Box::new(FileOutcome {
        name: f.name.clone(),
        remote_path: remote_join(&job.remote_dir, &f.name),
        bytes: f.size,
        sha256: Some(sha.to_string()),
        verified: Verified::None,
        attempts: 0,
        status,
        note: None,
    }))
}

/// Reads the file's envelope; blocks it when `edi.validate` finds a
/// structural problem (moving it to `state_dir/rejected/<job>/` with a
/// reason file) or when it repeats control numbers sent to this partner
/// within `edi.duplicate_window` (it stays in the outbound folder).
pub(super) async fn gate(
    engine: &Engine,
    job: &Job,
    edi: &Edi,
    f: &LocalFile,
) -> anyhow::Result<Gate> {
    let path = f.path.clone();
    let sha = super::push::hash_file(&path).await?;
    let env = tokio::task::spawn_blocking(move || edi::read_file(&path)).await??;
    if edi.validate {
        let rules = Rules {
            sender_id: edi.sender_id.as_deref(),
            receiver_id: edi.receiver_id.as_deref(),
            environment: job.server.environment,
        };
        let problems = gate::check(&env, &rules);
        if !problems.is_empty() {
            let reason = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let dir = engine.state_dir.join("rejected").join(&job.name);
            // Recorded first: a crash before the move leaves the file in
            // outbound, and the next run blocks it again.
            engine.ledger(|l| {
                l.record_blocked(
                    &job.name,
                    &f.name,
                    &sha,
                    "invalid",
                    &reason,
                    Some(&dir.to_string_lossy()),
                )
            })?;
            let text = gate::reason_text(&job.name, &f.name, &sha, &problems);
            let placed = reject(&f.path, &dir, &f.name, &text)?;
            warn!(job = %job.name, file = %f.name, moved_to = %placed.display(), problems = problems.len(), "blocked by the X12 envelope checks");
            return Ok(blocked(
                job,
                f,
                &sha,
                FileStatus::Rejected {
                    reason,
                    moved_to: placed.to_string_lossy().into_owned(),
                },
            ));
        }
    }
    let interchange = env.interchanges.first().cloned();
    let mut override_by = None;
    if let Some(ic) = &interchange
        && env.interchanges.len() == 1
    {
        let window =
            chrono::Duration::from_std(edi.duplicate_window).unwrap_or(chrono::Duration::days(365));
        let dup = engine.ledger(|l| l.duplicate_of(&job.server.name, ic, Utc::now() - window))?;
        if let Some(reason) = dup {
            match engine.ledger(|l| l.duplicate_override(&job.name, &f.name, &sha))? {
                Some(by) => {
                    info!(job = %job.name, file = %f.name, %by, "sending a duplicate interchange: an operator said so");
                    override_by = Some(by);
                }
                None => {
                    engine.ledger(|l| {
                        l.record_blocked(&job.name, &f.name, &sha, "duplicate", &reason, None)
                    })?;
                    warn!(job = %job.name, file = %f.name, "not sent: {reason}");
                    return Ok(blocked(job, f, &sha, FileStatus::Duplicate { reason }));
                }
            }
        }
    }
    engine.ledger(|l| l.close_duplicate_blocks(&job.name, &f.name))?;
    Ok(Gate::Pass {
        interchange: interchange.map(Box::new),
        sha256: sha,
        override_by,
    })
}

/// Records the envelope of a push file whose record exists without one (a
/// crash came between the two): it passed the gate when it was first seen.
pub(super) async fn record_missing_envelope(
    engine: &Engine,
    job: &Job,
    row: &crate::ledger::FileRow,
) {
    let path = row
        .local_path
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| job.local_dir.join(&row.name));
    let result = async {
        if engine.ledger(|l| l.has_interchange(row.id))? {
            return Ok(());
        }
        let sha = super::push::hash_file(&path).await?;
        let p = path.clone();
        let env = tokio::task::spawn_blocking(move || edi::read_file(&p)).await??;
        if let [ic] = env.interchanges.as_slice() {
            engine.ledger(|l| {
                l.record_interchange(&job.name, &job.server.name, row.id, &row.name, &sha, ic)
            })?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        warn!(job = %job.name, file = %row.name, "cannot record the X12 envelope: {e:#}");
    }
}

/// Moves a blocked file out of the outbound folder (atomically, never
/// overwriting, synced) and writes its reason file beside it (temp name,
/// fsync, rename).
fn reject(
    src: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    text: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let placed = super::local::place_no_overwrite(src, dir, name).map_err(|e| {
        anyhow::anyhow!(
            "cannot move the blocked file {} to {}: {e}",
            src.display(),
            dir.display()
        )
    })?;
    let placed_name = placed
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = dir.join(format!("{placed_name}.reason.txt"));
    let tmp = dir.join(format!(".{placed_name}.reason.txt.part"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &reason)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(placed)
}

/// After a run: acknowledgements this pull job placed, what is overdue for
/// the push jobs involved, and a missing expected file.
pub(super) fn after_run(engine: &Engine, job: &Job, started: DateTime<Utc>) -> Vec<Notice> {
    let now = Utc::now();
    let mut out = Vec::new();
    let result = engine.ledger(|l| {
        if let Some(edi) = &job.edi
            && !edi.acks_for.is_empty()
        {
            // Read before placing, normally; these are files a crash left
            // placed but unread, since the first interchange they could answer.
            let since = l
                .first_interchange_at(&edi.acks_for)?
                .map_or(started, |t| t.min(started));
            for (id, name, path) in l.placed_unread(&job.name, since)? {
                out.extend(track::read_ack(
                    l,
                    &job.name,
                    &edi.acks_for,
                    id,
                    &name,
                    std::path::Path::new(&path),
                )?);
            }
            for (push, d) in &edi.deadlines_for {
                out.extend(track::overdue(l, push, d, now)?);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        warn!(job = %job.name, "cannot read acknowledgements: {e:#}");
    }
    out.extend(deadlines(engine, job, now));
    for n in &out {
        info!(job = %job.name, about = %n.job, kind = n.kind.as_str(), file = n.file.as_deref().unwrap_or("-"), "{}", n.text);
    }
    out
}

/// What passed by `now` for this job alone: its own acknowledgement
/// deadlines (a push job with `edi.acks`) and its `expect` window (a pull
/// job). Each is reported once.
pub(super) fn deadlines(engine: &Engine, job: &Job, now: DateTime<Utc>) -> Vec<Notice> {
    let mut out = Vec::new();
    let result = engine.ledger(|l| {
        if let Some(edi) = &job.edi
            && edi.acks_for.is_empty()
        {
            out.extend(track::overdue(l, &job.name, &edi.acks, now)?);
        }
        if let Some(e) = &job.expect
            && let Some(n) = track::expected_missing(l, &job.name, e, now)?
        {
            out.push(n);
        }
        Ok(())
    });
    if let Err(e) = result {
        warn!(job = %job.name, "cannot check acknowledgement deadlines: {e:#}");
    }
    out
}
