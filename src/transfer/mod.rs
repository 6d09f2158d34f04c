//! The transfer engine: the per-file state machine that turns files in a
//! folder into files delivered, verified and recorded.
//!
//! Every step is written to the ledger before the next action, and every run
//! starts by reconciling what an earlier run left unfinished with what the
//! server actually has, so a crash never loses, halves or doubles a file.

pub mod local;
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
use tracing::{info, warn};

use crate::config::{Direction, Job, RetryPolicy, Server};
use crate::ledger::{FileState, Ledger, Verified};
use crate::transport::{self, ErrorKind, Remote, TransportError};

/// Below this many files per session, a run uses a single session.
const FILES_PER_SESSION: usize = 10;

/// Opens a logged-in session with a server.
pub type ConnectFn = Arc<
    dyn Fn(Arc<Server>) -> Pin<Box<dyn Future<Output = transport::Result<Box<dyn Remote>>> + Send>>
        + Send
        + Sync,
>;

/// What the engine needs besides the job: where state lives and the ledger.
pub struct Engine {
    pub state_dir: PathBuf,
    pub ledger: Arc<Mutex<Ledger>>,
    /// `max_connections` per server, shared by every job of this process.
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// How sessions are opened: the FTPS transport, or a test's wrapper around it.
    connector: ConnectFn,
    /// Failure emails; none in tests that do not ask for them.
    alerts: Option<Arc<crate::alert::Alerter>>,
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
    /// Set when the server could not be reached at all: every file failed with it.
    pub connection_error: Option<String>,
    pub duration: Duration,
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
        }
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
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Retry(s) | Failure::Mismatch(s) | Failure::Permanent(s) => f.write_str(s),
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
            limits: Mutex::new(HashMap::new()),
            connector: Arc::new(|server| Box::pin(transport::connect(server))),
            alerts: None,
        }
    }

    /// Sends failure, recovery and certificate emails through `alerts`.
    pub fn with_alerter(mut self, alerts: Arc<crate::alert::Alerter>) -> Engine {
        self.alerts = Some(alerts);
        self
    }

    pub fn alerter(&self) -> Option<&Arc<crate::alert::Alerter>> {
        self.alerts.as_ref()
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
        f(&guard)
    }

    fn limit(&self, server: &Server) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().expect("limits lock");
        limits
            .entry(server.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(server.max_connections as usize)))
            .clone()
    }

    /// Runs one job once: reconcile, select, transfer, verify, after-action.
    pub async fn run_job(
        &self,
        job: &Job,
        trigger: Trigger,
        opts: RunOptions,
    ) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let run_id = self.ledger(|l| {
            l.abort_stale_runs(&job.name)?;
            l.start_run(&job.name, trigger.as_str())
        })?;
        info!(job = %job.name, trigger = trigger.as_str(), "run started");
        let result = match job.direction {
            Direction::Push => push::run(self, job, run_id, opts).await,
            Direction::Pull => pull::run(self, job, run_id, opts).await,
        };
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("{e:#}");
                self.ledger(|l| l.finish_run(run_id, "failed", 0, 0, 0, Some(&msg)))?;
                return Err(e);
            }
        };
        report.duration = started.elapsed();
        let failed = report.failed() as u64;
        let status = if failed > 0 { "failed" } else { "ok" };
        let error = report
            .connection_error
            .clone()
            .or_else(|| (failed > 0).then(|| format!("{failed} file(s) failed")));
        self.ledger(|l| {
            l.finish_run(
                run_id,
                status,
                report.delivered() as u64,
                failed,
                report.bytes(),
                error.as_deref(),
            )
        })?;
        if let Some(alerts) = &self.alerts {
            alerts.after_run(job, &report, &next_run_text(job));
        }
        info!(
            job = %job.name,
            files = report.files.len(),
            delivered = report.delivered(),
            failed,
            bytes = report.bytes(),
            duration_ms = report.duration.as_millis() as u64,
            "run finished"
        );
        Ok(report)
    }

    /// Moves `items` through up to `max_connections` sessions, retrying each
    /// file with backoff. `work` does one attempt at one item.
    pub(crate) async fn drive<I: WorkItem>(
        &self,
        job: &Job,
        items: Vec<I>,
        work: &dyn Attempt<I>,
        stop: Option<&tokio_util::sync::CancellationToken>,
    ) -> (Vec<FileOutcome>, Option<String>) {
        if items.is_empty() {
            return (Vec::new(), None);
        }
        let sessions = items
            .len()
            .div_ceil(FILES_PER_SESSION)
            .clamp(1, job.server.max_connections as usize);
        let queue = Mutex::new(items.into_iter().collect::<VecDeque<I>>());
        let outcomes = Mutex::new(Vec::new());
        let connection_error: Mutex<Option<String>> = Mutex::new(None);
        let limit = self.limit(&job.server);
        let batch = Batch {
            job,
            queue,
            outcomes,
            connection_error,
            work,
            stop,
        };
        let workers = (0..sessions).map(|_| self.worker(&batch, &limit));
        futures_like::join_all(workers).await;
        let Batch {
            outcomes,
            connection_error,
            ..
        } = batch;
        let mut outcomes = outcomes.into_inner().unwrap_or_default();
        outcomes.sort_by(|a, b| a.name.cmp(&b.name));
        (outcomes, connection_error.into_inner().unwrap_or_default())
    }

    async fn worker<I: WorkItem>(&self, batch: &Batch<'_, I>, limit: &Arc<Semaphore>) {
        let Batch {
            job,
            queue,
            outcomes,
            connection_error,
            work,
            stop,
        } = batch;
        let job = *job;
        let Ok(_permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let mut session: Option<Box<dyn Remote>> = None;
        loop {
            if connection_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                break;
            }
            if stop.is_some_and(|s| s.is_cancelled()) {
                // Shutting down: what is not started stays recorded and waits for the next run.
                break;
            }
            let Some(item) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                break;
            };
            let mut attempt = 0u32;
            let outcome = loop {
                if session.is_none() {
                    match self.connect(job).await {
                        Ok(s) => session = Some(s),
                        Err(e) => {
                            // Nothing can move: this and every queued file fail together.
                            let msg = format!("cannot reach {}: {e}", job.server.name);
                            if let Ok(mut ce) = connection_error.lock() {
                                ce.get_or_insert(msg.clone());
                            }
                            let mut rest: Vec<I> = queue
                                .lock()
                                .map(|mut q| q.drain(..).collect())
                                .unwrap_or_default();
                            rest.insert(0, item);
                            for it in rest {
                                let o = self.fail_item(&it, &msg);
                                outcomes.lock().expect("outcomes").push(o);
                            }
                            return;
                        }
                    }
                }
                attempt += 1;
                let remote = session.as_mut().expect("session").as_mut();
                match work.attempt(remote, &item, attempt).await {
                    Ok(o) => break o,
                    Err(f) => {
                        warn!(job = %job.name, file = item.name(), attempt, error = %f, "attempt failed");
                        // A session the error killed (or that cannot be trusted) is replaced.
                        let dead = session.as_ref().is_none_or(|s| !s.is_open());
                        if (f.session_broken() || dead)
                            && let Some(mut s) = session.take()
                        {
                            s.close().await;
                        }
                        if f.permanent() || attempt >= job.retry.attempts {
                            let mut o = self.fail_item(&item, &f.to_string());
                            o.attempts = attempt;
                            break o;
                        }
                        tokio::time::sleep(backoff(&job.retry, attempt)).await;
                    }
                }
            };
            outcomes.lock().expect("outcomes").push(outcome);
        }
        if let Some(mut s) = session.take() {
            s.close().await;
        }
    }

    /// Opens a session, retrying transient failures with backoff.
    async fn connect(&self, job: &Job) -> Result<Box<dyn Remote>, TransportError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match (self.connector)(job.server.clone()).await {
                Ok(s) => {
                    if let (Some(alerts), Some(exp)) = (&self.alerts, s.certificate_expiry())
                        && exp - chrono::Utc::now() < chrono::Duration::days(30)
                    {
                        alerts.certificate_expiring(job, exp);
                    }
                    return Ok(s);
                }
                Err(e) if connect_retryable(&e) && attempt < job.retry.attempts => {
                    warn!(job = %job.name, server = %job.server.name, attempt, error = %e, "cannot connect; retrying");
                    tokio::time::sleep(backoff(&job.retry, attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fail_item<I: WorkItem>(&self, item: &I, error: &str) -> FileOutcome {
        let id = item.file_id();
        if let Err(e) = self.ledger(|l| l.set_file_state(id, FileState::Failed, None, Some(error)))
        {
            warn!(
                file = item.name(),
                "cannot record the failure in the ledger: {e:#}"
            );
        }
        let row = self.ledger(|l| l.file(id)).ok();
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

/// What the sessions of one run share.
struct Batch<'a, I> {
    job: &'a Job,
    queue: Mutex<VecDeque<I>>,
    outcomes: Mutex<Vec<FileOutcome>>,
    connection_error: Mutex<Option<String>>,
    work: &'a dyn Attempt<I>,
    stop: Option<&'a tokio_util::sync::CancellationToken>,
}

/// A file queued for a run.
pub(crate) trait WorkItem: Send + Sync {
    fn name(&self) -> &str;
    fn file_id(&self) -> i64;
}

/// One attempt at one file through an open session.
#[async_trait::async_trait]
pub(crate) trait Attempt<I: WorkItem>: Sync {
    async fn attempt(
        &self,
        remote: &mut dyn Remote,
        item: &I,
        attempt: u32,
    ) -> Result<FileOutcome, Failure>;
}

/// When the job runs next, as an operator reads it in an email.
fn next_run_text(job: &Job) -> String {
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

/// Small future helpers, so the engine needs no extra crate.
pub(crate) mod futures_like {
    use std::future::Future;
    use std::pin::Pin;

    /// Polls all futures concurrently on this task until every one is done.
    pub async fn join_all<F: Future<Output = ()>>(futs: impl Iterator<Item = F>) {
        let mut futs: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
        std::future::poll_fn(move |cx| {
            futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
            if futs.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
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

    #[test]
    fn remote_paths_join_cleanly() {
        assert_eq!(remote_join("/inbound", "a.837"), "/inbound/a.837");
        assert_eq!(remote_join("/inbound/", "a.837"), "/inbound/a.837");
        assert_eq!(remote_join("/", "a.837"), "/a.837");
    }
}
