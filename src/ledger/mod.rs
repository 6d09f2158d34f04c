//! The SQLite ledger: every record of runs, files and events. All SQL lives
//! in this module; the rest of ferry speaks in the types below.

mod audit;
mod edi;
mod journey;
mod lock;
mod schema;

pub use audit::{
    AuditEntry, AuditQuery, AuditRecord, ChainHead, FERRY, GENESIS, Pruned, Verdict, row_hash,
};
pub use lock::{StateInUse, StateLock};

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Map;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

/// Puts `synchronous = FULL` back when a step is done.
struct SyncGuard<'a> {
    conn: &'a Connection,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        // If this fails the connection is unusable anyway; the next
        // statement reports it.
        if let Ok(mut st) = self.conn.prepare_cached("PRAGMA synchronous = FULL") {
            let _ = st.execute([]);
        }
    }
}

/// Makes commits written with `synchronous = NORMAL` durable: one
/// fdatasync of the WAL covers every commit written before it began, so
/// sessions that reach a durable step at the same moment share one (group
/// commit), and none of them holds the ledger while the disk works.
///
/// An fsync of the WAL after a commit is what `synchronous = FULL` does
/// itself (SQLite replays the WAL up to its last valid commit frame).
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
    dir: PathBuf,
    /// Commits written (to the page cache) that must become durable.
    written: std::sync::atomic::AtomicU64,
    state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every commit up to this ticket is on disk.
    synced: u64,
    /// A sync is under way (the others wait for it, then maybe one more).
    running: bool,
    /// The WAL's directory entry was synced once.
    dir_synced: bool,
}

impl WalSync {
    fn new(db: &Path) -> WalSync {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            dir: db.parent().map(Path::to_path_buf).unwrap_or_default(),
            written: Default::default(),
            state: Default::default(),
            done: Default::default(),
        }
    }

    /// A commit was just written; its ticket for [`WalSync::wait`].
    fn ticket(&self) -> u64 {
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Returns once the commit with `ticket` (and every one before it) is on disk.
    pub fn wait(&self, ticket: u64) -> anyhow::Result<()> {
        let lock = || {
            self.state
                .lock()
                .map_err(|_| anyhow::anyhow!("the ledger's sync lock was poisoned"))
        };
        let mut st = lock()?;
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if !st.running {
                break;
            }
            st = self
                .done
                .wait(st)
                .map_err(|_| anyhow::anyhow!("the ledger's sync lock was poisoned"))?;
        }
        st.running = true;
        let sync_dir = !st.dir_synced;
        drop(st);
        // Every commit with a ticket up to here is in the page cache.
        let target = self.written.load(std::sync::atomic::Ordering::SeqCst);
        let result = (|| -> std::io::Result<()> {
            std::fs::File::open(&self.wal)?.sync_data()?;
            if sync_dir {
                std::fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        let mut st = lock()?;
        st.running = false;
        if result.is_ok() {
            st.synced = st.synced.max(target);
            st.dir_synced = true;
        }
        drop(st);
        self.done.notify_all();
        result.with_context(|| format!("cannot sync the ledger's log {}", self.wal.display()))
    }
}

/// Refuses a state folder or ledger that others may read: they hold claim
/// files and the record of every transfer.
pub fn check_private(state_dir: &Path, db: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir_mode = std::fs::metadata(state_dir)
        .with_context(|| format!("cannot read state folder {}", state_dir.display()))?
        .permissions()
        .mode()
        & 0o777;
    if dir_mode & 0o077 != 0 {
        bail!(
            "the state folder {} is open to other users (mode {dir_mode:04o}); it holds the ledger and archived claim files and must be 0700: run `chmod 700 {}`",
            state_dir.display(),
            state_dir.display()
        );
    }
    for f in [db.to_path_buf(), db.with_extension("db-wal")] {
        let Ok(meta) = std::fs::metadata(&f) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the ledger {} is open to other users (mode {mode:04o}); it must be 0600: run `chmod 600 {}`",
                f.display(),
                f.display()
            );
        }
    }
    Ok(())
}

/// `state_dir/ferry.db`, created empty with mode 0600 if it is not there:
/// ferry creates it itself so it is private from the first byte (SQLite
/// gives its -wal and -shm files the same mode).
fn create_db(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = state_dir.join("ferry.db");
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create ledger {}", path.display()))?;
    }
    Ok(path)
}

/// Creates the state folder (mode 0700) if it does not exist yet.
pub fn ensure_state_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create state folder {}", dir.display()))?;
    }
    Ok(())
}

pub use edi::{Due, GroupMatch, GroupRow, InterchangeRow, SetRow};
pub use journey::{FileState, Intent, Status};

/// The strongest check that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verified {
    None,
    Size,
    Hash,
}

impl Verified {
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::None => "none",
            Verified::Size => "size",
            Verified::Hash => "hash",
        }
    }
}

impl FromStr for Verified {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "none" => Verified::None,
            "size" => Verified::Size,
            "hash" => Verified::Hash,
            _ => bail!("unknown verification level '{s}' in the ledger"),
        })
    }
}

/// A file first seen by a run.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub job: &'a str,
    pub direction: &'a str,
    pub name: &'a str,
    pub size: u64,
    pub mtime: Option<DateTime<Utc>>,
    pub sha256: Option<&'a str>,
    pub remote_path: &'a str,
    pub local_path: Option<&'a Path>,
    pub run_id: Option<i64>,
}

/// One step of a file's journey, for [`Ledger::step`]. `None` leaves a
/// column as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub state: FileState,
    pub verified: Option<Verified>,
    pub error: Option<&'a str>,
    pub intent: Option<Option<Intent>>,
    pub temp_path: Option<Option<&'a str>>,
    pub remote_before: Option<Option<&'a str>>,
    pub resend: Option<bool>,
    pub sha256: Option<&'a str>,
    /// Where the file is locally now (a pull's placed file, a push's archived copy).
    pub local_path: Option<&'a Path>,
    /// When a `sending` step's transfer began, if that was before the step
    /// is recorded (a small download records it afterwards); else now.
    pub began: Option<&'a str>,
    /// The event's kind when it is not the state's name (`confirmed`, `resend`).
    pub event: Option<&'a str>,
    /// The event's detail when it is not the error.
    pub note: Option<&'a str>,
    /// Who decided this step, for the audit trail: an operator's OS user
    /// (`ferry confirm`, `ferry resend`); ferry itself when `None`.
    pub actor: Option<&'a str>,
}

impl Default for Step<'_> {
    fn default() -> Self {
        Step {
            state: FileState::Seen,
            verified: None,
            error: None,
            intent: None,
            temp_path: None,
            remote_before: None,
            resend: None,
            sha256: None,
            local_path: None,
            began: None,
            event: None,
            note: None,
            actor: None,
        }
    }
}

/// One transfer as `history` shows it; the JSON shape is SPEC's contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transfer {
    pub id: i64,
    pub job: String,
    pub direction: String,
    pub file: String,
    pub remote_path: String,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub verified: Verified,
    pub status: Status,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

/// A job run, as `status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: i64,
    pub job: String,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub files_ok: u64,
    pub files_failed: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

/// A file's full ledger record, as the engine reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub id: i64,
    pub job: String,
    pub direction: String,
    pub name: String,
    pub size: u64,
    pub mtime: Option<String>,
    pub sha256: Option<String>,
    pub remote_path: String,
    pub local_path: Option<String>,
    pub state: FileState,
    pub attempts: u32,
    pub verified: Verified,
    pub last_error: Option<String>,
    pub finished_at: Option<String>,
    /// The remote side effect ferry recorded before it acted (see [`Intent`]).
    pub intent: Option<Intent>,
    /// This delivery's own temp name on the server (temp_rename).
    pub temp_path: Option<String>,
    /// What the server listed at the final name before a direct upload:
    /// `absent`, or `<size> <mtime or ->`.
    pub remote_before: Option<String>,
    /// An operator asked for this file to be sent again (`ferry resend`).
    pub resend: bool,
}

const FILE_COLUMNS: &str = "id, job, direction, name, size, mtime, sha256, remote_path, local_path,
                            state, attempts, verified, last_error, finished_at,
                            intent, temp_path, remote_before, resend";

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(FileRow, String, String, Option<String>)> {
    Ok((
        FileRow {
            id: r.get(0)?,
            job: r.get(1)?,
            direction: r.get(2)?,
            name: r.get(3)?,
            size: r.get(4)?,
            mtime: r.get(5)?,
            sha256: r.get(6)?,
            remote_path: r.get(7)?,
            local_path: r.get(8)?,
            state: FileState::Seen,
            attempts: r.get(10)?,
            verified: Verified::None,
            last_error: r.get(12)?,
            finished_at: r.get(13)?,
            intent: None,
            temp_path: r.get(15)?,
            remote_before: r.get(16)?,
            resend: r.get(17)?,
        },
        r.get(9)?,
        r.get(11)?,
        r.get(14)?,
    ))
}

/// Filters for `history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery<'a> {
    pub job: Option<&'a str>,
    pub limit: usize,
    /// Only transfers that started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only failed transfers.
    pub failed: bool,
}

/// An open (or resolved) alert: one problem of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub job: String,
    pub cause: String,
    pub opened_at: String,
    pub last_sent_at: String,
    pub suppressed: u64,
    pub detail: Option<String>,
}

/// An email waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMail {
    pub id: i64,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
    pub attempts: u32,
}

/// Counts of a job's files that are not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    pub pending: u64,
    pub failed: u64,
    /// Waiting for an operator's `ferry confirm` or `ferry resend`.
    pub held: u64,
}

pub fn now() -> String {
    rfc3339(Utc::now())
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    wal_sync: Arc<WalSync>,
    /// Set by the engine around its calls: a durable step's sync is left
    /// to the caller ([`Ledger::take_owed_sync`]), outside the ledger's lock.
    defer: std::cell::Cell<bool>,
    /// The newest durable commit not synced yet (while `defer` is set).
    owed: std::cell::Cell<u64>,
    /// Job name to its partner (`name host:port`), so the audit trail says
    /// to whom each file went; set from the configuration.
    servers: std::collections::HashMap<String, String>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating if needed) `state_dir/ferry.db` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> anyhow::Result<Ledger> {
        ensure_state_dir(state_dir)?;
        let path = create_db(state_dir)?;
        check_private(state_dir, &path)?;
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        let mut ledger = Ledger {
            conn,
            wal_sync: Arc::new(WalSync::new(&path)),
            defer: Default::default(),
            owed: Default::default(),
            path,
            servers: Default::default(),
        };
        ledger.configure()?;
        ledger.migrate(SCHEMA_VERSION)?;
        ledger.start_trail()?;
        Ok(ledger)
    }

    /// The first row of a new trail says so, and what the ledger held
    /// before it (a ledger from before the audit trail has history the
    /// chain does not cover).
    fn start_trail(&self) -> anyhow::Result<()> {
        // Every open asks; only an empty trail takes the write lock.
        if self.trail_begun(&self.conn)? {
            return Ok(());
        }
        let tx = self.write_tx()?;
        if !self.trail_begun(&tx)? {
            let files: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM files")?
                .query_row([], |r| r.get(0))?;
            let mut rec = AuditRecord::new("trail_started");
            rec.detail
                .insert("schema_version".into(), SCHEMA_VERSION.into());
            rec.detail
                .insert("files_already_recorded".into(), files.into());
            audit::append(&tx, &rec, &now())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether any audit row was ever written (rows may since be pruned or
    /// deleted; SQLite's sequence remembers).
    fn trail_begun(&self, conn: &Connection) -> anyhow::Result<bool> {
        Ok(conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM audit)
                     OR EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'audit')",
            )?
            .query_row([], |r| r.get(0))?)
    }

    /// A write transaction that takes the write lock at once: the audit
    /// trail reads its head and appends after it, and two processes
    /// (`ferry run` and an operator's `ferry confirm`) must not both extend
    /// the same head.
    fn write_tx(&self) -> anyhow::Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .context("starting a ledger transaction")
    }

    /// For a file's step: its commit is written with `synchronous =
    /// NORMAL` (not fsynced); [`Ledger::durable`] then syncs it when the step
    /// is [`FileState::durable`]. Other writes keep `FULL`.
    fn relaxed(&self) -> anyhow::Result<SyncGuard<'_>> {
        self.conn
            .prepare_cached("PRAGMA synchronous = NORMAL")?
            .execute([])
            .context("relaxing the ledger's sync for a step")?;
        Ok(SyncGuard { conn: &self.conn })
    }

    /// After a relaxed commit: makes it durable when `durable` (now, or
    /// when the engine releases the ledger, if it deferred the sync).
    fn durable(&self, durable: bool) -> anyhow::Result<()> {
        if !durable {
            return Ok(());
        }
        let ticket = self.wal_sync.ticket();
        if self.defer.get() {
            self.owed.set(self.owed.get().max(ticket));
            Ok(())
        } else {
            self.wal_sync.wait(ticket)
        }
    }

    /// Lets the caller sync durable steps after releasing the ledger:
    /// while set, [`Ledger::take_owed_sync`] says what is owed.
    pub fn defer_syncs(&self, on: bool) {
        self.defer.set(on);
    }

    /// The sync a deferred durable step is owed, if any: the caller must
    /// [`WalSync::wait`] for it before acting on the step.
    pub fn take_owed_sync(&self) -> Option<(Arc<WalSync>, u64)> {
        match self.owed.replace(0) {
            0 => None,
            t => Some((self.wal_sync.clone(), t)),
        }
    }

    /// Tells the ledger each job's partner, for the audit trail.
    pub fn set_servers(&mut self, servers: std::collections::HashMap<String, String>) {
        self.servers = servers;
    }

    /// Opens a ledger that must already exist, for read-only commands: `status`
    /// and `history` never create state. `None` when there is none yet.
    pub fn open_existing(state_dir: &Path) -> anyhow::Result<Option<Ledger>> {
        if !state_dir.join("ferry.db").exists() {
            return Ok(None);
        }
        Self::open(state_dir).map(Some)
    }

    fn configure(&mut self) -> anyhow::Result<()> {
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .context("setting the ledger's busy timeout")?;
        let mode: String = self
            .conn
            .prepare_cached("PRAGMA journal_mode = WAL")?
            .query_row([], |r| r.get(0))
            .context("switching the ledger to WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "the ledger {} refused WAL mode (got {mode})",
                self.path.display()
            );
        }
        // Every step runs the same few statements: prepare each once.
        self.conn.set_prepared_statement_cache_capacity(128);
        // FULL: a commit is on disk before we act on it, even across power loss.
        self.conn
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .context("configuring the ledger")?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> anyhow::Result<u32> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA user_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Applies migrations up to `target`. Exposed so tests can build every
    /// earlier version and migrate from it.
    pub fn migrate(&mut self, target: u32) -> anyhow::Result<()> {
        let current = self.schema_version()?;
        if current > SCHEMA_VERSION {
            bail!(
                "the ledger {} has schema version {current}, newer than this ferry understands ({SCHEMA_VERSION}); use a newer ferry",
                self.path.display()
            );
        }
        // A migration may rebuild a table other tables refer to; foreign keys
        // are checked once all steps are done (the pragma is a no-op inside a transaction).
        self.conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
        for version in current..target.min(SCHEMA_VERSION) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(schema::MIGRATIONS[version as usize])
                .with_context(|| format!("migrating the ledger to version {}", version + 1))?;
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        self.conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        let broken: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM pragma_foreign_key_check")?
            .query_row([], |r| r.get(0))?;
        if broken > 0 {
            bail!(
                "the ledger {} has {broken} broken references after migrating",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Opens at an exact schema version without migrating further (tests only).
    #[doc(hidden)]
    pub fn open_at_version(state_dir: &Path, version: u32) -> anyhow::Result<Ledger> {
        ensure_state_dir(state_dir)?;
        let path = create_db(state_dir)?;
        let conn = Connection::open(&path)?;
        let mut ledger = Ledger {
            conn,
            wal_sync: Arc::new(WalSync::new(&path)),
            defer: Default::default(),
            owed: Default::default(),
            path,
            servers: Default::default(),
        };
        ledger.configure()?;
        ledger.migrate(version)?;
        Ok(ledger)
    }

    /// Names of the tables, for schema checks.
    pub fn tables(&self) -> anyhow::Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let names = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(names)
    }

    pub fn start_run(&self, job: &str, trigger: &str) -> anyhow::Result<i64> {
        self.conn
            .prepare_cached("INSERT INTO runs (job, trigger, started_at) VALUES (?1, ?2, ?3)")?
            .execute(params![job, trigger, now()])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        files_ok: u64,
        files_failed: u64,
        bytes: u64,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE runs SET finished_at = ?2, status = ?3, files_ok = ?4, files_failed = ?5,
                             bytes = ?6, error = ?7
             WHERE id = ?1",
            )?
            .execute(params![
                run_id,
                now(),
                status,
                files_ok,
                files_failed,
                bytes,
                error
            ])?;
        Ok(())
    }

    /// Records a newly seen file in state `seen`; returns its id.
    pub fn insert_file(&self, f: &NewFile<'_>) -> anyhow::Result<i64> {
        Ok(self.insert_files(std::slice::from_ref(f))?[0])
    }

    /// Records newly seen files (a listing's worth) in one commit; returns
    /// their ids in order. Each has its `seen` event and audit row.
    pub fn insert_files(&self, files: &[NewFile<'_>]) -> anyhow::Result<Vec<i64>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let t = now();
        let _sync = self.relaxed()?;
        let tx = self.write_tx()?;
        let mut ids = Vec::with_capacity(files.len());
        for f in files {
            tx.prepare_cached(
                "INSERT INTO files (job, direction, name, size, mtime, sha256, remote_path, local_path,
                                    state, run_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'seen', ?9, ?10, ?10)",
            )?
            .execute(params![
                f.job,
                f.direction,
                f.name,
                f.size,
                f.mtime.map(rfc3339),
                f.sha256,
                f.remote_path,
                f.local_path.map(|p| p.to_string_lossy().into_owned()),
                f.run_id,
                t
            ])?;
            let id = tx.last_insert_rowid();
            self.event_in(&tx, &t, f.job, f.run_id, Some(id), "seen", None, None)?;
            ids.push(id);
        }
        tx.commit()?;
        self.durable(FileState::Seen.durable(true))?;
        Ok(ids)
    }

    /// Moves a file to `state`, with the verification level and error that go with it.
    pub fn set_file_state(
        &self,
        file_id: i64,
        state: FileState,
        verified: Option<Verified>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        self.step(
            file_id,
            &Step {
                state,
                verified,
                error,
                ..Step::default()
            },
        )
    }

    /// Records that this run gave up on a file. A file already at its
    /// destination (a push's `verified`: the partner has it; a pull's
    /// `verified` or `renamed`: the checked copy is here or placed) keeps
    /// its state, so the next run finishes its after-action rather than
    /// start over (a placed file taken away by a downstream system would
    /// otherwise be downloaded and placed again): the failure is an
    /// `attempt_failed` event. Any other file becomes `failed`. Returns the
    /// state the file holds now.
    pub fn fail(&self, file_id: i64, error: &str) -> anyhow::Result<FileState> {
        let row = self.file(file_id)?;
        if matches!(row.state, FileState::Verified | FileState::Renamed) {
            self.event(&row.job, None, Some(file_id), "attempt_failed", Some(error))?;
            return Ok(row.state);
        }
        self.set_file_state(file_id, FileState::Failed, None, Some(error))?;
        Ok(FileState::Failed)
    }

    /// Records one step of a file's journey in one transaction: the new
    /// state (refused unless [`FileState::may_become`] allows it), what goes
    /// with it (intent, temp name, verification), and its event.
    pub fn step(&self, file_id: i64, step: &Step<'_>) -> anyhow::Result<()> {
        self.steps(file_id, std::slice::from_ref(step))
    }

    /// Records consecutive steps of one file (`sent` then `verified`, say)
    /// in one transaction: each is checked, has its event and audit row as
    /// if recorded alone, and they commit together, with one fsync if any
    /// of them is durable. Nothing is recorded if one is refused.
    pub fn steps(&self, file_id: i64, steps: &[Step<'_>]) -> anyhow::Result<()> {
        let t = now();
        // The state, its event and its audit row commit together: at most
        // one fsync per commit, none for a step no side effect depends on.
        let _sync = self.relaxed()?;
        let tx = self.write_tx()?;
        let (_, durable) = self.file_steps(&tx, file_id, steps, &t, None)?;
        tx.commit()?;
        self.durable(durable)
    }

    /// [`Ledger::steps`] for several files in one commit (and at most one
    /// fsync): each file's steps are recorded as that call would record
    /// them. If one file's are refused, the commit is dropped and each file
    /// is recorded alone, so only that file fails. Returns each file's
    /// result, in order; an error of the commit itself fails them all.
    pub fn steps_each(
        &self,
        files: &[(i64, Vec<Step<'_>>)],
    ) -> anyhow::Result<Vec<anyhow::Result<()>>> {
        if let [(id, steps)] = files {
            return self.steps(*id, steps).map(|()| vec![Ok(())]);
        }
        let t = now();
        let together = (|| -> anyhow::Result<bool> {
            let _sync = self.relaxed()?;
            let tx = self.write_tx()?;
            let (mut head, mut durable) = (None, false);
            for (id, steps) in files {
                let (h, d) = self.file_steps(&tx, *id, steps, &t, head.take())?;
                (head, durable) = (h, durable | d);
            }
            tx.commit()?;
            Ok(durable)
        })();
        match together {
            Ok(durable) => {
                self.durable(durable)?;
                Ok(files.iter().map(|_| Ok(())).collect())
            }
            // Rolled back: one by one, each file's own result.
            Err(_) => Ok(files
                .iter()
                .map(|(id, steps)| self.steps(*id, steps))
                .collect()),
        }
    }

    /// One file's consecutive steps inside `tx`, after the audit chain's
    /// `head` when this transaction wrote it. Returns the new head (`None`
    /// for no steps) and whether a step is durable.
    fn file_steps(
        &self,
        tx: &Transaction<'_>,
        file_id: i64,
        steps: &[Step<'_>],
        t: &str,
        mut head: Option<audit::Head>,
    ) -> anyhow::Result<(Option<audit::Head>, bool)> {
        let (push, from): (bool, String) = tx
            .prepare_cached("SELECT direction = 'push', state FROM files WHERE id = ?1")?
            .query_row([file_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .with_context(|| format!("no file with id {file_id} in the ledger"))?;
        let mut from: FileState = from.parse()?;
        let mut durable = false;
        for step in steps {
            head = Some(self.step_in(tx, file_id, push, from, step, t, head)?);
            from = step.state;
            durable |= step.state.durable(push);
        }
        Ok((head, durable))
    }

    /// One step of a file that is `from` now; `head` is the audit chain's
    /// last row when this transaction wrote it. Returns the new head.
    #[allow(clippy::too_many_arguments)]
    fn step_in(
        &self,
        tx: &Transaction<'_>,
        file_id: i64,
        push: bool,
        from: FileState,
        step: &Step<'_>,
        t: &str,
        head: Option<audit::Head>,
    ) -> anyhow::Result<audit::Head> {
        let state = step.state;
        let finished = matches!(
            state,
            FileState::Done | FileState::Failed | FileState::Verified | FileState::Held
        );
        if !from.may_become(state) {
            bail!("file {file_id}: a file that is {from} cannot become {state}");
        }
        let (set_intent, intent) = match step.intent {
            Some(i) => (true, i.map(Intent::as_str)),
            None => (false, None),
        };
        let (set_temp, temp) = match step.temp_path {
            Some(p) => (true, p),
            None => (false, None),
        };
        let (set_before, before) = match step.remote_before {
            Some(b) => (true, b),
            None => (false, None),
        };
        // The row as the step leaves it: its audit row shows these facts.
        let facts = tx
            .prepare_cached(concat!(
                "UPDATE files SET state = ?2,
                              verified = COALESCE(?3, verified),
                              last_error = ?4,
                              updated_at = ?5,
                              started_at = CASE WHEN ?2 = 'sending' AND started_at IS NULL
                                                THEN COALESCE(?16, ?5) ELSE started_at END,
                              attempts = attempts + CASE WHEN ?2 = 'sending' THEN 1 ELSE 0 END,
                              finished_at = CASE WHEN ?6 THEN ?5 ELSE NULL END,
                              intent = CASE WHEN ?7 THEN ?8 ELSE intent END,
                              temp_path = CASE WHEN ?9 THEN ?10 ELSE temp_path END,
                              remote_before = CASE WHEN ?11 THEN ?12 ELSE remote_before END,
                              resend = COALESCE(?13, resend),
                              sha256 = COALESCE(?14, sha256),
                              local_path = COALESCE(?15, local_path)
                 WHERE id = ?1
                 RETURNING ",
                audit::file_facts!()
            ))?
            .query_row(
                params![
                    file_id,
                    state.as_str(),
                    step.verified.map(Verified::as_str),
                    step.error,
                    t,
                    finished,
                    set_intent,
                    intent,
                    set_temp,
                    temp,
                    set_before,
                    before,
                    step.resend,
                    step.sha256,
                    step.local_path.map(|p| p.to_string_lossy().into_owned()),
                    step.began,
                ],
                audit::FileFacts::from_row,
            )
            .with_context(|| format!("no file with id {file_id} in the ledger"))?;
        let detail = step.note.or(step.error);
        let kind = step.event.unwrap_or(state.as_str());
        tx.prepare_cached(
            "INSERT INTO events (at, job, run_id, file_id, kind, detail)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5)",
        )?
        .execute(params![t, facts.job, file_id, kind, detail])?;
        let mut extra = Map::new();
        if let Some(d) = detail {
            extra.insert("note".into(), d.into());
        }
        let rec = facts.record(
            file_id,
            kind,
            step.actor.unwrap_or(FERRY),
            &self.servers,
            extra,
        );
        let head = audit::append_after(tx, &rec, t, head)?;
        if push && state == FileState::Verified {
            // A push file delivered: its interchange counts as sent (duplicate control, acks).
            Ledger::mark_interchange_sent(tx, file_id, t)?;
        }
        Ok(head)
    }

    /// A server's quirks, as remembered: `(quirk, value, detail)`.
    pub fn quirks(&self, server: &str) -> anyhow::Result<Vec<(String, u64, Option<String>)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT quirk, value, detail FROM server_quirks WHERE server = ?1 ORDER BY quirk",
        )?;
        let rows = st.query_map([server], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remembers (or updates) one quirk of a server.
    pub fn remember_quirk(
        &self,
        server: &str,
        quirk: &str,
        value: u64,
        detail: &str,
    ) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO server_quirks (server, quirk, value, detail, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (server, quirk) DO UPDATE SET value = ?3, detail = ?4, last_seen = ?5",
            )?
            .execute(params![server, quirk, value, detail, now()])?;
        Ok(())
    }

    pub fn event(
        &self,
        job: &str,
        run_id: Option<i64>,
        file_id: Option<i64>,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        self.event_in(&tx, &now(), job, run_id, file_id, kind, detail, None)?;
        tx.commit()?;
        Ok(())
    }

    /// An event and its audit row, inside `tx`.
    #[allow(clippy::too_many_arguments)]
    fn event_in(
        &self,
        tx: &Connection,
        at: &str,
        job: &str,
        run_id: Option<i64>,
        file_id: Option<i64>,
        kind: &str,
        detail: Option<&str>,
        actor: Option<&str>,
    ) -> anyhow::Result<()> {
        tx.prepare_cached("INSERT INTO events (at, job, run_id, file_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(
            params![at, job, run_id, file_id, kind, detail],
        )?;
        let mut extra = Map::new();
        if let Some(d) = detail {
            extra.insert("note".into(), d.into());
        }
        let actor = actor.unwrap_or(FERRY);
        match file_id {
            Some(id) => audit::file_record(tx, id, kind, actor, &self.servers, extra, |rec| {
                audit::append(tx, rec, at)
            }),
            None => {
                let mut rec = AuditRecord::new(kind);
                rec.job = Some(job);
                rec.server = self.servers.get(job).map(String::as_str);
                rec.actor = actor;
                rec.detail = extra;
                audit::append(tx, &rec, at)
            }
        }
    }

    /// How many events of `kind` a file has.
    pub fn count_events(&self, file_id: i64, kind: &str) -> anyhow::Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM events WHERE file_id = ?1 AND kind = ?2")?
            .query_row(params![file_id, kind], |r| r.get(0))?)
    }

    /// Transfers, newest first.
    pub fn history(&self, q: &HistoryQuery<'_>) -> anyhow::Result<Vec<Transfer>> {
        let limit = if q.limit == 0 { -1 } else { q.limit as i64 };
        let mut st = self.conn.prepare(
            "SELECT id, job, direction, name, remote_path, size, sha256, verified, state,
                    attempts, started_at, finished_at, last_error
             FROM files
             WHERE (?1 IS NULL OR job = ?1)
               AND (?3 IS NULL OR created_at >= ?3)
               AND (?4 = 0 OR state = 'failed')
             ORDER BY created_at DESC, id DESC
             LIMIT ?2",
        )?;
        let since = q.since.map(rfc3339);
        let rows = st.query_map(params![q.job, limit, since, q.failed], |r| {
            Ok((
                Transfer {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    direction: r.get(2)?,
                    file: r.get(3)?,
                    remote_path: r.get(4)?,
                    bytes: r.get(5)?,
                    sha256: r.get(6)?,
                    verified: Verified::None,
                    status: Status::Pending,
                    attempts: r.get(9)?,
                    started_at: r.get(10)?,
                    finished_at: r.get(11)?,
                    error: None,
                },
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut t, verified, state, error) = row?;
            let state: FileState = state.parse()?;
            t.verified = verified.parse()?;
            t.status = state.status(t.direction == "push");
            // The error belongs to the record only while the file is failed.
            t.error = if t.status == Status::Failed {
                error
            } else {
                None
            };
            out.push(t);
        }
        Ok(out)
    }

    /// The most recent run of `job`.
    pub fn last_run(&self, job: &str) -> anyhow::Result<Option<Run>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, job, trigger, started_at, finished_at, status, files_ok, files_failed,
                        bytes, error
                 FROM runs WHERE job = ?1 ORDER BY started_at DESC, id DESC LIMIT 1",
            )?
            .query_row([job], |r| {
                Ok(Run {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    trigger: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    status: r.get(5)?,
                    files_ok: r.get(6)?,
                    files_failed: r.get(7)?,
                    bytes: r.get(8)?,
                    error: r.get(9)?,
                })
            })
            .optional()?)
    }

    /// When the most recent run of `job` that ended `ok` finished.
    pub fn last_success(&self, job: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT finished_at FROM runs WHERE job = ?1 AND status = 'ok'
                 AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1",
            )?
            .query_row([job], |r| r.get(0))
            .optional()?;
        Ok(at
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// How many of a job's files are still on their way, and how many failed.
    pub fn open_counts(&self, job: &str) -> anyhow::Result<OpenCounts> {
        let (pending, failed, held) = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(state NOT IN ('done', 'failed', 'held')
                                 AND NOT (direction = 'push' AND state = 'verified')), 0),
                    COALESCE(SUM(state = 'failed'), 0),
                    COALESCE(SUM(state = 'held'), 0)
             FROM files WHERE job = ?1",
            )?
            .query_row([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(OpenCounts {
            pending,
            failed,
            held,
        })
    }

    fn file_rows(
        &self,
        sql_where: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> anyhow::Result<Vec<FileRow>> {
        // Cached: a file's row is read several times per attempt, and the
        // handful of WHERE clauses make a handful of statements.
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE {sql_where} ORDER BY id"
        ))?;
        let rows = st.query_map(args, file_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut f, state, verified, intent) = row?;
            f.state = state.parse()?;
            f.verified = verified.parse()?;
            f.intent = intent.map(|i| i.parse()).transpose()?;
            out.push(f);
        }
        Ok(out)
    }

    pub fn file(&self, id: i64) -> anyhow::Result<FileRow> {
        self.file_rows("id = ?1", &[&id])?
            .pop()
            .with_context(|| format!("no file with id {id} in the ledger"))
    }

    /// Files of a job and direction that an earlier run left mid-journey.
    /// Failed files are not among them: a run retries those when it finds
    /// them again (still in the outbound folder, still on the server).
    pub fn unfinished(&self, job: &str, direction: &str) -> anyhow::Result<Vec<FileRow>> {
        self.file_rows(
            "job = ?1 AND direction = ?2 AND state NOT IN ('done', 'failed', 'held')",
            &[&job, &direction],
        )
    }

    /// The newest record of this exact file (name, size, mtime), in any state.
    pub fn latest_same(
        &self,
        job: &str,
        direction: &str,
        name: &str,
        size: u64,
        mtime: Option<&str>,
    ) -> anyhow::Result<Option<FileRow>> {
        Ok(self
            .file_rows(
                "job = ?1 AND direction = ?2 AND name = ?3 AND size = ?4 AND mtime IS ?5",
                &[&job, &direction, &name, &size, &mtime],
            )?
            .pop())
    }

    /// Delivered records with this name and size (candidates for a content match).
    pub fn delivered_named(
        &self,
        job: &str,
        direction: &str,
        name: &str,
        size: u64,
    ) -> anyhow::Result<Vec<FileRow>> {
        self.file_rows(
            "job = ?1 AND direction = ?2 AND name = ?3 AND size = ?4 AND state IN ('verified', 'done')",
            &[&job, &direction, &name, &size],
        )
    }

    /// Whether a record with this name and size was delivered: one indexed
    /// lookup, no row read (how many sessions a listing needs, not what
    /// happens to a file).
    pub fn has_delivered_named(
        &self,
        job: &str,
        direction: &str,
        name: &str,
        size: u64,
    ) -> anyhow::Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM files WHERE job = ?1 AND direction = ?2
                 AND name = ?3 AND size = ?4 AND state IN ('verified', 'done'))",
            )?
            .query_row(params![job, direction, name, size], |r| r.get(0))?)
    }

    /// Failed push records that left a temp file of theirs on the server.
    pub fn failed_with_temp(&self, job: &str) -> anyhow::Result<Vec<FileRow>> {
        self.file_rows(
            "job = ?1 AND direction = 'push' AND state = 'failed' AND intent = 'upload'
             AND temp_path IS NOT NULL",
            &[&job],
        )
    }

    /// The newest held record of `name` in `job`.
    pub fn held_file(&self, job: &str, name: &str) -> anyhow::Result<Option<FileRow>> {
        Ok(self
            .file_rows("job = ?1 AND name = ?2 AND state = 'held'", &[&job, &name])?
            .pop())
    }

    /// Names of a job's held files.
    pub fn held_names(&self, job: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .file_rows("job = ?1 AND state = 'held'", &[&job])?
            .into_iter()
            .map(|r| r.name)
            .collect())
    }

    /// Facts recorded on the way (a hash, where a file was placed) are not
    /// fsynced on their own: each is followed by a durable step.
    pub fn set_sha256(&self, file_id: i64, sha256: &str) -> anyhow::Result<()> {
        let _sync = self.relaxed()?;
        self.conn
            .prepare_cached("UPDATE files SET sha256 = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![file_id, sha256, now()])?;
        Ok(())
    }

    pub fn set_local_path(&self, file_id: i64, path: &Path) -> anyhow::Result<()> {
        let _sync = self.relaxed()?;
        self.conn
            .prepare_cached("UPDATE files SET local_path = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![file_id, path.to_string_lossy(), now()])?;
        Ok(())
    }

    /// Marks runs left `running` by a process that died as aborted.
    pub fn abort_stale_runs(&self, job: &str) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE runs SET status = 'aborted', finished_at = ?2,
                             error = COALESCE(error, 'ferry stopped during this run')
             WHERE job = ?1 AND status = 'running'",
            )?
            .execute(params![job, now()])?;
        Ok(())
    }

    /// The open alert of `job` for `cause`, if any.
    pub fn open_alert(&self, job: &str, cause: &str) -> anyhow::Result<Option<Alert>> {
        Ok(self
            .open_alerts_where("job = ?1 AND cause = ?2", &[&job, &cause])?
            .pop())
    }

    /// Every open alert of `job`.
    pub fn open_alerts(&self, job: &str) -> anyhow::Result<Vec<Alert>> {
        self.open_alerts_where("job = ?1", &[&job])
    }

    fn open_alerts_where(
        &self,
        cond: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> anyhow::Result<Vec<Alert>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT id, job, cause, opened_at, last_sent_at, suppressed, detail FROM alerts
             WHERE {cond} AND resolved_at IS NULL ORDER BY id"
        ))?;
        let rows = st.query_map(args, |r| {
            Ok(Alert {
                id: r.get(0)?,
                job: r.get(1)?,
                cause: r.get(2)?,
                opened_at: r.get(3)?,
                last_sent_at: r.get(4)?,
                suppressed: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Opens an alert (first email) or records that it was emailed again.
    pub fn alert_sent(&self, job: &str, cause: &str, detail: &str) -> anyhow::Result<()> {
        let t = now();
        match self.open_alert(job, cause)? {
            Some(a) => self.conn.prepare_cached("UPDATE alerts SET last_sent_at = ?2, suppressed = 0, detail = ?3 WHERE id = ?1")?
            .execute(
                params![a.id, t, detail],
            )?,
            None => self.conn.prepare_cached("INSERT INTO alerts (job, cause, opened_at, last_sent_at, detail) VALUES (?1, ?2, ?3, ?3, ?4)")?
            .execute(
                params![job, cause, t, detail],
            )?,
        };
        Ok(())
    }

    /// A failure within `repeat_after` of the last email: counted, not emailed.
    pub fn alert_suppressed(&self, id: i64, detail: &str) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE alerts SET suppressed = suppressed + 1, detail = ?2 WHERE id = ?1",
            )?
            .execute(params![id, detail])?;
        Ok(())
    }

    /// Closes every open alert of `job` (except certificate warnings) and returns them.
    pub fn resolve_alerts(&self, job: &str) -> anyhow::Result<Vec<Alert>> {
        let open: Vec<Alert> = self
            .open_alerts(job)?
            .into_iter()
            .filter(|a| {
                !a.cause.starts_with("certificate") && a.cause != "held" && a.cause != "duplicate"
            })
            .collect();
        let t = now();
        for a in &open {
            self.conn
                .prepare_cached("UPDATE alerts SET resolved_at = ?2 WHERE id = ?1")?
                .execute(params![a.id, t])?;
        }
        Ok(open)
    }

    /// Closes the open alert of `job` for `cause`.
    pub fn resolve_alert(&self, job: &str, cause: &str) -> anyhow::Result<()> {
        self.conn.prepare_cached("UPDATE alerts SET resolved_at = ?3 WHERE job = ?1 AND cause = ?2 AND resolved_at IS NULL")?
            .execute(
            params![job, cause, now()],
        )?;
        Ok(())
    }

    pub fn queue_mail(
        &self,
        recipients: &[String],
        subject: &str,
        body: &str,
    ) -> anyhow::Result<i64> {
        self.conn.prepare_cached("INSERT INTO outbox (created_at, recipients, subject, body) VALUES (?1, ?2, ?3, ?4)")?
            .execute(
            params![now(), serde_json::to_string(recipients)?, subject, body],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn outbox(&self) -> anyhow::Result<Vec<OutboxMail>> {
        let mut st = self
            .conn
            .prepare("SELECT id, recipients, subject, body, attempts FROM outbox ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rcpt, subject, body, attempts) = row?;
            out.push(OutboxMail {
                id,
                recipients: serde_json::from_str(&rcpt)?,
                subject,
                body,
                attempts,
            });
        }
        Ok(out)
    }

    pub fn mail_sent(&self, id: i64) -> anyhow::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    pub fn mail_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            )?
            .execute(params![id, error])?;
        Ok(())
    }

    /// Per job, between `from` and `to`: files delivered, their bytes, files failed.
    pub fn counts_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(String, u64, u64, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT job,
                    COALESCE(SUM((state = 'done' OR (direction = 'push' AND state = 'verified'))
                                 AND finished_at >= ?1 AND finished_at < ?2), 0),
                    COALESCE(SUM(CASE WHEN (state = 'done' OR (direction = 'push' AND state = 'verified'))
                                      AND finished_at >= ?1 AND finished_at < ?2
                                 THEN size ELSE 0 END), 0),
                    COALESCE(SUM(state = 'failed' AND updated_at >= ?1 AND updated_at < ?2), 0)
             FROM files GROUP BY job ORDER BY job",
        )?;
        let rows = st.query_map(params![rfc3339(from), rfc3339(to)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a push file with this name, size and mtime was already delivered.
    pub fn is_delivered(
        &self,
        job: &str,
        name: &str,
        size: u64,
        mtime: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let n: i64 = self.conn.prepare_cached("SELECT COUNT(*) FROM files
             WHERE job = ?1 AND name = ?2 AND size = ?3 AND mtime = ?4 AND state IN ('verified', 'done')")?
            .query_row(
            params![job, name, size, rfc3339(mtime)],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(l: &Ledger) -> i64 {
        l.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// A lazy step leaves the connection at FULL again, so every other
    /// write (intents, alerts, the outbox) stays fsynced.
    #[test]
    fn a_lazy_step_puts_full_sync_back_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ledger = Ledger::open(&state).unwrap();
        assert_eq!(synchronous(&ledger), 2, "FULL");
        let id = new_file(&ledger, "push");
        assert_eq!(synchronous(&ledger), 2);
        ledger
            .set_file_state(id, FileState::Sending, None, None)
            .unwrap();
        ledger
            .set_file_state(id, FileState::Sent, None, None)
            .unwrap();
        assert_eq!(synchronous(&ledger), 2);
        // A refused step (sent -> seen is not a transition) restores it too.
        assert!(
            ledger
                .set_file_state(id, FileState::Seen, None, None)
                .is_err()
        );
        assert_eq!(synchronous(&ledger), 2);
    }

    fn new_file(l: &Ledger, direction: &str) -> i64 {
        l.insert_file(&NewFile {
            job: "j",
            direction,
            name: "a",
            size: 1,
            mtime: None,
            sha256: None,
            remote_path: "/a",
            local_path: None,
            run_id: None,
        })
        .unwrap()
    }

    fn events(l: &Ledger, id: i64) -> Vec<String> {
        let mut st = l
            .conn
            .prepare("SELECT kind FROM events WHERE file_id = ?1 ORDER BY id")
            .unwrap();
        st.query_map([id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Giving up on a delivered push keeps it `verified` (the next run
    /// archives or deletes the local file and ends the journey, even if the
    /// outbound folder no longer holds it); a push still sending fails.
    #[test]
    fn a_run_giving_up_on_a_delivered_file_leaves_it_unfinished_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("state")).unwrap();
        let delivered = new_file(&l, "push");
        for st in [FileState::Sending, FileState::Sent, FileState::Verified] {
            l.set_file_state(delivered, st, Some(Verified::Hash), None)
                .unwrap();
        }
        let sending = new_file(&l, "push");
        l.set_file_state(sending, FileState::Sending, None, None)
            .unwrap();
        assert_eq!(
            l.fail(delivered, "cannot reach p").unwrap(),
            FileState::Verified
        );
        assert_eq!(
            l.fail(sending, "cannot reach p").unwrap(),
            FileState::Failed
        );
        let row = l.file(delivered).unwrap();
        assert_eq!(
            (row.state, row.verified),
            (FileState::Verified, Verified::Hash)
        );
        assert_eq!(events(&l, delivered).last().unwrap(), "attempt_failed");
        let left: Vec<i64> = l
            .unfinished("j", "push")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [delivered]);
        assert_eq!(l.file(sending).unwrap().state, FileState::Failed);
    }

    /// Several files' steps in one commit: each is recorded as alone (its
    /// events, its audit rows, the chain intact), and a file whose step is
    /// refused fails alone, none of its steps recorded, the others all.
    #[test]
    fn files_recorded_together_each_get_their_steps_and_a_refused_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("state")).unwrap();
        let (a, b, c) = (
            new_file(&l, "pull"),
            new_file(&l, "pull"),
            new_file(&l, "pull"),
        );
        let sending = Step {
            state: FileState::Sending,
            ..Step::default()
        };
        let sent = Step {
            state: FileState::Sent,
            sha256: Some("ab"),
            ..Step::default()
        };
        let done = Step {
            state: FileState::Done,
            ..Step::default()
        };
        let each = l
            .steps_each(&[
                (a, vec![sending, sent]),
                (b, vec![sending, done]), // sending cannot become done
                (c, vec![sending, sent]),
            ])
            .unwrap();
        assert!(each[0].is_ok() && each[2].is_ok(), "{each:?}");
        let refused = each[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("cannot become done"), "{refused}");
        for ok in [a, c] {
            assert_eq!(l.file(ok).unwrap().state, FileState::Sent);
            assert_eq!(l.file(ok).unwrap().sha256.as_deref(), Some("ab"));
            assert_eq!(events(&l, ok)[1..], ["sending", "sent"]);
        }
        assert_eq!(l.file(b).unwrap().state, FileState::Seen);
        assert_eq!(events(&l, b).len(), 1, "{:?}", events(&l, b));
        assert!(matches!(
            l.verify_audit().unwrap(),
            audit::Verdict::Intact { .. }
        ));
        let verified = Step {
            state: FileState::Verified,
            verified: Some(Verified::Size),
            ..Step::default()
        };
        let each = l
            .steps_each(&[(a, vec![verified]), (c, vec![verified])])
            .unwrap();
        assert!(each.iter().all(Result::is_ok), "{each:?}");
        assert_eq!(l.file(c).unwrap().state, FileState::Verified);
    }

    /// Steps recorded together are each checked and evented as if alone,
    /// and a refused one leaves nothing of the others behind.
    #[test]
    fn steps_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("state")).unwrap();
        let id = new_file(&l, "pull");
        l.set_file_state(id, FileState::Sending, None, None)
            .unwrap();
        let sent = Step {
            state: FileState::Sent,
            sha256: Some("ab"),
            ..Step::default()
        };
        let refused = Step {
            state: FileState::Seen,
            ..Step::default()
        };
        let err = l.steps(id, &[sent, refused]).unwrap_err();
        assert!(format!("{err:#}").contains("cannot become seen"), "{err:#}");
        let row = l.file(id).unwrap();
        assert_eq!(row.state, FileState::Sending);
        assert_eq!(row.sha256, None, "the refused batch recorded nothing");
        let verified = Step {
            state: FileState::Verified,
            verified: Some(Verified::Size),
            ..Step::default()
        };
        l.steps(id, &[sent, verified]).unwrap();
        let row = l.file(id).unwrap();
        assert_eq!(row.state, FileState::Verified);
        assert_eq!(row.sha256.as_deref(), Some("ab"));
        assert_eq!(events(&l, id), ["seen", "sending", "sent", "verified"]);
        assert!(matches!(l.verify_audit().unwrap(), Verdict::Intact { .. }));
    }

    /// While the engine defers syncs, a durable step leaves a sync owed (to
    /// be done outside the ledger's lock) and a lazy one does not.
    #[test]
    fn a_deferred_durable_step_owes_a_sync_and_a_lazy_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("state")).unwrap();
        let id = new_file(&l, "push");
        l.defer_syncs(true);
        l.set_file_state(id, FileState::Sending, None, None)
            .unwrap();
        let (wal, ticket) = l.take_owed_sync().expect("a push's sending is durable");
        assert!(l.take_owed_sync().is_none(), "taken once");
        l.set_file_state(id, FileState::Sent, None, None).unwrap();
        assert!(l.take_owed_sync().is_none(), "sent is not durable");
        l.defer_syncs(false);
        wal.wait(ticket).unwrap();
        // Synced already: a second wait for it returns without a sync.
        wal.wait(ticket).unwrap();
        assert!(wal.state.lock().unwrap().synced >= ticket);
        // Not deferred: the durable step syncs before it returns.
        l.set_file_state(id, FileState::Failed, None, Some("x"))
            .unwrap();
        assert!(l.take_owed_sync().is_none());
        assert!(wal.state.lock().unwrap().synced > ticket);
    }

    /// Threads waiting for durability together all return, and one sync
    /// can cover several of them (group commit).
    #[test]
    fn concurrent_waiters_for_the_wal_all_return_synced() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("state")).unwrap();
        let wal = l.wal_sync.clone();
        let tickets: Vec<u64> = (0..16).map(|_| wal.ticket()).collect();
        std::thread::scope(|s| {
            for t in &tickets {
                let wal = &wal;
                s.spawn(move || wal.wait(*t).unwrap());
            }
        });
        assert!(wal.state.lock().unwrap().synced >= 16);
        assert!(!wal.state.lock().unwrap().running);
    }
}
