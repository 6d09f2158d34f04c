//! The Prometheus metrics of `ferry run`. Labels are job and server names
//! only, never file names: those can carry member identifiers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

use crate::config::{Config, Direction, Job};
use crate::transfer::{Engine, RunReport};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

/// Every series `ferry run` exports, and the jobs and servers it reports on.
pub struct Metrics {
    registry: Registry,
    runs: Family<JobLabel, Counter>,
    runs_failed: Family<JobLabel, Counter>,
    files_delivered: Family<JobLabel, Counter>,
    bytes_delivered: Family<JobLabel, Counter>,
    files_failed: Family<JobLabel, Counter>,
    last_success: Family<JobLabel, Gauge>,
    files_waiting: Family<JobLabel, Gauge>,
    files_held: Family<JobLabel, Gauge>,
    sessions_open: Family<ServerLabel, Gauge>,
    login_failures: Family<ServerLabel, Counter>,
    certificate_expiry: Family<ServerLabel, Gauge>,
    outbox_pending: Gauge,
    /// Push jobs with `edi.acks`: interchanges with an acknowledgement past its deadline.
    acks_overdue: Family<JobLabel, Gauge>,
    /// The jobs and servers of the configuration now running (SIGHUP changes them).
    current: Mutex<Current>,
}

#[derive(Default)]
struct Current {
    jobs: BTreeMap<String, Arc<Job>>,
    servers: Vec<String>,
}

impl Metrics {
    /// The registry for `cfg`, with a zero for every job and server (so a
    /// dashboard sees them before their first run) and each job's last
    /// success read from the ledger.
    pub fn new(cfg: &Config, engine: &Engine) -> Metrics {
        let mut m = Metrics {
            runs: Family::default(),
            runs_failed: Family::default(),
            files_delivered: Family::default(),
            bytes_delivered: Family::default(),
            files_failed: Family::default(),
            last_success: Family::default(),
            files_waiting: Family::default(),
            files_held: Family::default(),
            sessions_open: Family::default(),
            login_failures: Family::default(),
            certificate_expiry: Family::default(),
            outbox_pending: Gauge::default(),
            acks_overdue: Family::default(),
            current: Mutex::new(Current::default()),
            registry: Registry::with_prefix("ferry"),
        };
        let registry = &mut m.registry;
        registry.register(
            "job_runs",
            "Runs of the job that ended, since the agent started",
            m.runs.clone(),
        );
        registry.register(
            "job_runs_failed",
            "Runs that ended with a failed file or could not run (connect, login, listing)",
            m.runs_failed.clone(),
        );
        registry.register(
            "job_files_delivered",
            "Files delivered (push) or placed (pull) and verified",
            m.files_delivered.clone(),
        );
        registry.register_with_unit(
            "job_delivered",
            "Bytes of the files delivered",
            Unit::Bytes,
            m.bytes_delivered.clone(),
        );
        registry.register(
            "job_files_failed",
            "Files that failed after their last attempt",
            m.files_failed.clone(),
        );
        registry.register_with_unit(
            "job_last_success_timestamp",
            "When the job's last run without a failure ended (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "job_files_waiting",
            "Files not delivered yet: in the outbound folder (push) or on their way in (pull)",
            m.files_waiting.clone(),
        );
        registry.register(
            "job_files_held",
            "Files held for an operator's ferry confirm or ferry resend",
            m.files_held.clone(),
        );
        registry.register(
            "job_acknowledgements_overdue",
            "Interchanges sent whose TA1, 999 or 277CA is past its deadline (push jobs with edi.acks)",
            m.acks_overdue.clone(),
        );
        registry.register(
            "server_sessions_open",
            "FTPS sessions open to the server now",
            m.sessions_open.clone(),
        );
        registry.register(
            "server_login_failures",
            "Logins the server refused, since the agent started",
            m.login_failures.clone(),
        );
        registry.register_with_unit(
            "server_certificate_expiry_timestamp",
            "When the server's TLS certificate expires (Unix time), as last seen",
            Unit::Seconds,
            m.certificate_expiry.clone(),
        );
        registry.register(
            "outbox_mails_pending",
            "Alert emails queued and not yet sent",
            m.outbox_pending.clone(),
        );
        m.reconfigure(cfg);
        for name in cfg.jobs.keys() {
            match engine.last_success(name) {
                Ok(Some(t)) => {
                    m.last_success.get_or_create(&job(name)).set(t.timestamp());
                }
                Ok(None) => {}
                Err(e) => warn!(job = %name, "cannot read the last successful run: {e:#}"),
            }
        }
        m
    }

    /// The jobs and servers to report on from now on; series of jobs that
    /// are gone stop being exported (their counters restart if they come back).
    pub fn reconfigure(&self, cfg: &Config) {
        let mut cur = self.current.lock().expect("metrics lock");
        for gone in cur.jobs.keys().filter(|j| !cfg.jobs.contains_key(*j)) {
            let l = job(gone);
            for f in [
                &self.runs,
                &self.runs_failed,
                &self.files_delivered,
                &self.bytes_delivered,
                &self.files_failed,
            ] {
                f.remove(&l);
            }
            for f in [
                &self.last_success,
                &self.files_waiting,
                &self.files_held,
                &self.acks_overdue,
            ] {
                f.remove(&l);
            }
        }
        for name in cfg.jobs.keys() {
            let l = job(name);
            for f in [
                &self.runs,
                &self.runs_failed,
                &self.files_delivered,
                &self.bytes_delivered,
                &self.files_failed,
            ] {
                let _ = f.get_or_create(&l);
            }
        }
        for (name, j) in &cfg.jobs {
            if j.direction == Direction::Push {
                let _ = self.acks_overdue.get_or_create(&job(name));
            }
        }
        for s in cfg.servers.keys() {
            let _ = self.sessions_open.get_or_create(&server(s));
            let _ = self.login_failures.get_or_create(&server(s));
        }
        cur.jobs = cfg
            .jobs
            .iter()
            .map(|(n, j)| (n.clone(), Arc::new(j.clone())))
            .collect();
        cur.servers = cfg.servers.keys().cloned().collect();
    }

    /// Counts one run that ended.
    pub fn after_run(&self, report: &RunReport) {
        let l = job(&report.job);
        self.runs.get_or_create(&l).inc();
        self.files_delivered
            .get_or_create(&l)
            .inc_by(report.delivered() as u64);
        self.bytes_delivered
            .get_or_create(&l)
            .inc_by(report.bytes());
        self.files_failed
            .get_or_create(&l)
            .inc_by(report.failed() as u64);
        if report.failed() > 0 || report.connection_error.is_some() {
            self.runs_failed.get_or_create(&l).inc();
        } else {
            self.last_success
                .get_or_create(&l)
                .set(chrono::Utc::now().timestamp());
        }
    }

    /// Reads the gauges that live elsewhere (the ledger, the outbound
    /// folders, the engine's sessions). Blocking: call it off the async threads.
    ///
    /// The job list stays locked for the whole refresh: a reload
    /// ([`Metrics::reconfigure`]) waits for it, so a refresh that began with
    /// the old jobs cannot bring back the series of a job the reload removed.
    pub fn refresh(&self, engine: &Engine) {
        let cur = self.current.lock().expect("metrics lock");
        let (jobs, servers) = (cur.jobs.values().collect::<Vec<_>>(), &cur.servers);
        for s in servers {
            let l = server(s);
            self.sessions_open
                .get_or_create(&l)
                .set(engine.sessions_open(s) as i64);
            let counter = self.login_failures.get_or_create(&l);
            let seen = engine.login_failures(s);
            counter.inc_by(seen.saturating_sub(counter.get()));
            if let Some(exp) = engine.certificate_expiry(s) {
                self.certificate_expiry
                    .get_or_create(&l)
                    .set(exp.timestamp());
            }
        }
        let Ok(ledger) = engine.ledger.lock() else {
            return;
        };
        for j in &jobs {
            let l = job(&j.name);
            match ledger.open_counts(&j.name) {
                Ok(c) => {
                    self.files_held.get_or_create(&l).set(c.held as i64);
                    let waiting = match j.direction {
                        Direction::Push => {
                            crate::transfer::local::waiting_count(j, Some(&ledger)).unwrap_or(0)
                        }
                        Direction::Pull => c.pending,
                    };
                    self.files_waiting.get_or_create(&l).set(waiting as i64);
                }
                Err(e) => warn!(job = %j.name, "metrics: cannot read the ledger: {e:#}"),
            }
            if let (Direction::Push, Some(e)) = (j.direction, &j.edi) {
                match crate::edi::track::overdue_count(
                    &ledger,
                    &j.name,
                    &e.acks,
                    chrono::Utc::now(),
                ) {
                    Ok(n) => {
                        self.acks_overdue.get_or_create(&l).set(n as i64);
                    }
                    Err(e) => {
                        warn!(job = %j.name, "metrics: cannot read the acknowledgements: {e:#}")
                    }
                };
            }
        }
        match ledger.outbox() {
            Ok(o) => {
                self.outbox_pending.set(o.len() as i64);
            }
            Err(e) => warn!("metrics: cannot read the outbox: {e:#}"),
        }
    }

    /// OpenMetrics 1.0 text, as prometheus-client writes it.
    pub fn openmetrics(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

fn job(name: &str) -> JobLabel {
    JobLabel {
        job: name.to_string(),
    }
}

fn server(name: &str) -> ServerLabel {
    ServerLabel {
        server: name.to_string(),
    }
}

/// OpenMetrics text rewritten as the Prometheus text format 0.0.4, for
/// scrapers that do not ask for OpenMetrics (curl, promtool): a counter's
/// HELP and TYPE name its `_total` samples, and `# UNIT` and `# EOF` go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_help_and_type_after_their_total_samples() {
        let om = "# HELP ferry_job_runs Runs.\n# TYPE ferry_job_runs counter\nferry_job_runs_total{job=\"a\"} 1\n# HELP ferry_x_seconds X.\n# TYPE ferry_x_seconds gauge\n# UNIT ferry_x_seconds seconds\nferry_x_seconds 5\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP ferry_job_runs_total Runs.\n# TYPE ferry_job_runs_total counter\nferry_job_runs_total{job=\"a\"} 1\n# HELP ferry_x_seconds X.\n# TYPE ferry_x_seconds gauge\nferry_x_seconds 5\n"
        );
    }
}
