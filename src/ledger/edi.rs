//! The ledger's claims-awareness records: interchanges sent with their
//! groups, sets and claim digests; acknowledgement statuses; files the gate
//! blocked and operators' overrides. Codes and control numbers only.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Ledger, now, rfc3339};
use crate::edi::Interchange;

/// A transaction set sent, with its acknowledgement state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetRow {
    #[serde(skip)]
    pub id: i64,
    pub st01: String,
    pub st02: String,
    pub claims: u64,
    /// From the 999's IK5.
    pub ack_status: Option<String>,
    pub ack_codes: Option<String>,
    /// From the 277CA, rolled up over its claims.
    pub ca_status: Option<String>,
    pub ca_accepted: Option<u64>,
    pub ca_rejected: Option<u64>,
    pub ca_at: Option<String>,
    #[serde(skip)]
    pub ca_overdue_at: Option<String>,
}

/// A functional group sent, with its 999 state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    #[serde(skip)]
    pub id: i64,
    pub gs01: String,
    pub gs06: String,
    /// Transaction sets in the group (GE01).
    pub sets_count: u64,
    /// The 999's AK9.
    pub ack_status: Option<String>,
    pub ack_codes: Option<String>,
    /// AK902: sets the partner counted.
    pub ack_included: Option<u64>,
    pub ack_accepted: Option<u64>,
    pub ack_at: Option<String>,
    #[serde(skip)]
    pub ack_overdue_at: Option<String>,
    pub sets: Vec<SetRow>,
}

/// An interchange a push job recorded, with everything matched to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterchangeRow {
    #[serde(skip)]
    pub id: i64,
    pub job: String,
    pub server: String,
    pub file: String,
    pub isa06: String,
    pub isa08: String,
    pub isa13: String,
    pub isa14: String,
    pub isa15: String,
    pub sent_at: Option<String>,
    pub ta1_status: Option<String>,
    pub ta1_code: Option<String>,
    pub ta1_at: Option<String>,
    #[serde(skip)]
    pub ta1_overdue_at: Option<String>,
    pub groups: Vec<GroupRow>,
}

/// A group matched by a 999: its ids, and how many sets we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMatch {
    pub group_id: i64,
    pub interchange_id: i64,
    pub sets: u64,
}

/// Which overdue flag to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Ta1(i64),
    Ack999(i64),
    Ca277(i64),
}

fn in_list(jobs: &[String]) -> String {
    serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into())
}

impl Ledger {
    /// Records the envelope of a file a push job is about to send (once per file record).
    pub fn record_interchange(
        &self,
        job: &str,
        server: &str,
        file_id: i64,
        file: &str,
        sha256: &str,
        ic: &Interchange,
    ) -> anyhow::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT id FROM edi_interchanges WHERE file_id = ?1",
                [file_id],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO edi_interchanges (job, server, file_id, file, sha256, isa05, isa06, isa07,
                                           isa08, isa13, isa14, isa15, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                job,
                server,
                file_id,
                file,
                sha256,
                ic.isa05,
                ic.isa06,
                ic.isa07,
                ic.isa08,
                ic.isa13,
                ic.isa14,
                ic.isa15,
                now()
            ],
        )?;
        let ic_id = tx.last_insert_rowid();
        for g in &ic.groups {
            tx.execute(
                "INSERT INTO edi_groups (interchange_id, gs01, gs02, gs03, gs06, gs08, sets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    ic_id,
                    g.gs01,
                    g.gs02,
                    g.gs03,
                    g.gs06,
                    g.gs08,
                    g.sets.len() as u64
                ],
            )?;
            let g_id = tx.last_insert_rowid();
            for s in &g.sets {
                tx.execute(
                    "INSERT INTO edi_sets (group_id, st01, st02, st03, bht03, claims)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![g_id, s.st01, s.st02, s.st03, s.bht03, s.claims],
                )?;
                let s_id = tx.last_insert_rowid();
                for c in &s.claim_ids {
                    tx.execute(
                        "INSERT INTO edi_claims (set_id, claim) VALUES (?1, ?2)",
                        params![s_id, c],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What an earlier interchange to `server` shares with `ic`, if one was
    /// sent at or after `since` or is on its way now: in words, with the
    /// control numbers (for the report and the alert).
    pub fn duplicate_of(
        &self,
        server: &str,
        ic: &Interchange,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Option<String>> {
        // On its way: any state but failed (a held file may have reached the partner).
        // (A file record retention pruned was finished: only sent_at counts then.)
        let live = "(i.sent_at >= ?2 OR (i.sent_at IS NULL AND f.state NOT IN ('failed', 'done')))";
        let hit: Option<Option<String>> = self
            .conn
            .query_row(
                &format!(
                    "SELECT i.sent_at FROM edi_interchanges i LEFT JOIN files f ON f.id = i.file_id
                     WHERE i.server = ?1 AND {live} AND i.isa06 = ?3 AND i.isa08 = ?4 AND i.isa13 = ?5
                     ORDER BY i.id DESC LIMIT 1"
                ),
                params![server, rfc3339(since), ic.isa06, ic.isa08, ic.isa13],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(at) = hit {
            return Ok(Some(format!(
                "interchange control number ISA13 {} (ISA06/ISA08 the same) {}",
                ic.isa13,
                at.map_or("is being sent".to_string(), |t| format!(
                    "was sent to {server} at {t}"
                ))
            )));
        }
        for g in &ic.groups {
            let hit: Option<Option<String>> = self
                .conn
                .query_row(
                    &format!(
                        "SELECT i.sent_at FROM edi_groups g
                         JOIN edi_interchanges i ON i.id = g.interchange_id
                         LEFT JOIN files f ON f.id = i.file_id
                         WHERE i.server = ?1 AND {live} AND g.gs01 = ?3 AND g.gs02 = ?4
                           AND g.gs03 = ?5 AND g.gs06 = ?6
                         ORDER BY i.id DESC LIMIT 1"
                    ),
                    params![server, rfc3339(since), g.gs01, g.gs02, g.gs03, g.gs06],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(at) = hit {
                return Ok(Some(format!(
                    "group control number GS06 {} (GS01 {}, GS02/GS03 the same) {}",
                    g.gs06,
                    g.gs01,
                    at.map_or("is being sent".to_string(), |t| format!(
                        "was sent to {server} at {t}"
                    ))
                )));
            }
        }
        Ok(None)
    }

    /// Whether the envelope of push file `file_id` is recorded.
    pub fn has_interchange(&self, file_id: i64) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM edi_interchanges WHERE file_id = ?1",
            [file_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// The push job and ISA13 of interchange `id`.
    pub fn interchange_job(&self, id: i64) -> anyhow::Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT job, isa13 FROM edi_interchanges WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// A delivered push file's interchange counts as sent from now on.
    pub(super) fn mark_interchange_sent(
        tx: &rusqlite::Transaction<'_>,
        file_id: i64,
        at: &str,
    ) -> anyhow::Result<()> {
        tx.prepare_cached(
            "UPDATE edi_interchanges SET sent_at = ?2 WHERE file_id = ?1 AND sent_at IS NULL",
        )?
        .execute(params![file_id, at])?;
        Ok(())
    }

    /// Records a file the gate blocked (`invalid` or `duplicate`).
    pub fn record_blocked(
        &self,
        job: &str,
        file: &str,
        sha256: &str,
        kind: &str,
        reason: &str,
        moved_to: Option<&str>,
    ) -> anyhow::Result<()> {
        // A duplicate still in outbound is recorded once, not once per run.
        if kind == "duplicate" {
            let known: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM edi_blocked WHERE job = ?1 AND file = ?2 AND sha256 = ?3
                 AND kind = 'duplicate' AND override_at IS NULL",
                params![job, file, sha256],
                |r| r.get(0),
            )?;
            if known > 0 {
                return Ok(());
            }
        }
        // The block, its event and its audit row commit together.
        let tx = self.write_tx()?;
        let t = now();
        tx.execute(
            "INSERT INTO edi_blocked (job, file, sha256, kind, reason, at, moved_to)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job, file, sha256, kind, reason, t, moved_to],
        )?;
        self.event_in(
            &tx,
            &t,
            job,
            None,
            None,
            &format!("edi_{kind}"),
            Some(&format!("{file} (sha256 {sha256}): {reason}")),
            None,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The open duplicate block of `file` in `job`: `(id, sha256)`.
    pub fn duplicate_block(&self, job: &str, file: &str) -> anyhow::Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, sha256 FROM edi_blocked WHERE job = ?1 AND file = ?2
                 AND kind = 'duplicate' AND override_at IS NULL ORDER BY id DESC LIMIT 1",
                params![job, file],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Names of a job's files blocked as duplicates and not overridden.
    pub fn duplicate_names(&self, job: &str) -> anyhow::Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT file FROM edi_blocked WHERE job = ?1 AND kind = 'duplicate'
             AND override_at IS NULL ORDER BY file",
        )?;
        let rows = st.query_map([job], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `ferry resend JOB FILE` on a duplicate-blocked file: the next run
    /// sends it. Recorded with the operator's OS user (and in the audit trail).
    pub fn override_duplicate(&self, id: i64, job: &str, user: &str) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        let t = now();
        let (file, sha): (String, String) = tx.query_row(
            "SELECT file, sha256 FROM edi_blocked WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "UPDATE edi_blocked SET override_by = ?2, override_at = ?3 WHERE id = ?1",
            params![id, format!("by {user}"), t],
        )?;
        self.event_in(
            &tx,
            &t,
            job,
            None,
            None,
            "edi_duplicate_override",
            Some(&format!(
                "{file} (sha256 {sha}): send although it repeats control numbers"
            )),
            Some(user),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A file of this name passed the gate: earlier duplicate blocks of the
    /// name are closed (a corrected file replaced the blocked one).
    pub fn close_duplicate_blocks(&self, job: &str, file: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE edi_blocked SET override_at = ?3, override_by = 'superseded by a file that passed'
             WHERE job = ?1 AND file = ?2 AND kind = 'duplicate' AND override_at IS NULL",
            params![job, file, now()],
        )?;
        Ok(())
    }

    /// Who allowed this exact file (name and content) to go out although it
    /// repeats control numbers, if anyone did and it has not been sent since.
    pub fn duplicate_override(
        &self,
        job: &str,
        file: &str,
        sha256: &str,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT override_by FROM edi_blocked WHERE job = ?1 AND file = ?2 AND sha256 = ?3
                 AND kind = 'duplicate' AND override_at IS NOT NULL
                 AND override_by NOT LIKE 'superseded%' ORDER BY id DESC LIMIT 1",
                params![job, file, sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Notes on the interchange of `file_id` that an operator let it go out as a duplicate.
    pub fn mark_override(&self, file_id: i64, by: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE edi_interchanges SET override_by = ?2 WHERE file_id = ?1",
            params![file_id, by],
        )?;
        Ok(())
    }

    /// Whether an acknowledgement file (a pull record) was read already.
    pub fn ack_read(&self, file_id: i64) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM edi_acks WHERE file_id = ?1",
            [file_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_ack(
        &self,
        job: &str,
        file_id: i64,
        file: &str,
        kind: &str,
        interchange_id: Option<i64>,
        outcome: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO edi_acks (job, file_id, file, kind, received_at, interchange_id, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![job, file_id, file, kind, now(), interchange_id, outcome, detail],
        )?;
        Ok(())
    }

    /// The interchange a TA1 answers: ours with ISA13 = TA101, sent by one
    /// of `jobs`, the envelope mirrored (their ISA06 is our ISA08).
    pub fn ta1_target(
        &self,
        jobs: &[String],
        control: &str,
        their_isa06: &str,
        their_isa08: &str,
    ) -> anyhow::Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM edi_interchanges
                 WHERE job IN (SELECT value FROM json_each(?1)) AND isa13 = ?2
                   AND isa08 = ?3 AND isa06 = ?4 AND sent_at IS NOT NULL
                 ORDER BY sent_at DESC, id DESC LIMIT 1",
                params![in_list(jobs), control, their_isa06, their_isa08],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_ta1(&self, interchange_id: i64, status: &str, code: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE edi_interchanges SET ta1_status = ?2, ta1_code = ?3, ta1_at = ?4 WHERE id = ?1",
            params![interchange_id, status, code, now()],
        )?;
        Ok(())
    }

    /// The group a 999 answers: AK101/AK102 = our GS01/GS06, their GS02
    /// our GS03 and their GS03 our GS02.
    pub fn group_target(
        &self,
        jobs: &[String],
        gs01: &str,
        gs06: &str,
        their_gs02: &str,
        their_gs03: &str,
    ) -> anyhow::Result<Option<GroupMatch>> {
        Ok(self
            .conn
            .query_row(
                "SELECT g.id, i.id, g.sets FROM edi_groups g
                 JOIN edi_interchanges i ON i.id = g.interchange_id
                 WHERE i.job IN (SELECT value FROM json_each(?1)) AND g.gs01 = ?2 AND g.gs06 = ?3
                   AND g.gs03 = ?4 AND g.gs02 = ?5 AND i.sent_at IS NOT NULL
                 ORDER BY i.sent_at DESC, g.id DESC LIMIT 1",
                params![in_list(jobs), gs01, gs06, their_gs02, their_gs03],
                |r| {
                    Ok(GroupMatch {
                        group_id: r.get(0)?,
                        interchange_id: r.get(1)?,
                        sets: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn set_group_ack(
        &self,
        group_id: i64,
        status: &str,
        codes: &str,
        included: Option<u64>,
        accepted: Option<u64>,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE edi_groups SET ack_status = ?2, ack_codes = ?3, ack_included = ?4,
                                   ack_accepted = ?5, ack_at = ?6 WHERE id = ?1",
            params![group_id, status, codes, included, accepted, now()],
        )?;
        Ok(())
    }

    /// Records a 999's IK5 for the set `st01`/`st02` of a group; false when
    /// the group has no such set.
    pub fn set_set_ack(
        &self,
        group_id: i64,
        st01: &str,
        st02: &str,
        status: &str,
        codes: &str,
    ) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "UPDATE edi_sets SET ack_status = ?4, ack_codes = ?5
             WHERE group_id = ?1 AND st01 = ?2 AND st02 = ?3",
            params![group_id, st01, st02, status, codes],
        )?;
        Ok(n > 0)
    }

    /// The 837 set a 277CA's 2200B TRN02 names by its BHT03: `(set id, interchange id)`.
    pub fn bht_target(&self, jobs: &[String], bht03: &str) -> anyhow::Result<Option<(i64, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.id, i.id FROM edi_sets s JOIN edi_groups g ON g.id = s.group_id
                 JOIN edi_interchanges i ON i.id = g.interchange_id
                 WHERE i.job IN (SELECT value FROM json_each(?1)) AND s.bht03 = ?2
                   AND s.st01 = '837' AND i.sent_at IS NOT NULL
                 ORDER BY i.sent_at DESC, s.id DESC LIMIT 1",
                params![in_list(jobs), bht03],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// A 277CA's answer for one claim (by the SHA-256 of its CLM01); false
    /// when the set has no such claim.
    pub fn set_claim_status(
        &self,
        set_id: i64,
        claim: &str,
        status: &str,
        codes: &str,
    ) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "UPDATE edi_claims SET status = ?3, codes = ?4, at = ?5 WHERE set_id = ?1 AND claim = ?2",
            params![set_id, claim, status, codes, now()],
        )?;
        Ok(n > 0)
    }

    /// A set's claims as 277CAs answered them so far:
    /// `(accepted, accepted with errors, rejected, not answered)`.
    pub fn claim_counts(&self, set_id: i64) -> anyhow::Result<(u64, u64, u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(status = 'accepted'), 0),
                    COALESCE(SUM(status = 'accepted_with_errors'), 0),
                    COALESCE(SUM(status = 'rejected'), 0),
                    COALESCE(SUM(status IS NULL), 0)
             FROM edi_claims WHERE set_id = ?1",
            [set_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?)
    }

    /// Records a set's 277CA status and its claims accepted and rejected.
    pub fn set_claims_ack(
        &self,
        set_id: i64,
        status: &str,
        accepted: u64,
        rejected: u64,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE edi_sets SET ca_status = ?2, ca_accepted = ?3, ca_rejected = ?4, ca_at = ?5
             WHERE id = ?1",
            params![set_id, status, accepted, rejected, now()],
        )?;
        Ok(())
    }

    /// Marks an acknowledgement as overdue (its alert went out).
    pub fn mark_overdue(&self, due: Due) -> anyhow::Result<()> {
        let (sql, id) = match due {
            Due::Ta1(id) => (
                "UPDATE edi_interchanges SET ta1_overdue_at = ?2 WHERE id = ?1",
                id,
            ),
            Due::Ack999(id) => (
                "UPDATE edi_groups SET ack_overdue_at = ?2 WHERE id = ?1",
                id,
            ),
            Due::Ca277(id) => ("UPDATE edi_sets SET ca_overdue_at = ?2 WHERE id = ?1", id),
        };
        self.conn.execute(sql, params![id, now()])?;
        Ok(())
    }

    /// Interchanges recorded by `job` (every job when `None`), newest first.
    pub fn interchanges(&self, job: Option<&str>) -> anyhow::Result<Vec<InterchangeRow>> {
        self.interchanges_where("(?1 IS NULL OR job = ?1)", &[&job])
    }

    /// `job`'s interchanges sent and still missing an acknowledgement that is
    /// awaited: a TA1 (`ta1`, for ISA14 = 1), a 999 (`a999`), a 277CA (`ca`).
    pub fn interchanges_awaiting(
        &self,
        job: &str,
        ta1: bool,
        a999: bool,
        ca: bool,
    ) -> anyhow::Result<Vec<InterchangeRow>> {
        self.interchanges_where(
            "job = ?1 AND sent_at IS NOT NULL AND (
                (?2 AND isa14 = '1' AND ta1_status IS NULL)
             OR (?3 AND EXISTS (SELECT 1 FROM edi_groups g WHERE g.interchange_id = edi_interchanges.id
                                AND g.ack_status IS NULL))
             OR (?4 AND EXISTS (SELECT 1 FROM edi_groups g JOIN edi_sets s ON s.group_id = g.id
                                WHERE g.interchange_id = edi_interchanges.id AND s.st01 = '837'
                                AND s.ca_status IS NULL)))",
            &[&job, &ta1, &a999, &ca],
        )
    }

    fn interchanges_where(
        &self,
        cond: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> anyhow::Result<Vec<InterchangeRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT id, job, server, file, isa06, isa08, isa13, isa14, isa15, sent_at,
                    ta1_status, ta1_code, ta1_at, ta1_overdue_at
             FROM edi_interchanges WHERE {cond}
             ORDER BY COALESCE(sent_at, recorded_at) DESC, id DESC"
        ))?;
        let rows = st.query_map(args, |r| {
            Ok(InterchangeRow {
                id: r.get(0)?,
                job: r.get(1)?,
                server: r.get(2)?,
                file: r.get(3)?,
                isa06: r.get(4)?,
                isa08: r.get(5)?,
                isa13: r.get(6)?,
                isa14: r.get(7)?,
                isa15: r.get(8)?,
                sent_at: r.get(9)?,
                ta1_status: r.get(10)?,
                ta1_code: r.get(11)?,
                ta1_at: r.get(12)?,
                ta1_overdue_at: r.get(13)?,
                groups: Vec::new(),
            })
        })?;
        let mut out: Vec<InterchangeRow> = rows.collect::<Result<_, _>>()?;
        let mut gst = self.conn.prepare(
            "SELECT id, gs01, gs06, sets, ack_status, ack_codes, ack_included, ack_accepted,
                    ack_at, ack_overdue_at FROM edi_groups WHERE interchange_id = ?1 ORDER BY id",
        )?;
        let mut sst = self.conn.prepare(
            "SELECT id, st01, st02, claims, ack_status, ack_codes, ca_status, ca_accepted,
                    ca_rejected, ca_at, ca_overdue_at FROM edi_sets WHERE group_id = ?1 ORDER BY id",
        )?;
        for ic in &mut out {
            let groups = gst.query_map([ic.id], |r| {
                Ok(GroupRow {
                    id: r.get(0)?,
                    gs01: r.get(1)?,
                    gs06: r.get(2)?,
                    sets_count: r.get(3)?,
                    ack_status: r.get(4)?,
                    ack_codes: r.get(5)?,
                    ack_included: r.get(6)?,
                    ack_accepted: r.get(7)?,
                    ack_at: r.get(8)?,
                    ack_overdue_at: r.get(9)?,
                    sets: Vec::new(),
                })
            })?;
            ic.groups = groups.collect::<Result<_, _>>()?;
            for g in &mut ic.groups {
                let sets = sst.query_map([g.id], |r| {
                    Ok(SetRow {
                        id: r.get(0)?,
                        st01: r.get(1)?,
                        st02: r.get(2)?,
                        claims: r.get(3)?,
                        ack_status: r.get(4)?,
                        ack_codes: r.get(5)?,
                        ca_status: r.get(6)?,
                        ca_accepted: r.get(7)?,
                        ca_rejected: r.get(8)?,
                        ca_at: r.get(9)?,
                        ca_overdue_at: r.get(10)?,
                    })
                })?;
                g.sets = sets.collect::<Result<_, _>>()?;
            }
        }
        Ok(out)
    }

    /// Acknowledgements received between `from` and `to`: `(accepted, rejected)`
    /// groups and interchanges (999 AK9 and TA1), for the digest.
    pub fn ack_counts_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<(u64, u64)> {
        let (f, t) = (rfc3339(from), rfc3339(to));
        let count = |sql: &str| -> anyhow::Result<(u64, u64)> {
            self.conn
                .query_row(sql, params![f, t], |r| Ok((r.get(0)?, r.get(1)?)))
                .context("counting acknowledgements")
        };
        let g = count(
            "SELECT COALESCE(SUM(ack_status <> 'rejected'), 0), COALESCE(SUM(ack_status = 'rejected'), 0)
             FROM edi_groups WHERE ack_at >= ?1 AND ack_at < ?2",
        )?;
        let i = count(
            "SELECT COALESCE(SUM(ta1_status <> 'rejected'), 0), COALESCE(SUM(ta1_status = 'rejected'), 0)
             FROM edi_interchanges WHERE ta1_at >= ?1 AND ta1_at < ?2",
        )?;
        Ok((g.0 + i.0, g.1 + i.1))
    }

    /// Whether the expected-file alert for `job`'s window starting at `start` went out.
    pub fn expect_alerted(&self, job: &str, start: &str) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM edi_expect_alerts WHERE job = ?1 AND window_start = ?2",
            params![job, start],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub fn expect_alert_sent(&self, job: &str, start: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO edi_expect_alerts (job, window_start, alerted_at) VALUES (?1, ?2, ?3)",
            params![job, start, now()],
        )?;
        Ok(())
    }

    /// Files a pull job recorded between `from` and `to` (any state but failed).
    pub fn files_seen_between(
        &self,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM files WHERE job = ?1 AND direction = 'pull'
             AND created_at >= ?2 AND created_at < ?3",
            params![job, rfc3339(from), rfc3339(to)],
            |r| r.get(0),
        )?)
    }
}

impl Ledger {
    /// When the first interchange of `jobs` was recorded.
    pub fn first_interchange_at(&self, jobs: &[String]) -> anyhow::Result<Option<DateTime<Utc>>> {
        let t: Option<String> = self.conn.query_row(
            "SELECT MIN(recorded_at) FROM edi_interchanges WHERE job IN (SELECT value FROM json_each(?1))",
            [in_list(jobs)],
            |r| r.get(0),
        )?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Pull files of `job` placed locally since `since` whose content was
    /// not read as an acknowledgement yet: `(id, name, local path)`.
    pub fn placed_unread(
        &self,
        job: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String, String)>> {
        let mut st = self.conn.prepare(
            "SELECT f.id, f.name, f.local_path FROM files f
             WHERE f.job = ?1 AND f.direction = 'pull' AND f.state IN ('renamed', 'done')
               AND f.local_path IS NOT NULL AND f.updated_at >= ?2
               AND NOT EXISTS (SELECT 1 FROM edi_acks a WHERE a.file_id = f.id)
             ORDER BY f.id",
        )?;
        let rows = st.query_map(params![job, rfc3339(since)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Ledger {
    /// Acknowledgements reported overdue and still missing, across jobs.
    pub fn overdue_open(&self) -> anyhow::Result<u64> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM edi_interchanges WHERE ta1_overdue_at IS NOT NULL AND ta1_status IS NULL)
                  + (SELECT COUNT(*) FROM edi_groups WHERE ack_overdue_at IS NOT NULL AND ack_status IS NULL)
                  + (SELECT COUNT(*) FROM edi_sets WHERE ca_overdue_at IS NOT NULL AND ca_status IS NULL)",
            [],
            |r| r.get(0),
        )?)
    }
}
