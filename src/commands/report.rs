//! `ferry status` and `ferry history`: what the ledger knows, as a table or JSON.

use std::io::Write;

use chrono::Utc;
use serde::Serialize;

use super::{Outcome, write_all};
use crate::config::{Config, Direction};
use crate::ledger::{HistoryQuery, Ledger};

#[derive(Debug, Serialize)]
struct JobStatus {
    job: String,
    direction: Direction,
    server: String,
    /// `running` or `idle`.
    state: &'static str,
    last_run: Option<LastRun>,
    next_run: Option<String>,
    /// Files ready to go (push: in local_dir and not yet delivered; pull: begun, not finished).
    waiting: u64,
    /// Files whose last attempt failed.
    failed: u64,
    /// Files waiting for an operator's `ferry confirm` or `ferry resend`.
    held: u64,
    /// Push jobs with `edi`: files held back for repeating control numbers
    /// (they wait for `ferry resend`).
    duplicates: u64,
    /// Push jobs with `edi.acks`: interchanges with an acknowledgement past its deadline.
    acks_overdue: u64,
}

#[derive(Debug, Serialize)]
struct LastRun {
    started_at: String,
    finished_at: Option<String>,
    result: String,
    files_ok: u64,
    files_failed: u64,
    bytes: u64,
    error: Option<String>,
}

impl serde::Serialize for Direction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

pub fn status(cfg: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let ledger = Ledger::open_existing(&cfg.state_dir)?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for job in cfg.jobs.values() {
        let (last, counts) = match &ledger {
            Some(l) => (l.last_run(&job.name)?, l.open_counts(&job.name)?),
            None => (None, Default::default()),
        };
        let waiting = match job.direction {
            Direction::Push => crate::transfer::local::waiting_count(job, ledger.as_ref())?,
            Direction::Pull => counts.pending,
        };
        rows.push(JobStatus {
            job: job.name.clone(),
            direction: job.direction,
            server: job.server.name.clone(),
            state: if last.as_ref().is_some_and(|r| r.status == "running") {
                "running"
            } else {
                "idle"
            },
            last_run: last.map(|r| LastRun {
                started_at: r.started_at,
                finished_at: r.finished_at,
                result: r.status,
                files_ok: r.files_ok,
                files_failed: r.files_failed,
                bytes: r.bytes,
                error: r.error,
            }),
            next_run: job
                .schedule
                .as_ref()
                .and_then(|s| s.next_after(now))
                .map(crate::ledger::rfc3339),
            waiting,
            failed: counts.failed,
            held: counts.held,
            duplicates: match (&ledger, &job.edi) {
                (Some(l), Some(_)) if job.direction == Direction::Push => {
                    l.duplicate_names(&job.name)?
                        .iter()
                        .filter(|n| job.local_dir.join(n).exists())
                        .count() as u64
                }
                _ => 0,
            },
            acks_overdue: match (&ledger, &job.edi) {
                (Some(l), Some(e)) if job.direction == Direction::Push => {
                    crate::edi::track::overdue_count(l, &job.name, &e.acks, now)?
                }
                _ => 0,
            },
        });
    }
    if json {
        write_all(out, &(serde_json::to_string_pretty(&rows)? + "\n"))?;
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        write_all(out, "no jobs configured\n")?;
        return Ok(Outcome::Success);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.direction.as_str().to_string(),
                r.state.to_string(),
                r.last_run
                    .as_ref()
                    .map_or("never".to_string(), |l| short_time(&l.started_at)),
                r.last_run.as_ref().map_or("-".to_string(), |l| {
                    format!(
                        "{} ({} ok, {} failed)",
                        l.result, l.files_ok, l.files_failed
                    )
                }),
                r.next_run
                    .as_deref()
                    .map_or_else(|| next_without_schedule(cfg, &r.job), short_time),
                r.waiting.to_string(),
                {
                    let mut f = r.failed.to_string();
                    if r.held > 0 {
                        f.push_str(&format!(" +{} held", r.held));
                    }
                    if r.duplicates > 0 {
                        f.push_str(&format!(" +{} duplicate", r.duplicates));
                    }
                    f
                },
                r.acks_overdue.to_string(),
            ]
        })
        .collect();
    let mut header = vec![
        "JOB",
        "DIR",
        "STATE",
        "LAST RUN (UTC)",
        "RESULT",
        "NEXT RUN (UTC)",
        "WAITING",
        "FAILED",
        "ACKS OVERDUE",
    ];
    // The column only where some job awaits acknowledgements (the table is wide enough).
    let mut table = table;
    if !cfg
        .jobs
        .values()
        .any(|j| j.edi.as_ref().is_some_and(|e| e.acks_for.is_empty()))
    {
        header.pop();
        for row in &mut table {
            row.pop();
        }
    }
    write_all(out, &render_table(&header, &table, 0, Some(4)))?;
    Ok(Outcome::Success)
}

fn next_without_schedule(cfg: &Config, job: &str) -> String {
    match cfg.jobs.get(job) {
        Some(j) if j.watch() => "on file arrival".to_string(),
        _ => "only with once".to_string(),
    }
}

/// `--since`: a duration back from now (`2h`, `1d`) or a date (`2026-11-24`,
/// local midnight UTC) or an RFC 3339 instant.
pub fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    parse_when("--since", s)
}

/// A time given on the command line: a duration ago, a date, or RFC 3339.
pub fn parse_when(flag: &str, s: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    if let Ok(d) = crate::config::parse_duration(s) {
        return Ok(Utc::now() - chrono::Duration::from_std(d)?);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(super::UsageError(format!(
        "invalid {flag} '{s}', expected a duration (2h, 1d), a date (2026-11-24) or an RFC 3339 time"
    ))
    .into())
}

pub fn history(
    cfg: &Config,
    q: &HistoryQuery<'_>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let transfers = match Ledger::open_existing(&cfg.state_dir)? {
        Some(l) => l.history(q)?,
        None => Vec::new(),
    };
    if json {
        write_all(out, &(serde_json::to_string_pretty(&transfers)? + "\n"))?;
        return Ok(Outcome::Success);
    }
    if transfers.is_empty() {
        write_all(out, "no transfers recorded yet\n")?;
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = transfers
        .iter()
        .map(|t| {
            vec![
                t.started_at.as_deref().map_or("-".to_string(), short_time),
                t.job.clone(),
                t.direction.clone(),
                t.file.clone(),
                t.bytes.to_string(),
                t.status.to_string(),
                t.verified.as_str().to_string(),
                t.attempts.to_string(),
            ]
        })
        .collect();
    let mut s = render_table(
        &[
            "STARTED (UTC)",
            "JOB",
            "DIR",
            "FILE",
            "BYTES",
            "STATUS",
            "VERIFIED",
            "TRIES",
        ],
        &rows,
        3,
        Some(5),
    );
    for t in transfers.iter().filter(|t| t.error.is_some()) {
        s.push_str(&format!(
            "{} {}: {}\n",
            t.job,
            t.file,
            t.error.as_deref().unwrap_or_default()
        ));
    }
    write_all(out, &s)?;
    Ok(Outcome::Success)
}

/// `2026-11-24T01:40:20.123Z` -> `2026-11-24 01:40:20`.
pub(super) fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ")
}

/// Left-aligned columns, two spaces apart; numbers right-aligned.
/// Tables fit a terminal this wide.
const MAX_WIDTH: usize = 100;

/// Left-aligned columns, two spaces apart; numbers right-aligned. If the
/// table is wider than [`MAX_WIDTH`], column `shrink` gives way (cells cut
/// with an ellipsis). Column `status`, if any, is coloured on a terminal.
pub(super) fn render_table(
    header: &[&str],
    rows: &[Vec<String>],
    shrink: usize,
    status: Option<usize>,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    if total > MAX_WIDTH {
        widths[shrink] = widths[shrink].saturating_sub(total - MAX_WIDTH).max(12);
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            rows.iter()
                .all(|r| r[i].chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    let colour = use_colour();
    let mut s = String::new();
    let mut line = |cells: Vec<&str>, is_header: bool| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let cell = fit(cell, widths[i]);
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                l.push_str("  ");
            }
            let painted = match (
                colour && !is_header && status == Some(i),
                cell.split(' ').next(),
            ) {
                (true, Some("failed" | "FAILED")) => format!("\x1b[31m{cell}\x1b[0m"),
                (true, Some("delivered" | "ok")) => format!("\x1b[32m{cell}\x1b[0m"),
                (true, Some("pending" | "running" | "aborted")) => format!("\x1b[33m{cell}\x1b[0m"),
                _ => cell.clone(),
            };
            if numeric[i] {
                l.push_str(&" ".repeat(pad));
                l.push_str(&painted);
            } else {
                l.push_str(&painted);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.to_vec(), true);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), false);
    }
    s
}

/// Cuts `cell` to `width` characters, ending in an ellipsis when cut.
fn fit(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        cell.to_string()
    } else {
        let mut out: String = cell.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Colour only for a person at a terminal, and never with `NO_COLOR`.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
