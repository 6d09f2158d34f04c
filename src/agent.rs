//! The long-running agent (`ferry run`): schedules and watched folders turn
//! into job runs; a job never runs twice at once; shutdown and reload never
//! damage a run.
//!
//! One control loop owns all state. Triggers (schedule, watch, rescan,
//! catch-up) only say "run job X"; a trigger for a job that is already
//! running is remembered as one follow-up run, however many arrive.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{CatchUp, Config, Job};
use crate::transfer::Trigger;
use crate::watch::{self, HasWork};

/// Runs one job once. The agent does not care how: the engine in
/// production, a recorder in tests.
#[async_trait::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// `stop` is cancelled at shutdown: start no new file, finish the one in flight.
    async fn run(&self, job: Arc<Job>, trigger: Trigger, stop: CancellationToken);

    /// A valid configuration was loaded by SIGHUP (jobs are the agent's
    /// business; this is for settings outside jobs, such as mail).
    fn reconfigure(&self, _cfg: &Config) {}

    /// Once a minute between runs, at the agent's clock: acknowledgement
    /// deadlines and `expect` windows that passed are reported even when no
    /// job runs.
    fn between_runs(&self, _jobs: &[Arc<Job>], _now: DateTime<Utc>) {}
}

/// The production runner: the transfer engine, whose reports go to the alerter.
pub struct EngineRunner {
    pub engine: Arc<crate::transfer::Engine>,
    /// Failure, recovery and certificate emails; the engine knows nothing of them.
    pub alerter: Arc<crate::alert::Alerter>,
    /// Counts each run for `/metrics`, when metrics are served.
    pub metrics: Option<Arc<crate::observe::Metrics>>,
}

#[async_trait::async_trait]
impl Runner for EngineRunner {
    async fn run(&self, job: Arc<Job>, trigger: Trigger, stop: CancellationToken) {
        let opts = crate::transfer::RunOptions {
            force: false,
            stop: Some(stop),
            progress: None,
        };
        let report = self.engine.run_job(&job, trigger, opts).await;
        // Alert events carry the run's fields too.
        let span = crate::alert::run_span(&job, &report);
        let _in_span = span.enter();
        if let Some(e) = &report.connection_error {
            warn!(job = %job.name, "the job could not run: {e}");
        }
        if let Some(m) = &self.metrics {
            m.after_run(&report);
        }
        self.alerter
            .after_run(&job, &report, &crate::transfer::next_run_text(&job));
    }

    fn reconfigure(&self, cfg: &Config) {
        if let Some(m) = &self.metrics {
            m.reconfigure(cfg);
        }
        self.alerter
            .reconfigure(cfg.mail.clone(), cfg.jobs.keys().cloned().collect());
        let recorded = self
            .engine
            .ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("the ledger lock was poisoned"))
            .and_then(|mut l| {
                l.set_servers(crate::audit::partners(cfg));
                crate::audit::config_loaded(&l, cfg, &crate::transfer::operator::os_user())
            });
        if let Err(e) = recorded {
            tracing::warn!("cannot record the reloaded configuration in the audit trail: {e:#}");
        }
    }

    fn between_runs(&self, jobs: &[Arc<Job>], now: DateTime<Utc>) {
        for job in jobs
            .iter()
            .filter(|j| j.edi.as_ref().is_some_and(|e| e.acks_for.is_empty()) || j.expect.is_some())
        {
            let report = self.engine.check_deadlines(job, now);
            if !report.edi.is_empty() {
                self.alerter.after_deadlines(job, &report);
            }
        }
    }
}

/// Rescans trigger a job only when its folder holds files not yet delivered.
pub fn engine_has_work(engine: Arc<crate::transfer::Engine>) -> HasWork {
    Arc::new(move |job: &Job| {
        let ledger = engine.ledger.lock();
        ledger.is_ok_and(|l| {
            crate::transfer::local::waiting_count(job, Some(&l)).is_ok_and(|n| n > 0)
        })
    })
}

/// Wall-clock time derived from tokio's clock, so schedules follow a paused
/// test clock exactly as they follow real time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_utc: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::starting_at(Utc::now())
    }

    /// A clock that reads `at` now (tests put it on a DST day).
    pub fn starting_at(at: DateTime<Utc>) -> Clock {
        Clock {
            base_utc: at,
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.base_utc + chrono::Duration::from_std(self.base.elapsed()).unwrap_or_default()
    }

    /// The tokio instant at which the wall clock reads `t`.
    pub fn instant_at(&self, t: DateTime<Utc>) -> tokio::time::Instant {
        let ahead = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + ahead
    }
}

/// Messages from signals (or tests) to the agent.
#[derive(Debug, Clone)]
pub enum Control {
    /// SIGHUP: the new configuration, or every error that made it invalid.
    Reload(Result<Box<Config>, String>),
    /// First SIGINT/SIGTERM: stop starting work, let files in flight finish.
    Shutdown,
    /// Second signal: abort now.
    Abort,
}

/// What a job's slot in the agent knows.
struct Slot {
    job: Arc<Job>,
    running: Option<JoinHandle<()>>,
    /// A trigger that arrived during a run: exactly one follow-up run.
    pending: Option<Trigger>,
}

pub struct Agent {
    cfg: Arc<Config>,
    runner: Arc<dyn Runner>,
    clock: Clock,
    has_work: HasWork,
    slots: HashMap<String, Slot>,
    parallel: Arc<Semaphore>,
    /// Cancelled at shutdown; every run gets a child token.
    stop: CancellationToken,
    triggers_tx: mpsc::UnboundedSender<(String, Trigger)>,
    triggers_rx: mpsc::UnboundedReceiver<(String, Trigger)>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    /// The scheduler and watchers of the current configuration; replaced on reload.
    sources: Vec<JoinHandle<()>>,
    /// Triggers that arrived while a run was going, for tests and logs.
    pub coalesced: u64,
    /// Beaten by the loop for `/healthz` and systemd's watchdog; `None`: no beats.
    heartbeat: Option<crate::observe::Heartbeat>,
    /// When the loop beats next (set while `run` runs, with a heartbeat).
    beats: Option<tokio::time::Interval>,
}

impl Agent {
    pub fn new(cfg: Config, runner: Arc<dyn Runner>, clock: Clock, has_work: HasWork) -> Agent {
        let (triggers_tx, triggers_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Agent {
            parallel: Arc::new(Semaphore::new(cfg.max_parallel_jobs as usize)),
            cfg: Arc::new(cfg),
            runner,
            clock,
            has_work,
            slots: HashMap::new(),
            stop: CancellationToken::new(),
            triggers_tx,
            triggers_rx,
            done_tx,
            done_rx,
            sources: Vec::new(),
            coalesced: 0,
            heartbeat: None,
            beats: None,
        }
    }

    /// Makes the loop beat `hb` every `hb.every` (and ping systemd's watchdog).
    pub fn with_heartbeat(mut self, hb: crate::observe::Heartbeat) -> Agent {
        self.heartbeat = Some(hb);
        self
    }

    /// A handle that injects triggers (tests; the watchers and scheduler use it too).
    pub fn trigger_sender(&self) -> mpsc::UnboundedSender<(String, Trigger)> {
        self.triggers_tx.clone()
    }

    /// Runs until shutdown. `last_runs` holds each job's last scheduled run
    /// from the ledger, for catch-up.
    pub async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        last_runs: HashMap<String, DateTime<Utc>>,
    ) -> Agent {
        self.install(&last_runs);
        info!(
            jobs = self.slots.len(),
            max_parallel_jobs = self.cfg.max_parallel_jobs,
            "agent started"
        );
        // Claims deadlines once a minute, only while some job has any (no
        // extra timer otherwise: the paused-clock tests see none).
        let mut deadlines = claims_timer(&self.cfg);
        // systemd (Type=notify): started. Without NOTIFY_SOCKET this does nothing.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        self.beats = self.heartbeat.as_ref().map(|hb| {
            hb.beat();
            let mut i = tokio::time::interval(hb.every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                _ = next_beat(&mut self.beats) => {
                    if let Some(hb) = &self.heartbeat {
                        hb.stall_if_asked().await;
                        hb.beat();
                    }
                }
                _ = next_beat(&mut deadlines) => {
                    let jobs: Vec<Arc<Job>> = self.slots.values().map(|s| s.job.clone()).collect();
                    self.runner.between_runs(&jobs, self.clock.now());
                }
                Some((job, trigger)) = self.triggers_rx.recv() => self.trigger(&job, trigger),
                Some(job) = self.done_rx.recv() => self.finished(&job),
                msg = control.recv() => match msg {
                    Some(Control::Reload(Ok(cfg))) => {
                        self.reload(*cfg);
                        if deadlines.is_some() != claims_timer(&self.cfg).is_some() {
                            deadlines = claims_timer(&self.cfg);
                        }
                    }
                    Some(Control::Reload(Err(errors))) => {
                        error!("the new configuration is invalid; keeping the running one:\n{errors}");
                    }
                    Some(Control::Shutdown) | None => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        self.shutdown(&mut control).await;
                        return self;
                    }
                    Some(Control::Abort) => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        self.abort_all();
                        return self;
                    }
                },
            }
        }
    }

    /// Starts slots, the scheduler and the watchers for the current configuration.
    fn install(&mut self, last_runs: &HashMap<String, DateTime<Utc>>) {
        for job in self.cfg.jobs.values() {
            self.slots
                .entry(job.name.clone())
                .and_modify(|s| s.job = Arc::new(job.clone()))
                .or_insert_with(|| Slot {
                    job: Arc::new(job.clone()),
                    running: None,
                    pending: None,
                });
        }
        let jobs: Vec<Arc<Job>> = self.slots.values().map(|s| s.job.clone()).collect();
        self.sources.push(tokio::spawn(scheduler(
            jobs.clone(),
            self.clock,
            self.triggers_tx.clone(),
        )));
        self.sources.extend(watch::start(
            &jobs,
            self.triggers_tx.clone(),
            self.has_work.clone(),
        ));
        // Catch-up: at most one run for all the fire times missed while the agent was down.
        let now = self.clock.now();
        for job in &jobs {
            let (Some(sched), Some(last)) = (&job.schedule, last_runs.get(&job.name)) else {
                continue;
            };
            let missed = sched
                .upcoming(*last, 1000)
                .into_iter()
                .take_while(|t| *t <= now)
                .count();
            if missed == 0 {
                continue;
            }
            match job.catch_up {
                CatchUp::One => {
                    info!(job = %job.name, missed, since = %last, "runs were missed while the agent was down; one catch-up run");
                    let _ = self.triggers_tx.send((job.name.clone(), Trigger::CatchUp));
                }
                CatchUp::None => {
                    info!(job = %job.name, missed, since = %last, "runs were missed while the agent was down; catch_up: none");
                }
            }
        }
    }

    fn trigger(&mut self, name: &str, trigger: Trigger) {
        let Some(slot) = self.slots.get_mut(name) else {
            return; // removed by a reload
        };
        if self.stop.is_cancelled() {
            return;
        }
        if slot.running.is_some() {
            if slot.pending.is_some() {
                self.coalesced += 1;
            }
            slot.pending.get_or_insert(trigger);
            return;
        }
        self.start(name, trigger);
    }

    fn start(&mut self, name: &str, trigger: Trigger) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let job = slot.job.clone();
        let runner = self.runner.clone();
        let parallel = self.parallel.clone();
        let stop = self.stop.child_token();
        let done = self.done_tx.clone();
        slot.running = Some(tokio::spawn(async move {
            if let Ok(_permit) = parallel.acquire_owned().await
                && !stop.is_cancelled()
            {
                runner.run(job.clone(), trigger, stop).await;
            }
            let _ = done.send(job.name.clone());
        }));
    }

    fn finished(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        slot.running = None;
        if let Some(next) = slot.pending.take() {
            self.start(name, next);
        } else if !self.cfg.jobs.contains_key(name) {
            self.slots.remove(name); // removed by a reload while it ran
        }
    }

    /// Swaps in a new configuration: jobs added, removed and changed; runs in
    /// progress keep the job they started with.
    fn reload(&mut self, cfg: Config) {
        if cfg.state_dir != self.cfg.state_dir {
            error!("state_dir changed; that takes a restart. Keeping the running configuration");
            return;
        }
        for h in self.sources.drain(..) {
            h.abort();
        }
        let old: BTreeSet<String> = self.slots.keys().cloned().collect();
        let new: BTreeSet<String> = cfg.jobs.keys().cloned().collect();
        for gone in old.difference(&new) {
            if self.slots.get(gone).is_some_and(|s| s.running.is_none()) {
                self.slots.remove(gone);
            } else if let Some(s) = self.slots.get_mut(gone) {
                s.pending = None;
            }
        }
        info!(
            added = new.difference(&old).count(),
            removed = old.difference(&new).count(),
            jobs = new.len(),
            "configuration reloaded"
        );
        self.runner.reconfigure(&cfg);
        self.cfg = Arc::new(cfg);
        self.install(&HashMap::new());
    }

    async fn shutdown(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) {
        for h in self.sources.drain(..) {
            h.abort();
        }
        self.stop.cancel();
        let running: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.running.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        info!(
            running = running.len(),
            grace_s = self.cfg.shutdown_grace.as_secs(),
            "shutting down: no new work; letting files in flight finish"
        );
        let deadline = tokio::time::Instant::now() + self.cfg.shutdown_grace;
        loop {
            if self.slots.values().all(|s| s.running.is_none()) {
                info!("shutdown complete");
                return;
            }
            tokio::select! {
                // Still alive while files finish: /healthz stays 200.
                _ = next_beat(&mut self.beats) => {
                    if let Some(hb) = &self.heartbeat {
                        hb.beat();
                    }
                }
                Some(job) = self.done_rx.recv() => {
                    if let Some(s) = self.slots.get_mut(&job) {
                        s.running = None;
                        s.pending = None;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("shutdown grace expired; aborting transfers in flight (the next start resumes them)");
                    self.abort_all();
                    return;
                }
                msg = control.recv() => {
                    if matches!(msg, Some(Control::Abort) | Some(Control::Shutdown)) {
                        warn!("second signal: aborting now (the next start resumes what was in flight)");
                        self.abort_all();
                        return;
                    }
                }
            }
        }
    }

    fn abort_all(&mut self) {
        self.stop.cancel();
        for h in self.sources.drain(..) {
            h.abort();
        }
        for s in self.slots.values_mut() {
            if let Some(h) = s.running.take() {
                h.abort();
            }
        }
    }
}

/// The loop's next heartbeat tick; never, without a heartbeat.
/// A one-minute timer for claims deadlines, when some job has them.
fn claims_timer(cfg: &Config) -> Option<tokio::time::Interval> {
    let any = cfg.jobs.values().any(|j| {
        j.edi
            .as_ref()
            .is_some_and(|e| e.acks_for.is_empty() && e.acks != Default::default())
            || j.expect.is_some()
    });
    any.then(|| {
        let mut i = tokio::time::interval(Duration::from_secs(60));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    })
}

async fn next_beat(beats: &mut Option<tokio::time::Interval>) {
    match beats {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Fires each job at its schedule's times (UTC instants from the job's time zone).
async fn scheduler(
    jobs: Vec<Arc<Job>>,
    clock: Clock,
    tx: mpsc::UnboundedSender<(String, Trigger)>,
) {
    let mut next: BTreeSet<(DateTime<Utc>, String)> = BTreeSet::new();
    let now = clock.now();
    for job in &jobs {
        if let Some(t) = job.schedule.as_ref().and_then(|s| s.next_after(now)) {
            next.insert((t, job.name.clone()));
        }
    }
    let by_name: HashMap<&str, &Arc<Job>> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    while let Some((at, name)) = next.pop_first() {
        tokio::time::sleep_until(clock.instant_at(at)).await;
        if tx.send((name.clone(), Trigger::Schedule)).is_err() {
            return;
        }
        if let Some(sched) = by_name.get(name.as_str()).and_then(|j| j.schedule.as_ref()) {
            // From the fire time, not from now: no drift; but never into the past.
            let after = at.max(clock.now());
            if let Some(t) = sched.next_after(after) {
                next.insert((t, name));
            }
        }
    }
}
