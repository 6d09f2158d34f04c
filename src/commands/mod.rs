//! One function per command. Each returns an [`Outcome`] or an error; only
//! `main` turns those into exit codes.

mod acks;
mod audit;
mod check;
mod generate;
mod once;
mod operator;
mod ping;
mod report;
mod run;

pub use ping::PingFailed;

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::cli::{AuditCommand, Cli, Command};
use crate::config::{self, Config};
use crate::ledger::{HistoryQuery, StateLock};

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: at least one file failed to transfer.
    FilesFailed,
    /// Exit 1: `ferry audit verify` found the trail broken.
    AuditBroken,
}

/// Bad usage that clap cannot see (an unknown job name, a command not built
/// yet): exit 2, nothing transferred.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command line, writing its report to `out`.
pub fn dispatch(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let path = config::locate(cli.config);
    match cli.command {
        Command::Completions { shell } => generate::completions(shell, out),
        Command::Man { out: dir } => generate::man(dir.as_deref(), out),
        Command::Check => check::check(&path, out),
        Command::Run => {
            let cfg = load(&path)?;
            let _lock = StateLock::acquire(&cfg.state_dir, "run")?;
            run::run(&path, cfg, out)
        }
        Command::Once { jobs, force } => {
            let cfg = load(&path)?;
            known_jobs(&cfg, &jobs)?;
            let _lock = StateLock::acquire(&cfg.state_dir, "once")?;
            once::once(&cfg, &jobs, force, out)
        }
        Command::Confirm { job, file } => {
            let cfg = load(&path)?;
            known_jobs(&cfg, std::slice::from_ref(&job))?;
            operator::confirm(&cfg, &job, &file, out)
        }
        Command::Resend { job, file } => {
            let cfg = load(&path)?;
            known_jobs(&cfg, std::slice::from_ref(&job))?;
            operator::resend(&cfg, &job, &file, out)
        }
        Command::Ping { server } => {
            let cfg = load(&path)?;
            if !cfg.servers.contains_key(&server) {
                return Err(UsageError(format!(
                    "unknown server '{server}', expected one of {}",
                    names(cfg.servers.keys())
                ))
                .into());
            }
            let quirks = match crate::ledger::Ledger::open_existing(&cfg.state_dir)? {
                Some(l) => l.quirks(&server)?,
                None => Vec::new(),
            };
            ping::ping(cfg.servers[&server].clone(), quirks, out)
        }
        Command::Status { json } => {
            let cfg = load(&path)?;
            report::status(&cfg, json, out)
        }
        Command::Acks { job, pending, json } => {
            let cfg = load(&path)?;
            acks::acks(&cfg, job.as_deref(), pending, json, out)
        }
        Command::History {
            job,
            limit,
            json,
            since,
            failed,
        } => {
            let cfg = load(&path)?;
            let since = since.as_deref().map(report::parse_since).transpose()?;
            let q = HistoryQuery {
                job: job.as_deref(),
                limit,
                since,
                failed,
            };
            report::history(&cfg, &q, json, out)
        }
        Command::Audit { command } => {
            let cfg = load(&path)?;
            match command {
                AuditCommand::Verify { head, json } => {
                    audit::verify(&cfg, head.as_deref(), json, out)
                }
                AuditCommand::Export {
                    since,
                    until,
                    job,
                    format,
                } => audit::export(
                    &cfg,
                    since.as_deref(),
                    until.as_deref(),
                    job.as_deref(),
                    &format,
                    out,
                ),
            }
        }
    }
}

/// Loads and validates the configuration and starts logging as it says.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let cfg = config::load(path)?;
    crate::logging::init(&cfg.log);
    for n in &cfg.notices {
        tracing::warn!("{n}");
    }
    Ok(cfg)
}

fn known_jobs(cfg: &Config, jobs: &[String]) -> anyhow::Result<()> {
    let unknown: Vec<&str> = jobs
        .iter()
        .filter(|j| !cfg.jobs.contains_key(*j))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "unknown job{} {}, expected one of {}",
        if unknown.len() == 1 { "" } else { "s" },
        unknown
            .iter()
            .map(|j| format!("'{j}'"))
            .collect::<Vec<_>>()
            .join(", "),
        names(cfg.jobs.keys())
    ))
    .into())
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "(none configured)".to_string()
    } else {
        v.join(", ")
    }
}

/// The path as the operator should read it: relative paths stay relative.
pub(crate) fn shown(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

pub(crate) fn write_all(out: &mut dyn Write, s: &str) -> anyhow::Result<()> {
    out.write_all(s.as_bytes()).context("writing output")
}
