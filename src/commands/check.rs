//! `ferry check`: validate everything, show what would run and when.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use chrono::Utc;

use super::{Outcome, shown, write_all};
use crate::config::{self, AfterPull, Flow, Job, TlsMode};

pub fn check(path: &Path, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let cfg = config::load(path)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: valid — {} server{}, {} job{}",
        shown(&cfg.file),
        cfg.servers.len(),
        plural(cfg.servers.len()),
        cfg.jobs.len(),
        plural(cfg.jobs.len())
    );
    let _ = writeln!(
        s,
        "state_dir: {}   jobs_dir: {}   mail: {}",
        shown(&cfg.state_dir),
        shown(&cfg.jobs_dir),
        match &cfg.mail {
            Some(m) => format!("{} recipient(s) via {}:{}", m.to.len(), m.host, m.port),
            None => "not configured (failures are only logged)".to_string(),
        }
    );
    if let Some(m) = &cfg.metrics {
        let _ = writeln!(
            s,
            "metrics: http://{}/metrics and /healthz (ferry run)",
            m.listen
        );
    }
    for n in &cfg.notices {
        let _ = writeln!(s, "warning: {n}");
    }
    let now = Utc::now();
    for job in cfg.jobs.values() {
        s.push('\n');
        describe(&mut s, job, now);
    }
    write_all(out, &s)?;
    Ok(Outcome::Success)
}

fn describe(s: &mut String, job: &Job, now: chrono::DateTime<Utc>) {
    let srv = &job.server;
    let tls = match srv.tls {
        TlsMode::Explicit => "explicit TLS",
        TlsMode::Implicit => "implicit TLS",
        TlsMode::None => "NO TLS",
    };
    let _ = writeln!(s, "{}", job.name);
    let _ = writeln!(
        s,
        "  {:<9}{} {} ({}:{}, {tls})",
        job.direction.as_str(),
        match job.direction {
            config::Direction::Push => "to",
            config::Direction::Pull => "from",
        },
        srv.name,
        srv.host,
        srv.port
    );
    let _ = writeln!(s, "  local    {}", shown(&job.local_dir));
    let _ = writeln!(s, "  remote   {}", job.remote_dir);
    let _ = writeln!(
        s,
        "  files    include {}{}",
        job.filter.include.join(" "),
        if job.filter.exclude.is_empty() {
            String::new()
        } else {
            format!(", exclude {}", job.filter.exclude.join(" "))
        }
    );
    let after = match &job.flow {
        Flow::Push { after, upload, .. } => format!(
            "upload {}, after push {}",
            match upload {
                config::Upload::TempRename => "temp_rename",
                config::Upload::Direct => "direct",
            },
            match after {
                config::AfterPush::Archive => "archive",
                config::AfterPush::Delete => "delete",
                config::AfterPush::Keep => "keep",
            }
        ),
        Flow::Pull { after } => format!(
            "after pull {}",
            match after {
                AfterPull::Delete => "delete".to_string(),
                AfterPull::Keep => "keep".to_string(),
                AfterPull::Move(d) => format!("move to {d}"),
            }
        ),
    };
    let _ = writeln!(
        s,
        "  verify   {}, {after}, {} attempt{}",
        job.verify.as_str(),
        job.retry.attempts,
        plural(job.retry.attempts as usize)
    );
    if let Some(e) = &job.edi {
        let _ = writeln!(s, "  edi      {}", edi_line(e, srv.environment));
    }
    if let Some(e) = &job.expect {
        let _ = writeln!(
            s,
            "  expect   a file within {} of \"{}\" ({})",
            config::format_duration(e.within),
            e.schedule.expr,
            e.schedule.tz
        );
    }
    let watch = if job.watch() { "yes" } else { "no" };
    match &job.schedule {
        Some(sched) => {
            let _ = writeln!(
                s,
                "  schedule \"{}\" ({})   watch: {watch}",
                sched.expr, sched.tz
            );
            let next: Vec<String> = sched
                .upcoming(now, 3)
                .into_iter()
                .map(|t| {
                    t.with_timezone(&sched.tz)
                        .format("%Y-%m-%d %H:%M:%S %Z")
                        .to_string()
                })
                .collect();
            let _ = writeln!(
                s,
                "  next     {}",
                if next.is_empty() {
                    "never".to_string()
                } else {
                    next.join(", ")
                }
            );
        }
        None if job.watch() => {
            let _ = writeln!(
                s,
                "  schedule none   watch: yes (runs when a file lands in local_dir)"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  schedule none   watch: no (runs only with 'ferry once {}')",
                job.name
            );
        }
    }
}

/// A job's `edi:` settings in one line.
fn edi_line(e: &config::Edi, env: Option<config::Environment>) -> String {
    if !e.acks_for.is_empty() {
        return format!("acknowledgements for {}", e.acks_for.join(", "));
    }
    let mut parts = vec![if e.validate {
        format!(
            "envelope checks on{}",
            env.map_or(String::new(), |e| format!(" ({} server)", e.as_str()))
        )
    } else {
        "envelope checks off".to_string()
    }];
    for (k, v) in [("sender", &e.sender_id), ("receiver", &e.receiver_id)] {
        if let Some(v) = v {
            parts.push(format!("{k} {v}"));
        }
    }
    parts.push(format!(
        "duplicates refused for {}",
        config::format_duration(e.duplicate_window)
    ));
    let acks: Vec<String> = [
        ("TA1", e.acks.ta1),
        ("999", e.acks.ack999),
        ("277CA", e.acks.ca277),
    ]
    .into_iter()
    .filter_map(|(k, d)| d.map(|d| format!("{k} {}", config::format_duration(d))))
    .collect();
    if !acks.is_empty() {
        parts.push(format!("acks due within {}", acks.join(", ")));
    }
    parts.join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
