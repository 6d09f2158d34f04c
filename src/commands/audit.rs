//! `ferry audit verify` and `ferry audit export`.

use std::io::Write;

use super::{Outcome, UsageError, write_all};
use crate::audit::ExportFormat;
use crate::config::Config;
use crate::ledger::{AuditQuery, Ledger, Verdict, rfc3339};

fn ledger(cfg: &Config) -> anyhow::Result<Ledger> {
    Ledger::open_existing(&cfg.state_dir)?.ok_or_else(|| {
        UsageError(format!(
            "no ledger in {} yet: there is no audit trail to check",
            super::shown(&cfg.state_dir)
        ))
        .into()
    })
}

/// Exit 0 when the chain is intact (and holds `head`, if given), 1 otherwise.
pub fn verify(
    cfg: &Config,
    head: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let ledger = ledger(cfg)?;
    let verdict = ledger.verify_audit()?;
    let held = match (&verdict, head) {
        (Verdict::Intact { .. }, Some(h)) => Some(ledger.audit_contains(h)?),
        _ => None,
    };
    let (ok, text, doc) = match &verdict {
        Verdict::Intact { rows, head: h } => {
            let mut text = match h {
                Some(h) => format!(
                    "audit trail intact: {rows} rows; head row {} at {}\n  {}\n",
                    h.seq, h.at, h.hash
                ),
                None => "audit trail intact: no rows yet\n".to_string(),
            };
            let mut ok = true;
            if let (Some(given), Some(found)) = (head, &held) {
                match found {
                    Some(seq) => text.push_str(&format!("the head {given} is row {seq}\n")),
                    None => {
                        ok = false;
                        text.push_str(&format!(
                            "BROKEN: the head {given} kept elsewhere is not in the trail: the trail was rewritten or cut after it\n"
                        ));
                    }
                }
            }
            let doc = serde_json::json!({
                "intact": ok,
                "rows": rows,
                "head": h,
                "given_head_found_at": held.flatten(),
            });
            (ok, text, doc)
        }
        Verdict::Broken { seq, why } => (
            false,
            format!("BROKEN at row {seq}: {why}\n"),
            serde_json::json!({ "intact": false, "broken_row": seq, "why": why }),
        ),
    };
    if json {
        write_all(out, &(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        write_all(out, &text)?;
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::AuditBroken
    })
}

pub fn export(
    cfg: &Config,
    since: Option<&str>,
    until: Option<&str>,
    job: Option<&str>,
    format: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let since = since
        .map(|s| super::report::parse_when("--since", s))
        .transpose()?;
    let until = until
        .map(|s| super::report::parse_when("--until", s))
        .transpose()?;
    let format = match format {
        "csv" => ExportFormat::Csv,
        _ => ExportFormat::Json,
    };
    let ledger = ledger(cfg)?;
    let q = AuditQuery {
        since: since.map(rfc3339),
        until: until.map(rfc3339),
        job,
    };
    let mut out = std::io::BufWriter::new(out);
    crate::audit::export(&mut out, &ledger, &q, format)?;
    out.flush()?;
    Ok(Outcome::Success)
}
