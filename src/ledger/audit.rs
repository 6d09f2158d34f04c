//! The audit trail: a hash chain of everything an auditor asks about.
//!
//! Each row carries `prev`, the hash of the row before it, and `hash`, the
//! SHA-256 of `prev` and the row's own canonical content (its sequence
//! number, time, kind, job, server, file, actor and detail, as one JSON
//! array). Editing a row breaks its hash; deleting, inserting or reordering
//! rows breaks a `prev` link or the sequence. Rows are appended inside the
//! same write transaction as the fact they record (`BEGIN IMMEDIATE`, so two
//! processes never both extend the same head).
//!
//! A chain anyone can recompute is only as good as a copy of its head kept
//! elsewhere: the agent logs the head daily and the digest email carries it,
//! and `ferry audit verify --head H` checks that a head seen earlier is still
//! in the chain. Retention removes the oldest rows and appends a checkpoint
//! row naming the last removed row and its hash, so the rest still verifies.

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Ledger, now};

/// `prev` of the first row ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The actor of what ferry does by itself.
pub const FERRY: &str = "ferry";

/// One fact to append.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub kind: &'a str,
    pub job: Option<&'a str>,
    pub server: Option<&'a str>,
    pub file_id: Option<i64>,
    pub file: Option<&'a str>,
    /// `ferry`, or the OS user who ran an operator command.
    pub actor: &'a str,
    /// Facts of this kind of row, as a JSON object.
    pub detail: Map<String, Value>,
}

impl<'a> AuditRecord<'a> {
    pub fn new(kind: &'a str) -> Self {
        AuditRecord {
            kind,
            job: None,
            server: None,
            file_id: None,
            file: None,
            actor: FERRY,
            detail: Map::new(),
        }
    }
}

/// One row of the trail, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub job: Option<String>,
    pub server: Option<String>,
    pub file_id: Option<i64>,
    pub file: Option<String>,
    pub actor: String,
    /// A JSON object, as text (the exact text that was hashed).
    pub detail: String,
    pub prev: String,
    pub hash: String,
}

/// The newest row: what a copy kept elsewhere is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub at: String,
    pub hash: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        rows: u64,
        head: Option<ChainHead>,
    },
    /// The first row that does not fit, and why in words.
    Broken {
        seq: i64,
        why: String,
    },
}

/// Filters for an export.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    /// RFC 3339 instants, compared as text (all are UTC with milliseconds).
    pub since: Option<String>,
    pub until: Option<String>,
    pub job: Option<&'a str>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub audit_rows: u64,
    pub files: u64,
    pub events: u64,
    pub runs: u64,
    pub alerts: u64,
}

/// The hash of a row: SHA-256 of `prev`, a newline, and the canonical content.
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    prev: &str,
    seq: i64,
    at: &str,
    kind: &str,
    job: Option<&str>,
    server: Option<&str>,
    file_id: Option<i64>,
    file: Option<&str>,
    actor: &str,
    detail: &str,
) -> String {
    let content = json!([seq, at, kind, job, server, file_id, file, actor, detail]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(content.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn entry_hash(e: &AuditEntry) -> String {
    row_hash(
        &e.prev,
        e.seq,
        &e.at,
        &e.kind,
        e.job.as_deref(),
        e.server.as_deref(),
        e.file_id,
        e.file.as_deref(),
        &e.actor,
        &e.detail,
    )
}

const COLUMNS: &str = "seq, at, kind, job, server, file_id, file, actor, detail, prev, hash";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        job: r.get(3)?,
        server: r.get(4)?,
        file_id: r.get(5)?,
        file: r.get(6)?,
        actor: r.get(7)?,
        detail: r.get(8)?,
        prev: r.get(9)?,
        hash: r.get(10)?,
    })
}

/// Appends one row after the current head. Call inside a write transaction.
pub(super) fn append(conn: &Connection, rec: &AuditRecord<'_>, at: &str) -> anyhow::Result<()> {
    append_after(conn, rec, at, None).map(drop)
}

/// The chain's last row: its `seq` and `hash`.
pub(super) type Head = (i64, String);

/// [`append`], after `head` when the caller wrote the chain's last row in
/// this same transaction (one lookup fewer); returns the new head.
pub(super) fn append_after(
    conn: &Connection,
    rec: &AuditRecord<'_>,
    at: &str,
    head: Option<Head>,
) -> anyhow::Result<Head> {
    let head: Option<Head> = match head {
        Some(h) => Some(h),
        None => conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    };
    // After everything was pruned, numbering goes on from the last row ever
    // written (which the checkpoint names).
    let (last, prev) = match head {
        Some(h) => h,
        None => (0, GENESIS.to_string()),
    };
    let seq = last + 1;
    let detail = Value::Object(rec.detail.clone()).to_string();
    let hash = row_hash(
        &prev,
        seq,
        at,
        rec.kind,
        rec.job,
        rec.server,
        rec.file_id,
        rec.file,
        rec.actor,
        &detail,
    );
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, kind, job, server, file_id, file, actor, detail, prev, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        seq,
        at,
        rec.kind,
        rec.job,
        rec.server,
        rec.file_id,
        rec.file,
        rec.actor,
        detail,
        prev,
        hash
    ])
    .context("appending to the audit trail")?;
    Ok((seq, hash))
}

/// The columns of a file's row its audit rows show, in this order (a
/// macro, so statements that name them are literals built once).
macro_rules! file_facts {
    () => {
        "job, name, direction, size, sha256, verified, remote_path, local_path, state"
    };
}
pub(super) use file_facts;

/// A file's facts for its audit row, as its ledger row holds them.
pub(super) struct FileFacts {
    pub job: String,
    name: String,
    direction: String,
    size: i64,
    sha256: Option<String>,
    verified: String,
    remote_path: String,
    local_path: Option<String>,
    state: String,
}

impl FileFacts {
    /// From a row selecting [`file_facts!`].
    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileFacts> {
        Ok(FileFacts {
            job: r.get(0)?,
            name: r.get(1)?,
            direction: r.get(2)?,
            size: r.get(3)?,
            sha256: r.get(4)?,
            verified: r.get(5)?,
            remote_path: r.get(6)?,
            local_path: r.get(7)?,
            state: r.get(8)?,
        })
    }

    /// The audit row of kind `kind` about this file, with `extra` facts.
    pub(super) fn record<'a>(
        &'a self,
        file_id: i64,
        kind: &'a str,
        actor: &'a str,
        servers: &'a std::collections::HashMap<String, String>,
        extra: Map<String, Value>,
    ) -> AuditRecord<'a> {
        let mut detail = Map::new();
        detail.insert("direction".into(), self.direction.clone().into());
        detail.insert("state".into(), self.state.clone().into());
        detail.insert("size".into(), self.size.into());
        detail.insert("sha256".into(), self.sha256.clone().into());
        detail.insert("verified".into(), self.verified.clone().into());
        detail.insert("remote_path".into(), self.remote_path.clone().into());
        detail.insert("local_path".into(), self.local_path.clone().into());
        detail.extend(extra);
        AuditRecord {
            kind,
            job: Some(&self.job),
            server: servers.get(&self.job).map(String::as_str),
            file_id: Some(file_id),
            file: Some(&self.name),
            actor,
            detail,
        }
    }
}

/// A file's facts for its audit row, read from its ledger row.
pub(super) fn file_record<'a>(
    conn: &Connection,
    file_id: i64,
    kind: &'a str,
    actor: &'a str,
    servers: &'a std::collections::HashMap<String, String>,
    extra: Map<String, Value>,
    out: impl FnOnce(&AuditRecord<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let facts = conn
        .prepare_cached(concat!(
            "SELECT ",
            file_facts!(),
            " FROM files WHERE id = ?1"
        ))?
        .query_row([file_id], FileFacts::from_row)
        .with_context(|| format!("no file with id {file_id} in the ledger"))?;
    out(&facts.record(file_id, kind, actor, servers, extra))
}

impl Ledger {
    /// Appends one fact to the audit trail, in its own transaction.
    pub fn audit(&self, rec: &AuditRecord<'_>) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        append(&tx, rec, &now())?;
        tx.commit()?;
        Ok(())
    }

    /// Appends a row about one file (its facts read from the ledger), with
    /// `extra` facts of this kind (`archived_to`, `moved_to`).
    pub fn audit_file(
        &self,
        file_id: i64,
        kind: &str,
        extra: Map<String, Value>,
    ) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        let t = now();
        file_record(&tx, file_id, kind, FERRY, &self.servers, extra, |rec| {
            append(&tx, rec, &t)
        })?;
        tx.commit()?;
        Ok(())
    }

    /// The newest row, if any.
    pub fn audit_head(&self) -> anyhow::Result<Option<ChainHead>> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, at, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| {
                Ok(ChainHead {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    hash: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Checks the whole chain, oldest first, and names the first row that
    /// does not fit.
    pub fn verify_audit(&self) -> anyhow::Result<Verdict> {
        // Where retention removed the oldest rows, a checkpoint (itself in
        // the chain, so it cannot be altered unseen) says what came before.
        let mut checkpoints: Vec<(i64, String)> = Vec::new();
        {
            let mut st = self
                .conn
                .prepare("SELECT detail FROM audit WHERE kind = 'checkpoint' ORDER BY seq")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            for d in rows {
                let d: Value = serde_json::from_str(&d?).unwrap_or(Value::Null);
                if let (Some(s), Some(h)) = (d["through_seq"].as_i64(), d["through_hash"].as_str())
                {
                    checkpoints.push((s, h.to_string()));
                }
            }
        }
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let mut rows = st.query([])?;
        let mut count = 0u64;
        let mut last: Option<AuditEntry> = None;
        while let Some(r) = rows.next()? {
            let e = entry(r)?;
            match &last {
                None => {
                    let expected = if e.seq == 1 {
                        Some(GENESIS.to_string())
                    } else {
                        checkpoints
                            .iter()
                            .find(|(s, _)| *s == e.seq - 1)
                            .map(|(_, h)| h.clone())
                    };
                    match expected {
                        None => {
                            return Ok(Verdict::Broken {
                                seq: e.seq,
                                why: format!(
                                    "the trail starts at row {} but no checkpoint records rows 1 to {} as pruned: older rows were deleted",
                                    e.seq,
                                    e.seq - 1
                                ),
                            });
                        }
                        Some(h) if h != e.prev => {
                            return Ok(Verdict::Broken {
                                seq: e.seq,
                                why: format!(
                                    "row {} does not link to what came before it (a row was removed, inserted or reordered there)",
                                    e.seq
                                ),
                            });
                        }
                        Some(_) => {}
                    }
                }
                Some(p) => {
                    if e.seq != p.seq + 1 {
                        return Ok(Verdict::Broken {
                            seq: e.seq,
                            why: format!(
                                "row {} follows row {}: {} row(s) between them were deleted",
                                e.seq,
                                p.seq,
                                e.seq - p.seq - 1
                            ),
                        });
                    }
                    if e.prev != p.hash {
                        return Ok(Verdict::Broken {
                            seq: e.seq,
                            why: format!(
                                "row {} does not link to row {} (a row was removed, inserted or reordered, or row {}'s hash was changed)",
                                e.seq, p.seq, p.seq
                            ),
                        });
                    }
                }
            }
            if entry_hash(&e) != e.hash {
                return Ok(Verdict::Broken {
                    seq: e.seq,
                    why: format!(
                        "row {}'s content does not match its hash (the row was edited)",
                        e.seq
                    ),
                });
            }
            count += 1;
            last = Some(e);
        }
        // Rows at the end leave a trace: SQLite remembers the highest
        // sequence number ever used.
        let issued: Option<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let newest = last.as_ref().map(|e| e.seq).unwrap_or(0);
        if let Some(issued) = issued
            && issued > newest
        {
            return Ok(Verdict::Broken {
                seq: newest + 1,
                why: format!(
                    "rows {} to {issued} were written and are gone: the newest rows were deleted",
                    newest + 1
                ),
            });
        }
        Ok(Verdict::Intact {
            rows: count,
            head: last.map(|e| ChainHead {
                seq: e.seq,
                at: e.at,
                hash: e.hash,
            }),
        })
    }

    /// Whether `hash` is a row of the chain (or the last row a checkpoint
    /// pruned): a head copied out earlier must still be found.
    pub fn audit_contains(&self, hash: &str) -> anyhow::Result<Option<i64>> {
        let hash = hash.trim().to_ascii_lowercase();
        if let Some(seq) = self
            .conn
            .prepare_cached("SELECT seq FROM audit WHERE hash = ?1")?
            .query_row([&hash], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(seq));
        }
        Ok(self
            .conn
            .prepare_cached(
                "SELECT json_extract(detail, '$.through_seq') FROM audit
                 WHERE kind = 'checkpoint' AND json_extract(detail, '$.through_hash') = ?1",
            )?
            .query_row([&hash], |r| r.get(0))
            .optional()?)
    }

    /// Rows matching `q`, oldest first.
    pub fn audit_entries(&self, q: &AuditQuery<'_>) -> anyhow::Result<Vec<AuditEntry>> {
        let mut all = Vec::new();
        self.audit_each(q, |e| {
            all.push(e);
            Ok(())
        })?;
        Ok(all)
    }

    /// Rows matching `q`, oldest first, one at a time: an export of years
    /// of rows holds one row in memory, not all of them.
    pub fn audit_each(
        &self,
        q: &AuditQuery<'_>,
        mut f: impl FnMut(AuditEntry) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2)
               AND (?3 IS NULL OR job = ?3)
             ORDER BY seq"
        ))?;
        let mut rows = st.query(params![q.since, q.until, q.job])?;
        while let Some(r) = rows.next()? {
            f(entry(r)?)?;
        }
        Ok(())
    }

    /// Removes what is older than `before` (RFC 3339): finished files with
    /// their events, runs with no file left, resolved alerts, and the audit
    /// rows before it, which a checkpoint row then stands for. Files that
    /// are not finished, and everything newer, stay.
    pub fn prune_before(
        &self,
        before: &str,
        actor: &str,
        protected: &[String],
    ) -> anyhow::Result<Pruned> {
        let tx = self.write_tx()?;
        let mut p = Pruned::default();
        let protected = serde_json::to_string(protected)?;
        let old_files = "SELECT id FROM files
                         WHERE state IN ('done', 'failed') AND updated_at < ?1
                           AND job NOT IN (SELECT value FROM json_each(?2))";
        p.events = tx.execute(
            &format!(
                "DELETE FROM events WHERE at < ?1
                   AND ((file_id IS NULL AND job NOT IN (SELECT value FROM json_each(?2)))
                        OR file_id IN ({old_files}))"
            ),
            params![before, protected],
        )? as u64;
        // Events that still point at an old file (newer than the cutoff) keep it.
        p.files = tx.execute(
            &format!(
                "DELETE FROM files WHERE id IN ({old_files})
                   AND id NOT IN (SELECT file_id FROM events WHERE file_id IS NOT NULL)"
            ),
            params![before, protected],
        )? as u64;
        p.runs = tx
            .prepare_cached(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1
               AND id NOT IN (SELECT run_id FROM files WHERE run_id IS NOT NULL)
               AND id NOT IN (SELECT run_id FROM events WHERE run_id IS NOT NULL)",
            )?
            .execute([before])? as u64;
        p.alerts = tx
            .prepare_cached(
                "DELETE FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < ?1",
            )?
            .execute([before])? as u64;
        let through: Option<(i64, String)> = tx
            .prepare_cached("SELECT seq, hash FROM audit WHERE at < ?1 ORDER BY seq DESC LIMIT 1")?
            .query_row([before], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let t = now();
        if let Some((seq, hash)) = through {
            // The head stays: a checkpoint is appended after it first, so the
            // chain never becomes empty and numbering never restarts.
            let mut detail = Map::new();
            detail.insert("through_seq".into(), seq.into());
            detail.insert("through_hash".into(), hash.clone().into());
            detail.insert("before".into(), before.into());
            let removed: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM audit WHERE seq <= ?1")?
                .query_row([seq], |r| r.get(0))?;
            detail.insert("rows".into(), removed.into());
            detail.insert("files".into(), p.files.into());
            let mut rec = AuditRecord::new("checkpoint");
            rec.actor = actor;
            rec.detail = detail;
            append(&tx, &rec, &t)?;
            // A checkpoint about to be pruned is carried by the new one.
            p.audit_rows = tx
                .prepare_cached("DELETE FROM audit WHERE seq <= ?1")?
                .execute([seq])? as u64;
        }
        tx.commit()?;
        Ok(p)
    }
}

impl Ledger {
    /// Records the certificate a server presented when it is the first seen
    /// for that server (`certificate_seen`) or differs from the last one
    /// recorded (`certificate_changed`). Returns the kind written, if any.
    /// `name` is the server's name in ferry.yaml (a partner that moved
    /// host is still that partner); `label` adds where it was reached.
    pub fn audit_certificate(
        &self,
        name: &str,
        label: &str,
        fingerprint: &str,
        not_after: Option<&str>,
    ) -> anyhow::Result<Option<&'static str>> {
        let tx = self.write_tx()?;
        let last: Option<String> = tx
            .prepare_cached(
                "SELECT json_extract(detail, '$.fingerprint') FROM audit
                 WHERE kind IN ('certificate_seen', 'certificate_changed')
                   AND json_extract(detail, '$.server_name') = ?1
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let kind = match &last {
            Some(f) if f == fingerprint => return Ok(None),
            Some(_) => "certificate_changed",
            None => "certificate_seen",
        };
        let mut rec = AuditRecord::new(kind);
        rec.server = Some(label);
        rec.detail.insert("server_name".into(), name.into());
        rec.detail
            .insert("fingerprint".into(), fingerprint.to_string().into());
        rec.detail.insert("previous".into(), last.into());
        rec.detail.insert("not_after".into(), not_after.into());
        append(&tx, &rec, &now())?;
        tx.commit()?;
        Ok(Some(kind))
    }
}
