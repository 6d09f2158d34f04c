//! `ferry once JOB...`: run the named jobs now, once each; one line per file
//! and a summary; exit 1 when any file failed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::{Outcome, write_all};
use crate::alert::Alerter;
use crate::config::Config;
use crate::ledger::Verified;
use crate::transfer::{Engine, FileStatus, RunOptions, RunReport, Trigger};

pub fn once(
    cfg: &Config,
    jobs: &[String],
    force: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let ledger = crate::audit::open_ledger(cfg, &crate::transfer::operator::os_user())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = Engine::new(cfg.state_dir.clone(), ledger);
    let alerter = rt.block_on(async { Alerter::start(cfg.mail.clone(), engine.ledger.clone()) });
    // Progress bars only for a person at a terminal.
    let bars = std::io::stdout().is_terminal().then(Bars::default);
    let mut any_failed = false;
    for name in jobs {
        let job = &cfg.jobs[name];
        let report = rt.block_on(engine.run_job(
            job,
            Trigger::Once,
            RunOptions {
                force,
                stop: None,
                progress: bars.as_ref().map(|b| b.progress()),
            },
        ));
        crate::alert::run_span(job, &report)
            .in_scope(|| alerter.after_run(job, &report, &crate::transfer::next_run_text(job)));
        // A job that could not run (connect, login, listing) fails like a file.
        any_failed |=
            report.failed() > 0 || report.blocked() > 0 || report.connection_error.is_some();
        write_all(out, &render(&report, &job.server.name))?;
        out.flush().ok();
    }
    // Give queued alerts one SMTP timeout to go out; what is left stays queued.
    if let Some(m) = &cfg.mail {
        rt.block_on(alerter.flush(m.timeout));
    }
    Ok(if any_failed {
        Outcome::FilesFailed
    } else {
        Outcome::Success
    })
}

fn render(r: &RunReport, server: &str) -> String {
    let mut s = String::new();
    let dir = r.direction.as_str();
    let _ = writeln!(
        s,
        "{} ({dir} {} {server})",
        r.job,
        if dir == "push" { "to" } else { "from" }
    );
    if let Some(e) = &r.connection_error {
        let _ = writeln!(s, "  {e}");
    }
    if r.listing_unparsed > 0 {
        let _ = writeln!(
            s,
            "  {} line(s) of the server's listing could not be read; their files were not taken (see the log)",
            r.listing_unparsed
        );
    }
    let mut skipped = 0;
    for f in &r.files {
        let (label, detail) = match &f.status {
            FileStatus::Delivered => (
                "delivered",
                format!(
                    "{:>12}  {:<5} {}",
                    human_bytes(f.bytes),
                    f.verified.as_str(),
                    f.remote_path
                ),
            ),
            FileStatus::Failed { error } => (
                "FAILED",
                format!(
                    "after {} attempt{}: {error}",
                    f.attempts,
                    if f.attempts == 1 { "" } else { "s" }
                ),
            ),
            FileStatus::NotReady => ("waiting", f.note.clone().unwrap_or_default()),
            FileStatus::Held { reason } => (
                "HELD",
                format!(
                    "{reason}; decide with: ferry confirm {job} {name} (the partner has it) or ferry resend {job} {name}",
                    job = r.job,
                    name = f.name
                ),
            ),
            FileStatus::Rejected { reason, moved_to } => (
                "REJECTED",
                format!("moved to {moved_to} (reason file beside it): {reason}"),
            ),
            FileStatus::Duplicate { reason } => (
                "DUPLICATE",
                format!(
                    "not sent: {reason}; it stays in the outbound folder (send it anyway: ferry resend {} {})",
                    r.job, f.name
                ),
            ),
            FileStatus::AlreadyDelivered { .. } => {
                skipped += 1;
                continue;
            }
            FileStatus::Superseded => continue,
        };
        let _ = writeln!(s, "  {label:<10} {}  {detail}", f.name);
        if let (FileStatus::Delivered, Some(note)) = (&f.status, &f.note) {
            let _ = writeln!(s, "  {:<10} {}  ({note})", "", f.name);
        }
    }
    for n in &r.edi {
        let file = n
            .file
            .as_deref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        let _ = writeln!(s, "  {:<10} {file}{}", n.kind.as_str(), n.text);
    }
    let delivered = r.delivered();
    let hash = r
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Delivered && f.verified == Verified::Hash)
        .count();
    let size = r
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Delivered && f.verified == Verified::Size)
        .count();
    let none = delivered - hash - size;
    let waiting = r
        .files
        .iter()
        .filter(|f| f.status == FileStatus::NotReady)
        .count();
    let _ = write!(
        s,
        "{}: {} delivered ({}; verified by hash {hash}, size {size}, not verified {none}), {} failed",
        r.job,
        delivered,
        human_bytes(r.bytes()),
        r.failed()
    );
    if waiting > 0 {
        let _ = write!(s, ", {waiting} waiting");
    }
    if r.held() > 0 {
        let _ = write!(s, ", {} held", r.held());
    }
    if r.blocked() > 0 {
        let _ = write!(s, ", {} blocked by the X12 checks", r.blocked());
    }
    if skipped > 0 {
        let _ = write!(s, ", {skipped} already delivered earlier (not sent again)");
    }
    let _ = writeln!(s, " in {:.1}s", r.duration.as_secs_f64());
    s
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        v /= 1024.0;
        unit = u;
        if v < 1024.0 {
            break;
        }
    }
    format!("{v:.1} {unit}")
}

/// Files smaller than this finish too fast for a bar to mean anything.
const BAR_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// One progress bar per large file while `ferry once` runs on a terminal.
#[derive(Default, Clone)]
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Arc<Mutex<HashMap<String, indicatif::ProgressBar>>>,
}

impl Bars {
    fn progress(&self) -> crate::transfer::Progress {
        let me = self.clone();
        crate::transfer::Progress(Arc::new(move |name: &str, done: u64, total: u64| {
            if total < BAR_MIN_BYTES {
                return;
            }
            let Ok(mut bars) = me.bars.lock() else { return };
            let bar = bars.entry(name.to_string()).or_insert_with(|| {
                let b = me.multi.add(indicatif::ProgressBar::new(total));
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {msg:<28!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message(name.to_string());
                b
            });
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
                bars.remove(name);
            }
        }))
    }
}
