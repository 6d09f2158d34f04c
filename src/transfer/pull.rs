//! Pull: partner server -> local inbound folder.
//!
//! Each file streams to `local_dir/.<name>.part` while hashing, is synced to
//! disk and verified, and only then gets its name (never overwriting one).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use tracing::{info, warn};

use super::local::{self, Hashing};
use super::{
    Attempt, Done, Engine, Failure, FileOutcome, FileStatus, RunOptions, RunReport, WorkItem,
    remote_join,
};
use crate::config::{AfterPull, Flow, Job, Verify};
use crate::ledger::{FileState, NewFile, Step, Verified};
use crate::transport::{Remote, RemoteEntry, TransportError};

#[derive(Clone)]
pub(super) struct PullItem {
    id: i64,
    name: String,
    remote_path: String,
    size: u64,
    /// The remote time the record was made from (second precision where the
    /// server gives it): with the size, the file's identity on the server.
    mtime: Option<String>,
}

impl WorkItem for PullItem {
    fn name(&self) -> &str {
        &self.name
    }
    fn file_id(&self) -> i64 {
        self.id
    }
}

/// From this size on, a download records `sending` before it starts, so
/// an interrupted one resumes from its `.part`.
const RESUME_WORTH_RECORDING: u64 = 1 << 20;

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
            mtime: r.mtime,
        })
        .collect();

    // Sessions for the downloads log in while the listing is read (and
    // timed, and recorded), once the first listing shows files to fetch.
    let mut warm = Vec::new();
    let mut warm_up = |listed: &[RemoteEntry]| {
        if warm.is_empty() {
            warm = engine.warm_up(job, more_sessions(engine, job, items.len(), listed));
        }
    };
    let listed = list_with_retries(engine, job, &mut warm_up).await;
    let (session, permit, listing) = match listed {
        Ok(v) => v,
        Err(msg) => {
            for w in warm {
                w.close().await;
            }
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
    let unfinished: HashMap<String, (u64, Option<String>)> = items
        .iter()
        .map(|i| (i.name.clone(), (i.size, i.mtime.clone())))
        .collect();
    let mut new = Vec::new();
    for e in stable {
        let mtime = mtime_key(&e);
        if unfinished.get(&e.name) == Some(&(e.size, mtime.clone())) {
            continue; // the unfinished record carries on
        }
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
                    mtime: r.mtime,
                });
                continue;
            }
            _ => {}
        }
        let remote_path = remote_join(&job.remote_dir, &e.name);
        new.push((e, remote_path, mtime));
    }
    // A listing's new files are recorded in one commit.
    let records: Vec<NewFile> = new
        .iter()
        .map(|(e, remote_path, _)| NewFile {
            job: &job.name,
            direction: "pull",
            name: &e.name,
            size: e.size,
            mtime: e.mtime,
            sha256: None,
            remote_path,
            local_path: None,
            run_id: Some(run_id),
        })
        .collect();
    let ids = engine.ledger(|l| l.insert_files(&records))?;
    drop(records);
    for ((e, remote_path, mtime), id) in new.into_iter().zip(ids) {
        items.push(PullItem {
            id,
            name: e.name,
            remote_path,
            size: e.size,
            mtime,
        });
    }
    let unparsed = session.listing_unparsed();

    let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempt = Arc::new(PullAttempt {
        engine: engine.clone(),
        job: job.clone(),
        progress: opts.progress.clone(),
        notices: notices.clone(),
        finisher: start_finisher(engine.clone(), job.clone(), notices)?,
    });
    let (done, connection_error) = engine
        .drive(
            job,
            items,
            attempt.clone(),
            opts.stop.as_ref(),
            // The listing's session downloads too: one login fewer.
            permit.map(|(p, count)| super::Spare(session, p, count)),
            warm,
        )
        .await;
    outcomes.extend(done);
    let mut report = RunReport::new(job, outcomes, connection_error);
    report.edi = attempt
        .notices
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default();
    report.listing_unparsed = unparsed;
    Ok(report)
}

/// The listing session, its `max_connections` permit and place among the
/// server's open sessions, and the listing: files stable since the first
/// listing, and names still growing.
type Listed = (
    Box<dyn Remote>,
    Option<(tokio::sync::OwnedSemaphorePermit, super::SessionCount)>,
    (Vec<RemoteEntry>, Vec<String>),
);

/// How many sessions to log in besides the listing's, for a run with
/// `unfinished` records and this first listing: enough for the files not
/// already delivered under the same name and size. A folder of files
/// pulled before (`after_pull: keep`) logs in none ahead.
fn more_sessions(engine: &Engine, job: &Job, unfinished: usize, listed: &[RemoteEntry]) -> usize {
    let most = engine.sessions_for(job, usize::MAX);
    let enough = super::FILES_PER_SESSION * (most - 1) + 1;
    let mut files = unfinished;
    for e in listed {
        if files >= enough {
            break;
        }
        let delivered = engine
            .ledger(|l| l.has_delivered_named(&job.name, "pull", &e.name, e.size))
            .unwrap_or(false);
        if !delivered {
            files += 1;
        }
    }
    engine.sessions_for(job, files).saturating_sub(1)
}

/// Connects and lists, retrying a lost connection with backoff like any
/// other attempt. Returns the session (kept for the downloads) and listing.
/// `first_listed` sees the first listing, before the files' times are asked.
async fn list_with_retries(
    engine: &Engine,
    job: &Job,
    first_listed: &mut (dyn FnMut(&[RemoteEntry]) + Send),
) -> Result<Listed, String> {
    // The listing session counts against max_connections like any other.
    let permit = engine.limit(&job.server).acquire_owned().await.ok();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut session = engine
            .connect(job)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", job.server.name))?;
        let count = super::SessionCount::new(engine, &job.server.name);
        match list_stable(session.as_mut(), job, first_listed).await {
            Ok(l) => return Ok((session, permit.map(|p| (p, count)), l)),
            Err(e) => {
                session.close().await;
                // A 425 (no data connection for the listing) passes like a lost one.
                let passing = e.is_session_fatal() || e.refusal_code() == Some(425);
                if !passing || attempt >= job.retry.attempts {
                    return Err(format!(
                        "cannot list {} on {}: {e}",
                        job.remote_dir, job.server.name
                    ));
                }
                warn!(job = %job.name, attempt, error = %e, "listing failed; retrying");
                let failure = Failure::Transport(e);
                tokio::time::sleep(failure.retry_delay(&job.retry, attempt)).await;
            }
        }
    }
}

/// Lists twice, `stable_for` apart: a file whose size or time changed in
/// between is still being written by the partner and is left for later.
async fn list_stable(
    remote: &mut dyn Remote,
    job: &Job,
    first_listed: &mut (dyn FnMut(&[RemoteEntry]) + Send),
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
    first_listed(&first);
    if job.stable_for.is_zero() || first.is_empty() {
        return Ok((precise_times(remote, job, first).await?, Vec::new()));
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
    Ok((precise_times(remote, job, stable).await?, growing))
}

/// LIST times are minutes at best (and switch to a year after 182 days):
/// where the listing is not MLSD, each file's time comes from `MDTM`, so a
/// kept file keeps its identity and a name reused within a minute is new.
async fn precise_times(
    remote: &mut dyn Remote,
    job: &Job,
    mut entries: Vec<RemoteEntry>,
) -> Result<Vec<RemoteEntry>, TransportError> {
    if remote.capabilities().mlsd {
        return Ok(entries);
    }
    for e in &mut entries {
        if let Some(t) = remote.mdtm(&remote_join(&job.remote_dir, &e.name)).await? {
            e.mtime = Some(t);
        }
    }
    Ok(entries)
}

/// The file's identity on the server now (size and time, as the listing
/// that created the record saw them), or `None` when it is not listed.
async fn identity_now(
    remote: &mut dyn Remote,
    job: &Job,
    path: &str,
) -> Result<Option<(u64, Option<String>)>, TransportError> {
    if remote.capabilities().mlsd {
        // MLST: the same facts the MLSD listing gave.
        return Ok(remote.stat(path).await?.map(|e| (e.size, mtime_key(&e))));
    }
    // SIZE and MDTM: two short round trips, not a listing of the whole folder
    // (SIZE asks a listing itself only when the server refuses it).
    let Some(size) = remote.size(path).await? else {
        return Ok(None);
    };
    let Some(mtime) = remote.mdtm(path).await? else {
        // No MDTM: the record holds the listing's time, so the listing decides.
        let Some(e) = remote.stat(path).await? else {
            return Ok(None);
        };
        let e = precise_times(remote, job, vec![e]).await?.remove(0);
        return Ok(Some((e.size, mtime_key(&e))));
    };
    Ok(Some((size, Some(crate::ledger::rfc3339(mtime)))))
}

struct PullAttempt {
    engine: Engine,
    job: Job,
    progress: Option<super::Progress>,
    /// What the acknowledgements read in this run call for (`edi.acks_for`).
    notices: Notices,
    /// Records and places the run's downloaded files, several in one commit.
    finisher: std::sync::mpsc::Sender<Finish>,
}

type Notices = Arc<std::sync::Mutex<Vec<crate::edi::Notice>>>;

/// A downloaded, fsynced and checked `.part` for the finisher: its `sent`
/// and `verified` steps are recorded (and durable) before it is placed,
/// its `renamed` step (and `done` with `after_pull: keep`) after.
struct Finish {
    id: i64,
    name: String,
    size: u64,
    sha: String,
    level: Verified,
    /// What the record says so far.
    recorded: Recorded,
    /// The session waits for the reply (the file's after-pull action follows).
    awaited: bool,
    reply: tokio::sync::oneshot::Sender<Result<Placed, Failure>>,
}

/// How far a checked `.part`'s record got before the finisher.
enum Recorded {
    /// Downloaded in this attempt: the `.part` is to sync, then `sent` and
    /// `verified` are to record (and `sending` first, with when the
    /// download began, if it was not).
    Downloaded {
        sending_began: Option<String>,
        file: std::fs::File,
    },
    /// `sent` before a crash, checked again now: `verified` is to record.
    Sent,
    /// `verified` before a crash: only placing it is left.
    Verified,
}

/// Where a file was placed, and why not under its own name if it was not.
struct Placed {
    path: PathBuf,
    note: Option<String>,
}

impl Finish {
    /// The steps to record, durable, before the file is placed.
    fn first_steps(&self) -> Vec<Step<'_>> {
        let verified = Step {
            state: FileState::Verified,
            verified: Some(self.level),
            ..Step::default()
        };
        match &self.recorded {
            Recorded::Downloaded { sending_began, .. } => {
                let sending = sending_began.as_ref().map(|began| Step {
                    state: FileState::Sending,
                    began: Some(began),
                    ..Step::default()
                });
                let sent = Step {
                    state: FileState::Sent,
                    sha256: Some(&self.sha),
                    ..Step::default()
                };
                sending.into_iter().chain([sent, verified]).collect()
            }
            Recorded::Sent => vec![verified],
            Recorded::Verified => Vec::new(),
        }
    }
}

/// The run's finisher: a thread that takes every download waiting to be
/// recorded when it gets to them, so the sessions' files share commits and
/// their fsyncs (the ledger's cost per file was the bound of small pulls).
/// It ends when the run drops its sender.
fn start_finisher(
    engine: Engine,
    job: Job,
    notices: Notices,
) -> anyhow::Result<std::sync::mpsc::Sender<Finish>> {
    let (tx, rx) = std::sync::mpsc::channel::<Finish>();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("ferry-finisher".into())
        .spawn(move || {
            let _in_run = span.enter();
            // Placed files whose `renamed` is still to record: with the next
            // batch's first steps, in its transaction, or alone as soon as
            // no download is waiting.
            let mut owed: Vec<Owed> = Vec::new();
            loop {
                let first = if owed.is_empty() {
                    match rx.recv() {
                        Ok(f) => f,
                        Err(_) => break,
                    }
                } else {
                    match rx.try_recv() {
                        Ok(f) => f,
                        Err(std::sync::mpsc::TryRecvError::Empty) => {
                            record_owed(&engine, &job, std::mem::take(&mut owed));
                            continue;
                        }
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    }
                };
                let batch = gather(&rx, first, |f| f.awaited, FINISH_BATCH_MOST, FINISH_LINGER);
                owed = finish_batch(&engine, &job, &notices, batch, std::mem::take(&mut owed));
            }
            record_owed(&engine, &job, owed);
        })
        .context("starting the download finisher thread")?;
    Ok(tx)
}

/// The most downloads recorded in one commit.
const FINISH_BATCH_MOST: usize = 64;

/// How long the finisher gathers downloads no session waits for.
const FINISH_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// One batch for the finisher: `first`, and what else comes, up to `most`.
/// When no session waits for `first` (`Done::Later`), files are gathered
/// for `linger`, so one commit carries many (the sessions go on
/// downloading meanwhile); a file a session waits for ends the gathering,
/// and one that starts the batch takes only what is already there.
fn gather<T>(
    rx: &std::sync::mpsc::Receiver<T>,
    first: T,
    awaited: impl Fn(&T) -> bool,
    most: usize,
    linger: std::time::Duration,
) -> Vec<T> {
    let until = (!awaited(&first)).then(|| std::time::Instant::now() + linger);
    let mut batch = vec![first];
    while batch.len() < most {
        let next = match until {
            Some(until) => rx
                .recv_timeout(until.saturating_duration_since(std::time::Instant::now()))
                .ok(),
            None => rx.try_recv().ok(),
        };
        let Some(f) = next else { break };
        let stop = awaited(&f);
        batch.push(f);
        if stop {
            break;
        }
    }
    batch
}

/// A placed file whose `renamed` (and `done` when nothing is left to do on
/// the server) is still to record, and the session waiting for it.
struct Owed {
    id: i64,
    level: Verified,
    placed: Placed,
    reply: tokio::sync::oneshot::Sender<Result<Placed, Failure>>,
}

impl Owed {
    fn steps(&self, job: &Job) -> Vec<Step<'_>> {
        let renamed = Step {
            state: FileState::Renamed,
            verified: Some(self.level),
            local_path: Some(&self.placed.path),
            ..Step::default()
        };
        if after_action(job) == AfterPull::Keep {
            let done = Step {
                state: FileState::Done,
                ..Step::default()
            };
            vec![renamed, done]
        } else {
            vec![renamed]
        }
    }

    /// Tells the session how recording went.
    fn answer(self, recorded: Result<(), Failure>) {
        // A session that stopped waiting (its run was dropped) needs no answer.
        let _ = self.reply.send(recorded.map(|()| self.placed));
    }
}

/// A step the ledger gave no answer for is not taken as recorded.
fn no_result() -> Result<(), Failure> {
    Err(Failure::Permanent(
        "ledger: no result for this file's steps".into(),
    ))
}

fn ledger_failed(e: &anyhow::Error) -> Failure {
    Failure::Permanent(format!("ledger: {e:#}"))
}

/// Each file's steps in one transaction (each alone if one is refused);
/// one result per file.
fn record_each(engine: &Engine, steps: &[(i64, Vec<Step<'_>>)]) -> Vec<Result<(), Failure>> {
    match engine.ledger(|l| l.steps_each(steps)) {
        Ok(each) => each
            .into_iter()
            .map(|r| r.map_err(|e| ledger_failed(&e)))
            .collect(),
        Err(e) => steps.iter().map(|_| Err(ledger_failed(&e))).collect(),
    }
}

/// Records the owed `renamed` steps now (no download is waiting to share
/// their commit) and answers their sessions.
fn record_owed(engine: &Engine, job: &Job, owed: Vec<Owed>) {
    if owed.is_empty() {
        return;
    }
    let steps: Vec<(i64, Vec<Step<'_>>)> = owed.iter().map(|o| (o.id, o.steps(job))).collect();
    let recorded = record_each(engine, &steps);
    drop(steps);
    for (o, r) in owed.into_iter().zip(recorded) {
        o.answer(r);
    }
}

/// Syncs, records and places one batch of downloads; the `owed` steps of
/// the batch before are recorded in the same transaction as this batch's
/// first ones. Returns what this batch owes.
fn finish_batch(
    engine: &Engine,
    job: &Job,
    notices: &Notices,
    mut batch: Vec<Finish>,
    owed: Vec<Owed>,
) -> Vec<Owed> {
    tracing::debug!(job = %job.name, files = batch.len(), owed = owed.len(), "recording downloads together");
    // 1. Every new download on disk (its writeback began when it ended).
    let synced: Vec<Result<(), Failure>> = batch
        .iter_mut()
        .map(|f| match &mut f.recorded {
            Recorded::Downloaded { file, .. } => file.sync_all().map_err(|e| {
                let part = part_path(job, &f.name);
                let _ = std::fs::remove_file(&part);
                Failure::Retry(format!("writing {}: {e}", part.display()))
            }),
            _ => Ok(()),
        })
        .collect();
    // 2. The batch before's `renamed`, and every synced file's `sent` and
    // `verified`, durable before any of these is placed (one that could not
    // be synced: only the `sending` it began).
    let mut steps: Vec<(i64, Vec<Step<'_>>)> = owed.iter().map(|o| (o.id, o.steps(job))).collect();
    steps.extend(batch.iter().zip(&synced).map(|(f, s)| {
        let mut steps = f.first_steps();
        if s.is_err() {
            steps.retain(|st| st.state == FileState::Sending);
        }
        (f.id, steps)
    }));
    let mut results = record_each(engine, &steps).into_iter();
    drop(steps);
    for o in owed {
        o.answer(results.next().unwrap_or_else(no_result));
    }
    let recorded: Vec<Result<(), Failure>> = synced
        .into_iter()
        .map(|s| s.and(results.next().unwrap_or_else(no_result)))
        .collect();
    // 3. Placed, each; then the folder synced once for them all.
    let mut placed: Vec<Result<Placed, Failure>> = batch
        .iter()
        .zip(recorded)
        .map(|(f, r)| {
            r.and_then(|()| place_verified(engine, job, notices, f.id, &f.name, f.size, &f.sha))
        })
        .collect();
    if placed.iter().any(|p| p.is_ok())
        && let Err(e) = local::try_sync_dir(&job.local_dir)
    {
        // Not known to be durable: not recorded as placed. The next attempt
        // finds each file by its SHA-256 (or its .part) and records it then.
        for p in placed.iter_mut().filter(|p| p.is_ok()) {
            *p = Err(Failure::Retry(format!(
                "cannot sync {}: {e}",
                job.local_dir.display()
            )));
        }
    }
    // 4. Every placed file's `renamed` is owed (recorded with the next
    // batch's first steps); a file that failed is answered now.
    let mut next = Vec::new();
    for (f, p) in batch.into_iter().zip(placed) {
        match p {
            Ok(placed) => next.push(Owed {
                id: f.id,
                level: f.level,
                placed,
                reply: f.reply,
            }),
            Err(e) => {
                let _ = f.reply.send(Err(e));
            }
        }
    }
    next
}

#[async_trait::async_trait]
impl Attempt<PullItem> for PullAttempt {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &PullItem,
        attempt: u32,
    ) -> Result<Done, Failure> {
        let (engine, job) = (&self.engine, &self.job);
        let row = engine.ledger(|l| l.file(item.id))?;
        let part = part_path(job, &item.name);
        let mut note = None;
        let mut state = row.state;
        let mut level = row.verified;
        // Verified but not recorded as placed: a crash came between placing
        // and recording it (or between the link and the removal of the
        // .part). The placed file is found by its SHA-256, never fetched again.
        if state == FileState::Verified
            && !part.exists()
            && let Some(sha) = &row.sha256
        {
            match same_content(&job.local_dir, &item.name, row.size, sha) {
                Some(placed) => {
                    engine.ledger(|l| {
                        l.set_local_path(item.id, &placed)?;
                        l.set_file_state(item.id, FileState::Renamed, Some(level), None)
                    })?;
                    state = FileState::Renamed;
                    note = Some("placed before ferry stopped; not downloaded again".into());
                }
                None => state = FileState::Seen,
            }
        }
        if state == FileState::Sent
            && std::fs::metadata(&part).map(|m| m.len()).ok() != Some(item.size)
        {
            state = FileState::Seen;
        }
        let outcome =
            |status: FileStatus, note: Option<String>, level: Verified| -> Result<Done, Failure> {
                file_outcome(engine, item, status, note, level).map(Done::Now)
            };
        // The downloaded file's SHA-256 (on record once it is `sent`).
        let mut sha = row.sha256.clone().unwrap_or_default();
        let mut recorded = Recorded::Verified;
        if matches!(
            state,
            FileState::Seen | FileState::Sending | FileState::Failed
        ) {
            // A small file's first attempt records `sending` with the
            // steps after it (one commit fewer): there is no partial
            // download worth resuming, and a failed attempt records it then.
            let defer_sending =
                state == FileState::Seen && row.attempts == 0 && item.size < RESUME_WORTH_RECORDING;
            let began = crate::ledger::now();
            let sending = Step {
                state: FileState::Sending,
                began: Some(&began),
                ..Step::default()
            };
            if !defer_sending {
                engine.ledger(|l| l.step(item.id, &sending))?;
            }
            let got = download(remote, item, &row, &part, job, self.progress.clone()).await;
            let (resumed, got, file) = match got {
                Ok(v) => v,
                Err(e) => {
                    if defer_sending {
                        engine.ledger(|l| l.step(item.id, &sending))?;
                    }
                    return Err(e);
                }
            };
            if let Some(offset) = resumed {
                note = Some(format!("resumed at byte {offset}"));
            }
            sha = got;
            // `sent` and `verified` commit together once the check is done
            // (a crash before then downloads again: the .part is not trusted).
            let checked = verify_download(remote, &item.remote_path, &sha, item.size, job).await;
            let sent = Step {
                state: FileState::Sent,
                sha256: Some(&sha),
                ..Step::default()
            };
            let first: &[Step] = if defer_sending { &[sending] } else { &[] };
            level = match checked {
                Ok(level) => level,
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    let steps: Vec<Step> = first.iter().copied().chain([sent]).collect();
                    engine.ledger(|l| l.steps(item.id, &steps))?;
                    return Err(e);
                }
            };
            recorded = Recorded::Downloaded {
                sending_began: defer_sending.then_some(began),
                file,
            };
            state = FileState::Verified;
        }
        if state == FileState::Sent {
            level = verify_download(remote, &item.remote_path, &sha, item.size, job)
                .await
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&part);
                })?;
            recorded = Recorded::Sent;
            state = FileState::Verified;
        }
        if state == FileState::Verified {
            // The finisher records what is left of `sent` and `verified`
            // (with other sessions' files, in one commit), places the file
            // and records `renamed`, and `done` when nothing is left to do
            // on the server.
            let (reply, placed) = tokio::sync::oneshot::channel();
            let finish = Finish {
                id: item.id,
                name: item.name.clone(),
                size: item.size,
                sha: sha.clone(),
                level,
                recorded,
                awaited: after_action(job) != AfterPull::Keep,
                reply,
            };
            self.finisher.send(finish).map_err(|_| finisher_stopped())?;
            if after_action(job) == AfterPull::Keep {
                // Nothing is left to do on the server: the session takes the
                // next file while this one is recorded and placed.
                let (engine, job_name, item) = (engine.clone(), job.name.clone(), item.clone());
                return Ok(Done::Later(Box::pin(async move {
                    let p = placed.await.map_err(|_| finisher_stopped())??;
                    info!(job = %job_name, file = %item.name, file_id = item.id, bytes = item.size, verified = level.as_str(), "pulled");
                    file_outcome(
                        &engine,
                        &item,
                        FileStatus::Delivered,
                        p.note.or(note),
                        level,
                    )
                })));
            }
            let p = placed.await.map_err(|_| finisher_stopped())??;
            if p.note.is_some() {
                note = p.note;
            }
        }
        // The file is safe locally; now the remote side, then the end of the journey.
        match after_pull(remote, job, item).await {
            Ok(done_note) => {
                engine.ledger(|l| {
                    if done_note.is_none() {
                        match &after_action(job) {
                            AfterPull::Keep => {}
                            AfterPull::Delete => {
                                l.audit_file(item.id, "remote_deleted", Default::default())?
                            }
                            AfterPull::Move(dir) => {
                                let mut to = serde_json::Map::new();
                                to.insert("moved_to".into(), remote_join(dir, &item.name).into());
                                l.audit_file(item.id, "remote_moved", to)?
                            }
                        }
                    }
                    l.set_file_state(item.id, FileState::Done, None, None)
                })?;
                info!(job = %job.name, file = %item.name, file_id = item.id, bytes = item.size, verified = level.as_str(), "pulled");
                outcome(FileStatus::Delivered, done_note.or(note), level)
            }
            Err(e) if e.is_session_fatal() && attempt < job.retry.attempts => {
                // The connection was lost: a new session retries the
                // after-action in this run (the record says `renamed`, so
                // nothing is downloaded again).
                return Err(Failure::Transport(e));
            }
            Err(e) => {
                // Downloaded and placed: only the after-action is left. It is
                // retried by later runs and reported failed once its attempts
                // run out; the record stays pending (never re-downloaded).
                let msg = format!("downloaded, but the after-pull action failed: {e}");
                let tries = engine.ledger(|l| {
                    l.event(
                        &job.name,
                        None,
                        Some(item.id),
                        "after_pull_failed",
                        Some(&msg),
                    )?;
                    l.count_events(item.id, "after_pull_failed")
                })?;
                warn!(job = %job.name, file = %item.name, tries, "after_pull failed: {e}");
                if tries >= u64::from(job.retry.attempts) {
                    outcome(FileStatus::Failed { error: msg }, None, level)
                } else {
                    outcome(FileStatus::NotReady, Some(msg), level)
                }
            }
        }
    }
}

fn finisher_stopped() -> Failure {
    Failure::Permanent("the download finisher stopped".into())
}

/// A pulled file's outcome, its facts read from its ledger row.
fn file_outcome(
    engine: &Engine,
    item: &PullItem,
    status: FileStatus,
    note: Option<String>,
    level: Verified,
) -> Result<FileOutcome, Failure> {
    let row = engine.ledger(|l| l.file(item.id))?;
    Ok(FileOutcome {
        name: item.name.clone(),
        remote_path: item.remote_path.clone(),
        bytes: row.size,
        sha256: row.sha256,
        verified: level,
        attempts: row.attempts,
        status,
        note,
    })
}

/// Places a verified `.part` under its name (or a suffixed one), once its
/// acknowledgement, if it is one, has been read; or, when the same bytes
/// already sit there, removes it and says where they are. The folder is
/// not synced here: the finisher syncs it once for its batch, before any
/// of them is recorded as placed.
fn place_verified(
    engine: &Engine,
    job: &Job,
    notices: &Notices,
    id: i64,
    name: &str,
    size: u64,
    sha: &str,
) -> Result<Placed, Failure> {
    let part = part_path(job, name);
    // Acknowledgements are read from the verified .part, before the
    // file is placed where a downstream system may take it at once.
    if let Some(edi) = &job.edi
        && !edi.acks_for.is_empty()
        && part.exists()
    {
        let read = engine
            .ledger(|l| crate::edi::track::read_ack(l, &job.name, &edi.acks_for, id, name, &part));
        match read {
            Ok(n) => {
                if let Ok(mut all) = notices.lock() {
                    all.extend(n);
                }
            }
            Err(e) => {
                warn!(job = %job.name, file = %name, "cannot read the acknowledgement: {e:#}")
            }
        }
    }
    // The same bytes already sit under this name (or a suffixed one):
    // recorded as a duplicate, never placed as `name.1.ext`.
    if let Some(existing) = same_content(&job.local_dir, name, size, sha) {
        let _ = std::fs::remove_file(&part);
        let note = format!(
            "the same content is already in {}; not placed again",
            existing.display()
        );
        return Ok(Placed {
            path: existing,
            note: Some(note),
        });
    }
    let placed = local::place_in_dir_unsynced(&part, &job.local_dir, name).map_err(|e| {
        Failure::Retry(format!(
            "cannot place {name} in {}: {e}",
            job.local_dir.display()
        ))
    })?;
    let placed_name = placed
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut note = None;
    if placed_name != name {
        warn!(job = %job.name, file = %name, saved_as = %placed_name, "a local file of that name already exists; saved under another name");
        note = Some(format!(
            "saved as {placed_name}: a file named {name} was already there"
        ));
    }
    Ok(Placed { path: placed, note })
}

/// A file in `dir` named `name` (or `name` with a suffix, as placing gives
/// it) with exactly these bytes.
fn same_content(dir: &Path, name: &str, size: u64, sha: &str) -> Option<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = dir.join(if n == 0 {
            name.to_string()
        } else {
            local::suffixed(name, n)
        });
        let Ok(meta) = std::fs::metadata(&candidate) else {
            if n > 0 {
                return None;
            }
            continue;
        };
        if meta.len() == size && local::sha256_of(&candidate).ok().as_deref() == Some(sha) {
            return Some(candidate);
        }
    }
    None
}

fn after_action(job: &Job) -> AfterPull {
    match &job.flow {
        Flow::Pull { after } => after.clone(),
        Flow::Push { .. } => AfterPull::Keep,
    }
}

/// Deletes or moves the remote file, as `after_pull` says, once the listing
/// shows it is still the file that was downloaded. `Ok(Some(note))` when
/// nothing was done and why.
async fn after_pull(
    remote: &mut dyn Remote,
    job: &Job,
    item: &PullItem,
) -> Result<Option<String>, TransportError> {
    let after = after_action(job);
    if after == AfterPull::Keep {
        return Ok(None);
    }
    match identity_now(remote, job, &item.remote_path).await? {
        None => return Ok(Some("already gone from the server".into())),
        Some(now) if now != (item.size, item.mtime.clone()) => {
            warn!(job = %job.name, file = %item.name, "the remote file changed since it was downloaded; left on the server (the next run takes it as a new file)");
            return Ok(Some(
                "the remote file changed since it was downloaded; left there as a new file".into(),
            ));
        }
        Some(_) => {}
    }
    match &after {
        AfterPull::Keep => Ok(None),
        AfterPull::Delete => remote.delete(&item.remote_path).await.map(|()| None),
        AfterPull::Move(dir) => {
            let _ = remote.mkdir(dir).await; // usually exists already
            remote
                .rename(&item.remote_path, &remote_join(dir, &item.name))
                .await
                .map(|()| None)
        }
    }
}

/// Streams the remote file into its `.part` (resuming a partial one when
/// the server supports REST); returns where it resumed, the file's
/// SHA-256, and the open `.part`, not yet synced: the finisher syncs it
/// before recording the download.
async fn download(
    remote: &mut dyn Remote,
    item: &PullItem,
    row: &crate::ledger::FileRow,
    part: &Path,
    job: &Job,
    progress: Option<super::Progress>,
) -> Result<(Option<u64>, String, std::fs::File), Failure> {
    let existing = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let resumable =
        row.attempts > 0 && existing > 0 && existing < item.size && remote.capabilities().resume;
    // A partial download resumes only into the same remote file: a
    // replacement of the same size under the same name starts over.
    let offset = if resumable
        && identity_now(remote, job, &item.remote_path).await?
            == Some((item.size, item.mtime.clone()))
    {
        existing
    } else {
        0
    };
    let local_err = |e: std::io::Error| Failure::Retry(format!("writing {}: {e}", part.display()));
    let file = if offset > 0 {
        std::fs::OpenOptions::new().append(true).open(part)
    } else {
        std::fs::File::create(part)
    }
    .map_err(local_err)?;
    let sink = local::Sink::new(file, part, offset, item.size >= local::HASH_THREAD_FROM)
        .map_err(local_err)?;
    let mut writer = Hashing::counting(sink).with_progress(progress, &item.name, item.size);
    writer.count(offset);
    let got = remote
        .download(&item.remote_path, offset, &mut writer)
        .await;
    let (sink, _, total) = writer.finish();
    // Always waited for: nothing may still be writing the .part once this returns.
    let finished = sink.finish().await;
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
            return Err(Failure::Retry(match finished {
                Err(e) => format!("writing {}: {e}", part.display()),
                Ok(_) => msg,
            }));
        }
        Err(e) => return Err(Failure::Transport(e)), // the partial .part is resumed next attempt
    }
    let (file, sha) = finished.map_err(|e| {
        let _ = std::fs::remove_file(part);
        Failure::Retry(format!("writing {}: {e}", part.display()))
    })?;
    if total != item.size {
        let _ = std::fs::remove_file(part);
        return Err(Failure::Retry(format!(
            "received {total} bytes of {}, the listing said {} (did it change on the server?)",
            item.remote_path, item.size
        )));
    }
    // The disk write starts now; the finisher's fsync, before anything is
    // recorded of the download, waits for it (the session goes on with
    // the next file meanwhile).
    local::start_writeback(&file);
    Ok(((offset > 0).then_some(offset), sha, file))
}

/// Size was checked while streaming; the server's SHA-256 when it offers one.
async fn verify_download(
    remote: &mut dyn Remote,
    path: &str,
    sha: &str,
    size: u64,
    job: &Job,
) -> Result<Verified, Failure> {
    match job.verify {
        Verify::None => Ok(Verified::None),
        Verify::Size => Ok(Verified::Size),
        Verify::Hash | Verify::Auto => match super::push::server_hash(remote, path, size).await? {
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

#[cfg(test)]
mod tests {
    use super::gather;
    use std::time::Duration;

    /// (name, a session waits for it)
    type F = (&'static str, bool);

    fn names(b: &[F]) -> Vec<&'static str> {
        b.iter().map(|f| f.0).collect()
    }

    /// Files no session waits for are gathered for the linger: the ones
    /// that arrive meanwhile share the batch (and its commit).
    #[test]
    fn the_finisher_gathers_files_nobody_waits_for_until_the_linger_ends() {
        let (tx, rx) = std::sync::mpsc::channel::<F>();
        tx.send(("b", false)).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(("c", false)).unwrap();
            tx
        });
        let started = std::time::Instant::now();
        let batch = gather(&rx, ("a", false), |f| f.1, 64, Duration::from_secs(1));
        // Not returned when `b` was taken: `c`, 50 ms later, joined too,
        // and the gathering ended with the linger.
        assert_eq!(names(&batch), ["a", "b", "c"]);
        assert!(started.elapsed() >= Duration::from_secs(1));
        drop(late.join().unwrap());
    }

    /// A file a session waits for is not held back: it ends the gathering,
    /// and when it starts the batch only what is already there joins it.
    #[test]
    fn a_file_a_session_waits_for_ends_the_gathering_at_once() {
        let (tx, rx) = std::sync::mpsc::channel::<F>();
        for f in [("b", false), ("c", true), ("d", false)] {
            tx.send(f).unwrap();
        }
        let batch = gather(&rx, ("a", false), |f| f.1, 64, Duration::from_secs(30));
        assert_eq!(names(&batch), ["a", "b", "c"]);
        let started = std::time::Instant::now();
        let batch = gather(&rx, ("e", true), |f| f.1, 64, Duration::from_secs(30));
        assert_eq!(names(&batch), ["e", "d"]);
        assert!(started.elapsed() < Duration::from_secs(5), "no linger");
        drop(tx);
    }

    /// A batch never grows past `most`, however many files wait.
    #[test]
    fn a_batch_holds_at_most_most_files() {
        let (tx, rx) = std::sync::mpsc::channel::<F>();
        for _ in 0..10 {
            tx.send(("x", false)).unwrap();
        }
        let batch = gather(&rx, ("a", false), |f| f.1, 4, Duration::from_secs(30));
        assert_eq!(batch.len(), 4);
    }
}
