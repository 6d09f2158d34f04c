//! Push: local outbound folder -> partner server.

use std::collections::HashSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use super::local::{self, Hashing, LocalFile};
use super::{
    Attempt, Engine, Failure, FileOutcome, FileStatus, RunOptions, RunReport, WorkItem, remote_join,
};
use crate::config::{AfterPush, Flow, Job, Upload, Verify};
use crate::ledger::{FileRow, FileState, NewFile, Verified};
use crate::transport::Remote;

pub(super) struct PushItem {
    id: i64,
    /// The local file as it was when selected.
    local: LocalFile,
}

impl WorkItem for PushItem {
    fn name(&self) -> &str {
        &self.local.name
    }
    fn file_id(&self) -> i64 {
        self.id
    }
}

fn parse_mtime(s: Option<&str>) -> DateTime<Utc> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

pub(super) async fn run(
    engine: &Engine,
    job: &Job,
    run_id: i64,
    opts: RunOptions,
) -> anyhow::Result<RunReport> {
    let mut outcomes = Vec::new();
    let mut items = Vec::new();
    let mut covered = HashSet::new();

    // 1. What an earlier run left unfinished.
    for row in engine.ledger(|l| l.unfinished(&job.name, "push"))? {
        let recorded = LocalFile {
            name: row.name.clone(),
            path: row
                .local_path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| job.local_dir.join(&row.name)),
            size: row.size,
            mtime: parse_mtime(row.mtime.as_deref()),
        };
        let intact = LocalFile::stat(&recorded.path).is_ok_and(|now| {
            now.size == recorded.size && now.mtime_key() == row.mtime.clone().unwrap_or_default()
        });
        // Once the whole file is on the server (sent and later), the ledger
        // holds its size and hash, so the delivery can finish without the local copy.
        if intact
            || matches!(
                row.state,
                FileState::Sent | FileState::Renamed | FileState::Verified
            )
        {
            if intact {
                covered.insert(row.name.clone());
            }
            info!(job = %job.name, file = %row.name, state = row.state.as_str(), "resuming an unfinished delivery");
            items.push(PushItem {
                id: row.id,
                local: recorded,
            });
        } else {
            let msg = "the local file changed or disappeared before its delivery finished; a changed file is sent as a new one";
            engine.ledger(|l| l.set_file_state(row.id, FileState::Failed, None, Some(msg)))?;
            warn!(job = %job.name, file = %row.name, "{msg}");
        }
    }

    // 2. What is ready in the outbound folder now (created if missing: check
    // accepted it as creatable, and a watcher needs it to exist).
    std::fs::create_dir_all(&job.local_dir)
        .map_err(|e| anyhow::anyhow!("cannot create local_dir {}: {e}", job.local_dir.display()))?;
    let (ready, waiting) = local::scan_ready(job)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read local_dir {}: {e}", job.local_dir.display()))?;
    for f in ready {
        if covered.contains(&f.name) {
            continue;
        }
        let mtime = f.mtime_key();
        let known =
            engine.ledger(|l| l.latest_same(&job.name, "push", &f.name, f.size, Some(&mtime)))?;
        match known {
            Some(r) if matches!(r.state, FileState::Verified | FileState::Done) && !opts.force => {
                outcomes.push(already(&f, &r, job));
                continue;
            }
            Some(r) if r.state == FileState::Failed => {
                items.push(PushItem { id: r.id, local: f });
                continue;
            }
            _ => {}
        }
        if !opts.force
            && let Some(r) = same_content_delivered(engine, job, &f).await?
        {
            warn!(job = %job.name, file = %f.name, "same name and content as a file already delivered; not sent again (ferry once --force sends it)");
            outcomes.push(already(&f, &r, job));
            continue;
        }
        let id = engine.ledger(|l| {
            l.insert_file(&NewFile {
                job: &job.name,
                direction: "push",
                name: &f.name,
                size: f.size,
                mtime: Some(f.mtime),
                sha256: None,
                remote_path: &remote_join(&job.remote_dir, &f.name),
                local_path: Some(&f.path),
                run_id: Some(run_id),
            })
        })?;
        items.push(PushItem { id, local: f });
    }
    for name in waiting {
        outcomes.push(FileOutcome::not_ready(
            job,
            name,
            "still being written; left for the next run",
        ));
    }

    let (done, connection_error) = engine
        .drive(
            job,
            items,
            &PushAttempt {
                engine,
                job,
                progress: opts.progress.clone(),
            },
            opts.stop.as_ref(),
        )
        .await;
    outcomes.extend(done);
    Ok(RunReport::new(job, outcomes, connection_error))
}

fn already(f: &LocalFile, r: &FileRow, job: &Job) -> FileOutcome {
    FileOutcome {
        name: f.name.clone(),
        remote_path: remote_join(&job.remote_dir, &f.name),
        bytes: f.size,
        sha256: r.sha256.clone(),
        verified: r.verified,
        attempts: 0,
        status: FileStatus::AlreadyDelivered {
            at: r.finished_at.clone(),
        },
        note: None,
    }
}

/// A re-dropped file (new mtime) whose name and content match a delivered
/// one. Hashing it costs a read, so only files whose name and size match a
/// delivery are hashed.
async fn same_content_delivered(
    engine: &Engine,
    job: &Job,
    f: &LocalFile,
) -> anyhow::Result<Option<FileRow>> {
    let candidates = engine.ledger(|l| l.delivered_named(&job.name, "push", &f.name, f.size))?;
    if candidates.is_empty() {
        return Ok(None);
    }
    let sha = hash_file(&f.path).await?;
    Ok(candidates
        .into_iter()
        .find(|r| r.sha256.as_deref() == Some(sha.as_str())))
}

async fn hash_file(path: &std::path::Path) -> anyhow::Result<String> {
    let file = tokio::fs::File::open(path).await?;
    let mut h = Hashing::new(file);
    tokio::io::copy(&mut h, &mut tokio::io::sink()).await?;
    Ok(h.finish().1)
}

struct PushAttempt<'a> {
    engine: &'a Engine,
    job: &'a Job,
    progress: Option<super::Progress>,
}

#[async_trait::async_trait]
impl Attempt<PushItem> for PushAttempt<'_> {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &PushItem,
        _attempt: u32,
    ) -> Result<FileOutcome, Failure> {
        let (engine, job) = (self.engine, self.job);
        let upload = match &job.flow {
            Flow::Push { upload, .. } => *upload,
            Flow::Pull { .. } => Upload::TempRename,
        };
        let row = engine.ledger(|l| l.file(item.id))?;
        let final_path = remote_join(&job.remote_dir, &item.local.name);
        let target = match upload {
            Upload::TempRename => format!("{final_path}.part"),
            Upload::Direct => final_path.clone(),
        };
        let mut note = None;
        let level = match row.state {
            FileState::Verified => row.verified,
            FileState::Renamed => {
                check_size(remote, &final_path, row.size).await?;
                engine.ledger(|l| {
                    l.set_file_state(row.id, FileState::Verified, Some(row.verified), None)
                })?;
                row.verified
            }
            _ => {
                let sha = match reconcile(
                    engine,
                    job,
                    remote,
                    &row,
                    item,
                    &target,
                    &final_path,
                    upload,
                )
                .await?
                {
                    Reconciled::Delivered(level) => {
                        note = Some("found complete on the server; not sent again".to_string());
                        engine.ledger(|l| {
                            l.set_file_state(row.id, FileState::Verified, Some(level), None)
                        })?;
                        return finish(engine, job, item, level, note).await;
                    }
                    Reconciled::TempComplete(sha) => sha,
                    Reconciled::Send { offset } => {
                        if offset > 0 {
                            note = Some(format!("resumed at byte {offset}"));
                        }
                        send(
                            engine,
                            remote,
                            item,
                            &row,
                            &target,
                            offset,
                            self.progress.clone(),
                        )
                        .await?
                    }
                };
                let level = verify(
                    remote,
                    &target,
                    &sha,
                    item.local.size,
                    job.verify,
                    &job.server.name,
                )
                .await?;
                if upload == Upload::TempRename {
                    remote.rename(&target, &final_path).await?;
                    engine.ledger(|l| {
                        l.set_file_state(row.id, FileState::Renamed, Some(level), None)
                    })?;
                }
                engine
                    .ledger(|l| l.set_file_state(row.id, FileState::Verified, Some(level), None))?;
                level
            }
        };
        finish(engine, job, item, level, note).await
    }
}

enum Reconciled {
    /// The whole file is on the server under its final name.
    Delivered(Verified),
    /// The whole file is on the server under its temp name; its SHA-256.
    TempComplete(String),
    /// Send from this offset (0: from the start).
    Send { offset: u64 },
}

/// Asks the server what exists before anything is sent again: final name
/// with the right size (and hash when offered) means delivered; a partial
/// temp file means resume (REST) when the server supports it.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    engine: &Engine,
    job: &Job,
    remote: &mut dyn Remote,
    row: &FileRow,
    item: &PushItem,
    target: &str,
    final_path: &str,
    upload: Upload,
) -> Result<Reconciled, Failure> {
    let attempted = row.attempts > 0 || row.state != FileState::Seen;
    if !attempted {
        return Ok(Reconciled::Send { offset: 0 });
    }
    let local_sha = || async {
        match &row.sha256 {
            Some(s) => Ok(s.clone()),
            None => hash_file(&item.local.path).await.map_err(|e| {
                Failure::Permanent(format!("cannot read {}: {e:#}", item.local.path.display()))
            }),
        }
    };
    let size = row.size;
    if upload == Upload::TempRename && remote.size(target).await? == Some(size) {
        let sha = local_sha().await?;
        engine.ledger(|l| l.set_sha256(row.id, &sha))?;
        return Ok(Reconciled::TempComplete(sha));
    }
    if remote.size(final_path).await? == Some(size) {
        let sha = local_sha().await?;
        match remote.sha256(final_path).await? {
            Some(h) if hex::encode(h) == sha => return Ok(Reconciled::Delivered(Verified::Hash)),
            Some(_) => {} // same size, other content: not ours; send again
            None if job.verify == Verify::Hash => {
                return Err(Failure::Permanent(no_hash(&job.server.name)));
            }
            None => return Ok(Reconciled::Delivered(Verified::Size)),
        }
    }
    let partial = remote.size(target).await?;
    match partial {
        Some(n) if n > 0 && n < size && remote.capabilities().resume && item.local.unchanged() => {
            Ok(Reconciled::Send { offset: n })
        }
        _ => Ok(Reconciled::Send { offset: 0 }),
    }
}

/// Streams the local file to `target` from `offset`, hashing every byte once.
async fn send(
    engine: &Engine,
    remote: &mut dyn Remote,
    item: &PushItem,
    row: &FileRow,
    target: &str,
    offset: u64,
    progress: Option<super::Progress>,
) -> Result<String, Failure> {
    if !item.local.unchanged() {
        return Err(Failure::Permanent(
            "the local file changed or disappeared before it could be sent; a changed file is sent as a new one".into(),
        ));
    }
    engine.ledger(|l| l.set_file_state(row.id, FileState::Sending, None, None))?;
    let file = tokio::fs::File::open(&item.local.path).await.map_err(|e| {
        Failure::Permanent(format!("cannot open {}: {e}", item.local.path.display()))
    })?;
    let mut reader = Hashing::new(file).with_progress(progress, &item.local.name, item.local.size);
    if offset > 0 {
        // The part already on the server is hashed, not sent.
        let mut skip = (&mut reader).take(offset);
        tokio::io::copy(&mut skip, &mut tokio::io::sink())
            .await
            .map_err(|e| {
                Failure::Retry(format!("cannot read {}: {e}", item.local.path.display()))
            })?;
    }
    remote.upload(target, offset, &mut reader).await?;
    let (_, sha, total) = reader.finish();
    if total != item.local.size || !item.local.unchanged() {
        return Err(Failure::Retry(
            "the local file changed while it was being sent".into(),
        ));
    }
    engine.ledger(|l| {
        l.set_sha256(row.id, &sha)?;
        l.set_file_state(row.id, FileState::Sent, None, None)
    })?;
    Ok(sha)
}

fn no_hash(server: &str) -> String {
    format!(
        "verify: hash, but {server} offers no SHA-256 command (HASH or XSHA256); use verify: auto or size for this server"
    )
}

async fn check_size(remote: &mut dyn Remote, path: &str, size: u64) -> Result<(), Failure> {
    match remote.size(path).await? {
        Some(n) if n == size => Ok(()),
        Some(n) => Err(Failure::Mismatch(format!(
            "size mismatch: the local file has {size} bytes, the server's {path} has {n}"
        ))),
        None => Err(Failure::Retry(format!("{path} is not on the server"))),
    }
}

/// Checks `path` on the server against the local SHA-256 and size, as
/// `verify` says. A mismatching upload is removed so it is never renamed.
pub(super) async fn verify(
    remote: &mut dyn Remote,
    path: &str,
    sha: &str,
    size: u64,
    mode: Verify,
    server: &str,
) -> Result<Verified, Failure> {
    let mismatch = |remote_hash: &[u8; 32]| {
        Failure::Mismatch(format!(
            "hash mismatch on {path}: local SHA-256 {sha}, server computed {}",
            hex::encode(remote_hash)
        ))
    };
    let result = match mode {
        Verify::None => return Ok(Verified::None),
        Verify::Size => check_size(remote, path, size).await.map(|_| Verified::Size),
        Verify::Hash => match remote.sha256(path).await? {
            Some(h) if hex::encode(h) == sha => Ok(Verified::Hash),
            Some(h) => Err(mismatch(&h)),
            None => Err(Failure::Permanent(no_hash(server))),
        },
        Verify::Auto => match remote.sha256(path).await? {
            Some(h) if hex::encode(h) == sha => Ok(Verified::Hash),
            Some(h) => Err(mismatch(&h)),
            None => check_size(remote, path, size).await.map(|_| Verified::Size),
        },
    };
    if result.is_err() && path.ends_with(".part") {
        let _ = remote.delete(path).await;
    }
    result
}

/// Archive, delete or keep the local file, then record the end of the journey.
async fn finish(
    engine: &Engine,
    job: &Job,
    item: &PushItem,
    level: Verified,
    mut note: Option<String>,
) -> Result<FileOutcome, Failure> {
    let after = match &job.flow {
        Flow::Push { after, .. } => *after,
        Flow::Pull { .. } => AfterPush::Keep,
    };
    let local = &item.local;
    let mut done = true;
    if after != AfterPush::Keep {
        if !local.unchanged() {
            note = Some("the local file changed after delivery and was left in place".into());
        } else {
            let result = match after {
                AfterPush::Archive => {
                    let day = Utc::now()
                        .with_timezone(&job.timezone)
                        .format("%Y-%m-%d")
                        .to_string();
                    let dir = engine.state_dir.join("archive").join(&job.name).join(day);
                    local::place_no_overwrite(&local.path, &dir, &local.name).map(Some)
                }
                AfterPush::Delete => std::fs::remove_file(&local.path).map(|_| None),
                AfterPush::Keep => Ok(None),
            };
            match result {
                Ok(Some(archived)) => engine.ledger(|l| l.set_local_path(item.id, &archived))?,
                Ok(None) => {}
                Err(e) => {
                    // Delivered all the same; the next run retries the after-action only.
                    done = false;
                    note = Some(format!("delivered, but the after-push action failed: {e}"));
                    warn!(job = %job.name, file = %local.name, "after_push failed: {e}");
                }
            }
        }
    }
    if done {
        engine.ledger(|l| l.set_file_state(item.id, FileState::Done, None, None))?;
    }
    let row = engine.ledger(|l| l.file(item.id))?;
    info!(job = %job.name, file = %local.name, bytes = row.size, verified = level.as_str(), "delivered");
    Ok(FileOutcome {
        name: local.name.clone(),
        remote_path: row.remote_path,
        bytes: row.size,
        sha256: row.sha256,
        verified: level,
        attempts: row.attempts,
        status: FileStatus::Delivered,
        note,
    })
}
