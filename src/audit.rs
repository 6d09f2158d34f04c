//! What the agent writes to the audit trail besides file steps (which the
//! ledger records itself): the configuration it loaded, its start and
//! stop, and retention; and the export an auditor asks for.
//!
//! The chain itself lives in `ledger::audit`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::config::{AfterPull, AfterPush, Config, Flow, Server};
use crate::ledger::{AuditQuery, AuditRecord, Ledger, rfc3339};

/// A server as the trail names it: `name host:port`.
pub fn server_label(s: &Server) -> String {
    format!("{} {}:{}", s.name, s.host, s.port)
}

/// Each job's partner, as the trail names it.
pub fn partners(cfg: &Config) -> HashMap<String, String> {
    cfg.jobs
        .iter()
        .map(|(name, j)| (name.clone(), server_label(&j.server)))
        .collect()
}

/// Opens the ledger for a command that acts under `cfg`: the trail is told
/// each job's partner and records the configuration loaded.
pub fn open_ledger(cfg: &Config, actor: &str) -> anyhow::Result<Ledger> {
    let mut ledger = Ledger::open(&cfg.state_dir)?;
    ledger.set_servers(partners(cfg));
    config_loaded(&ledger, cfg, actor)?;
    Ok(ledger)
}

/// Records that `cfg` was loaded: the SHA-256 of every file it came from,
/// and each job's direction, partner and remote folder.
pub fn config_loaded(ledger: &Ledger, cfg: &Config, actor: &str) -> anyhow::Result<()> {
    let files: Vec<Value> = cfg
        .sources
        .iter()
        .map(|(p, sha)| json!({ "path": p.display().to_string(), "sha256": sha }))
        .collect();
    let jobs: Map<String, Value> = cfg
        .jobs
        .iter()
        .map(|(name, j)| {
            (
                name.clone(),
                json!({
                    "direction": j.direction.to_string(),
                    "server": j.server.name,
                    "host": format!("{}:{}", j.server.host, j.server.port),
                    "user": j.server.user,
                    "remote_dir": j.remote_dir,
                    "local_dir": j.local_dir.display().to_string(),
                }),
            )
        })
        .collect();
    let mut rec = AuditRecord::new("config_loaded");
    rec.actor = actor;
    rec.detail.insert("files".into(), files.into());
    rec.detail.insert("jobs".into(), jobs.into());
    ledger.audit(&rec)
}

/// `agent_started` / `agent_stopped`, with this process's facts.
pub fn agent_event(ledger: &Ledger, kind: &str, actor: &str) -> anyhow::Result<()> {
    let mut rec = AuditRecord::new(kind);
    rec.actor = actor;
    rec.detail.insert("pid".into(), std::process::id().into());
    rec.detail
        .insert("version".into(), env!("CARGO_PKG_VERSION").into());
    ledger.audit(&rec)
}

/// Logs the chain's head, so a copy of it lives in the journal or log files.
pub fn log_head(ledger: &Ledger) {
    match ledger.audit_head() {
        Ok(Some(h)) => info!(
            audit_seq = h.seq,
            audit_at = %h.at,
            audit_head = %h.hash,
            "audit trail head"
        ),
        Ok(None) => {}
        Err(e) => warn!("cannot read the audit trail head: {e:#}"),
    }
}

/// What one retention pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub pruned: crate::ledger::Pruned,
    /// Archive day folders removed, and the files in them.
    pub archive_days: u64,
    pub archive_files: u64,
}

/// Applies `retention`: archive day folders older than `archive`, then
/// ledger records older than `ledger`. Jobs that keep their source files
/// (`after_push: keep`, `after_pull: keep`) keep their file records: they
/// are how ferry knows those files were delivered already.
pub fn apply_retention(
    cfg: &Config,
    ledger: &Ledger,
    now: DateTime<Utc>,
) -> anyhow::Result<RetentionReport> {
    let mut report = RetentionReport::default();
    if let Some(keep) = cfg.retention.archive {
        let cutoff = (now - chrono::Duration::from_std(keep)?).date_naive();
        let root = cfg.state_dir.join("archive");
        for job in cfg.jobs.keys() {
            let (days, files) = prune_archive(ledger, &root.join(job), job, cutoff)?;
            report.archive_days += days;
            report.archive_files += files;
        }
    }
    if let Some(keep) = cfg.retention.ledger {
        let before = rfc3339(now - chrono::Duration::from_std(keep)?);
        let protected: Vec<String> = cfg
            .jobs
            .iter()
            .filter(|(_, j)| match &j.flow {
                Flow::Push { after, .. } => *after == AfterPush::Keep,
                Flow::Pull { after } => *after == AfterPull::Keep,
            })
            .map(|(n, _)| n.clone())
            .collect();
        report.pruned = ledger.prune_before(&before, crate::ledger::FERRY, &protected)?;
    }
    if report != RetentionReport::default() {
        info!(
            archive_days = report.archive_days,
            archive_files = report.archive_files,
            audit_rows = report.pruned.audit_rows,
            files = report.pruned.files,
            "retention applied"
        );
    }
    Ok(report)
}

/// Removes `dir/<YYYY-MM-DD>/` folders dated before `cutoff`, each with an
/// audit row; other entries are left alone.
fn prune_archive(
    ledger: &Ledger,
    dir: &Path,
    job: &str,
    cutoff: NaiveDate,
) -> anyhow::Result<(u64, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut days: Vec<(NaiveDate, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            NaiveDate::parse_from_str(&name, "%Y-%m-%d")
                .ok()
                .map(|d| (d, e.path()))
        })
        .filter(|(d, _)| *d < cutoff)
        .collect();
    days.sort();
    let (mut n_days, mut n_files) = (0, 0);
    for (day, path) in days {
        let files = std::fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .count() as u64;
        // The record first: a crash between the two leaves a row for a
        // folder that is still there, never a folder gone unrecorded.
        let mut rec = AuditRecord::new("archive_pruned");
        rec.job = Some(job);
        rec.detail
            .insert("folder".into(), path.display().to_string().into());
        rec.detail.insert("day".into(), day.to_string().into());
        rec.detail.insert("files".into(), files.into());
        ledger.audit(&rec)?;
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("removing the archive folder {}", path.display()))?;
        n_days += 1;
        n_files += files;
    }
    Ok((n_days, n_files))
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Csv,
}

const CSV_HEADER: [&str; 11] = [
    "seq", "at", "kind", "job", "server", "file_id", "file", "actor", "detail", "prev", "hash",
];

/// Writes the rows matching `q` as they are read and, last, the chain's
/// head: JSON as one object `{"entries": [...], "chain_head": {...}}`; CSV
/// with a header and a final row of kind `chain_head`.
pub fn export(
    out: &mut dyn Write,
    ledger: &Ledger,
    q: &AuditQuery<'_>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    let mut first = true;
    match format {
        ExportFormat::Json => writeln!(out, "{{\n  \"entries\": [")?,
        ExportFormat::Csv => writeln!(out, "{}", CSV_HEADER.join(","))?,
    }
    ledger.audit_each(q, |e| {
        match format {
            ExportFormat::Json => {
                if !first {
                    writeln!(out, ",")?;
                }
                write!(out, "    {}", serde_json::to_string(&e)?)?;
            }
            ExportFormat::Csv => {
                let fields = [
                    e.seq.to_string(),
                    e.at,
                    e.kind,
                    e.job.unwrap_or_default(),
                    e.server.unwrap_or_default(),
                    e.file_id.map(|i| i.to_string()).unwrap_or_default(),
                    e.file.unwrap_or_default(),
                    e.actor,
                    e.detail,
                    e.prev,
                    e.hash,
                ];
                writeln!(out, "{}", csv_row(&fields))?;
            }
        }
        first = false;
        Ok(())
    })?;
    // Read after the rows: a head at least as new as the last row written.
    let head = ledger.audit_head()?;
    match format {
        ExportFormat::Json => {
            if !first {
                writeln!(out)?;
            }
            writeln!(
                out,
                "  ],\n  \"chain_head\": {}\n}}",
                serde_json::to_string(&head)?
            )?;
        }
        ExportFormat::Csv => {
            if let Some(h) = head {
                let mut fields: Vec<String> = vec![String::new(); CSV_HEADER.len()];
                fields[0] = h.seq.to_string();
                fields[1] = h.at;
                fields[2] = "chain_head".into();
                fields[10] = h.hash;
                writeln!(out, "{}", csv_row(&fields))?;
            }
        }
    }
    Ok(())
}

/// One CSV record (RFC 4180): fields with a comma, quote or line break are
/// quoted, quotes doubled. Values are written exactly as recorded.
fn csv_row(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_quotes_and_newlines_are_quoted() {
        let row = csv_row(&[
            "a,b".into(),
            "say \"hi\"".into(),
            "two\nlines".into(),
            "plain".into(),
        ]);
        assert_eq!(row, "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",plain");
    }
}
