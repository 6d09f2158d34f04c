//! Versioned schema. Migration `i` takes the database from `user_version = i`
//! to `i + 1`; each runs in one transaction. Never edit a released step: add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: runs, files and events.
    r#"
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        trigger       TEXT NOT NULL,             -- schedule | watch | once | catch_up | rescan
        started_at    TEXT NOT NULL,             -- RFC 3339 UTC
        finished_at   TEXT,
        status        TEXT NOT NULL DEFAULT 'running', -- running | ok | failed | aborted
        files_ok      INTEGER NOT NULL DEFAULT 0,
        files_failed  INTEGER NOT NULL DEFAULT 0,
        bytes         INTEGER NOT NULL DEFAULT 0,
        error         TEXT
    );
    CREATE INDEX runs_by_job ON runs (job, started_at);

    CREATE TABLE files (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        direction     TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        mtime         TEXT,                      -- as the source reported it; NULL when unknown
        sha256        TEXT,                      -- lowercase hex; NULL until computed
        remote_path   TEXT NOT NULL,
        local_path    TEXT,
        state         TEXT NOT NULL CHECK (state IN
                        ('seen', 'sending', 'sent', 'renamed', 'verified', 'done', 'failed')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        verified      TEXT NOT NULL DEFAULT 'none' CHECK (verified IN ('hash', 'size', 'none')),
        last_error    TEXT,
        run_id        INTEGER REFERENCES runs (id),
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        started_at    TEXT,
        finished_at   TEXT
    );
    CREATE INDEX files_by_job ON files (job, name);
    CREATE INDEX files_by_state ON files (state);
    CREATE INDEX files_by_time ON files (created_at);

    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        job           TEXT NOT NULL,
        run_id        INTEGER REFERENCES runs (id),
        file_id       INTEGER REFERENCES files (id),
        kind          TEXT NOT NULL,
        detail        TEXT
    );
    CREATE INDEX events_by_file ON events (file_id);
    "#,
    // 2: failure alerts (for throttling and recovery notices) and a durable
    // outbox, so an email survives SMTP being down and ferry restarting.
    r#"
    CREATE TABLE alerts (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        cause         TEXT NOT NULL,             -- files | connection | certificate:<server>
        opened_at     TEXT NOT NULL,             -- when this problem was first reported
        last_sent_at  TEXT NOT NULL,
        suppressed    INTEGER NOT NULL DEFAULT 0, -- failures not emailed within repeat_after
        detail        TEXT,                      -- what failed, for the recovery notice
        resolved_at   TEXT
    );
    CREATE INDEX alerts_open ON alerts (job, resolved_at);

    CREATE TABLE outbox (
        id            INTEGER PRIMARY KEY,
        created_at    TEXT NOT NULL,
        recipients    TEXT NOT NULL,             -- JSON array of addresses
        subject       TEXT NOT NULL,
        body          TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT
    );
    "#,
    // 3: the recovery rule. `state` gains `renaming` and `held`; `intent`
    // and `temp_path` say which remote side effect of ferry's own may have
    // happened (written before the command is sent); `remote_before` is what
    // the server listed at the final name before a direct upload; `resend`
    // is an operator's `ferry resend`. Server quirks are remembered once met.
    // SQLite cannot change a CHECK constraint, so `files` is rebuilt.
    r#"
    CREATE TABLE files_v3 (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        direction     TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        mtime         TEXT,
        sha256        TEXT,
        remote_path   TEXT NOT NULL,
        local_path    TEXT,
        state         TEXT NOT NULL CHECK (state IN
                        ('seen', 'sending', 'sent', 'renaming', 'renamed', 'verified', 'done',
                         'failed', 'held')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        verified      TEXT NOT NULL DEFAULT 'none' CHECK (verified IN ('hash', 'size', 'none')),
        last_error    TEXT,
        run_id        INTEGER REFERENCES runs (id),
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        intent        TEXT CHECK (intent IN ('upload', 'rename')),
        temp_path     TEXT,
        remote_before TEXT,
        resend        INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO files_v3 (id, job, direction, name, size, mtime, sha256, remote_path, local_path,
                          state, attempts, verified, last_error, run_id, created_at, updated_at,
                          started_at, finished_at)
        SELECT id, job, direction, name, size, mtime, sha256, remote_path, local_path,
               state, attempts, verified, last_error, run_id, created_at, updated_at,
               started_at, finished_at FROM files;
    DROP TABLE files;
    ALTER TABLE files_v3 RENAME TO files;
    CREATE INDEX files_by_job ON files (job, name);
    CREATE INDEX files_by_state ON files (state);
    CREATE INDEX files_by_time ON files (created_at);

    CREATE TABLE server_quirks (
        server        TEXT NOT NULL,
        quirk         TEXT NOT NULL,             -- rest_refused | size_refused | hash_refused_from | max_sessions
        value         INTEGER NOT NULL DEFAULT 1,
        detail        TEXT,                      -- the reply that showed it
        first_seen    TEXT NOT NULL,
        last_seen     TEXT NOT NULL,
        PRIMARY KEY (server, quirk)
    );
    "#,
    // 4: the audit trail, a hash chain (see `ledger::audit`). AUTOINCREMENT
    // so SQLite remembers the highest row ever written: deleting the newest
    // rows leaves a trace. `file_id` is no reference: retention prunes files.
    r#"
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        at            TEXT NOT NULL,             -- RFC 3339 UTC
        kind          TEXT NOT NULL,
        job           TEXT,
        server        TEXT,                      -- the job's partner: name host:port
        file_id       INTEGER,
        file          TEXT,
        actor         TEXT NOT NULL,             -- ferry, or the OS user of an operator command
        detail        TEXT NOT NULL,             -- a JSON object
        prev          TEXT NOT NULL,             -- the previous row's hash
        hash          TEXT NOT NULL              -- SHA-256 of prev and this row's content
    );
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_hash ON audit (hash);
    "#,
    // 5: claims awareness (issue 14). The envelope of every interchange a
    // push job with `edi:` sends (control numbers, counts, SHA-256 of each
    // CLM01, never claim data), the acknowledgement status of each
    // interchange, group, set and claim (codes only), every acknowledgement
    // file a pull job read, files the gate blocked, operator overrides of a
    // duplicate block, and the expected-file windows already alerted.
    r#"
    CREATE TABLE edi_interchanges (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        server        TEXT NOT NULL,             -- the partner: duplicates are per server
        file_id       INTEGER NOT NULL,          -- no reference: retention prunes files
        file          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        isa05 TEXT NOT NULL, isa06 TEXT NOT NULL, isa07 TEXT NOT NULL, isa08 TEXT NOT NULL,
        isa13 TEXT NOT NULL, isa14 TEXT NOT NULL, isa15 TEXT NOT NULL,
        recorded_at   TEXT NOT NULL,
        sent_at       TEXT,                      -- set when the file is verified delivered
        ta1_status    TEXT,                      -- accepted | accepted_with_errors | rejected
        ta1_code      TEXT,                      -- TA105
        ta1_at        TEXT,
        ta1_overdue_at TEXT,                     -- when the overdue alert went out
        override_by   TEXT                       -- `ferry resend` of a duplicate: who
    );
    CREATE INDEX edi_interchanges_key ON edi_interchanges (server, isa06, isa08, isa13);
    CREATE INDEX edi_interchanges_file ON edi_interchanges (file_id);

    CREATE TABLE edi_groups (
        id            INTEGER PRIMARY KEY,
        interchange_id INTEGER NOT NULL REFERENCES edi_interchanges (id),
        gs01 TEXT NOT NULL, gs02 TEXT NOT NULL, gs03 TEXT NOT NULL, gs06 TEXT NOT NULL, gs08 TEXT NOT NULL,
        sets          INTEGER NOT NULL,          -- ST count (GE01)
        ack_status    TEXT,                      -- the 999's AK9
        ack_codes     TEXT,                      -- AK905-AK909
        ack_included  INTEGER,                   -- AK902
        ack_accepted  INTEGER,                   -- AK904
        ack_at        TEXT,
        ack_overdue_at TEXT
    );
    CREATE INDEX edi_groups_key ON edi_groups (gs01, gs06);

    CREATE TABLE edi_sets (
        id            INTEGER PRIMARY KEY,
        group_id      INTEGER NOT NULL REFERENCES edi_groups (id),
        st01 TEXT NOT NULL, st02 TEXT NOT NULL, st03 TEXT NOT NULL,
        bht03         TEXT,
        claims        INTEGER NOT NULL DEFAULT 0,
        ack_status    TEXT,                      -- the 999's IK5
        ack_codes     TEXT,                      -- IK3/IK4/IK5 codes with positions
        ca_status     TEXT,                      -- the 277CA, rolled up over claims
        ca_accepted   INTEGER,
        ca_rejected   INTEGER,
        ca_at         TEXT,
        ca_overdue_at TEXT
    );
    CREATE INDEX edi_sets_bht ON edi_sets (bht03);

    CREATE TABLE edi_claims (
        set_id        INTEGER NOT NULL REFERENCES edi_sets (id),
        claim         TEXT NOT NULL,             -- SHA-256 of CLM01, never CLM01 itself
        status        TEXT,                      -- from the 277CA
        codes         TEXT,                      -- STC01-1 categories
        at            TEXT
    );
    CREATE INDEX edi_claims_by_set ON edi_claims (set_id, claim);

    CREATE TABLE edi_acks (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,             -- the pull job that read it
        file_id       INTEGER NOT NULL,          -- no reference: retention prunes files
        file          TEXT NOT NULL,
        kind          TEXT NOT NULL,             -- TA1 | 999 | 277CA | 835 | other
        received_at   TEXT NOT NULL,
        interchange_id INTEGER REFERENCES edi_interchanges (id),
        outcome       TEXT NOT NULL,             -- matched | orphan | unread | informational
        detail        TEXT                       -- codes and counts only
    );
    CREATE INDEX edi_acks_file ON edi_acks (file_id);

    CREATE TABLE edi_blocked (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        file          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('invalid', 'duplicate')),
        reason        TEXT NOT NULL,             -- codes and positions only
        at            TEXT NOT NULL,
        moved_to      TEXT,                      -- invalid: where the file went
        override_by   TEXT,                      -- duplicate: `ferry resend`, who
        override_at   TEXT
    );
    CREATE INDEX edi_blocked_by_job ON edi_blocked (job, file);

    CREATE TABLE edi_expect_alerts (
        job           TEXT NOT NULL,
        window_start  TEXT NOT NULL,
        alerted_at    TEXT NOT NULL,
        PRIMARY KEY (job, window_start)
    );
    "#,
    // 6: the audit chain is looked up by hash only when an operator checks
    // a head copied out earlier (`ferry audit verify --head`), a scan it can
    // afford; the index cost every audit row a random page write.
    r#"
    DROP INDEX audit_by_hash;
    "#,
];
