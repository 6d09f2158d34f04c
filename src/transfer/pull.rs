//! Pull: partner server -> local inbound folder.
//!
//! Each file streams to `local_dir/.<name>.part` while hashing, is synced to
//! disk and verified, and only then gets its name (never overwriting one).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::local::{self, Hashing};
use super::{
    Attempt, Engine, Failure, FileOutcome, FileStatus, RunOptions, RunReport, WorkItem, remote_join,
};
use crate::config::{AfterPull, Flow, Job, Verify};
use crate::ledger::{FileState, NewFile, Verified};
use crate::transport::{Remote, RemoteEntry, TransportError};

pub(super) struct PullItem {
    id: i64,
    name: String,
    remote_path: String,
    size: u64,
}

impl WorkItem for PullItem {
    fn name(&self) -> &str {
        &self.name
    }
    fn file_id(&self) -> i64 {
        self.id
    }
}

fn part_path(job: &Job, name: &str) -> PathBuf {
    job.local_dir.join(format!(".{name}.part"))
}

fn mtime_key(e: &RemoteEntry) -> Option<String> {
    e.mtime.map(crate::ledger::rfc3339)
}

pub(super) async fn run(
    engine: &Engine,
    job: &Job,
    run_id: i64,
    opts: RunOptions,
) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&job.local_dir)
        .map_err(|e| anyhow::anyhow!("cannot create local_dir {}: {e}", job.local_dir.display()))?;
    let mut outcomes = Vec::new();
    let mut items: Vec<PullItem> = engine
        .ledger(|l| l.unfinished(&job.name, "pull"))?
        .into_iter()
        .map(|r| PullItem {
            id: r.id,
            name: r.name,
            remote_path: r.remote_path,
            size: r.size,
        })
        .collect();

    let (mut session, listing) = match list_with_retries(engine, job).await {
        Ok(v) => v,
        Err(msg) => {
            for it in &items {
                outcomes.push(engine.fail_item(it, &msg));
            }
            return Ok(RunReport::new(job, outcomes, Some(msg)));
        }
    };
    let (stable, growing) = listing;
    for name in growing {
        outcomes.push(FileOutcome::not_ready(
            job,
            name,
            "still growing on the server; left for the next run",
        ));
    }
    let unfinished: HashMap<String, u64> = items.iter().map(|i| (i.name.clone(), i.size)).collect();
    for e in stable {
        if let Some(&size) = unfinished.get(&e.name)
            && size == e.size
        {
            continue; // the unfinished record carries on
        }
        let mtime = mtime_key(&e);
        let known = engine
            .ledger(|l| l.latest_same(&job.name, "pull", &e.name, e.size, mtime.as_deref()))?;
        match known {
            Some(r) if matches!(r.state, FileState::Verified | FileState::Done) && !opts.force => {
                continue;
            }
            Some(r) if r.state == FileState::Failed => {
                items.push(PullItem {
                    id: r.id,
                    name: e.name,
                    remote_path: r.remote_path,
                    size: e.size,
                });
                continue;
            }
            _ => {}
        }
        let remote_path = remote_join(&job.remote_dir, &e.name);
        let id = engine.ledger(|l| {
            l.insert_file(&NewFile {
                job: &job.name,
                direction: "pull",
                name: &e.name,
                size: e.size,
                mtime: e.mtime,
                sha256: None,
                remote_path: &remote_path,
                local_path: None,
                run_id: Some(run_id),
            })
        })?;
        items.push(PullItem {
            id,
            name: e.name,
            remote_path,
            size: e.size,
        });
    }
    session.close().await;

    let (done, connection_error) = engine
        .drive(
            job,
            items,
            &PullAttempt {
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

/// Connects and lists, retrying a lost connection with backoff like any
/// other attempt. Returns the session (kept for the downloads) and listing.
async fn list_with_retries(
    engine: &Engine,
    job: &Job,
) -> Result<(Box<dyn Remote>, (Vec<RemoteEntry>, Vec<String>)), String> {
    // The listing session counts against max_connections like any other.
    let _permit = engine.limit(&job.server).acquire_owned().await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut session = engine
            .connect(job)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", job.server.name))?;
        match list_stable(session.as_mut(), job).await {
            Ok(l) => return Ok((session, l)),
            Err(e) => {
                session.close().await;
                if !e.is_session_fatal() || attempt >= job.retry.attempts {
                    return Err(format!(
                        "cannot list {} on {}: {e}",
                        job.remote_dir, job.server.name
                    ));
                }
                warn!(job = %job.name, attempt, error = %e, "listing failed; retrying");
                tokio::time::sleep(super::backoff(&job.retry, attempt)).await;
            }
        }
    }
}

/// Lists twice, `stable_for` apart: a file whose size or time changed in
/// between is still being written by the partner and is left for later.
async fn list_stable(
    remote: &mut dyn Remote,
    job: &Job,
) -> Result<(Vec<RemoteEntry>, Vec<String>), TransportError> {
    let pick = |v: Vec<RemoteEntry>| -> Vec<RemoteEntry> {
        v.into_iter()
            .filter(|e| {
                // Checked again here, whatever the transport did: a name becomes a local path.
                if let Some(why) = crate::transport::listing::unsafe_name(&e.name) {
                    warn!(job = %job.name, name = %e.name.escape_debug(), why, "skipping an unsafe remote name");
                    return false;
                }
                e.is_file && job.filter.matches(&e.name)
            })
            .collect()
    };
    let first = pick(remote.list(&job.remote_dir).await?);
    if job.stable_for.is_zero() || first.is_empty() {
        return Ok((first, Vec::new()));
    }
    tokio::time::sleep(job.stable_for).await;
    let second = pick(remote.list(&job.remote_dir).await?);
    let before: HashMap<&str, (u64, Option<chrono::DateTime<chrono::Utc>>)> = first
        .iter()
        .map(|e| (e.name.as_str(), (e.size, e.mtime)))
        .collect();
    let (mut stable, mut growing) = (Vec::new(), Vec::new());
    for e in second {
        if before.get(e.name.as_str()) == Some(&(e.size, e.mtime)) {
            stable.push(e);
        } else {
            growing.push(e.name);
        }
    }
    Ok((stable, growing))
}

struct PullAttempt<'a> {
    engine: &'a Engine,
    job: &'a Job,
    progress: Option<super::Progress>,
}

#[async_trait::async_trait]
impl Attempt<PullItem> for PullAttempt<'_> {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &PullItem,
        _attempt: u32,
    ) -> Result<FileOutcome, Failure> {
        let (engine, job) = (self.engine, self.job);
        let row = engine.ledger(|l| l.file(item.id))?;
        let part = part_path(job, &item.name);
        let mut note = None;
        let mut state = row.state;
        let mut level = row.verified;
        // A crash between verifying and recording the placement: adopt the placed file.
        if state == FileState::Verified && !part.exists() {
            state = FileState::Seen;
        }
        if state == FileState::Sent
            && std::fs::metadata(&part).map(|m| m.len()).ok() != Some(item.size)
        {
            state = FileState::Seen;
        }
        if matches!(
            state,
            FileState::Seen | FileState::Sending | FileState::Failed
        ) {
            let (sha, resumed) = download(
                engine,
                remote,
                item,
                &row,
                &part,
                job,
                self.progress.clone(),
            )
            .await?;
            if let Some(offset) = resumed {
                note = Some(format!("resumed at byte {offset}"));
            }
            state = FileState::Sent;
            let _ = sha;
        }
        if state == FileState::Sent {
            let row = engine.ledger(|l| l.file(item.id))?;
            let sha = row.sha256.clone().unwrap_or_default();
            level = verify_download(remote, &item.remote_path, &sha, job)
                .await
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&part);
                })?;
            engine.ledger(|l| l.set_file_state(item.id, FileState::Verified, Some(level), None))?;
            state = FileState::Verified;
        }
        if state == FileState::Verified {
            let placed =
                local::place_no_overwrite(&part, &job.local_dir, &item.name).map_err(|e| {
                    Failure::Retry(format!(
                        "cannot place {} in {}: {e}",
                        item.name,
                        job.local_dir.display()
                    ))
                })?;
            let placed_name = placed
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if placed_name != item.name {
                warn!(job = %job.name, file = %item.name, saved_as = %placed_name, "a local file of that name already exists; saved under another name");
                note = Some(format!(
                    "saved as {placed_name}: a file named {} was already there",
                    item.name
                ));
            }
            engine.ledger(|l| {
                l.set_local_path(item.id, &placed)?;
                l.set_file_state(item.id, FileState::Renamed, Some(level), None)
            })?;
        }
        // The file is safe locally; now the remote side, then the end of the journey.
        let after = match &job.flow {
            Flow::Pull { after } => after.clone(),
            Flow::Push { .. } => AfterPull::Keep,
        };
        let after_result = match &after {
            AfterPull::Keep => Ok(()),
            AfterPull::Delete => remote.delete(&item.remote_path).await,
            AfterPull::Move(dir) => {
                let _ = remote.mkdir(dir).await; // usually exists already
                remote
                    .rename(&item.remote_path, &remote_join(dir, &item.name))
                    .await
            }
        };
        match after_result {
            Ok(()) => engine.ledger(|l| l.set_file_state(item.id, FileState::Done, None, None))?,
            Err(e) => {
                note = Some(format!("downloaded, but the after-pull action failed: {e}"));
                warn!(job = %job.name, file = %item.name, "after_pull failed: {e}");
            }
        }
        let row = engine.ledger(|l| l.file(item.id))?;
        info!(job = %job.name, file = %item.name, bytes = row.size, verified = level.as_str(), "pulled");
        Ok(FileOutcome {
            name: item.name.clone(),
            remote_path: item.remote_path.clone(),
            bytes: row.size,
            sha256: row.sha256,
            verified: level,
            attempts: row.attempts,
            status: FileStatus::Delivered,
            note,
        })
    }
}

/// Streams the remote file into its `.part` (resuming a partial one when
/// the server supports REST), fsyncs it and records its SHA-256.
async fn download(
    engine: &Engine,
    remote: &mut dyn Remote,
    item: &PullItem,
    row: &crate::ledger::FileRow,
    part: &Path,
    job: &Job,
    progress: Option<super::Progress>,
) -> Result<(String, Option<u64>), Failure> {
    let existing = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let offset =
        if row.attempts > 0 && existing > 0 && existing < item.size && remote.capabilities().resume
        {
            existing
        } else {
            0
        };
    engine.ledger(|l| l.set_file_state(item.id, FileState::Sending, None, None))?;
    let local_err = |e: std::io::Error| Failure::Retry(format!("writing {}: {e}", part.display()));
    let mut file = if offset > 0 {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await
            .map_err(local_err)?
    } else {
        tokio::fs::File::create(part).await.map_err(local_err)?
    };
    let mut writer = Hashing::new(&mut file).with_progress(progress, &item.name, item.size);
    if offset > 0 {
        let head = std::fs::read(part).map_err(local_err)?;
        writer.absorb(&head[..offset as usize]);
    }
    let got = remote
        .download(&item.remote_path, offset, &mut writer)
        .await;
    let (_, sha, total) = writer.finish();
    match got {
        Ok(_) => {}
        Err(e @ TransportError::FileUnavailable { .. }) => {
            let _ = std::fs::remove_file(part);
            // 550 means missing or forbidden alike: the listing tells which.
            if remote.stat(&item.remote_path).await?.is_none() {
                return Err(Failure::Permanent(format!(
                    "{} disappeared from the server before it was downloaded",
                    item.remote_path
                )));
            }
            return Err(Failure::Transport(e));
        }
        Err(TransportError::Local(msg)) => {
            // Disk full or unwritable: free what we wrote; the remote file stays.
            let _ = std::fs::remove_file(part);
            return Err(Failure::Retry(msg));
        }
        Err(e) => return Err(Failure::Transport(e)), // the partial .part is resumed next attempt
    }
    let synced = async {
        file.flush().await?;
        file.sync_all().await
    }
    .await;
    if let Err(e) = synced {
        let _ = std::fs::remove_file(part);
        return Err(Failure::Retry(format!("writing {}: {e}", part.display())));
    }
    local::sync_dir(&job.local_dir);
    if total != item.size {
        let _ = std::fs::remove_file(part);
        return Err(Failure::Retry(format!(
            "received {total} bytes of {}, the listing said {} (did it change on the server?)",
            item.remote_path, item.size
        )));
    }
    engine.ledger(|l| {
        l.set_sha256(item.id, &sha)?;
        l.set_file_state(item.id, FileState::Sent, None, None)
    })?;
    Ok((sha, (offset > 0).then_some(offset)))
}

/// Size was checked while streaming; the server's SHA-256 when it offers one.
async fn verify_download(
    remote: &mut dyn Remote,
    path: &str,
    sha: &str,
    job: &Job,
) -> Result<Verified, Failure> {
    match job.verify {
        Verify::None => Ok(Verified::None),
        Verify::Size => Ok(Verified::Size),
        Verify::Hash | Verify::Auto => match remote.sha256(path).await? {
            Some(h) if hex::encode(h) == sha => Ok(Verified::Hash),
            Some(h) => Err(Failure::Mismatch(format!(
                "hash mismatch on {path}: downloaded SHA-256 {sha}, server computed {}",
                hex::encode(h)
            ))),
            None if job.verify == Verify::Hash => Err(Failure::Permanent(format!(
                "verify: hash, but {} offers no SHA-256 command (HASH or XSHA256)",
                job.server.name
            ))),
            None => Ok(Verified::Size),
        },
    }
}
