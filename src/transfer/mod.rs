//! The transfer engine: the per-file state machine that turns files in a
//! folder into files delivered, verified and recorded.
//!
//! Every step is written to the ledger before the next action, and every run
//! starts by reconciling what an earlier run left unfinished with what the
//! server actually has, so a crash never loses, halves or doubles a file.

mod acks;
pub mod local;
pub mod operator;
mod pull;
mod push;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Direction, Job, RetryPolicy, Server};
use crate::ledger::{FileState, Ledger, Verified};
use crate::transport::{self, ErrorKind, Quirks, Remote, TransportError};

/// Below this many files per session, a run uses a single session.
pub(super) const FILES_PER_SESSION: usize = 10;

/// The most files one session has finishing off it at a time
/// (`Done::Later`) before it waits for the oldest.
const LATER_MOST: usize = 16;

/// Opens a logged-in session with a server.
pub type ConnectFn = Arc<
    dyn Fn(Arc<Server>) -> Pin<Box<dyn Future<Output = transport::Result<Box<dyn Remote>>> + Send>>
        + Send
        + Sync,
>;

/// What the engine needs besides the job: where state lives and the ledger.
/// Cloning is cheap (shared state behind `Arc`s): each session of a run is
/// its own task, so a run's sessions use every core.
#[derive(Clone)]
pub struct Engine {
    pub state_dir: PathBuf,
    pub ledger: Arc<Mutex<Ledger>>,
    /// `max_connections` per server, shared by every job of this process.
    limits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// How sessions are opened: the FTPS transport, or a test's wrapper around it.
    connector: ConnectFn,
    /// Sessions open (or opening) per server right now, across jobs: a
    /// refused login while another is open is the server's session limit.
    open_sessions: Arc<Mutex<HashMap<String, usize>>>,
    /// The newest certificate expiry seen per server, for the run report.
    cert_expiry: Arc<Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>>,
    /// The certificate fingerprint last recorded per server in the audit
    /// trail, so only a first sighting or a change is written.
    cert_seen: Arc<Mutex<HashMap<String, String>>>,
    /// Logins each server refused (not counting session-limit refusals), for metrics.
    login_failures: Arc<Mutex<HashMap<String, u64>>>,
}

/// Why a run was started, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Once,
    Schedule,
    Watch,
    CatchUp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Once => "once",
            Trigger::Schedule => "schedule",
            Trigger::Watch => "watch",
            Trigger::CatchUp => "catch_up",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Send files even when the same content was delivered before.
    pub force: bool,
    /// Once cancelled, no new file is started; files in flight finish.
    pub stop: Option<tokio_util::sync::CancellationToken>,
    /// Told how far each file has streamed (for progress bars).
    pub progress: Option<Progress>,
}

/// `(file name, bytes so far, total bytes)`, called as a file streams.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

#[derive(Clone)]
pub struct Progress(pub Arc<ProgressFn>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// How one file ended in this run.
#[derive(Debug, Clone, PartialEq)]
pub enum FileStatus {
    Delivered,
    /// Same name and content delivered earlier; not sent again.
    AlreadyDelivered {
        at: Option<String>,
    },
    /// Still being written (push) or still growing (pull): left for the next run.
    NotReady,
    Failed {
        error: String,
    },
    /// An older record of a file that changed before its delivery finished:
    /// its partial upload was removed; the new file is its own delivery.
    Superseded,
    /// ferry cannot know whether the partner got it: it waits for
    /// `ferry confirm` or `ferry resend`.
    Held {
        reason: String,
    },
    /// Blocked by the X12 envelope gate (`edi.validate`): moved to
    /// `state_dir/rejected/<job>/` with a reason file, never sent.
    Rejected {
        reason: String,
        moved_to: String,
    },
    /// Repeats an interchange or group control number already sent to this
    /// partner within `edi.duplicate_window`: left in the outbound folder
    /// until `ferry resend JOB FILE`.
    Duplicate {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileOutcome {
    pub name: String,
    pub remote_path: String,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub verified: Verified,
    pub attempts: u32,
    pub status: FileStatus,
    /// Anything the operator should know (`saved as remit.1.835`, `resumed at byte N`).
    pub note: Option<String>,
}

impl FileOutcome {
    /// A file left for the next run because it is still being written.
    pub(crate) fn not_ready(job: &Job, name: String, why: &str) -> FileOutcome {
        FileOutcome {
            remote_path: remote_join(&job.remote_dir, &name),
            name,
            bytes: 0,
            sha256: None,
            verified: Verified::None,
            attempts: 0,
            status: FileStatus::NotReady,
            note: Some(why.to_string()),
        }
    }
}

/// Everything one run of one job did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: String,
    pub direction: Direction,
    pub files: Vec<FileOutcome>,
    /// Set when the job could not run: the server could not be reached, the
    /// login or the listing failed, or the run itself failed (the ledger).
    pub connection_error: Option<String>,
    pub duration: Duration,
    /// When the server's certificate expires, as this run saw it.
    pub certificate_expiry: Option<chrono::DateTime<chrono::Utc>>,
    /// Listing lines ferry could not read (each logged as a warning).
    pub listing_unparsed: u64,
    /// Acknowledgements read, overdue, orphaned; expected files missing.
    pub edi: Vec<crate::edi::Notice>,
    /// The run's row in the ledger (`run_id` in the logs); `None` if it could not be recorded.
    pub run_id: Option<i64>,
}

impl RunReport {
    pub(crate) fn new(
        job: &Job,
        files: Vec<FileOutcome>,
        connection_error: Option<String>,
    ) -> RunReport {
        RunReport {
            job: job.name.clone(),
            direction: job.direction,
            files,
            connection_error,
            duration: Duration::ZERO,
            certificate_expiry: None,
            listing_unparsed: 0,
            edi: Vec::new(),
            run_id: None,
        }
    }

    pub fn held(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Held { .. }))
            .count()
    }

    /// Files the envelope gate blocked (invalid or duplicate).
    pub fn blocked(&self) -> usize {
        self.files
            .iter()
            .filter(|f| {
                matches!(
                    f.status,
                    FileStatus::Rejected { .. } | FileStatus::Duplicate { .. }
                )
            })
            .count()
    }

    pub fn failed(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Failed { .. }))
            .count()
    }
    pub fn delivered(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.status == FileStatus::Delivered)
            .count()
    }
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.status == FileStatus::Delivered)
            .map(|f| f.bytes)
            .sum()
    }
}

/// A failed attempt at one file, and whether trying again could help.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The transport failed; retried unless the session cannot be reopened.
    Transport(TransportError),
    /// Worth another attempt (local file changed while sending, short download).
    Retry(String),
    /// The server holds other bytes than we sent or it reported. Retried on a
    /// fresh session: ProFTPD's mod_digest caches digests per session, so the
    /// same session would report the stale digest again.
    Mismatch(String),
    /// No attempt can succeed (verify: hash on a server without hash, remote file gone).
    Permanent(String),
    /// ferry cannot know whether the partner has the file: hold it for an operator.
    Hold(String),
}

/// The backoff after the server could not open a data connection: the
/// first wait and the longest.
const DATA_REFUSED_FIRST: Duration = Duration::from_millis(100);
const DATA_REFUSED_MOST: Duration = Duration::from_secs(1);

impl Failure {
    /// How long to wait before the next attempt: the job's backoff, except
    /// after a `425`: the server could not open the data connection (the
    /// passive port it picked was taken, as ProFTPD reports under many
    /// transfers), nothing moved, and the next try usually gets a port, so
    /// that backoff starts at [`DATA_REFUSED_FIRST`] and stops growing at
    /// [`DATA_REFUSED_MOST`] (exponential, full jitter, attempts counted).
    pub(super) fn retry_delay(&self, policy: &RetryPolicy, failed_attempts: u32) -> Duration {
        match self {
            Failure::Transport(e) if e.refusal_code() == Some(425) => {
                let short = RetryPolicy {
                    initial_delay: policy.initial_delay.min(DATA_REFUSED_FIRST),
                    max_delay: policy.max_delay.min(DATA_REFUSED_MOST),
                    ..*policy
                };
                backoff(&short, failed_attempts)
            }
            _ => backoff(policy, failed_attempts),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Retry(s) | Failure::Mismatch(s) | Failure::Permanent(s) | Failure::Hold(s) => {
                f.write_str(s)
            }
        }
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Failure::Transport(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Permanent(format!("ledger: {e:#}"))
    }
}

impl Failure {
    fn session_broken(&self) -> bool {
        matches!(self, Failure::Mismatch(_))
            || matches!(self, Failure::Transport(e) if e.is_session_fatal())
    }
    fn permanent(&self) -> bool {
        matches!(self, Failure::Permanent(_))
    }
}

/// Exponential backoff with full jitter: a random delay in
/// `[0, min(max_delay, initial_delay * 2^(attempt-1))]`.
pub fn backoff(policy: &RetryPolicy, failed_attempts: u32) -> Duration {
    let exp = failed_attempts.saturating_sub(1).min(30);
    let cap = policy
        .initial_delay
        .saturating_mul(1u32 << exp)
        .min(policy.max_delay);
    cap.mul_f64(fastrand::f64())
}

/// Errors that more attempts cannot fix: retrying a refused login risks
/// locking the account, and a certificate problem needs an operator.
fn connect_retryable(e: &TransportError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::LoginRefused
            | ErrorKind::UntrustedCertificate
            | ErrorKind::WrongHostName
            | ErrorKind::Expired
            | ErrorKind::NotYetValid
            | ErrorKind::PinMismatch
            | ErrorKind::TlsVersion
            | ErrorKind::Local
    )
}

impl Engine {
    pub fn new(state_dir: PathBuf, ledger: Ledger) -> Engine {
        Engine {
            state_dir,
            ledger: Arc::new(Mutex::new(ledger)),
            limits: Arc::new(Mutex::new(HashMap::new())),
            connector: Arc::new(|server| Box::pin(transport::connect(server))),
            open_sessions: Arc::new(Mutex::new(HashMap::new())),
            cert_expiry: Arc::new(Mutex::new(HashMap::new())),
            cert_seen: Arc::new(Mutex::new(HashMap::new())),
            login_failures: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Replaces how sessions are opened (fault-injection tests wrap the real one).
    pub fn with_connector(mut self, connector: ConnectFn) -> Engine {
        self.connector = connector;
        self
    }

    /// Runs the ledger call `f` (short, synchronous).
    pub(crate) fn ledger<T>(
        &self,
        f: impl FnOnce(&Ledger) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let guard = self
            .ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("the ledger lock was poisoned by a panic"))?;
        // A durable step's fsync happens after the lock is released, so the
        // other sessions record their steps meanwhile (and share the fsync).
        guard.defer_syncs(true);
        let result = f(&guard);
        guard.defer_syncs(false);
        let owed = guard.take_owed_sync();
        drop(guard);
        if let Some((wal, ticket)) = owed {
            // Nothing `f` recorded is acted on before this returns.
            wal.wait(ticket)?;
        }
        result
    }

    pub(crate) fn limit(&self, server: &Server) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().expect("limits lock");
        limits
            .entry(server.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(server.max_connections as usize)))
            .clone()
    }

    /// What the ledger remembers of a server's refusals.
    pub(crate) fn quirks(&self, server: &str) -> Quirks {
        Quirks::from_rows(&self.ledger(|l| l.quirks(server)).unwrap_or_default())
    }

    /// Records in the ledger what a session learned beyond `known`.
    pub(crate) fn remember_quirks(&self, server: &str, known: &Quirks, now: &Quirks) {
        let mut learned: Vec<(&str, u64, String)> = Vec::new();
        if now.rest_refused && !known.rest_refused {
            learned.push(("rest_refused", 1, "REST before STOR was refused".into()));
        }
        if now.size_refused && !known.size_refused {
            learned.push(("size_refused", 1, "SIZE was refused".into()));
        }
        if let Some(n) = now.hash_refused_from
            && known.hash_refused_from.is_none_or(|k| n < k)
        {
            learned.push((
                "hash_refused_from",
                n,
                format!("HASH refused for {n} bytes"),
            ));
        }
        if let Some(n) = now.max_sessions
            && known.max_sessions.is_none_or(|k| n < k)
        {
            learned.push((
                "max_sessions",
                n as u64,
                format!("a session beyond {n} was refused"),
            ));
        }
        for (quirk, value, detail) in learned {
            info!(server, quirk, value, "remembering a quirk of this server");
            if let Err(e) = self.ledger(|l| l.remember_quirk(server, quirk, value, &detail)) {
                warn!(server, "cannot record a server quirk: {e:#}");
            }
        }
    }

    /// Runs one job once: reconcile, select, transfer, verify, after-action.
    /// A run that cannot even start or that fails as a whole still returns a
    /// report, with the reason in `connection_error`, so it is alerted like
    /// an unreachable server.
    pub async fn run_job(&self, job: &Job, trigger: Trigger, opts: RunOptions) -> RunReport {
        let started = Instant::now();
        let run_id = match self.ledger(|l| {
            l.abort_stale_runs(&job.name)?;
            l.start_run(&job.name, trigger.as_str())
        }) {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("cannot record the run in the ledger: {e:#}");
                warn!(job = %job.name, "{msg}");
                return RunReport::new(job, Vec::new(), Some(msg));
            }
        };
        // Every event of the run carries these fields (the JSON log flattens them).
        let span = info_span!("run", job = %job.name, server = %job.server.name, run_id);
        self.run_recorded(job, trigger, run_id, started, opts)
            .instrument(span)
            .await
    }

    async fn run_recorded(
        &self,
        job: &Job,
        trigger: Trigger,
        run_id: i64,
        started: Instant,
        opts: RunOptions,
    ) -> RunReport {
        info!(job = %job.name, trigger = trigger.as_str(), "run started");
        let started_at = chrono::Utc::now();
        let result = match job.direction {
            Direction::Push => push::run(self, job, run_id, opts).await,
            Direction::Pull => pull::run(self, job, run_id, opts).await,
        };
        let mut report = result.unwrap_or_else(|e| {
            let msg = format!("the run failed: {e:#}");
            warn!(job = %job.name, "{msg}");
            RunReport::new(job, Vec::new(), Some(msg))
        });
        if job.edi.is_some() || job.expect.is_some() {
            let more = acks::after_run(self, job, started_at);
            report.edi.extend(more);
        }
        report.duration = started.elapsed();
        report.run_id = Some(run_id);
        report.certificate_expiry = self
            .cert_expiry
            .lock()
            .ok()
            .and_then(|m| m.get(&job.server.name).copied());
        let failed = report.failed() as u64;
        let status = if failed > 0 || report.connection_error.is_some() {
            "failed"
        } else {
            "ok"
        };
        let error = report
            .connection_error
            .clone()
            .or_else(|| (failed > 0).then(|| format!("{failed} file(s) failed")));
        if let Err(e) = self.ledger(|l| {
            l.finish_run(
                run_id,
                status,
                report.delivered() as u64,
                failed,
                report.bytes(),
                error.as_deref(),
            )
        }) {
            warn!(job = %job.name, "cannot record the end of the run: {e:#}");
        }
        info!(
            job = %job.name,
            files = report.files.len(),
            delivered = report.delivered(),
            failed,
            held = report.held(),
            bytes = report.bytes(),
            duration_ms = report.duration.as_millis() as u64,
            "run finished"
        );
        report
    }

    /// Acknowledgement deadlines and `expect` windows of `job` that passed
    /// by `now` and were not reported yet, as a report with no files (for
    /// the agent, which checks them between runs too).
    pub fn check_deadlines(&self, job: &Job, now: chrono::DateTime<chrono::Utc>) -> RunReport {
        let mut report = RunReport::new(job, Vec::new(), None);
        if job.edi.is_some() || job.expect.is_some() {
            report.edi = acks::deadlines(self, job, now);
        }
        report
    }

    /// Moves `items` through up to `max_connections` sessions (fewer when
    /// the server was found to refuse more), retrying each file with
    /// backoff. `work` does one attempt at one item.
    pub(crate) async fn drive<I: WorkItem>(
        &self,
        job: &Job,
        items: Vec<I>,
        work: Arc<dyn Attempt<I>>,
        stop: Option<&tokio_util::sync::CancellationToken>,
        spare: Option<Spare>,
        warm: Vec<Warm>,
    ) -> (Vec<FileOutcome>, Option<String>) {
        if items.is_empty() {
            if let Some(Spare(mut s, _, _)) = spare {
                s.close().await;
            }
            for w in warm {
                w.close().await;
            }
            return (Vec::new(), None);
        }
        let known = self.quirks(&job.server.name);
        let sessions = self.sessions_for(job, items.len());
        let limit = self.limit(&job.server);
        let (first_tx, first_rx) = tokio::sync::watch::channel(false);
        let batch = Arc::new(Batch {
            job: job.clone(),
            queue: Mutex::new(items.into_iter().collect::<VecDeque<I>>()),
            outcomes: Mutex::new(Vec::new()),
            connection_error: Mutex::new(None),
            work,
            stop: stop.cloned(),
            known,
            first_tx,
            first_rx,
            spare: Mutex::new(spare),
            warm: Mutex::new(warm),
        });
        // Each session is its own task, so TLS, hashing and ledger steps of
        // different files run on different cores. Dropping the run (the
        // set) stops them all, as dropping one future did.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..sessions {
            let w = self.clone().worker(batch.clone(), limit.clone(), i == 0);
            set.spawn(w.instrument(tracing::Span::current()));
        }
        while let Some(done) = set.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        // Logged in ahead for a worker that never started (or stopped first).
        let unused: Vec<Warm> = batch
            .warm
            .lock()
            .map(|mut w| w.drain(..).collect())
            .unwrap_or_default();
        for w in unused {
            w.close().await;
        }
        // A worker the server turned away handed its file back; if the others
        // had already finished, one more session takes what is left.
        let left = |b: &Batch<I>| b.queue.lock().map_or(0, |q| q.len());
        let mut pass = 0;
        while left(&batch) > 0
            && batch.connection_error.lock().is_ok_and(|e| e.is_none())
            && !stop.is_some_and(|s| s.is_cancelled())
        {
            let before = left(&batch);
            self.clone()
                .worker(batch.clone(), limit.clone(), true)
                .await;
            if left(&batch) < before {
                continue;
            }
            // Turned away again (sessions of other jobs hold the server's limit).
            pass += 1;
            if pass >= job.retry.attempts {
                let msg = format!(
                    "cannot reach {}: the server refused every further session",
                    job.server.name
                );
                let rest: Vec<I> = batch
                    .queue
                    .lock()
                    .map(|mut q| q.drain(..).collect())
                    .unwrap_or_default();
                for it in rest {
                    let o = self.fail_item(&it, &msg);
                    batch.outcomes.lock().expect("outcomes").push(o);
                }
                break;
            }
            tokio::time::sleep(backoff(&job.retry, pass)).await;
        }
        let mut outcomes = batch
            .outcomes
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        outcomes.sort_by(|a, b| a.name.cmp(&b.name));
        let connection_error = batch
            .connection_error
            .lock()
            .map(|mut e| e.take())
            .unwrap_or_default();
        (outcomes, connection_error)
    }

    async fn worker<I: WorkItem>(self, batch: Arc<Batch<I>>, limit: Arc<Semaphore>, first: bool) {
        let batch = &*batch;
        let job = &batch.job;
        if !first {
            // The others log in once the first session is up: a refusal then
            // is the server's session limit, not a wrong password.
            let mut rx = batch.first_rx.clone();
            let _ = rx.wait_for(|up| *up).await;
        }
        // However this worker ends, the others may start.
        let _release = first.then(|| Release(&batch.first_tx));
        let spare = batch.spare.lock().ok().and_then(|mut s| s.take());
        let mut session: Option<Box<dyn Remote>> = None;
        // Counts `session` among the server's open sessions while it is up.
        let mut counted: Option<SessionCount> = None;
        // A login begun ahead of the run: this worker's first session.
        let mut pending: Option<Warm> = None;
        let _permit = match spare {
            // The run's listing session carries on (its permit with it).
            Some(Spare(s, permit, count)) => {
                session = Some(s);
                counted = Some(count);
                let _ = batch.first_tx.send(true);
                permit
            }
            None => match batch.warm.lock().ok().and_then(|mut w| w.pop()) {
                Some(mut w) => match w.take_permit() {
                    Some(permit) => {
                        pending = Some(w);
                        permit
                    }
                    None => return,
                },
                None => match limit.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            },
        };
        // Files whose finish goes on off this session (`Done::Later`): their
        // outcomes are collected later, oldest first, so the next downloads
        // overlap them and the finisher records several in one commit. At
        // most [`LATER_MOST`] at a time.
        let mut later: VecDeque<(I, u32, Later)> = VecDeque::new();
        // Files whose deferred finish failed, with their attempts so far:
        // handled like any failed attempt (retried with backoff, or failed).
        let mut again: VecDeque<(I, u32, Failure)> = VecDeque::new();
        loop {
            if batch
                .connection_error
                .lock()
                .map(|e| e.is_some())
                .unwrap_or(true)
            {
                break;
            }
            if batch.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
                // Shutting down: what is not started stays recorded and waits for the next run.
                break;
            }
            let next = match again.pop_front() {
                Some((item, attempt, f)) => Some((item, attempt, Some(f))),
                None => batch
                    .queue
                    .lock()
                    .ok()
                    .and_then(|mut q| q.pop_front())
                    .map(|item| (item, 0u32, None)),
            };
            let Some((item, mut attempt, mut carried)) = next else {
                match later.pop_front() {
                    Some(prev) => {
                        self.collect(batch, prev, &mut again).await;
                        continue;
                    }
                    None => break,
                }
            };
            // Every event about this file carries its ledger id (and the run's fields).
            let span = info_span!("file", file_id = item.file_id());
            let end = async {
                loop {
                let failed = match carried.take() {
                    Some(f) => f,
                    None => {
                        if session.is_none() {
                            let login = match pending.take() {
                                Some(w) => w.session().await,
                                None => self.login(job).await,
                            };
                            match login {
                                Ok((s, count)) => {
                                    session = Some(s);
                                    counted = Some(count);
                                    let _ = batch.first_tx.send(true);
                                }
                                Err(Refused::SessionLimit(others)) => {
                                    break ItemEnd::TurnedAway(others);
                                }
                                Err(Refused::Error(e)) => {
                                    break ItemEnd::Unreachable(format!(
                                        "cannot reach {}: {e}",
                                        job.server.name
                                    ));
                                }
                            }
                        }
                        attempt += 1;
                        let remote = session.as_mut().expect("session").as_mut();
                        let before = remote.quirks();
                        let result = batch.work.attempt(remote, &item, attempt).await;
                        self.remember_quirks(&job.server.name, &before, &remote.quirks());
                        match result {
                            Ok(Done::Now(o)) => break ItemEnd::Outcome(o),
                            Ok(Done::Later(l)) => break ItemEnd::Later(l),
                            Err(f) => f,
                        }
                    }
                };
                if let Failure::Hold(reason) = &failed {
                    break ItemEnd::Outcome(self.hold_item(&item, reason));
                }
                warn!(job = %job.name, file = item.name(), attempt, error = %failed, "attempt failed");
                // A session the error killed (or that cannot be trusted) is replaced.
                let dead = session.as_ref().is_none_or(|s| !s.is_open());
                if (failed.session_broken() || dead)
                    && let Some(mut s) = session.take()
                {
                    s.close().await;
                    counted = None;
                }
                if failed.permanent() || attempt >= job.retry.attempts {
                    let mut o = self.fail_item(&item, &failed.to_string());
                    o.attempts = o.attempts.max(attempt);
                    break ItemEnd::Outcome(o);
                }
                tokio::time::sleep(failed.retry_delay(&job.retry, attempt)).await;
                }
            }
            .instrument(span)
            .await;
            match end {
                ItemEnd::Outcome(o) => batch.outcomes.lock().expect("outcomes").push(o),
                ItemEnd::Later(l) => {
                    later.push_back((item, attempt, l));
                    if later.len() > LATER_MOST
                        && let Some(prev) = later.pop_front()
                    {
                        self.collect(batch, prev, &mut again).await;
                    }
                }
                ItemEnd::TurnedAway(others) => {
                    // This server takes no more sessions: the others carry on.
                    let mut q = batch.known.clone();
                    q.max_sessions = Some(others.max(1) as u32);
                    self.remember_quirks(&job.server.name, &batch.known, &q);
                    info!(job = %job.name, server = %job.server.name, sessions = others, "the server refused another session; going on with fewer");
                    if let Ok(mut queue) = batch.queue.lock() {
                        queue.push_front(item);
                    }
                    break;
                }
                ItemEnd::Unreachable(msg) => {
                    // Nothing can move: this and every queued file fail together.
                    if let Ok(mut ce) = batch.connection_error.lock() {
                        ce.get_or_insert(msg.clone());
                    }
                    let _ = batch.first_tx.send(true);
                    let mut rest: Vec<I> = batch
                        .queue
                        .lock()
                        .map(|mut q| q.drain(..).collect())
                        .unwrap_or_default();
                    rest.insert(0, item);
                    for it in rest {
                        let o = self.fail_item(&it, &msg);
                        batch.outcomes.lock().expect("outcomes").push(o);
                    }
                    break;
                }
            }
        }
        // The worker stops: finishes still under way are waited for, and a
        // failed one goes back to the queue (or fails, if the run cannot go on).
        while let Some(prev) = later.pop_front() {
            self.collect(batch, prev, &mut again).await;
        }
        while let Some((item, attempt, f)) = again.pop_front() {
            let over = batch.connection_error.lock().map_or(true, |e| e.is_some())
                || batch.stop.as_ref().is_some_and(|s| s.is_cancelled());
            if over {
                let mut o = match &f {
                    Failure::Hold(reason) => self.hold_item(&item, reason),
                    _ => self.fail_item(&item, &f.to_string()),
                };
                o.attempts = o.attempts.max(attempt);
                batch.outcomes.lock().expect("outcomes").push(o);
            } else if let Ok(mut queue) = batch.queue.lock() {
                queue.push_front(item);
            }
        }
        if let Some(mut s) = session.take() {
            s.close().await;
        }
        drop(counted);
        // Logged in ahead but never used: logged out (or, when stopping, dropped).
        if let Some(w) = pending.take()
            && !batch.stop.as_ref().is_some_and(|s| s.is_cancelled())
        {
            w.close().await;
        }
    }

    /// Waits for a deferred finish: its outcome, or the failure to handle.
    async fn collect<I: WorkItem>(
        &self,
        batch: &Batch<I>,
        (item, attempt, later): (I, u32, Later),
        again: &mut VecDeque<(I, u32, Failure)>,
    ) {
        let span = info_span!("file", file_id = item.file_id());
        match later.instrument(span).await {
            Ok(o) => batch.outcomes.lock().expect("outcomes").push(o),
            // Held or failed: the worker decides as for any attempt.
            Err(f) => again.push_back((item, attempt, f)),
        }
    }

    /// Writes the server's certificate to the audit trail when it is new
    /// or changed; a change is also a warning in the log.
    fn note_certificate(&self, job: &Job, s: &dyn Remote) {
        let Some(fp) = s.certificate_fingerprint() else {
            return;
        };
        let server = job.server.name.clone();
        if let Ok(seen) = self.cert_seen.lock()
            && seen.get(&server) == Some(&fp)
        {
            return;
        }
        let label = crate::audit::server_label(&job.server);
        let not_after = s.certificate_expiry().map(crate::ledger::rfc3339);
        match self.ledger(|l| l.audit_certificate(&server, &label, &fp, not_after.as_deref())) {
            Ok(kind) => {
                if kind == Some("certificate_changed") {
                    warn!(server = %job.server.name, fingerprint = %fp, "the server presents a different certificate than before (recorded in the audit trail)");
                }
                if let Ok(mut seen) = self.cert_seen.lock() {
                    seen.insert(server, fp);
                }
            }
            Err(e) => {
                warn!(server = %job.server.name, "cannot record the server certificate in the audit trail: {e:#}")
            }
        }
    }

    /// How many sessions a run of `files` files opens: one per
    /// [`FILES_PER_SESSION`], within `max_connections` and the session
    /// limit the server has shown.
    pub(crate) fn sessions_for(&self, job: &Job, files: usize) -> usize {
        let known = self.quirks(&job.server.name);
        let most = known.max_sessions.map_or(job.server.max_connections, |n| {
            n.min(job.server.max_connections)
        });
        files
            .div_ceil(FILES_PER_SESSION)
            .clamp(1, most.max(1) as usize)
    }

    /// Starts logging in up to `n` more sessions for `job` while its first
    /// session is busy (a pull's listing), so the run's workers start
    /// together. Only as many as `max_connections` has free permits for now;
    /// a worker without one logs in itself, as always.
    pub(crate) fn warm_up(&self, job: &Job, n: usize) -> Vec<Warm> {
        let limit = self.limit(&job.server);
        let mut warm = Vec::new();
        for _ in 0..n {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            let (engine, job) = (self.clone(), job.clone());
            let login = tokio::spawn(
                async move { engine.login(&job).await }.instrument(tracing::Span::current()),
            );
            warm.push(Warm {
                login: Some(login),
                permit: Some(permit),
            });
        }
        warm
    }

    /// A new session, counted among the server's open ones while it lives.
    async fn login(&self, job: &Job) -> Login {
        let s = self.connect(job).await?;
        Ok((s, SessionCount::new(self, &job.server.name)))
    }

    /// Opens a session, retrying transient failures with backoff. A login
    /// refused (or a `421`) while another session of ours to this server is
    /// open is the server's session limit, not a wrong password.
    pub(crate) async fn connect(&self, job: &Job) -> Result<Box<dyn Remote>, Refused> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match (self.connector)(job.server.clone()).await {
                Ok(mut s) => {
                    s.set_quirks(self.quirks(&job.server.name));
                    if let (Some(exp), Ok(mut m)) =
                        (s.certificate_expiry(), self.cert_expiry.lock())
                    {
                        m.insert(job.server.name.clone(), exp);
                    }
                    self.note_certificate(job, s.as_ref());
                    return Ok(s);
                }
                Err(e) => {
                    let others = self.sessions_open(&job.server.name);
                    let limit_reply =
                        matches!(e.kind(), ErrorKind::LoginRefused | ErrorKind::Unavailable);
                    if limit_reply && others > 0 {
                        return Err(Refused::SessionLimit(others));
                    }
                    if e.kind() == ErrorKind::LoginRefused
                        && let Ok(mut m) = self.login_failures.lock()
                    {
                        *m.entry(job.server.name.clone()).or_insert(0) += 1;
                    }
                    if connect_retryable(&e) && attempt < job.retry.attempts {
                        warn!(job = %job.name, server = %job.server.name, attempt, error = %e, "cannot connect; retrying");
                        tokio::time::sleep(backoff(&job.retry, attempt)).await;
                    } else {
                        return Err(Refused::Error(e));
                    }
                }
            }
        }
    }

    /// Logins `server` refused since this engine started (session limits not counted).
    pub fn login_failures(&self, server: &str) -> u64 {
        self.login_failures
            .lock()
            .map(|m| m.get(server).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// When `server`'s certificate expires, as the newest session saw it.
    pub fn certificate_expiry(&self, server: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cert_expiry.lock().ok()?.get(server).copied()
    }

    /// When `job`'s last run that ended well finished, from the ledger.
    pub fn last_success(&self, job: &str) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.ledger(|l| l.last_success(job))
    }

    /// Sessions open (or opening) to `server` now, across jobs.
    pub fn sessions_open(&self, server: &str) -> usize {
        self.open_sessions
            .lock()
            .map(|m| m.get(server).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// A file ferry cannot decide about: recorded `held`, for an operator.
    fn hold_item<I: WorkItem>(&self, item: &I, reason: &str) -> FileOutcome {
        let id = item.file_id();
        if let Err(e) = self.ledger(|l| l.set_file_state(id, FileState::Held, None, Some(reason))) {
            warn!(
                file = item.name(),
                "cannot record the hold in the ledger: {e:#}"
            );
        }
        warn!(
            file = item.name(),
            reason,
            "held: ferry cannot know whether the partner has this file; waiting for ferry confirm or ferry resend"
        );
        let mut o = self.fail_item_outcome(item, reason);
        o.status = FileStatus::Held {
            reason: reason.to_string(),
        };
        o
    }

    fn fail_item<I: WorkItem>(&self, item: &I, error: &str) -> FileOutcome {
        let id = item.file_id();
        match self.ledger(|l| l.fail(id, error)) {
            Ok(FileState::Failed) => self.fail_item_outcome(item, error),
            Ok(kept) => {
                let mut o = self.fail_item_outcome(item, error);
                o.note = Some(format!(
                    "the file is {}; the next run finishes its journey",
                    if kept == FileState::Renamed {
                        "placed"
                    } else {
                        "at its destination"
                    }
                ));
                o
            }
            Err(e) => {
                warn!(
                    file = item.name(),
                    "cannot record the failure in the ledger: {e:#}"
                );
                self.fail_item_outcome(item, error)
            }
        }
    }

    fn fail_item_outcome<I: WorkItem>(&self, item: &I, error: &str) -> FileOutcome {
        let row = self.ledger(|l| l.file(item.file_id())).ok();
        FileOutcome {
            name: item.name().to_string(),
            remote_path: row
                .as_ref()
                .map(|r| r.remote_path.clone())
                .unwrap_or_default(),
            bytes: row.as_ref().map_or(0, |r| r.size),
            sha256: row.as_ref().and_then(|r| r.sha256.clone()),
            verified: Verified::None,
            attempts: row.map_or(0, |r| r.attempts),
            status: FileStatus::Failed {
                error: error.to_string(),
            },
            note: None,
        }
    }
}

/// Why no session could be had.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The server refused one more session while this many of ours were open.
    SessionLimit(usize),
    Error(TransportError),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::SessionLimit(n) => write!(f, "the server refused a session beyond {n}"),
            Refused::Error(e) => write!(f, "{e}"),
        }
    }
}

/// Lets the waiting workers start when the first one ends, however it ends.
struct Release<'a>(&'a tokio::sync::watch::Sender<bool>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Counts one established session among its server's open sessions.
pub(crate) struct SessionCount {
    engine: Engine,
    server: String,
}

impl SessionCount {
    pub(crate) fn new(engine: &Engine, server: &str) -> SessionCount {
        if let Ok(mut m) = engine.open_sessions.lock() {
            *m.entry(server.to_string()).or_insert(0) += 1;
        }
        SessionCount {
            engine: engine.clone(),
            server: server.to_string(),
        }
    }
}

impl Drop for SessionCount {
    fn drop(&mut self) {
        if let Ok(mut m) = self.engine.open_sessions.lock()
            && let Some(n) = m.get_mut(&self.server)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// An open session (the listing's) handed to a run's first worker, with
/// the `max_connections` permit it holds and its place among the server's
/// open sessions.
pub(crate) struct Spare(
    pub Box<dyn Remote>,
    pub tokio::sync::OwnedSemaphorePermit,
    pub SessionCount,
);

type Login = Result<(Box<dyn Remote>, SessionCount), Refused>;

/// A session logging in ahead of the run's workers (while the listing
/// session reads the folder), with the `max_connections` permit it holds.
/// Dropped untaken, its login is stopped.
pub(crate) struct Warm {
    login: Option<tokio::task::JoinHandle<Login>>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Warm {
    /// The permit, for the worker that takes this session.
    fn take_permit(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permit.take()
    }

    /// The logged-in session, or why there is none.
    async fn session(mut self) -> Login {
        let login = self.login.take().expect("a warm login is taken once");
        match login.await {
            Ok(got) => got,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Refused::Error(TransportError::Local(format!(
                "the login ahead of the run stopped: {e}"
            )))),
        }
    }

    /// Logs the session out, if it came up.
    pub(crate) async fn close(self) {
        if let Ok((mut s, _count)) = self.session().await {
            s.close().await;
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(login) = &self.login {
            login.abort();
        }
    }
}

/// What the sessions of one run share.
struct Batch<I> {
    job: Job,
    queue: Mutex<VecDeque<I>>,
    outcomes: Mutex<Vec<FileOutcome>>,
    connection_error: Mutex<Option<String>>,
    work: Arc<dyn Attempt<I>>,
    stop: Option<tokio_util::sync::CancellationToken>,
    /// The server's quirks as the ledger knew them when the run began.
    known: Quirks,
    /// Set once the first session is up (or could not be had).
    first_tx: tokio::sync::watch::Sender<bool>,
    first_rx: tokio::sync::watch::Receiver<bool>,
    /// A session already open for this run, for the first worker.
    spare: Mutex<Option<Spare>>,
    /// Sessions logging in ahead of the run, for the other workers.
    warm: Mutex<Vec<Warm>>,
}

/// A file queued for a run.
pub(crate) trait WorkItem: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn file_id(&self) -> i64;
}

/// One attempt at one file through an open session.
#[async_trait::async_trait]
pub(crate) trait Attempt<I: WorkItem>: Send + Sync {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &I,
        attempt: u32,
    ) -> Result<Done, Failure>;
}

/// What an attempt ended with.
pub(crate) enum Done {
    /// The file's outcome.
    Now(FileOutcome),
    /// The rest needs no session (a pull's records and placing, when
    /// nothing is left to do on the server): the session takes the next
    /// file meanwhile.
    Later(Later),
}

/// The outcome of a finish that goes on off the session.
pub(crate) type Later = Pin<Box<dyn Future<Output = Result<FileOutcome, Failure>> + Send>>;

/// How one file's turn on a session ended.
enum ItemEnd {
    Outcome(FileOutcome),
    Later(Later),
    /// The server refused another session (this many of ours were open).
    TurnedAway(usize),
    /// The server cannot be reached: the run's files fail with this.
    Unreachable(String),
}

/// When the job runs next, as an operator reads it in an email.
pub fn next_run_text(job: &Job) -> String {
    match &job.schedule {
        Some(s) => s
            .next_after(chrono::Utc::now())
            .map(|t| {
                t.with_timezone(&s.tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_else(|| "none".into()),
        None if job.watch() => "when a file lands in the watched folder".into(),
        None => format!("only with 'ferry once {}'", job.name),
    }
}

/// Joins remote folder and name without doubling slashes.
pub fn remote_join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_cap() {
        let p = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..=8u32 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            let samples: Vec<Duration> = (0..200).map(|_| backoff(&p, attempt)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {attempt}");
            let spread = samples.iter().max().unwrap().as_secs_f64()
                - samples.iter().min().unwrap().as_secs_f64();
            assert!(
                spread > cap.as_secs_f64() * 0.5,
                "jitter spreads over the window"
            );
        }
    }

    /// A session that is only there: the scripted attempts never use it.
    struct Idle(crate::transport::Capabilities);

    #[async_trait::async_trait]
    impl Remote for Idle {
        async fn list(
            &mut self,
            _: &str,
        ) -> crate::transport::Result<Vec<crate::transport::RemoteEntry>> {
            Ok(Vec::new())
        }
        async fn upload(
            &mut self,
            _: &str,
            _: u64,
            _: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        ) -> crate::transport::Result<u64> {
            Ok(0)
        }
        async fn download(
            &mut self,
            _: &str,
            _: u64,
            _: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        ) -> crate::transport::Result<u64> {
            Ok(0)
        }
        async fn rename(&mut self, _: &str, _: &str) -> crate::transport::Result<()> {
            Ok(())
        }
        async fn delete(&mut self, _: &str) -> crate::transport::Result<()> {
            Ok(())
        }
        async fn mkdir(&mut self, _: &str) -> crate::transport::Result<()> {
            Ok(())
        }
        async fn size(&mut self, _: &str) -> crate::transport::Result<Option<u64>> {
            Ok(None)
        }
        async fn sha256(&mut self, _: &str) -> crate::transport::Result<Option<[u8; 32]>> {
            Ok(None)
        }
        fn capabilities(&self) -> &crate::transport::Capabilities {
            &self.0
        }
        fn is_open(&self) -> bool {
            true
        }
        async fn close(&mut self) {}
    }

    struct Item(i64, String);

    impl WorkItem for Item {
        fn name(&self) -> &str {
            &self.1
        }
        fn file_id(&self) -> i64 {
            self.0
        }
    }

    /// The outcome of `item` delivered at its `attempts`-th attempt.
    fn delivered(item: &Item, attempts: u32) -> FileOutcome {
        FileOutcome {
            name: item.1.clone(),
            remote_path: format!("/in/{}", item.1),
            bytes: 1,
            sha256: None,
            verified: crate::ledger::Verified::Size,
            attempts,
            status: FileStatus::Delivered,
            note: None,
        }
    }

    /// Every file's finish is deferred; `a`'s first fails (a disk that
    /// refused the placing, say), `b`'s first is held.
    struct Scripted {
        calls: Mutex<Vec<(String, u32)>>,
    }

    #[async_trait::async_trait]
    impl Attempt<Item> for Scripted {
        async fn attempt(
            &self,
            _: &mut dyn Remote,
            item: &Item,
            attempt: u32,
        ) -> Result<Done, Failure> {
            self.calls.lock().unwrap().push((item.1.clone(), attempt));
            let o = delivered(item, attempt);
            let r = match (item.1.as_str(), attempt) {
                ("a", 1) => Err(Failure::Retry("cannot place a: disk full".into())),
                ("b", 1) => Err(Failure::Hold("cannot know".into())),
                _ => Ok(o),
            };
            Ok(Done::Later(Box::pin(async move {
                tokio::task::yield_now().await;
                r
            })))
        }
    }

    /// An engine whose one session (`max_connections: 1`) never fails,
    /// and a pull record for each name.
    fn one_session_engine(
        names: &[String],
    ) -> (tempfile::TempDir, crate::config::Config, Engine, Vec<Item>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ferry.yaml"),
            "state_dir: state\nservers:\n  s:\n    host: 127.0.0.1\n    port: 1\n    user: u\n    password: p\n    max_connections: 1\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/j.yaml"),
            "direction: pull\nserver: s\nlocal_dir: in\nremote_dir: /in\nretry: { attempts: 3, initial_delay: 10ms, max_delay: 20ms }\n",
        )
        .unwrap();
        let cfg = crate::config::load(&dir.path().join("ferry.yaml")).expect("config");
        let ledger = Ledger::open(&cfg.state_dir).unwrap();
        let items = names
            .iter()
            .map(|n| {
                let id = ledger
                    .insert_file(&crate::ledger::NewFile {
                        job: "j",
                        direction: "pull",
                        name: n,
                        size: 1,
                        mtime: None,
                        sha256: None,
                        remote_path: &format!("/in/{n}"),
                        local_path: None,
                        run_id: None,
                    })
                    .unwrap();
                Item(id, n.clone())
            })
            .collect();
        let connector: ConnectFn = Arc::new(|_| {
            Box::pin(async { Ok(Box::new(Idle(Default::default())) as Box<dyn Remote>) })
        });
        let engine = Engine::new(cfg.state_dir.clone(), ledger).with_connector(connector);
        (dir, cfg, engine, items)
    }

    /// A deferred finish that fails is retried like any failed attempt (with
    /// the attempt counted), one that holds holds the file, and none is
    /// lost when the queue runs dry before the last finish is collected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_finish_that_fails_is_retried_and_one_that_holds_is_held() {
        let names = ["a", "b", "c"].map(String::from);
        let (_dir, cfg, engine, items) = one_session_engine(&names);
        let work = Arc::new(Scripted {
            calls: Mutex::new(Vec::new()),
        });
        let (outcomes, error) = engine
            .drive(&cfg.jobs["j"], items, work.clone(), None, None, Vec::new())
            .await;
        assert_eq!(error, None);
        let got: Vec<(&str, &FileStatus, u32)> = outcomes
            .iter()
            .map(|o| (o.name.as_str(), &o.status, o.attempts))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], ("a", &FileStatus::Delivered, 2));
        assert!(matches!(got[1].1, FileStatus::Held { .. }), "{got:?}");
        assert_eq!(got[2], ("c", &FileStatus::Delivered, 1));
        let calls = work.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            // `a`'s failure is seen once the queue is empty: the session
            // does not wait for a finish while it has files to start.
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("c".into(), 1),
                ("a".into(), 2)
            ]
        );
    }

    /// Counts the finishes under way: begun by an attempt, ended when the
    /// session collects (polls) them.
    #[derive(Default)]
    struct Counting {
        open: Arc<std::sync::atomic::AtomicUsize>,
        most: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Attempt<Item> for Counting {
        async fn attempt(&self, _: &mut dyn Remote, item: &Item, _: u32) -> Result<Done, Failure> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.open.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            let o = delivered(item, 1);
            let open = self.open.clone();
            Ok(Done::Later(Box::pin(async move {
                open.fetch_sub(1, SeqCst);
                Ok(o)
            })))
        }
    }

    /// A session starts files while earlier ones are still finishing, but
    /// never has more than [`LATER_MOST`] of them waiting: past that it
    /// collects the oldest first (each holds an open `.part`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_has_at_most_later_most_finishes_waiting() {
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        let (_dir, cfg, engine, items) = one_session_engine(&names);
        let work = Arc::new(Counting::default());
        let (outcomes, error) = engine
            .drive(&cfg.jobs["j"], items, work.clone(), None, None, Vec::new())
            .await;
        assert_eq!(error, None);
        assert_eq!(outcomes.len(), 40);
        assert!(
            outcomes.iter().all(|o| o.status == FileStatus::Delivered),
            "{outcomes:?}"
        );
        let most = work.most.load(std::sync::atomic::Ordering::SeqCst);
        // The one just begun, and LATER_MOST before it.
        assert_eq!(most, LATER_MOST + 1);
        assert_eq!(work.open.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// After a 425 the backoff is the job's shape at a shorter scale:
    /// exponential from 100 ms, never above a second, and never longer
    /// than the job's own; any other failure waits the job's backoff.
    #[test]
    fn a_refused_data_connection_backs_off_from_100_ms_to_at_most_a_second() {
        let p = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
        };
        let refused = Failure::Transport(crate::transport::TransportError::Server {
            step: "uploading /a.837".into(),
            code: 425,
            text: "425 EPSV: Address already in use".into(),
        });
        for attempt in 1..=6u32 {
            let cap = Duration::from_millis(100 << (attempt - 1)).min(Duration::from_secs(1));
            let waits: Vec<Duration> = (0..200).map(|_| refused.retry_delay(&p, attempt)).collect();
            assert!(waits.iter().all(|d| *d <= cap), "attempt {attempt}");
            assert!(
                waits.iter().any(|d| *d > cap / 2),
                "attempt {attempt}: jittered up to its cap"
            );
        }
        let other = Failure::Retry("short download".into());
        assert!((0..200).any(|_| other.retry_delay(&p, 1) > Duration::from_secs(1)));
        let quick = RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            ..p
        };
        assert!((0..200).all(|_| refused.retry_delay(&quick, 5) <= Duration::from_millis(20)));
    }

    #[test]
    fn remote_paths_join_cleanly() {
        assert_eq!(remote_join("/inbound", "a.837"), "/inbound/a.837");
        assert_eq!(remote_join("/inbound/", "a.837"), "/inbound/a.837");
        assert_eq!(remote_join("/", "a.837"), "/a.837");
    }
}
