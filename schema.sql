-- runsvc schema. Applied as a whole to a new database; an older database is brought up to this
-- version by the steps in runsvc/store/migrations.py. PRAGMA user_version records the version.
--
-- Timestamps are RFC 3339 UTC text with a fixed width ("2026-11-27T09:26:22.123456Z"), so text order
-- is time order and an index on them serves range queries. Secrets are stored only as hashes.

-- Must come before the first table: retention pruning gives pages back with PRAGMA incremental_vacuum.
-- (migrations.py sets it again outside the transaction this file runs in: only there does it take effect.)
PRAGMA auto_vacuum = INCREMENTAL;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,                       -- argon2id
    role          TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    TEXT    NOT NULL
);

CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY,
    token_hash BLOB    NOT NULL UNIQUE,                   -- sha256 of the cookie token
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- One row per (normalized username, client address) with recent failed logins.
CREATE TABLE login_throttle (
    username        TEXT    NOT NULL,
    client          TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    first_failed_at TEXT    NOT NULL,
    last_failed_at  TEXT    NOT NULL,
    locked_until    TEXT,                                 -- end of the latest lockout; NULL: none yet
    lockout_s       INTEGER NOT NULL DEFAULT 0,           -- length of the current lockout
    PRIMARY KEY (username, client)
);
CREATE INDEX login_throttle_last_failed_at ON login_throttle (last_failed_at);

-- AUTOINCREMENT: a run id is never reused after retention deletes the run, so a client holding an
-- old id can never be shown somebody else's run.
-- Saved jobs (SPEC §15, schema version 6). Nested objects are JSON text, stored normalised (defaults filled in).
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    description   TEXT    NOT NULL DEFAULT '',
    command       TEXT    NOT NULL,                       -- JSON array of strings
    env           TEXT    NOT NULL,                       -- JSON object of string to string
    timeout_s     REAL    NOT NULL,
    labels        TEXT    NOT NULL DEFAULT '[]',          -- JSON array of strings
    params        TEXT    NOT NULL DEFAULT '[]',          -- JSON array of parameter objects
    retries       TEXT,                                   -- JSON object or NULL
    concurrency   TEXT,                                   -- JSON object or NULL
    schedule      TEXT,                                   -- JSON {cron, timezone, overlap, enabled, missed} or NULL
    schedule_from TEXT,                                   -- fire times are counted from here (set when the schedule changes or is enabled)
    created_at    TEXT    NOT NULL,
    created_by    TEXT,
    updated_at    TEXT    NOT NULL,
    secrets       TEXT    NOT NULL DEFAULT '{}'           -- JSON object: env var -> secret name (schema version 7)
);

-- Each fire time of a job's schedule, recorded once (the primary key) with what it did.
CREATE TABLE job_fires (
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scheduled_for TEXT    NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('started', 'skipped_overlap', 'skipped_missed',
                                                      'cancelled_previous')),
    run_id        INTEGER,                                -- the run it started; no FK: retention deletes runs
    recorded_at   TEXT    NOT NULL,
    PRIMARY KEY (job_id, scheduled_for)
) WITHOUT ROWID;

CREATE TABLE runs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT,
    command    TEXT    NOT NULL,                          -- JSON array of strings
    env        TEXT    NOT NULL,                          -- JSON object of string to string
    timeout_s  REAL    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                                  'cancelled', 'timed_out', 'interrupted')),
    exit_code  INTEGER,
    created_by TEXT,                                      -- username
    created_at TEXT    NOT NULL,
    started_at TEXT,
    ended_at   TEXT,
    last_seq   INTEGER NOT NULL DEFAULT 0,                -- seq of the run's newest event
    labels     TEXT    NOT NULL DEFAULT '[]',             -- JSON array: an executor needs all of them
    executor   TEXT,                                      -- 'local' or 'agent:<name>'; NULL while queued
    attempt    INTEGER NOT NULL DEFAULT 0,                -- hand-outs so far; agent reports are fenced by it
    agent_chunk INTEGER NOT NULL DEFAULT 0,               -- last output chunk of this attempt stored
    -- Jobs, retries, concurrency, delayed runs (SPEC §15, schema version 6)
    job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL,  -- NULL: not from a job, or the job was deleted
    job_name TEXT,                                        -- kept when the job is deleted
    trigger TEXT NOT NULL DEFAULT 'api' CHECK (trigger IN ('api', 'job', 'schedule', 'retry', 'rerun')),
    retry_of INTEGER,                                     -- the run this one retries (no FK: retention)
    try_number INTEGER NOT NULL DEFAULT 1,                -- "try" in the API; 1 for a first try
    not_before TEXT,                                      -- not claimed before this time; NULL: at once
    scheduled_for TEXT,                                   -- the fire time, for trigger 'schedule'
    params TEXT NOT NULL DEFAULT '{}',                    -- JSON object of string to string
    retries TEXT,                                         -- JSON {max, delay_s, backoff, on}; NULL: none
    concurrency TEXT,                                     -- JSON {key, limit}; NULL: none
    concurrency_key TEXT,                                 -- concurrency's key, for the claim's index
    secrets TEXT NOT NULL DEFAULT '{}'                    -- JSON object: env var -> secret name (schema version 7)
);
CREATE INDEX runs_status_started_at ON runs (status, started_at);   -- startup recovery
CREATE INDEX runs_ended_at ON runs (ended_at);                      -- retention
CREATE INDEX runs_status_id ON runs (status, id);                   -- list filtered by status
-- Claiming (schema version 6; store/runs.py CLAIM_NEXT): queued runs only, by claim group (label set,
-- concurrency key) and, within one, by when they became due, then id. The claim visits the distinct
-- groups, one seek each, so runs no free executor can take, runs not yet due and runs of full
-- concurrency groups cost it nothing.
CREATE INDEX runs_queued_claim ON runs (labels, ifnull(concurrency_key, ''),
                                        max(created_at, ifnull(not_before, '')), id) WHERE status = 'queued';
-- The scheduler sleeps until the earliest not_before of a queued run (schema version 6).
CREATE INDEX runs_queued_not_before ON runs (not_before) WHERE status = 'queued' AND not_before IS NOT NULL;
-- Concurrency groups (schema version 6): the claim counts a group's running runs through this index.
CREATE INDEX runs_running_concurrency ON runs (concurrency_key) WHERE status = 'running';
CREATE INDEX runs_job_id ON runs (job_id, id);                      -- a job's runs, newest first
-- The schedule's overlap check: a job's queued and running runs, however many finished runs it has.
CREATE INDEX runs_job_active ON runs (job_id) WHERE status IN ('queued', 'running');

CREATE TABLE run_events (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    ts     TEXT    NOT NULL,
    kind   TEXT    NOT NULL CHECK (kind IN ('state', 'stdout', 'stderr', 'system')),
    data   TEXT    NOT NULL,                              -- a line, or JSON for 'state'
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE enrollment_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash BLOB    NOT NULL UNIQUE,
    labels     TEXT    NOT NULL DEFAULT '[]',             -- JSON array of strings
    created_by TEXT,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT
);
CREATE INDEX enrollment_tokens_expires_at ON enrollment_tokens (expires_at);

-- Remote agents (SPEC §11, schema version 4). Deleting an agent revokes it: its secret no longer matches any row.
CREATE TABLE agents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    labels       TEXT    NOT NULL DEFAULT '[]',           -- JSON array of strings
    secret_hash  BLOB    NOT NULL UNIQUE,                 -- sha256 of the agent's secret
    created_at   TEXT    NOT NULL,
    last_seen_at TEXT
);
-- API tokens (schema version 3): `Authorization: Bearer rsv_…`. Only sha256 of the secret is stored.
-- The effective role of a request is the lower of `role` and the user's role at that moment.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    token_hash   BLOB    NOT NULL UNIQUE,                 -- sha256 of the secret
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at   TEXT    NOT NULL,
    expires_at   TEXT,                                    -- NULL: never expires
    last_used_at TEXT                                     -- written at most once a minute
);
CREATE INDEX api_tokens_expires_at ON api_tokens (expires_at);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

-- Secrets (SPEC §17, schema version 7): values only encrypted, AES-256-GCM under the key in
-- secret_key_file: `value` is the 12-byte nonce followed by the ciphertext and its tag.
CREATE TABLE secrets (
    name       TEXT    NOT NULL PRIMARY KEY,              -- [A-Za-z_][A-Za-z0-9_]{0,63}, case-sensitive
    value      BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    updated_by TEXT
);

-- Webhooks (SPEC §17, schema version 7). The signing secret is needed in clear to sign, so it is
-- encrypted like a secret's value, not hashed.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL DEFAULT '["run.finished"]', -- JSON array of event types
    job        TEXT,                                      -- a job name; NULL: every run
    statuses   TEXT    NOT NULL,                          -- JSON array of terminal statuses
    secret     BLOB    NOT NULL,                          -- AES-256-GCM: nonce, then ciphertext and tag
    created_at TEXT    NOT NULL,
    created_by TEXT
);

-- The outbox: one row per (webhook, event), written in the transaction that records the run's end.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event            TEXT    NOT NULL,                    -- 'run.finished'
    run_id           INTEGER NOT NULL,                    -- no FK: retention deletes runs
    body             TEXT    NOT NULL,                    -- the JSON body, fixed when the delivery is written
    attempts         INTEGER NOT NULL DEFAULT 0,          -- POSTs made, the successful one included
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     TEXT,
    next_try_at      TEXT,                                -- NULL once delivered
    created_at       TEXT    NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_try_at) WHERE next_try_at IS NOT NULL;
CREATE INDEX webhook_deliveries_webhook_id ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_created_at ON webhook_deliveries (created_at);   -- retention (7 days)
