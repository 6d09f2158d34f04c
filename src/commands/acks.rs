//! `ferry acks [--job J] [--pending] [--json]`: one row per interchange sent,
//! with its TA1, 999 and 277CA status, when each arrived and what is overdue.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Outcome, UsageError, write_all};
use crate::config::{AckDeadlines, Config};
use crate::edi::ack::{self, Status};
use crate::edi::track;
use crate::ledger::{GroupRow, InterchangeRow, Ledger};

/// One acknowledgement of an interchange, as the operator reads it.
#[derive(Debug, Serialize)]
struct AckState {
    /// `accepted`, `accepted_with_errors`, `partially_accepted`, `rejected`,
    /// `pending` (awaited, not here yet) or `not_expected` (no deadline set).
    status: String,
    /// When it arrived (the newest, for several groups or sets).
    at: Option<String>,
    /// When it is (or was) due; `None` without a deadline.
    due: Option<String>,
    overdue: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    job: String,
    file: String,
    sent_at: String,
    /// ISA06, ISA08, ISA13, ISA15.
    sender_id: String,
    receiver_id: String,
    interchange_control: String,
    usage: String,
    claims: u64,
    ta1: AckState,
    #[serde(rename = "999")]
    ack999: AckState,
    #[serde(rename = "277ca")]
    ca277: AckState,
    /// TA105 when a TA1 came.
    ta1_code: Option<String>,
    /// 277CA claims accepted and rejected, over the interchange's sets.
    claims_accepted: Option<u64>,
    claims_rejected: Option<u64>,
    overdue: bool,
    pending: bool,
    groups: Vec<GroupRow>,
}

fn due_at(sent: Option<DateTime<Utc>>, d: Option<std::time::Duration>) -> Option<String> {
    let (sent, d) = (sent?, d?);
    Some(crate::ledger::rfc3339(
        sent + chrono::Duration::from_std(d).ok()?,
    ))
}

fn state(
    got: Option<Status>,
    at: Option<String>,
    awaited: bool,
    due: Option<String>,
    overdue: bool,
) -> AckState {
    let status = match got {
        Some(s) => s.as_str().to_string(),
        None if awaited => "pending".to_string(),
        None => "not_expected".to_string(),
    };
    AckState {
        status,
        at,
        due: if awaited { due } else { None },
        overdue: got.is_none() && overdue,
    }
}

fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn row(ic: InterchangeRow, d: &AckDeadlines, now: DateTime<Utc>) -> Row {
    let sent = ic.sent_at.as_deref().and_then(parse);
    let (o_ta1, o_999, o_277) = track::overdue_now(&ic, d, now);
    let sets: Vec<_> = ic.groups.iter().flat_map(|g| &g.sets).collect();
    let claims = sets.iter().map(|s| s.claims).sum();
    let g_status: Vec<Option<Status>> = ic
        .groups
        .iter()
        .map(|g| g.ack_status.as_deref().and_then(Status::parse))
        .collect();
    let got999 = if g_status.iter().all(Option::is_some) {
        ack::roll_up(g_status.into_iter().flatten())
    } else {
        None
    };
    let claim_sets: Vec<_> = sets.iter().filter(|s| s.st01 == "837").collect();
    let c_status: Vec<Option<Status>> = claim_sets
        .iter()
        .map(|s| s.ca_status.as_deref().and_then(Status::parse))
        .collect();
    let got277 = if !c_status.is_empty() && c_status.iter().all(Option::is_some) {
        ack::roll_up(c_status.into_iter().flatten())
    } else {
        None
    };
    let newest = |v: Vec<Option<&String>>| v.into_iter().flatten().max().cloned();
    let ta1 = state(
        ic.ta1_status.as_deref().and_then(Status::parse),
        ic.ta1_at.clone(),
        ic.isa14 == "1" && d.ta1.is_some(),
        due_at(sent, d.ta1),
        o_ta1,
    );
    let ack999 = state(
        got999,
        newest(ic.groups.iter().map(|g| g.ack_at.as_ref()).collect()),
        d.ack999.is_some(),
        due_at(sent, d.ack999),
        o_999,
    );
    let ca277 = state(
        got277,
        newest(claim_sets.iter().map(|s| s.ca_at.as_ref()).collect()),
        d.ca277.is_some() && !claim_sets.is_empty(),
        due_at(sent, d.ca277),
        o_277,
    );
    let answered = claim_sets.iter().any(|s| s.ca_status.is_some());
    let pending = [&ta1, &ack999, &ca277]
        .iter()
        .any(|a| a.status == "pending");
    Row {
        job: ic.job,
        file: ic.file,
        sent_at: ic.sent_at.unwrap_or_default(),
        sender_id: ic.isa06,
        receiver_id: ic.isa08,
        interchange_control: ic.isa13,
        usage: ic.isa15,
        claims,
        overdue: ta1.overdue || ack999.overdue || ca277.overdue,
        pending,
        ta1,
        ack999,
        ca277,
        ta1_code: ic.ta1_code,
        claims_accepted: answered.then(|| claim_sets.iter().filter_map(|s| s.ca_accepted).sum()),
        claims_rejected: answered.then(|| claim_sets.iter().filter_map(|s| s.ca_rejected).sum()),
        groups: ic.groups,
    }
}

pub fn acks(
    cfg: &Config,
    job: Option<&str>,
    pending: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    if let Some(j) = job {
        match cfg.jobs.get(j) {
            Some(x) if x.edi.is_some() && x.direction == crate::config::Direction::Push => {}
            Some(_) => {
                return Err(UsageError(format!(
                    "job '{j}' is not a push job with edi: settings; ferry acks shows what such jobs sent"
                ))
                .into());
            }
            None => super::known_jobs(cfg, &[j.to_string()])?,
        }
    }
    let now = Utc::now();
    let rows: Vec<Row> = match Ledger::open_existing(&cfg.state_dir)? {
        Some(l) => l
            .interchanges(job)?
            .into_iter()
            .filter(|ic| ic.sent_at.is_some())
            .map(|ic| {
                let d = cfg
                    .jobs
                    .get(&ic.job)
                    .and_then(|j| j.edi.as_ref())
                    .map(|e| e.acks)
                    .unwrap_or_default();
                row(ic, &d, now)
            })
            .filter(|r| !pending || r.pending)
            .collect(),
        None => Vec::new(),
    };
    if json {
        write_all(out, &(serde_json::to_string_pretty(&rows)? + "\n"))?;
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        write_all(
            out,
            if pending {
                "no acknowledgement is pending\n"
            } else {
                "no interchange sent yet\n"
            },
        )?;
        return Ok(Outcome::Success);
    }
    let cell = |a: &AckState| -> String {
        let when =
            a.at.as_deref()
                .map(|t| format!(" {}", super::report::short_time(t).get(5..16).unwrap_or("")))
                .unwrap_or_default();
        match a.status.as_str() {
            "not_expected" => "-".to_string(),
            "pending" if a.overdue => "OVERDUE".to_string(),
            s => format!("{s}{when}"),
        }
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                super::report::short_time(&r.sent_at),
                r.job.clone(),
                r.interchange_control.clone(),
                r.groups
                    .iter()
                    .map(|g| g.gs06.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                r.claims.to_string(),
                cell(&r.ta1),
                cell(&r.ack999),
                cell(&r.ca277),
            ]
        })
        .collect();
    write_all(
        out,
        &super::report::render_table(
            &[
                "SENT (UTC)",
                "JOB",
                "ISA13",
                "GS06",
                "CLAIMS",
                "TA1",
                "999",
                "277CA",
            ],
            &table,
            1,
            None,
        ),
    )?;
    Ok(Outcome::Success)
}
