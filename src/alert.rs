//! Failure emails. After every run the job's outcome is turned into at most
//! one email per job and cause within `repeat_after` (summarising every
//! file affected), a RECOVERED notice on the first good run after a failure
//! alert, and a daily warning for certificates close to expiry.
//!
//! Emails go through a durable outbox in the ledger and a background sender
//! with backoff: a mail server that is down never blocks or fails a
//! transfer, and the mail goes out once it is back, even after a restart.
//! Alerts carry job and file names, sizes, hashes and errors; never file
//! contents, never passwords.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Direction, Job, Mail, SmtpSecurity};
use crate::ledger::Ledger;
use crate::transfer::{FileStatus, RunReport};

/// Decides what to email after runs and hands mail to the background sender.
///
/// The mail settings and the digest's job list follow SIGHUP reloads
/// ([`Alerter::reconfigure`]); mail already queued keeps the recipients it
/// was queued for.
pub struct Alerter {
    mail: Mutex<Option<Mail>>,
    /// The background sender watches this for new settings.
    mail_tx: watch::Sender<Option<Mail>>,
    /// Jobs the daily digest lists.
    jobs: Mutex<Vec<String>>,
    digest: Mutex<Option<JoinHandle<()>>>,
    ledger: Arc<Mutex<Ledger>>,
    wake: Arc<Notify>,
    /// Failed send attempts so far: `flush` stops waiting once one fails.
    failures: Arc<AtomicU64>,
}

/// The span the alerts of one run are raised in: their log lines carry the
/// run's `job`, `server` and `run_id`.
pub fn run_span(job: &Job, report: &RunReport) -> tracing::Span {
    tracing::info_span!(
        "alert",
        job = %job.name,
        server = %job.server.name,
        run_id = report.run_id
    )
}

impl Alerter {
    /// Starts the background sender on the current runtime.
    pub fn start(mail: Option<Mail>, ledger: Arc<Mutex<Ledger>>) -> Arc<Alerter> {
        let wake = Arc::new(Notify::new());
        let failures = Arc::new(AtomicU64::new(0));
        let (mail_tx, mail_rx) = watch::channel(mail.clone());
        tokio::spawn(sender(
            mail_rx,
            ledger.clone(),
            wake.clone(),
            failures.clone(),
        ));
        Arc::new(Alerter {
            mail: Mutex::new(mail),
            mail_tx,
            jobs: Mutex::new(Vec::new()),
            digest: Mutex::new(None),
            ledger,
            wake,
            failures,
        })
    }

    /// The mail settings in force now.
    fn mail(&self) -> Option<Mail> {
        self.mail.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// For the agent: sends the daily digest of `jobs` at `mail.digest`, if set.
    pub fn start_digest(self: &Arc<Self>, jobs: Vec<String>) {
        if let Ok(mut j) = self.jobs.lock() {
            *j = jobs;
        }
        let Ok(mut digest) = self.digest.lock() else {
            return;
        };
        if let Some(old) = digest.take() {
            old.abort();
        }
        let Some(mail) = self.mail() else { return };
        let Some(time) = mail.digest else { return };
        let tz = mail.timezone;
        let me = self.clone();
        *digest = Some(tokio::spawn(async move {
            loop {
                let at = next_digest_at(Utc::now(), time, tz);
                tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
                let yesterday = at.with_timezone(&tz).date_naive() - chrono::Duration::days(1);
                me.queue_digest(yesterday);
                tokio::time::sleep(Duration::from_secs(61)).await; // past the minute
            }
        }));
    }

    /// A reloaded configuration: new mail settings (SMTP server, recipients,
    /// digest time...) for everything queued from now on, and a digest of
    /// the jobs configured now.
    pub fn reconfigure(self: &Arc<Self>, mail: Option<Mail>, jobs: Vec<String>) {
        if let Ok(mut m) = self.mail.lock() {
            *m = mail.clone();
        }
        self.mail_tx.send_replace(mail);
        self.start_digest(jobs);
    }

    /// Queues the digest of `day` (in the digest's time zone): per job
    /// configured now, files transferred, bytes, failures.
    pub fn queue_digest(&self, day: chrono::NaiveDate) {
        let Some(mail) = self.mail() else { return };
        let jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        let tz = mail.timezone;
        let start = |d: chrono::NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(tz).earliest())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let (from, to) = (start(day), start(day + chrono::Duration::days(1)));
        let result = (|| -> anyhow::Result<()> {
            let ledger = self
                .ledger
                .lock()
                .map_err(|_| anyhow::anyhow!("ledger lock poisoned"))?;
            let counts = ledger.counts_between(from, to)?;
            let (mut files, mut bytes, mut failures) = (0, 0, 0);
            let mut body = format!(
                "ferry, {day} ({tz}):\n\n{:<32} {:>8} {:>14} {:>9}\n",
                "JOB", "FILES", "BYTES", "FAILURES"
            );
            for job in &jobs {
                let (f, b, x) = counts
                    .iter()
                    .find(|c| &c.0 == job)
                    .map_or((0, 0, 0), |c| (c.1, c.2, c.3));
                let _ = writeln!(body, "{job:<32} {f:>8} {b:>14} {x:>9}");
                files += f;
                bytes += b;
                failures += x;
            }
            let (accepted, rejected) = ledger.ack_counts_between(from, to)?;
            let overdue = ledger.overdue_open()?;
            if accepted + rejected + overdue > 0 {
                let _ = writeln!(
                    body,
                    "\nAcknowledgements: {accepted} accepted, {rejected} rejected; {overdue} overdue now (ferry acks --pending)"
                );
            }
            let _ = writeln!(body, "\nTo look closer: ferry history --since {day}");
            // A copy of the audit trail's head outside this machine: a
            // rewritten trail no longer contains it (ferry audit verify --head).
            if let Some(head) = ledger.audit_head()? {
                let _ = writeln!(
                    body,
                    "\nAudit trail head: row {} at {}\n  {}\nKeep this mail: `ferry audit verify --head {}` proves the trail still holds it.",
                    head.seq, head.at, head.hash, head.hash
                );
            }
            let subject = format!(
                "[ferry] DIGEST {day}: {files} file{}, {bytes} bytes, {failures} failure{}",
                if files == 1 { "" } else { "s" },
                if failures == 1 { "" } else { "s" }
            );
            ledger.queue_mail(&mail.to, &subject, &body)?;
            Ok(())
        })();
        match result {
            Ok(()) => self.wake.notify_one(),
            Err(e) => error!("cannot queue the daily digest: {e:#}"),
        }
    }

    /// Looks at one run's report and queues whatever email it calls for.
    pub fn after_run(&self, job: &Job, report: &RunReport, next_run: &str) {
        if let Some(exp) = report.certificate_expiry
            && exp - Utc::now() < chrono::Duration::days(30)
        {
            self.certificate_expiring(job, exp);
        }
        if let Err(e) = self.decide(job, report, next_run) {
            error!(job = %job.name, "cannot record the alert: {e:#}");
        }
    }

    /// Claims notices found between runs (deadlines passed, expected files
    /// missing): emailed like a run's, and nothing else is decided.
    pub fn after_deadlines(&self, job: &Job, report: &RunReport) {
        let Some(mail) = self.mail() else { return };
        let result = (|| -> anyhow::Result<()> {
            let ledger = self
                .ledger
                .lock()
                .map_err(|_| anyhow::anyhow!("ledger lock poisoned"))?;
            let mut to = mail.to.clone();
            to.extend(job.alert_to.iter().cloned());
            self.claims(&ledger, &mail, &to, job, report)
        })();
        if let Err(e) = result {
            error!(job = %job.name, "cannot record the alert: {e:#}");
        }
    }

    fn decide(&self, job: &Job, report: &RunReport, next_run: &str) -> anyhow::Result<()> {
        let Some(mail) = self.mail() else {
            return Ok(()); // no mail: failures are only logged
        };
        let mail = &mail;
        let failed: Vec<_> = report
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Failed { .. }))
            .collect();
        let ledger = self
            .ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("ledger lock poisoned"))?;
        let mut to = mail.to.clone();
        to.extend(job.alert_to.iter().cloned());
        let held: Vec<_> = report
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Held { .. }))
            .collect();
        if !held.is_empty() {
            let n = held.len();
            let subject = format!(
                "[ferry] HELD {}: {n} file{} need{} a decision",
                job.name,
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" }
            );
            let body = held_body(job, &held);
            let detail = held
                .iter()
                .enumerate()
                .map(|(i, f)| shown_name(job, i, &f.name, f.sha256.as_deref()))
                .collect::<Vec<_>>()
                .join(", ");
            self.alert(&ledger, mail, &to, job, "held", &subject, &body, &detail)?;
        } else if ledger.open_counts(&job.name)?.held == 0
            && ledger.open_alert(&job.name, "held")?.is_some()
        {
            ledger.resolve_alert(&job.name, "held")?;
        }
        self.claims(&ledger, mail, &to, job, report)?;
        if let Some(err) = &report.connection_error {
            let subject = format!(
                "[ferry] FAILED {}: cannot reach {}",
                job.name, job.server.name
            );
            let body = failure_body(job, report, &failed, Some(err), next_run);
            self.alert(&ledger, mail, &to, job, "connection", &subject, &body, err)?;
        } else if !failed.is_empty() {
            let n = failed.len();
            let subject = format!(
                "[ferry] FAILED {}: {n} file{} not {}",
                job.name,
                if n == 1 { "" } else { "s" },
                match job.direction {
                    Direction::Push => "delivered",
                    Direction::Pull => "downloaded",
                }
            );
            let body = failure_body(job, report, &failed, None, next_run);
            let detail = failed
                .iter()
                .enumerate()
                .map(|(i, f)| shown_name(job, i, &f.name, f.sha256.as_deref()))
                .collect::<Vec<_>>()
                .join(", ");
            self.alert(&ledger, mail, &to, job, "files", &subject, &body, &detail)?;
        } else if proves_recovery(job, report) {
            let resolved = ledger.resolve_alerts(&job.name)?;
            if !resolved.is_empty() {
                let subject = format!("[ferry] RECOVERED {}", job.name);
                let mut body = String::new();
                let _ = writeln!(
                    body,
                    "Job {} ({} {} {}) is working again.\n",
                    job.name,
                    job.direction,
                    dir_word(job),
                    job.server.name
                );
                for a in &resolved {
                    let since = DateTime::parse_from_rfc3339(&a.opened_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_else(|_| Utc::now());
                    let _ = writeln!(
                        body,
                        "It had failed ({}) since {}, for {}: {}",
                        if a.cause == "connection" {
                            "could not reach the server"
                        } else {
                            "files not transferred"
                        },
                        since.format("%Y-%m-%d %H:%M:%S UTC"),
                        human_duration(Utc::now() - since),
                        a.detail.as_deref().unwrap_or("-")
                    );
                }
                let _ = writeln!(
                    body,
                    "\nThis run: {} file(s) transferred.",
                    report.delivered()
                );
                let _ = writeln!(body, "To look closer: ferry history --job {}", job.name);
                ledger.queue_mail(&to, &subject, &body)?;
                self.wake.notify_one();
                info!(job = %job.name, "recovered; notice queued");
            }
        }
        Ok(())
    }

    /// Claims-awareness alerts: files the envelope gate rejected (critical)
    /// or held back as duplicates, and the run's acknowledgement notices.
    /// Control numbers, codes and counts only, never claim or member data.
    fn claims(
        &self,
        ledger: &Ledger,
        mail: &Mail,
        to: &[String],
        job: &Job,
        report: &RunReport,
    ) -> anyhow::Result<()> {
        let rejected: Vec<_> = report
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Rejected { .. }))
            .collect();
        if !rejected.is_empty() {
            let n = rejected.len();
            let subject = format!(
                "[ferry] CRITICAL {}: {n} file{} REJECTED by the X12 envelope checks",
                job.name,
                if n == 1 { "" } else { "s" }
            );
            let mut b = format!(
                "Job {} did not send {n} file{} to {}: they failed the X12 envelope checks
and were moved out of the outbound folder, each with a reason file beside it.

",
                job.name,
                if n == 1 { "" } else { "s" },
                job.server.name
            );
            for (i, f) in rejected.iter().enumerate() {
                if let FileStatus::Rejected { reason, moved_to } = &f.status {
                    let shown = shown_name(job, i, &f.name, f.sha256.as_deref());
                    let moved = if job.redact_file_names {
                        redact(moved_to, &f.name)
                    } else {
                        moved_to.clone()
                    };
                    let _ = writeln!(
                        b,
                        "  {shown}  {} bytes  sha256 {}
    moved to: {moved}
    why: {reason}",
                        f.bytes,
                        f.sha256.as_deref().unwrap_or("-")
                    );
                }
            }
            let _ = writeln!(
                b,
                "
Fix each file where it was produced and drop the corrected file into the outbound folder."
            );
            ledger.queue_mail(to, &subject, &b)?;
            self.wake.notify_one();
        }
        let dups: Vec<_> = report
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Duplicate { .. }))
            .collect();
        if !dups.is_empty() {
            let n = dups.len();
            let subject = format!(
                "[ferry] DUPLICATE {}: {n} file{} repeat{} control numbers already sent",
                job.name,
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" }
            );
            let mut b = format!(
                "Job {} did not send these files to {}: each repeats an interchange or group
control number sent to that partner within edi.duplicate_window. They stay
in the outbound folder.

",
                job.name, job.server.name
            );
            let mut names = Vec::new();
            for (i, f) in dups.iter().enumerate() {
                if let FileStatus::Duplicate { reason } = &f.status {
                    let shown = shown_name(job, i, &f.name, f.sha256.as_deref());
                    let reason = if job.redact_file_names {
                        redact(reason, &f.name)
                    } else {
                        reason.clone()
                    };
                    let _ = writeln!(
                        b,
                        "  {shown}
    why: {reason}"
                    );
                    names.push(shown);
                }
            }
            let _ = writeln!(
                b,
                "
If the partner really must receive it again: ferry resend {} FILE",
                job.name
            );
            self.alert(
                ledger,
                mail,
                to,
                job,
                "duplicate",
                &subject,
                &b,
                &names.join(", "),
            )?;
        } else if job.edi.is_some()
            && ledger.duplicate_names(&job.name)?.is_empty()
            && ledger.open_alert(&job.name, "duplicate")?.is_some()
        {
            ledger.resolve_alert(&job.name, "duplicate")?;
        }
        use crate::edi::NoticeKind;
        let mut groups: std::collections::BTreeMap<(NoticeKind, &str), Vec<&str>> =
            std::collections::BTreeMap::new();
        for n in &report.edi {
            if n.kind != NoticeKind::Accepted {
                groups
                    .entry((n.kind, n.job.as_str()))
                    .or_default()
                    .push(n.text.as_str());
            }
        }
        for ((kind, about), texts) in groups {
            let critical = if kind == NoticeKind::Rejected {
                "CRITICAL "
            } else {
                ""
            };
            let what = match kind {
                NoticeKind::Rejected => "acknowledgement(s) REJECTED",
                NoticeKind::Errors => {
                    "acknowledgement(s) partially accepted or accepted with errors"
                }
                NoticeKind::Overdue => "acknowledgement(s) overdue",
                NoticeKind::Orphan => "acknowledgement(s) matching nothing sent",
                NoticeKind::CountMismatch => "transaction set count(s) that do not match",
                NoticeKind::Missing => "expected file(s) that did not arrive",
                NoticeKind::Accepted => "acknowledgement(s) accepted",
            };
            let subject = format!(
                "[ferry] {critical}{} {about}: {} {what}",
                kind.as_str(),
                texts.len()
            );
            let mut b = format!(
                "Read by job {} ({} {}):

",
                job.name, job.direction, job.server.name
            );
            for t in &texts {
                let _ = writeln!(b, "  {t}");
            }
            let _ = writeln!(
                b,
                "
To look closer: ferry acks --job {about}"
            );
            ledger.queue_mail(to, &subject, &b)?;
            self.wake.notify_one();
            info!(job = %job.name, about, kind = kind.as_str(), "claims alert queued");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        ledger: &Ledger,
        mail: &Mail,
        to: &[String],
        job: &Job,
        cause: &str,
        subject: &str,
        body: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        if let Some(open) = ledger.open_alert(&job.name, cause)? {
            let last = DateTime::parse_from_rfc3339(&open.last_sent_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default();
            let window = chrono::Duration::from_std(mail.repeat_after).unwrap_or_default();
            if Utc::now() - last < window {
                ledger.alert_suppressed(open.id, detail)?;
                info!(job = %job.name, cause, "failure within repeat_after of the last email; not emailed again");
                return Ok(());
            }
            let body = format!(
                "{body}\n({} further failure(s) since the last email were not emailed.)\n",
                open.suppressed
            );
            ledger.queue_mail(to, subject, &body)?;
        } else {
            ledger.queue_mail(to, subject, body)?;
        }
        ledger.alert_sent(&job.name, cause, detail)?;
        self.wake.notify_one();
        info!(job = %job.name, cause, "failure email queued");
        Ok(())
    }

    /// A certificate that expires within 30 days: one warning a day per server.
    pub fn certificate_expiring(&self, job: &Job, not_after: DateTime<Utc>) {
        let Some(mail) = self.mail() else { return };
        let days = (not_after - Utc::now()).num_days();
        let cause = format!("certificate:{}", job.server.name);
        let result = (|| -> anyhow::Result<()> {
            let ledger = self
                .ledger
                .lock()
                .map_err(|_| anyhow::anyhow!("ledger lock poisoned"))?;
            if let Some(open) = ledger.open_alert(&job.name, &cause)? {
                let last = DateTime::parse_from_rfc3339(&open.last_sent_at)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default();
                if Utc::now() - last < chrono::Duration::days(1) {
                    return Ok(());
                }
            }
            let subject = format!(
                "[ferry] WARNING {}: certificate of {} expires in {days} days",
                job.name, job.server.name
            );
            let body = format!(
                "The TLS certificate of server {} ({}:{}) expires on {} ({days} days).\nAsk the partner for the renewed certificate; with pin_sha256 set, update the pin when they switch.\nTo see it: ferry ping {}\n",
                job.server.name,
                job.server.host,
                job.server.port,
                not_after.format("%Y-%m-%d %H:%M UTC"),
                job.server.name
            );
            let mut to = mail.to.clone();
            to.extend(job.alert_to.iter().cloned());
            ledger.queue_mail(&to, &subject, &body)?;
            ledger.alert_sent(&job.name, &cause, &format!("expires {not_after}"))?;
            Ok(())
        })();
        match result {
            Ok(()) => self.wake.notify_one(),
            Err(e) => error!("cannot queue the certificate warning: {e:#}"),
        }
    }

    /// Waits until the outbox is empty, at most `limit` (for `ferry once`,
    /// which exits afterwards; what is left is sent by the next ferry).
    pub async fn flush(&self, limit: Duration) {
        if self.mail().is_none() {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        let failed_before = self.failures.load(Ordering::SeqCst);
        self.wake.notify_one();
        loop {
            let pending = self
                .ledger
                .lock()
                .ok()
                .and_then(|l| l.outbox().ok())
                .map_or(0, |o| o.len());
            if pending == 0 {
                return;
            }
            // A failed attempt means the server is not taking mail now; the
            // sender's backoff would outlast us anyway.
            let failed = self.failures.load(Ordering::SeqCst) > failed_before;
            if failed || tokio::time::Instant::now() >= deadline {
                warn!(
                    pending,
                    "mail not sent yet; it stays queued and the next ferry run sends it"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The next `time` in `tz` strictly after `now`, DST-correct (a time that does
/// not exist that day moves to the first instant after the gap).
pub fn next_digest_at(
    now: DateTime<Utc>,
    time: chrono::NaiveTime,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let mut day = now.with_timezone(&tz).date_naive();
    loop {
        let local = day.and_time(time);
        let at = local.and_local_timezone(tz).earliest().or_else(|| {
            (local + chrono::Duration::hours(1))
                .and_local_timezone(tz)
                .earliest()
        });
        if let Some(at) = at.map(|t| t.with_timezone(&Utc))
            && at > now
        {
            return at;
        }
        day += chrono::Duration::days(1);
    }
}

/// A run that shows the job works: something moved, or a pull reached the server.
fn proves_recovery(job: &Job, report: &RunReport) -> bool {
    report.delivered() > 0
        || (job.direction == Direction::Pull && report.connection_error.is_none())
}

fn dir_word(job: &Job) -> &'static str {
    match job.direction {
        Direction::Push => "to",
        Direction::Pull => "from",
    }
}

/// A file name, or with `redact_file_names` its number and hash prefix.
fn shown_name(job: &Job, i: usize, name: &str, sha: Option<&str>) -> String {
    if job.redact_file_names {
        format!(
            "file #{} (sha256 {}…)",
            i + 1,
            sha.map(|s| &s[..s.len().min(16)]).unwrap_or("unknown")
        )
    } else {
        name.to_string()
    }
}

/// What an operator needs to decide about held files, and how to say it.
fn held_body(job: &Job, held: &[&crate::transfer::FileOutcome]) -> String {
    let mut b = String::new();
    let srv = &job.server;
    let _ = writeln!(b, "Job:         {}", job.name);
    let _ = writeln!(b, "Server:      {} ({}:{})", srv.name, srv.host, srv.port);
    let _ = writeln!(
        b,
        "\nferry cannot know whether the partner received these files, so it neither\nsends them again nor calls them delivered ({}):",
        held.len()
    );
    for (i, f) in held.iter().enumerate() {
        let shown = shown_name(job, i, &f.name, f.sha256.as_deref());
        let _ = writeln!(
            b,
            "  {shown}  {} bytes  sha256 {}",
            f.bytes,
            f.sha256.as_deref().unwrap_or("not computed")
        );
        if let FileStatus::Held { reason } = &f.status {
            let reason = if job.redact_file_names {
                redact(reason, &f.name)
            } else {
                reason.clone()
            };
            let _ = writeln!(b, "    why: {reason}");
        }
    }
    let _ = writeln!(
        b,
        "\nAsk the partner whether they have each file, then record the answer:\n  ferry confirm {job} FILE   they have it: record it delivered (and archive it)\n  ferry resend {job} FILE    they do not: send it again",
        job = job.name
    );
    b
}

fn failure_body(
    job: &Job,
    report: &RunReport,
    failed: &[&crate::transfer::FileOutcome],
    conn: Option<&str>,
    next_run: &str,
) -> String {
    let mut b = String::new();
    let srv = &job.server;
    let _ = writeln!(b, "Job:         {}", job.name);
    let _ = writeln!(b, "Server:      {} ({}:{})", srv.name, srv.host, srv.port);
    let _ = writeln!(
        b,
        "Direction:   {} ({})",
        job.direction,
        match job.direction {
            Direction::Push => format!("{} -> {}", job.local_dir.display(), job.remote_dir),
            Direction::Pull => format!("{} -> {}", job.remote_dir, job.local_dir.display()),
        }
    );
    if let Some(err) = conn {
        let _ = writeln!(
            b,
            "\nferry could not run this job, so no file moved:\n  {err}"
        );
    }
    if !failed.is_empty() {
        let _ = writeln!(b, "\nFiles not transferred ({}):", failed.len());
        for (i, f) in failed.iter().enumerate() {
            let _ = writeln!(
                b,
                "  {}  {} bytes  sha256 {}  attempts {}",
                shown_name(job, i, &f.name, f.sha256.as_deref()),
                f.bytes,
                f.sha256.as_deref().unwrap_or("not computed"),
                f.attempts
            );
            if let FileStatus::Failed { error } = &f.status {
                let error = if job.redact_file_names {
                    redact(error, &f.name)
                } else {
                    error.clone()
                };
                let _ = writeln!(b, "    last error: {error}");
            }
        }
        let _ = writeln!(
            b,
            "\nThe files stay where they were; ferry tries them again on the next run."
        );
    }
    let _ = writeln!(b, "Delivered in this run: {}", report.delivered());
    let _ = writeln!(b, "Next scheduled run: {next_run}");
    let _ = writeln!(b, "To look closer: ferry history --job {}", job.name);
    b
}

fn redact(text: &str, name: &str) -> String {
    if name.is_empty() {
        text.to_string()
    } else {
        text.replace(name, "<file name redacted>")
    }
}

fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} seconds"),
        120..=7199 => format!("{} minutes", s / 60),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Sends the outbox, oldest first; on failure waits with backoff (2 s
/// doubling to 5 min, not cut short by new mail) and tries again. Never
/// gives up while ferry runs; picks up new mail settings between messages.
async fn sender(
    mut settings: watch::Receiver<Option<Mail>>,
    ledger: Arc<Mutex<Ledger>>,
    wake: Arc<Notify>,
    failures: Arc<AtomicU64>,
) {
    loop {
        let mail = settings.borrow_and_update().clone();
        let usable = match &mail {
            None => None,
            Some(m) => match transport(m) {
                Ok(t) => Some((m, t)),
                Err(e) => {
                    error!("mail is configured but cannot be used: {e:#}; alerts are only logged");
                    None
                }
            },
        };
        let Some((mail, transport)) = usable else {
            // Nothing to send with until a reload brings usable settings.
            if settings.changed().await.is_err() {
                return;
            }
            continue;
        };
        let mut delay = Duration::from_secs(2);
        loop {
            match settings.has_changed() {
                Ok(false) => {}
                Ok(true) => break,
                // The alerter is gone (ferry is exiting); the outbox is
                // durable and the next ferry sends what is left.
                Err(_) => return,
            }
            let queued = ledger
                .lock()
                .ok()
                .and_then(|l| l.outbox().ok())
                .unwrap_or_default();
            if queued.is_empty() {
                tokio::select! {
                    _ = wake.notified() => continue,
                    // New settings (marked seen): the outer loop takes them.
                    _ = settings.changed() => break,
                }
            }
            let mut failed = false;
            for m in queued {
                match send(&transport, mail, &m).await {
                    Ok(()) => {
                        info!(subject = %m.subject, "alert email sent");
                        if let Ok(l) = ledger.lock() {
                            let _ = l.mail_sent(m.id);
                        }
                        delay = Duration::from_secs(2);
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        error!(subject = %m.subject, attempt = m.attempts + 1, "cannot send alert email: {msg}; retrying in {}s", delay.as_secs());
                        if let Ok(l) = ledger.lock() {
                            let _ = l.mail_failed(m.id, &msg);
                        }
                        failures.fetch_add(1, Ordering::SeqCst);
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                // New mail does not cut the backoff short: it would fail the
                // same way. Only new settings do.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = settings.changed() => break,
                }
                delay = (delay * 2).min(Duration::from_secs(300));
            }
        }
    }
}

fn transport(mail: &Mail) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let mut params = TlsParameters::builder(mail.host.clone());
    if let Some(ca) = &mail.ca_file {
        let pem = crate::config::files::read_bounded(
            ca,
            "smtp ca_file",
            crate::config::files::MAX_PEM_BYTES,
        )
        .map_err(anyhow::Error::msg)?;
        params = params.add_root_certificate(Certificate::from_pem(&pem)?);
    }
    let tls = match mail.security {
        // Required, never opportunistic: a server without STARTTLS is an error.
        SmtpSecurity::Starttls => Tls::Required(params.build_rustls()?),
        SmtpSecurity::Tls => Tls::Wrapper(params.build_rustls()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.clone())
        .port(mail.port)
        .timeout(Some(mail.timeout))
        .tls(tls);
    if let Some(user) = &mail.user {
        let pass = mail
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        b = b.credentials(Credentials::new(user.clone(), pass));
    }
    Ok(b.build())
}

async fn send(
    t: &AsyncSmtpTransport<Tokio1Executor>,
    mail: &Mail,
    m: &crate::ledger::OutboxMail,
) -> anyhow::Result<()> {
    let mut msg = Message::builder()
        .from(mail.from.parse::<Mailbox>()?)
        .subject(m.subject.clone());
    for to in &m.recipients {
        msg = msg.to(to.parse::<Mailbox>()?);
    }
    let msg = msg.body(m.body.clone())?;
    // Bounded even if the server accepts the connection and then stalls.
    tokio::time::timeout(mail.timeout * 2, t.send(msg))
        .await
        .map_err(|_| anyhow::anyhow!("SMTP timed out after {}s", (mail.timeout * 2).as_secs()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn digest_time_is_the_next_local_hh_mm() {
        let tz = chrono_tz::America::New_York;
        let t = chrono::NaiveTime::from_hms_opt(7, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 11, 0, 0).unwrap(); // 06:00 EST
        assert_eq!(
            next_digest_at(now, t, tz),
            Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
        );
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(); // exactly 07:00: the next day
        assert_eq!(
            next_digest_at(now, t, tz),
            Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
        );
        // 02:30 does not exist on the spring-forward day: the first instant after the gap.
        let t = chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).unwrap();
        let at = next_digest_at(now, t, tz).with_timezone(&tz);
        assert_eq!(at.date_naive().to_string(), "2026-03-08");
    }
}
