//! Acknowledgement tracking: an incoming file is classified by content and
//! matched to what a push job sent (TA1 by ISA13, 999 by GS01/GS06 and each
//! AK2 by ST02, 277CA by the 837's BHT03 and each claim by the digest of
//! CLM01); deadlines turn into overdue notices; `expect` windows into
//! missing-file notices. The decisions live here, the SQL in the ledger.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::ack::{self, Kind, Status};
use super::reader::{self, Envelope};
use super::{Notice, NoticeKind};
use crate::config::{AckDeadlines, Expect};
use crate::ledger::{Due, Ledger};

fn notice(kind: NoticeKind, job: &str, file: &str, text: String) -> Notice {
    Notice {
        kind,
        job: job.to_string(),
        file: Some(file.to_string()),
        text,
    }
}

fn kind_of(s: Status) -> NoticeKind {
    match s {
        Status::Accepted => NoticeKind::Accepted,
        Status::AcceptedWithErrors | Status::PartiallyAccepted => NoticeKind::Errors,
        Status::Rejected => NoticeKind::Rejected,
    }
}

/// The push job that recorded interchange `id` (for the notice).
fn job_of(ledger: &Ledger, id: i64, fallback: &str) -> String {
    ledger
        .interchange_job(id)
        .ok()
        .flatten()
        .map(|(job, _)| job)
        .unwrap_or_else(|| fallback.to_string())
}

/// Reads a file a pull job with `edi.acks_for` placed, records what it
/// acknowledges, and says what a person should hear of. A file read once
/// is not read again.
pub fn read_ack(
    ledger: &Ledger,
    pull_job: &str,
    acks_for: &[String],
    file_id: i64,
    file: &str,
    path: &Path,
) -> anyhow::Result<Vec<Notice>> {
    if ledger.ack_read(file_id)? {
        return Ok(Vec::new());
    }
    let env = match reader::read_file(path) {
        Ok(e) => e,
        Err(e) => {
            ledger.record_ack(
                pull_job,
                file_id,
                file,
                "other",
                None,
                "unread",
                &format!("cannot read: {e}"),
            )?;
            return Ok(Vec::new());
        }
    };
    let kinds = ack::kinds(&env);
    let mut out = Vec::new();
    for k in kinds {
        match k {
            Kind::Ta1 => ta1(ledger, pull_job, acks_for, file_id, file, &env, &mut out)?,
            Kind::Ack999 => ack999(ledger, pull_job, acks_for, file_id, file, &env, &mut out)?,
            Kind::Ack277ca => ca277(ledger, pull_job, acks_for, file_id, file, &env, &mut out)?,
            Kind::Remit835 | Kind::Other => {
                let detail = if env.interchanges.is_empty() {
                    "not an X12 interchange".to_string()
                } else {
                    format!(
                        "{} interchange(s), not an acknowledgement",
                        env.interchanges.len()
                    )
                };
                ledger.record_ack(
                    pull_job,
                    file_id,
                    file,
                    k.as_str(),
                    None,
                    "informational",
                    &detail,
                )?;
            }
        }
    }
    Ok(out)
}

fn ta1(
    ledger: &Ledger,
    pull_job: &str,
    acks_for: &[String],
    file_id: i64,
    file: &str,
    env: &Envelope,
    out: &mut Vec<Notice>,
) -> anyhow::Result<()> {
    for ic in &env.interchanges {
        for t in &ic.ta1 {
            let status = ack::ta1_status(&t.ack);
            let detail = format!(
                "TA1 for ISA13 {}: {} (TA104 {}, TA105 {})",
                t.control, status, t.ack, t.note
            );
            match ledger.ta1_target(acks_for, &t.control, &ic.isa06, &ic.isa08)? {
                Some(id) => {
                    ledger.set_ta1(id, status.as_str(), &t.note)?;
                    ledger.record_ack(
                        pull_job,
                        file_id,
                        file,
                        "TA1",
                        Some(id),
                        "matched",
                        &detail,
                    )?;
                    out.push(notice(
                        kind_of(status),
                        &job_of(ledger, id, pull_job),
                        file,
                        detail.clone(),
                    ));
                }
                None => {
                    ledger.record_ack(pull_job, file_id, file, "TA1", None, "orphan", &detail)?;
                    out.push(notice(
                        NoticeKind::Orphan,
                        pull_job,
                        file,
                        format!(
                            "TA1 for ISA13 {} matches no interchange sent by {}",
                            t.control,
                            acks_for.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn ack999(
    ledger: &Ledger,
    pull_job: &str,
    acks_for: &[String],
    file_id: i64,
    file: &str,
    env: &Envelope,
    out: &mut Vec<Notice>,
) -> anyhow::Result<()> {
    for ic in &env.interchanges {
        for g in &ic.groups {
            for s in &g.sets {
                let Some(r) = &s.response else { continue };
                let status = ack::response_status(r);
                let codes = r.codes.join(" ");
                let detail = format!(
                    "{} for GS01 {} GS06 {}: {} (AK9 {}, {} of {} sets accepted{})",
                    s.st01,
                    r.gs01,
                    r.gs06,
                    status,
                    if r.status.is_empty() {
                        "missing"
                    } else {
                        &r.status
                    },
                    r.accepted.map_or("?".into(), |n| n.to_string()),
                    r.included.map_or("?".into(), |n| n.to_string()),
                    if codes.is_empty() {
                        String::new()
                    } else {
                        format!(", codes {codes}")
                    }
                );
                let Some(m) = ledger.group_target(acks_for, &r.gs01, &r.gs06, &g.gs02, &g.gs03)?
                else {
                    ledger.record_ack(pull_job, file_id, file, "999", None, "orphan", &detail)?;
                    out.push(notice(
                        NoticeKind::Orphan,
                        pull_job,
                        file,
                        format!(
                            "{} for GS01 {} GS06 {} matches no group sent by {}",
                            s.st01,
                            r.gs01,
                            r.gs06,
                            acks_for.join(", ")
                        ),
                    ));
                    continue;
                };
                let push_job = job_of(ledger, m.interchange_id, pull_job);
                ledger.set_group_ack(
                    m.group_id,
                    status.as_str(),
                    &codes,
                    r.included,
                    r.accepted,
                )?;
                let mut unmatched = Vec::new();
                let mut set_notes = Vec::new();
                for x in &r.sets {
                    let st = ack::set_status(&x.status);
                    let c = x.codes.join(" ");
                    if !ledger.set_set_ack(m.group_id, &x.st01, &x.st02, st.as_str(), &c)? {
                        unmatched.push(x.st02.clone());
                    }
                    if st != Status::Accepted {
                        set_notes.push(format!(
                            "ST02 {} {}{}",
                            x.st02,
                            st,
                            if c.is_empty() {
                                String::new()
                            } else {
                                format!(" ({c})")
                            }
                        ));
                    }
                }
                let mut text = detail.clone();
                if !set_notes.is_empty() {
                    text.push_str(&format!("; {}", set_notes.join("; ")));
                }
                ledger.record_ack(
                    pull_job,
                    file_id,
                    file,
                    "999",
                    Some(m.interchange_id),
                    "matched",
                    &text,
                )?;
                out.push(notice(kind_of(status), &push_job, file, text));
                if let Some(n) = r.included
                    && n != m.sets
                {
                    out.push(notice(NoticeKind::CountMismatch, &push_job, file,
                        format!("the 999 for GS06 {} counts {n} transaction sets (AK902); ferry sent {} (GE01)", r.gs06, m.sets),
                    ));
                }
                if !unmatched.is_empty() {
                    out.push(notice(NoticeKind::Orphan, &push_job, file,
                        format!("the 999 for GS06 {} answers sets ferry did not send in that group: ST02 {}", r.gs06, unmatched.join(", ")),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn ca277(
    ledger: &Ledger,
    pull_job: &str,
    acks_for: &[String],
    file_id: i64,
    file: &str,
    env: &Envelope,
    out: &mut Vec<Notice>,
) -> anyhow::Result<()> {
    for ic in &env.interchanges {
        for g in &ic.groups {
            for s in &g.sets {
                let Some(ca) = &s.claim_ack else { continue };
                for b in &ca.batches {
                    let Some((set_id, ic_id)) = ledger.bht_target(acks_for, &b.reference)? else {
                        ledger.record_ack(
                            pull_job,
                            file_id,
                            file,
                            "277CA",
                            None,
                            "orphan",
                            "2200B TRN02 matches no 837 BHT03 sent",
                        )?;
                        out.push(notice(
                            NoticeKind::Orphan,
                            pull_job,
                            file,
                            format!(
                                "a 277CA batch (ST02 {}) matches no 837 sent by {}",
                                s.st02,
                                acks_for.join(", ")
                            ),
                        ));
                        continue;
                    };
                    let push_job = job_of(ledger, ic_id, pull_job);
                    let mut unknown = 0u64;
                    let mut statuses = Vec::new();
                    for c in &ca.claims {
                        let st = ack::claim_status(&c.categories);
                        statuses.push(st);
                        if !ledger.set_claim_status(
                            set_id,
                            &c.reference,
                            st.as_str(),
                            &c.categories.join(" "),
                        )? {
                            unknown += 1;
                        }
                    }
                    // Every 277CA so far counts: a payer may answer a batch's claims in several.
                    let (ok, with_errors, rej, open) = ledger.claim_counts(set_id)?;
                    let batch_status = if ok + with_errors + rej == 0 {
                        if statuses.is_empty() {
                            ack::claim_status(&b.categories)
                        } else {
                            ack::roll_up(statuses).unwrap_or(Status::Rejected)
                        }
                    } else {
                        ack::roll_up(
                            std::iter::repeat_n(Status::Accepted, ok.min(1) as usize)
                                .chain(std::iter::repeat_n(
                                    Status::AcceptedWithErrors,
                                    with_errors.min(1) as usize,
                                ))
                                .chain(std::iter::repeat_n(Status::Rejected, rej.min(1) as usize)),
                        )
                        .unwrap_or(Status::Rejected)
                    };
                    let acc = ok + with_errors;
                    ledger.set_claims_ack(set_id, batch_status.as_str(), acc, rej)?;
                    let text = format!(
                        "277CA for an 837 of ISA13 {}: {batch_status} ({acc} claims accepted, {rej} rejected, {open} not answered{})",
                        interchange_control(ledger, ic_id),
                        if unknown > 0 {
                            format!(", {unknown} claims ferry did not send")
                        } else {
                            String::new()
                        }
                    );
                    ledger.record_ack(
                        pull_job,
                        file_id,
                        file,
                        "277CA",
                        Some(ic_id),
                        "matched",
                        &text,
                    )?;
                    out.push(notice(kind_of(batch_status), &push_job, file, text));
                }
            }
        }
    }
    Ok(())
}

fn interchange_control(ledger: &Ledger, id: i64) -> String {
    ledger
        .interchange_job(id)
        .ok()
        .flatten()
        .map(|(_, isa13)| isa13)
        .unwrap_or_default()
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn past(sent: DateTime<Utc>, d: Option<std::time::Duration>, now: DateTime<Utc>) -> bool {
    d.and_then(|d| chrono::Duration::from_std(d).ok())
        .is_some_and(|d| sent + d <= now)
}

/// What of `job`'s acknowledgements is overdue at `now` and was not
/// reported yet: reported once (marked in the ledger), each in one notice.
pub fn overdue(
    ledger: &Ledger,
    job: &str,
    d: &AckDeadlines,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Notice>> {
    let mut out = Vec::new();
    if d.ta1.is_none() && d.ack999.is_none() && d.ca277.is_none() {
        return Ok(out);
    }
    let awaiting = ledger.interchanges_awaiting(
        job,
        d.ta1.is_some(),
        d.ack999.is_some(),
        d.ca277.is_some(),
    )?;
    for ic in awaiting {
        let Some(sent) = ic.sent_at.as_deref().and_then(parse) else {
            continue;
        };
        if ic.isa14 == "1"
            && ic.ta1_status.is_none()
            && ic.ta1_overdue_at.is_none()
            && past(sent, d.ta1, now)
        {
            ledger.mark_overdue(Due::Ta1(ic.id))?;
            out.push(notice(
                NoticeKind::Overdue,
                job,
                &ic.file,
                format!(
                    "no TA1 for ISA13 {}, sent {}",
                    ic.isa13,
                    ic.sent_at.as_deref().unwrap_or("")
                ),
            ));
        }
        for g in &ic.groups {
            if g.ack_status.is_none() && g.ack_overdue_at.is_none() && past(sent, d.ack999, now) {
                ledger.mark_overdue(Due::Ack999(g.id))?;
                out.push(notice(
                    NoticeKind::Overdue,
                    job,
                    &ic.file,
                    format!(
                        "no 999 for GS01 {} GS06 {} of ISA13 {}, sent {}",
                        g.gs01,
                        g.gs06,
                        ic.isa13,
                        ic.sent_at.as_deref().unwrap_or("")
                    ),
                ));
            }
            for s in &g.sets {
                if s.st01 == "837"
                    && s.ca_status.is_none()
                    && s.ca_overdue_at.is_none()
                    && past(sent, d.ca277, now)
                {
                    ledger.mark_overdue(Due::Ca277(s.id))?;
                    out.push(notice(
                        NoticeKind::Overdue,
                        job,
                        &ic.file,
                        format!(
                            "no 277CA for ST02 {} of GS06 {} of ISA13 {} ({} claims), sent {}",
                            s.st02,
                            g.gs06,
                            ic.isa13,
                            s.claims,
                            ic.sent_at.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Which acknowledgements of one interchange are overdue at `now` (still
/// missing past their deadline), as `ferry acks` and `ferry status` show it.
pub fn overdue_now(
    ic: &crate::ledger::InterchangeRow,
    d: &AckDeadlines,
    now: DateTime<Utc>,
) -> (bool, bool, bool) {
    let Some(sent) = ic.sent_at.as_deref().and_then(parse) else {
        return (false, false, false);
    };
    let ta1 = ic.isa14 == "1" && ic.ta1_status.is_none() && past(sent, d.ta1, now);
    let a999 = ic.groups.iter().any(|g| g.ack_status.is_none()) && past(sent, d.ack999, now);
    let ca = ic
        .groups
        .iter()
        .flat_map(|g| &g.sets)
        .any(|s| s.st01 == "837" && s.ca_status.is_none())
        && past(sent, d.ca277, now);
    (ta1, a999, ca)
}

/// Interchanges of `job` with an acknowledgement overdue at `now` (`ferry status`, the metrics).
pub fn overdue_count(
    ledger: &Ledger,
    job: &str,
    d: &AckDeadlines,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    if d.ta1.is_none() && d.ack999.is_none() && d.ca277.is_none() {
        return Ok(0);
    }
    Ok(ledger
        .interchanges_awaiting(job, d.ta1.is_some(), d.ack999.is_some(), d.ca277.is_some())?
        .iter()
        .filter(|ic| {
            let (a, b, c) = overdue_now(ic, d, now);
            a || b || c
        })
        .count() as u64)
}

/// The newest `expect` window that has closed by `now`: `(start, end)`.
pub fn last_window(e: &Expect, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let within = chrono::Duration::from_std(e.within).ok()?;
    let latest = now - within;
    // The newest tick at or before `latest`: walk forward from a little
    // before it, looking further back only when nothing is found.
    for back in [1, 24, 24 * 8, 24 * 32, 24 * 400] {
        let mut t = latest - chrono::Duration::hours(back);
        let mut last = None;
        for _ in 0..10_000 {
            match e.schedule.next_after(t) {
                Some(next) if next <= latest => {
                    last = Some(next);
                    t = next;
                }
                _ => break,
            }
        }
        if let Some(start) = last {
            return Some((start, start + within));
        }
    }
    None
}

/// A missing-file notice when the newest closed `expect` window of `job`
/// saw no file and was not reported yet.
pub fn expected_missing(
    ledger: &Ledger,
    job: &str,
    e: &Expect,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Notice>> {
    let Some((start, end)) = last_window(e, now) else {
        return Ok(None);
    };
    let key = crate::ledger::rfc3339(start);
    if ledger.expect_alerted(job, &key)? || ledger.files_seen_between(job, start, end)? > 0 {
        return Ok(None);
    }
    ledger.expect_alert_sent(job, &key)?;
    Ok(Some(Notice {
        kind: NoticeKind::Missing,
        job: job.to_string(),
        file: None,
        text: format!(
            "no file arrived between {} and {} (expect: a file within {} of each scheduled time)",
            start.format("%Y-%m-%d %H:%M UTC"),
            end.format("%Y-%m-%d %H:%M UTC"),
            crate::config::format_duration(e.within)
        ),
    }))
}
