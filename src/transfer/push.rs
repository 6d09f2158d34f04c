//! Push: local outbound folder -> partner server.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use super::local::{self, Hashing, LocalFile};
use super::{
    Attempt, Done, Engine, Failure, FileOutcome, FileStatus, RunOptions, RunReport, WorkItem,
    remote_join,
};
use crate::config::{AfterPush, Flow, Job, Upload, Verify};
use crate::ledger::{FileRow, FileState, Intent, NewFile, Step, Verified};
use crate::transport::Remote;

pub(super) struct PushItem {
    id: i64,
    /// The local file as it was when selected.
    local: LocalFile,
    /// The local file changed before this delivery finished: the attempt only
    /// removes this delivery's temp file from the server and gives it up.
    abandon: bool,
}

impl WorkItem for PushItem {
    fn name(&self) -> &str {
        &self.local.name
    }
    fn file_id(&self) -> i64 {
        self.id
    }
}

/// The local file as its ledger record describes it.
fn recorded_file(job: &Job, row: &FileRow) -> LocalFile {
    LocalFile {
        name: row.name.clone(),
        path: row
            .local_path
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| job.local_dir.join(&row.name)),
        size: row.size,
        mtime: parse_mtime(row.mtime.as_deref()),
        ino: 0,
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
        let recorded = recorded_file(job, &row);
        let intact = LocalFile::stat(&recorded.path).is_ok_and(|now| {
            now.size == recorded.size && now.mtime_key() == row.mtime.clone().unwrap_or_default()
        });
        // Once the whole file is on the server (sent and later), the ledger
        // holds its size and hash, so the delivery can finish without the local copy.
        let on_server = matches!(
            row.state,
            FileState::Sent | FileState::Renaming | FileState::Renamed | FileState::Verified
        );
        if intact {
            covered.insert(row.name.clone());
            if job.edi.is_some() && row.state == FileState::Seen {
                // A crash between the file's record and its envelope's.
                super::acks::record_missing_envelope(engine, job, &row).await;
            }
        }
        if intact || on_server {
            info!(job = %job.name, file = %row.name, file_id = row.id, state = row.state.as_str(), "resuming an unfinished delivery");
        } else if row.intent.is_none() {
            // Nothing was sent: the record is given up, the new file is a new delivery.
            engine.ledger(|l| l.set_file_state(row.id, FileState::Failed, None, Some(CHANGED)))?;
            warn!(job = %job.name, file = %row.name, file_id = row.id, "{CHANGED}");
            continue;
        }
        items.push(PushItem {
            id: row.id,
            local: recorded,
            abandon: !intact && !on_server,
        });
    }

    // Failed deliveries whose local file changed since: their partial uploads
    // are removed from the server (the new file is a delivery of its own).
    for row in engine.ledger(|l| l.failed_with_temp(&job.name))? {
        let local = recorded_file(job, &row);
        let intact = LocalFile::stat(&local.path)
            .is_ok_and(|now| now.size == row.size && Some(now.mtime_key()) == row.mtime);
        if !intact {
            items.push(PushItem {
                id: row.id,
                local,
                abandon: true,
            });
        }
    }

    // 2. What is ready in the outbound folder now (created if missing: check
    // accepted it as creatable, and a watcher needs it to exist).
    std::fs::create_dir_all(&job.local_dir)
        .map_err(|e| anyhow::anyhow!("cannot create local_dir {}: {e}", job.local_dir.display()))?;
    let (ready, waiting) = local::scan_ready(job)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read local_dir {}: {e}", job.local_dir.display()))?;
    let mut fresh = Vec::new();
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
            Some(r) if r.state == FileState::Held => {
                outcomes.push(held(&f, &r, job));
                continue;
            }
            Some(r) if r.state == FileState::Failed => {
                items.push(PushItem {
                    id: r.id,
                    local: f,
                    abandon: false,
                });
                continue;
            }
            _ => {}
        }
        // A file that cannot be read fails alone, when its attempt opens it.
        let same = if opts.force {
            None
        } else {
            same_content_delivered(engine, job, &f)
                .await
                .unwrap_or_else(|e| {
                    warn!(job = %job.name, file = %f.name, "cannot compare with earlier deliveries: {e:#}");
                    None
                })
        };
        if let Some(r) = same {
            warn!(job = %job.name, file = %f.name, "same name and content as a file already delivered; not sent again (ferry once --force sends it)");
            outcomes.push(already(&f, &r, job));
            continue;
        }
        let gated = match &job.edi {
            Some(edi) => match super::acks::gate(engine, job, edi, &f).await {
                Ok(super::acks::Gate::Blocked(o)) => {
                    outcomes.push(*o);
                    continue;
                }
                Ok(super::acks::Gate::Pass {
                    interchange,
                    sha256,
                    override_by,
                }) => Some((interchange, sha256, override_by)),
                Err(e) => {
                    // An unreadable file fails alone, as it would when sent.
                    warn!(job = %job.name, file = %f.name, "cannot check the X12 envelope: {e:#}");
                    outcomes.push(FileOutcome {
                        name: f.name.clone(),
                        remote_path: remote_join(&job.remote_dir, &f.name),
                        bytes: f.size,
                        sha256: None,
                        verified: Verified::None,
                        attempts: 0,
                        status: FileStatus::Failed {
                            error: format!("cannot check the X12 envelope: {e:#}"),
                        },
                        note: None,
                    });
                    continue;
                }
            },
            None => None,
        };
        if gated.is_none() {
            // No envelope to record with it: recorded with the others below.
            fresh.push(f);
            continue;
        }
        let remote_path = remote_join(&job.remote_dir, &f.name);
        let id = engine.ledger(|l| l.insert_file(&new_record(job, run_id, &f, &remote_path)))?;
        if let Some((Some(ic), sha, by)) = &gated {
            engine.ledger(|l| {
                l.record_interchange(&job.name, &job.server.name, id, &f.name, sha, ic)?;
                match by {
                    Some(by) => l.mark_override(id, by),
                    None => Ok(()),
                }
            })?;
        }
        items.push(PushItem {
            id,
            local: f,
            abandon: false,
        });
    }
    // New files without an envelope to record are recorded in one commit
    // (a gated file's record and its envelope's go together, one by one:
    // the next file's duplicate check must see it).
    let remote_paths: Vec<String> = fresh
        .iter()
        .map(|f| remote_join(&job.remote_dir, &f.name))
        .collect();
    let records: Vec<NewFile> = fresh
        .iter()
        .zip(&remote_paths)
        .map(|(f, remote_path)| new_record(job, run_id, f, remote_path))
        .collect();
    let ids = engine.ledger(|l| l.insert_files(&records))?;
    drop(records);
    for (f, id) in fresh.into_iter().zip(ids) {
        items.push(PushItem {
            id,
            local: f,
            abandon: false,
        });
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
            Arc::new(PushAttempt {
                engine: engine.clone(),
                job: job.clone(),
                progress: opts.progress.clone(),
            }),
            opts.stop.as_ref(),
            None,
            Vec::new(),
        )
        .await;
    outcomes.extend(done);
    Ok(RunReport::new(job, outcomes, connection_error))
}

/// The record of a new file this run sends.
fn new_record<'a>(
    job: &'a Job,
    run_id: i64,
    f: &'a LocalFile,
    remote_path: &'a str,
) -> NewFile<'a> {
    NewFile {
        job: &job.name,
        direction: "push",
        name: &f.name,
        size: f.size,
        mtime: Some(f.mtime),
        sha256: None,
        remote_path,
        local_path: Some(&f.path),
        run_id: Some(run_id),
    }
}

fn already(f: &LocalFile, r: &FileRow, job: &Job) -> FileOutcome {
    let at = r.finished_at.clone();
    skipped(f, r, job, 0, FileStatus::AlreadyDelivered { at })
}

fn held(f: &LocalFile, r: &FileRow, job: &Job) -> FileOutcome {
    let reason = r.last_error.clone().unwrap_or_default();
    skipped(f, r, job, r.attempts, FileStatus::Held { reason })
}

/// A file this run does not send, as its record describes it.
fn skipped(
    f: &LocalFile,
    r: &FileRow,
    job: &Job,
    attempts: u32,
    status: FileStatus,
) -> FileOutcome {
    FileOutcome {
        name: f.name.clone(),
        remote_path: remote_join(&job.remote_dir, &f.name),
        bytes: f.size,
        sha256: r.sha256.clone(),
        verified: r.verified,
        attempts,
        status,
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

pub(super) async fn hash_file(path: &std::path::Path) -> anyhow::Result<String> {
    let file = tokio::fs::File::open(path).await?;
    let mut h = Hashing::new(file);
    tokio::io::copy(&mut h, &mut tokio::io::sink()).await?;
    Ok(h.finish().1)
}

struct PushAttempt {
    engine: Engine,
    job: Job,
    progress: Option<super::Progress>,
}

/// What one attempt does next, decided from the ledger's record and the
/// server's listing (never from a name and size that happen to match).
#[derive(Debug, PartialEq)]
enum Plan {
    /// Stream the file to its target from `offset`; `discard` first removes
    /// what this delivery left there (a server may refuse to overwrite it).
    Upload { offset: u64, discard: bool },
    /// The whole file is at its target: verify it (then rename a temp file).
    Verify { sha: String },
    /// The verified temp file still has to get its final name.
    Rename,
    /// The partner has it; nothing more is sent.
    Delivered { level: Verified, note: String },
    /// The local file is not what this record describes any more: remove
    /// this delivery's temp file and give the record up.
    Abandon,
}

#[async_trait::async_trait]
impl Attempt<PushItem> for PushAttempt {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &PushItem,
        attempt: u32,
    ) -> Result<Done, Failure> {
        self.push_one(remote, item, attempt).await.map(Done::Now)
    }
}

impl PushAttempt {
    async fn push_one(
        &self,
        remote: &mut dyn Remote,
        item: &PushItem,
        _attempt: u32,
    ) -> Result<FileOutcome, Failure> {
        let (engine, job) = (&self.engine, &self.job);
        let row = engine.ledger(|l| l.file(item.id))?;
        if row.state == FileState::Verified {
            // Delivered earlier; only the after-action is left.
            return finish(engine, job, item, row.verified, None, false).await;
        }
        let mut d = Delivery::new(engine, job, item, row);
        let mut plan = if item.abandon {
            Plan::Abandon
        } else if d.row.intent.is_none() {
            Plan::Upload {
                offset: 0,
                discard: false,
            }
        } else {
            d.recover(remote).await?
        };
        let mut note = None;
        loop {
            plan = match plan {
                Plan::Abandon => return d.abandon(remote).await,
                Plan::Upload { offset, discard } => {
                    if offset > 0 {
                        note = Some(format!("resumed at byte {offset}"));
                    }
                    let sha = d
                        .upload(remote, offset, discard, self.progress.clone())
                        .await?;
                    Plan::Verify { sha }
                }
                Plan::Verify { sha } => match d.verify_target(remote, &sha).await? {
                    Some(p) => p,
                    None => break,
                },
                Plan::Rename => {
                    d.rename(remote).await?;
                    break;
                }
                Plan::Delivered { level, note: why } => {
                    d.delivered(level, &why)?;
                    note = Some(why);
                    break;
                }
            };
        }
        let level = engine.ledger(|l| l.file(item.id))?.verified;
        let done = d.done_recorded;
        finish(engine, job, item, level, note, done).await
    }
}

const CHANGED: &str = "the local file changed or disappeared before its delivery finished; a changed file is sent as a new one";

/// One delivery of one file: its record and where it goes on the server.
struct Delivery<'a> {
    engine: &'a Engine,
    job: &'a Job,
    item: &'a PushItem,
    row: FileRow,
    upload: Upload,
    final_path: String,
    /// The upload finished in this attempt; `sent` goes with the next step.
    sent_unrecorded: bool,
    /// `done` was recorded with `verified` (nothing follows the delivery).
    done_recorded: bool,
}

impl<'a> Delivery<'a> {
    fn new(engine: &'a Engine, job: &'a Job, item: &'a PushItem, row: FileRow) -> Delivery<'a> {
        let upload = match &job.flow {
            Flow::Push { upload, .. } => *upload,
            Flow::Pull { .. } => Upload::TempRename,
        };
        Delivery {
            final_path: remote_join(&job.remote_dir, &item.local.name),
            engine,
            job,
            item,
            row,
            upload,
            sent_unrecorded: false,
            done_recorded: false,
        }
    }

    fn size(&self) -> u64 {
        self.row.size
    }

    /// Where the bytes go: this delivery's own temp name, or the final name.
    fn target(&self) -> Option<String> {
        match self.upload {
            Upload::TempRename => self.row.temp_path.clone(),
            Upload::Direct => Some(self.final_path.clone()),
        }
    }

    /// A temp name no other delivery uses: the file's name, the ledger id and
    /// a random tag, then the job's suffix (`claims.837.f12-a3f9c1.part`).
    fn fresh_temp(&self) -> String {
        let suffix = match &self.job.flow {
            Flow::Push { temp_suffix, .. } => temp_suffix.as_str(),
            Flow::Pull { .. } => ".part",
        };
        let name = format!(
            "{}.f{}-{:06x}{suffix}",
            self.item.local.name,
            self.row.id,
            fastrand::u32(..0x100_0000)
        );
        remote_join(&self.job.remote_dir, &name)
    }

    fn resume_ok(&self, remote: &dyn Remote) -> bool {
        remote.capabilities().resume && !remote.quirks().rest_refused && self.item.local.unchanged()
    }

    /// The local file's SHA-256 as recorded, else read now (only while the
    /// file is still exactly what this record describes).
    async fn local_sha(&self) -> Result<Option<String>, Failure> {
        if let Some(s) = &self.row.sha256 {
            return Ok(Some(s.clone()));
        }
        if !self.item.local.unchanged() {
            return Ok(None);
        }
        hash_file(&self.item.local.path)
            .await
            .map(Some)
            .map_err(|e| {
                Failure::Permanent(format!(
                    "cannot read {}: {e:#}",
                    self.item.local.path.display()
                ))
            })
    }

    /// Decides, from the intent this record carries and what the server
    /// lists now, what the interrupted delivery still needs.
    async fn recover(&mut self, remote: &mut dyn Remote) -> Result<Plan, Failure> {
        let size = self.size();
        let consumes = self.job.server.consumes;
        let sent = self.row.state == FileState::Sent;
        let listing = remote.list(&self.job.remote_dir).await?;
        let find = |path: &str| {
            let (_, name) = crate::transport::split_path(path);
            listing.iter().find(|e| e.name == name).cloned()
        };
        let plan = match (self.upload, self.row.intent) {
            (Upload::TempRename, Some(Intent::Upload)) => {
                let Some(t) = self.row.temp_path.clone() else {
                    return Ok(Plan::Upload {
                        offset: 0,
                        discard: false,
                    });
                };
                match find(&t) {
                    // Never written, or removed by someone: this delivery starts over.
                    None => Plan::Upload {
                        offset: 0,
                        discard: false,
                    },
                    Some(e) if e.size == size => match self.local_sha().await? {
                        Some(sha) => Plan::Verify { sha },
                        None => Plan::Abandon,
                    },
                    // An empty temp file is not resumed: a STOR from byte 0
                    // onto it is an overwrite, which ProFTPD's stock
                    // `AllowOverwrite off` refuses; it is removed first.
                    Some(e) if e.size > 0 && e.size < size && !sent && self.resume_ok(remote) => {
                        Plan::Upload {
                            offset: e.size,
                            discard: false,
                        }
                    }
                    Some(_) if !sent && !self.item.local.unchanged() => Plan::Abandon,
                    Some(_) => Plan::Upload {
                        offset: 0,
                        discard: true,
                    },
                }
            }
            (Upload::TempRename, Some(Intent::Rename)) => {
                let t = self.row.temp_path.clone().unwrap_or_default();
                match (find(&t), find(&self.final_path)) {
                    (Some(_), _) => Plan::Rename,
                    // The temp file was ours alone and is gone: the rename happened.
                    (None, Some(_)) => {
                        let sha = self.row.sha256.clone().unwrap_or_default();
                        match server_hash(remote, &self.final_path, size).await? {
                            Some(h) if hex::encode(h) == sha => Plan::Delivered {
                                level: Verified::Hash,
                                note: "renamed before ferry stopped; the server's hash matches"
                                    .into(),
                            },
                            Some(h) => {
                                return Err(Failure::Hold(format!(
                                    "{} was renamed by ferry before it stopped, but {} now holds other bytes (server SHA-256 {}); ferry cannot tell whether the partner took this file",
                                    t,
                                    self.final_path,
                                    hex::encode(h)
                                )));
                            }
                            None => Plan::Delivered {
                                level: self.row.verified,
                                note: "renamed before ferry stopped; the temp file was verified before the rename".into(),
                            },
                        }
                    }
                    (None, None) if consumes => Plan::Delivered {
                        level: self.row.verified,
                        note: "renamed before ferry stopped and taken by the partner's inbox"
                            .into(),
                    },
                    (None, None) => {
                        return Err(Failure::Hold(format!(
                            "ferry renamed {t} to {} just before it stopped, and neither name is on the server now: the partner may have taken it (if this inbox takes files away, set consumes: true on the server)",
                            self.final_path
                        )));
                    }
                }
            }
            (Upload::Direct, _) => {
                let f = find(&self.final_path);
                let before = self.row.remote_before.clone().unwrap_or_default();
                match f {
                    None if sent && consumes => Plan::Delivered {
                        level: Verified::None,
                        note: "the server confirmed the whole upload; the partner's inbox then took it".into(),
                    },
                    None if sent => {
                        return Err(Failure::Hold(format!(
                            "the server confirmed the whole upload of {}, then the file was gone: the partner may have taken it (if this inbox takes files away, set consumes: true on the server)",
                            self.final_path
                        )));
                    }
                    None if consumes => {
                        return Err(Failure::Hold(format!(
                            "the upload of {} was cut, and this inbox takes files away: ferry cannot know whether the partner got a whole file, part of one, or nothing",
                            self.final_path
                        )));
                    }
                    None => Plan::Upload {
                        offset: 0,
                        discard: false,
                    },
                    Some(e) if sent && e.size == size => Plan::Verify {
                        sha: self.row.sha256.clone().unwrap_or_default(),
                    },
                    // Still what was there before this delivery wrote anything.
                    Some(e) if entry_key(&e) == before => Plan::Upload {
                        offset: 0,
                        discard: false,
                    },
                    Some(e) if e.size > 0 && e.size < size && self.resume_ok(remote) => {
                        Plan::Upload {
                            offset: e.size,
                            discard: false,
                        }
                    }
                    Some(e) if e.size == size => {
                        // A final name ferry did not rename counts only with a matching hash.
                        let local = self.local_sha().await?;
                        match (server_hash(remote, &self.final_path, size).await?, local) {
                            (Some(h), Some(sha)) if hex::encode(h) == sha => Plan::Delivered {
                                level: Verified::Hash,
                                note: "the upload had completed before ferry stopped; the server's hash matches".into(),
                            },
                            _ => Plan::Upload {
                                offset: 0,
                                discard: true,
                            },
                        }
                    }
                    Some(_) => Plan::Upload {
                        offset: 0,
                        discard: true,
                    },
                }
            }
            (Upload::TempRename, None) => Plan::Upload {
                offset: 0,
                discard: false,
            },
        };
        Ok(plan)
    }

    /// Records the intent, then streams the file to its target.
    async fn upload(
        &mut self,
        remote: &mut dyn Remote,
        mut offset: u64,
        discard: bool,
        progress: Option<super::Progress>,
    ) -> Result<String, Failure> {
        if !self.item.local.unchanged() {
            return Err(Failure::Permanent(CHANGED.into()));
        }
        let mut target = self.target();
        if discard && let Some(t) = &target {
            // This delivery's own leftover. If the server refuses to remove
            // it, a new temp name keeps the two apart; a lost connection is
            // an error like any other (the next attempt looks again).
            match remote.delete(t).await {
                Ok(()) => {}
                Err(e) if e.refusal_code().is_some() && self.upload == Upload::TempRename => {
                    warn!(job = %self.job.name, temp = %t, error = %e, "the server refuses to remove this delivery's partial upload; using a new temp name");
                    target = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let target = match target {
            Some(t) => t,
            None => {
                offset = 0;
                self.fresh_temp()
            }
        };
        // Direct: what the final name held before this delivery wrote to it.
        let before = if self.upload == Upload::Direct && self.row.remote_before.is_none() {
            Some(
                remote
                    .stat(&target)
                    .await?
                    .map_or_else(|| "absent".to_string(), |e| entry_key(&e)),
            )
        } else {
            None
        };
        let temp = (self.upload == Upload::TempRename).then_some(target.as_str());
        self.engine.ledger(|l| {
            l.step(
                self.row.id,
                &Step {
                    state: FileState::Sending,
                    intent: Some(Some(Intent::Upload)),
                    temp_path: temp.map(Some),
                    remote_before: before.as_deref().map(Some),
                    ..Step::default()
                },
            )
        })?;
        self.row.intent = Some(Intent::Upload);
        self.row.state = FileState::Sending;
        if let Some(t) = temp {
            self.row.temp_path = Some(t.to_string());
        }
        if let Some(b) = before {
            self.row.remote_before = Some(b);
        }
        let sha = match send(remote, self.item, &target, offset, progress.clone()).await {
            Err(Failure::Transport(e)) if offset > 0 && e.refusal_code().is_some() => {
                // REST refused (ProFTPD's AllowStoreRestart off): remember it,
                // remove the partial and send the whole file.
                warn!(job = %self.job.name, file = %self.item.local.name, error = %e, "the server refused to resume; sending the whole file");
                let mut q = remote.quirks();
                q.rest_refused = true;
                remote.set_quirks(q);
                let _ = remote.delete(&target).await;
                send(remote, self.item, &target, 0, progress).await?
            }
            r => r?,
        };
        // `sent` is recorded with what the check decides (one commit): a
        // crash before then is an upload whose intent is recorded, which
        // the next run reconciles from the listing like any other.
        self.row.state = FileState::Sent;
        self.row.sha256 = Some(sha.clone());
        self.sent_unrecorded = true;
        Ok(sha)
    }

    /// The `sent` step, when the upload finished in this attempt and it is
    /// not recorded yet: to be recorded with the step that follows it.
    fn sent_step(&self) -> Option<Step<'_>> {
        self.sent_unrecorded.then(|| Step {
            state: FileState::Sent,
            sha256: self.row.sha256.as_deref(),
            ..Step::default()
        })
    }

    /// Records `steps` after the unrecorded `sent`, if any, in one commit.
    fn record(&mut self, steps: &[Step<'_>]) -> Result<(), Failure> {
        let all: Vec<Step<'_>> = self
            .sent_step()
            .into_iter()
            .chain(steps.iter().copied())
            .collect();
        if !all.is_empty() {
            self.engine.ledger(|l| l.steps(self.row.id, &all))?;
        }
        self.sent_unrecorded = false;
        Ok(())
    }

    /// Verifies the complete file at its target. For temp_rename the next
    /// step is the rename; `None` means the delivery is recorded verified.
    async fn verify_target(
        &mut self,
        remote: &mut dyn Remote,
        sha: &str,
    ) -> Result<Option<Plan>, Failure> {
        let target = self.target().unwrap_or_default();
        let job = self.job;
        let checked = verify(
            remote,
            &target,
            sha,
            self.size(),
            job.verify,
            &job.server.name,
        )
        .await;
        if checked.is_err() {
            self.record(&[])?;
        }
        let level = match checked {
            Ok(level) => level,
            Err(f @ Failure::Mismatch(_)) => {
                if self.upload == Upload::TempRename {
                    let _ = remote.delete(&target).await;
                }
                return Err(f);
            }
            Err(f) if self.upload == Upload::Direct && self.row.state == FileState::Sent => {
                // A complete upload, then the file is gone: taken by the partner?
                if remote.stat(&target).await?.is_some() {
                    return Err(f);
                }
                if job.server.consumes {
                    return Ok(Some(Plan::Delivered {
                        level: Verified::None,
                        note: "the server confirmed the whole upload; the partner's inbox then took it".into(),
                    }));
                }
                return Err(Failure::Hold(format!(
                    "the server confirmed the whole upload of {target}, then the file was gone: the partner may have taken it (if this inbox takes files away, set consumes: true on the server)"
                )));
            }
            Err(f) => return Err(f),
        };
        match self.upload {
            Upload::TempRename => {
                self.record(&[Step {
                    state: FileState::Renaming,
                    intent: Some(Some(Intent::Rename)),
                    verified: Some(level),
                    ..Step::default()
                }])?;
                self.row.state = FileState::Renaming;
                self.row.intent = Some(Intent::Rename);
                self.row.verified = level;
                Ok(Some(Plan::Rename))
            }
            Upload::Direct => {
                let mut steps = vec![Step {
                    state: FileState::Verified,
                    verified: Some(level),
                    ..Step::default()
                }];
                steps.extend(self.done_step());
                self.record(&steps)?;
                self.row.verified = level;
                Ok(None)
            }
        }
    }

    /// RNFR temp RNTO final, the intent already recorded.
    async fn rename(&mut self, remote: &mut dyn Remote) -> Result<(), Failure> {
        let t = self.row.temp_path.clone().unwrap_or_default();
        if self.row.state != FileState::Renaming {
            self.engine
                .ledger(|l| l.set_file_state(self.row.id, FileState::Renaming, None, None))?;
        }
        remote.rename(&t, &self.final_path).await?;
        let mut steps = vec![Step {
            state: FileState::Verified,
            verified: Some(self.row.verified),
            ..Step::default()
        }];
        steps.extend(self.done_step());
        self.record(&steps)?;
        Ok(())
    }

    /// With `after_push: keep` nothing follows the delivery: `done` is
    /// recorded in the same commit as `verified`.
    fn done_step(&mut self) -> Option<Step<'static>> {
        let keep = matches!(&self.job.flow, Flow::Push { after, .. } if *after == AfterPush::Keep);
        self.done_recorded = keep;
        keep.then(|| Step {
            state: FileState::Done,
            ..Step::default()
        })
    }

    /// Removes this delivery's temp file and gives the record up: the local
    /// file changed, and the new one is a delivery of its own.
    async fn abandon(&self, remote: &mut dyn Remote) -> Result<FileOutcome, Failure> {
        if let Some(t) = &self.row.temp_path
            && remote.stat(t).await?.is_some()
        {
            remote.delete(t).await?;
            info!(job = %self.job.name, file = %self.item.local.name, temp = %t, "removed the partial upload of a file that changed since");
        }
        self.engine.ledger(|l| {
            l.step(
                self.row.id,
                &Step {
                    state: FileState::Failed,
                    error: Some(CHANGED),
                    intent: Some(None),
                    temp_path: Some(None),
                    ..Step::default()
                },
            )
        })?;
        Ok(FileOutcome {
            name: self.item.local.name.clone(),
            remote_path: self.final_path.clone(),
            bytes: self.row.size,
            sha256: self.row.sha256.clone(),
            verified: Verified::None,
            attempts: self.row.attempts,
            status: FileStatus::Superseded,
            note: Some(CHANGED.into()),
        })
    }

    fn delivered(&self, level: Verified, note: &str) -> Result<(), Failure> {
        info!(job = %self.job.name, file = %self.item.local.name, note, "delivered before ferry stopped; not sent again");
        self.engine.ledger(|l| {
            l.step(
                self.row.id,
                &Step {
                    state: FileState::Verified,
                    verified: Some(level),
                    note: Some(note),
                    ..Step::default()
                },
            )
        })?;
        Ok(())
    }
}

/// A listing entry as `remote_before` records it: size and time.
fn entry_key(e: &crate::transport::RemoteEntry) -> String {
    format!(
        "{} {}",
        e.size,
        e.mtime
            .map_or_else(|| "-".to_string(), crate::ledger::rfc3339)
    )
}

/// Streams the local file to `target` from `offset`, hashing every byte once.
async fn send(
    remote: &mut dyn Remote,
    item: &PushItem,
    target: &str,
    offset: u64,
    progress: Option<super::Progress>,
) -> Result<String, Failure> {
    let file = local::Source::open(&item.local.path, item.local.size).map_err(|e| {
        Failure::Permanent(format!("cannot open {}: {e}", item.local.path.display()))
    })?;
    let mut reader =
        Hashing::counting(file).with_progress(progress, &item.local.name, item.local.size);
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
    let (file, _, total) = reader.finish();
    let sha = file
        .finish()
        .map_err(|e| Failure::Retry(format!("cannot read {}: {e}", item.local.path.display())))?;
    if total != item.local.size || !item.local.unchanged() {
        return Err(Failure::Retry(
            "the local file changed while it was being sent".into(),
        ));
    }
    Ok(sha)
}

fn no_hash(server: &str) -> String {
    format!(
        "verify: hash, but {server} offers no SHA-256 command (HASH or XSHA256); use verify: auto or size for this server"
    )
}

/// The server's SHA-256 of `path`, or `None` when it has none to give: no
/// command, or a refusal (remembered, so files this large are verified by
/// size from then on). `450`/`550` are not refusals of HASH: the file is
/// unavailable, and that is an error.
pub(super) async fn server_hash(
    remote: &mut dyn Remote,
    path: &str,
    size: u64,
) -> Result<Option<[u8; 32]>, Failure> {
    let mut q = remote.quirks();
    if q.hash_refused_from.is_some_and(|n| size >= n) {
        return Ok(None);
    }
    match remote.sha256(path).await {
        Ok(h) => Ok(h),
        Err(e)
            if e.refusal_code()
                .is_some_and(|c| (500..600).contains(&c) && c != 550 && c != 553) =>
        {
            warn!(path, error = %e, "the server refused to hash this file; verifying by size");
            q.hash_refused_from = Some(q.hash_refused_from.map_or(size, |n| n.min(size)));
            remote.set_quirks(q);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
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
/// `verify` says.
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
    match mode {
        Verify::None => Ok(Verified::None),
        Verify::Size => check_size(remote, path, size).await.map(|_| Verified::Size),
        Verify::Hash => match server_hash(remote, path, size).await? {
            Some(h) if hex::encode(h) == sha => Ok(Verified::Hash),
            Some(h) => Err(mismatch(&h)),
            None => Err(Failure::Permanent(no_hash(server))),
        },
        Verify::Auto => match server_hash(remote, path, size).await? {
            Some(h) if hex::encode(h) == sha => Ok(Verified::Hash),
            Some(h) => Err(mismatch(&h)),
            None => check_size(remote, path, size).await.map(|_| Verified::Size),
        },
    }
}

/// Archive, delete or keep the local file, then record the end of the journey.
async fn finish(
    engine: &Engine,
    job: &Job,
    item: &PushItem,
    level: Verified,
    mut note: Option<String>,
    done_recorded: bool,
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
                Ok(Some(archived)) => engine.ledger(|l| {
                    l.set_local_path(item.id, &archived)?;
                    l.audit_file(item.id, "archived", Default::default())
                })?,
                Ok(None) => {
                    engine.ledger(|l| l.audit_file(item.id, "local_deleted", Default::default()))?
                }
                Err(e) => {
                    // Delivered all the same; the next run retries the after-action only.
                    done = false;
                    note = Some(format!("delivered, but the after-push action failed: {e}"));
                    warn!(job = %job.name, file = %local.name, "after_push failed: {e}");
                }
            }
        }
    }
    if done && !done_recorded {
        engine.ledger(|l| l.set_file_state(item.id, FileState::Done, None, None))?;
    }
    let row = engine.ledger(|l| l.file(item.id))?;
    info!(job = %job.name, file = %local.name, file_id = item.id, bytes = row.size, verified = level.as_str(), "delivered");
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
