-- Initial schema of the Postgres store. The migration runner sets
-- search_path to the store's schema, so names here are unqualified.
--
-- JSON values (args, context, results, options) are bytea, not jsonb:
-- jsonb rejects \u0000 and rewrites key order, number spelling and duplicate
-- keys, and the store must return the bytes it was given.

CREATE TABLE batches (
    id                     text        PRIMARY KEY,
    type                   text        NOT NULL CHECK (type IN ('parallel', 'chain')),
    status                 text        NOT NULL,
    queue_name             text        NOT NULL,
    queue                  text        NOT NULL,
    context                bytea,
    -- JSON encoding of events.Options.
    options                bytea       NOT NULL,
    total                  integer     NOT NULL,
    completed              integer     NOT NULL,
    failed                 integer     NOT NULL,
    skipped                integer     NOT NULL,
    dispatched             integer     NOT NULL,
    current                integer     NOT NULL,
    -- State of the reverse compensation walk (store.WalkState) and the
    -- position it is at.
    walk                   text        NOT NULL,
    walk_position          integer     NOT NULL,
    error                  text        NOT NULL,
    compensation_total     integer     NOT NULL,
    compensation_completed integer     NOT NULL,
    compensation_failed    integer     NOT NULL,
    cancelled              boolean     NOT NULL,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    finished_at            timestamptz,
    version                bigint      NOT NULL,
    -- An outcome counts once, so the counters never pass the total; a
    -- change that would is a bug, and failing it keeps the state sound.
    CONSTRAINT batches_counters_check CHECK (
        total >= 0 AND completed >= 0 AND failed >= 0 AND skipped >= 0
        AND completed + failed + skipped <= total
        AND dispatched >= 0 AND compensation_total >= 0
        AND compensation_completed >= 0 AND compensation_failed >= 0
        AND version >= 1
    )
);

-- Prune finds final batches by the time they settled. A batch saved as
-- final without finished_at falls back to its last update.
CREATE INDEX batches_finished_idx ON batches ((COALESCE(finished_at, updated_at)))
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Undispatched lists open parallel batches whose work is not all published.
CREATE INDEX batches_undispatched_idx ON batches (id)
    WHERE type = 'parallel'
      AND status NOT IN ('completed', 'failed', 'cancelled')
      AND dispatched < total;

-- Jobs and callbacks. Jobs are staged before their batch row exists, so
-- batch_id has no foreign key. Callbacks have position -1.
CREATE TABLE jobs (
    batch_id             text        NOT NULL,
    job_id               text        NOT NULL,
    position             integer     NOT NULL,
    role                 text        NOT NULL CHECK (role IN ('job', 'callback')),
    name                 text        NOT NULL,
    args                 bytea,
    -- compensation_name is NULL when the job has no compensation.
    compensation_name    text,
    compensation_args    bytea,
    max_attempts         integer     NOT NULL,
    timeout_ms           bigint      NOT NULL,
    parent_id            text        NOT NULL,
    status               text        NOT NULL,
    attempt              integer     NOT NULL,
    result               bytea,
    error                text        NOT NULL,
    finished_at          timestamptz,
    compensation_status  text        NOT NULL,
    compensation_attempt integer     NOT NULL,
    compensation_error   text        NOT NULL,
    -- Orders the callbacks of a batch by when they were stored.
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (batch_id, job_id),
    CONSTRAINT jobs_position_check CHECK (
        (role = 'job' AND position >= 0) OR (role = 'callback' AND position = -1)
    ),
    CONSTRAINT jobs_attempts_check CHECK (attempt >= 0 AND compensation_attempt >= 0)
);

-- One job per position, and the index behind every position lookup.
CREATE UNIQUE INDEX jobs_position_idx ON jobs (batch_id, position) WHERE role = 'job';

-- Chunks staged by StageJobs, so a chunk staged twice is stored once.
CREATE TABLE batch_chunks (
    batch_id       text        NOT NULL,
    chunk          integer     NOT NULL,
    first_position integer     NOT NULL,
    count          integer     NOT NULL,
    staged_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, chunk)
);

-- Applied and rejected jobs.added events. code is empty for an applied
-- addition and the events.Code of the rejection otherwise.
CREATE TABLE additions (
    batch_id       text    NOT NULL,
    add_id         text    NOT NULL,
    first_position integer NOT NULL,
    count          integer NOT NULL,
    code           text    NOT NULL,
    error          text    NOT NULL,
    PRIMARY KEY (batch_id, add_id)
);

-- Messages committed with a change and not yet stored by the stream.
CREATE TABLE outbox (
    key        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id   text        NOT NULL,
    subject    text        NOT NULL,
    msg_id     text        NOT NULL,
    type       text        NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    -- Message ids are deterministic: a second message with the same id is
    -- one that the stream would drop as a duplicate.
    CONSTRAINT outbox_msg_id_key UNIQUE (msg_id)
);

CREATE INDEX outbox_created_idx ON outbox (created_at, key);
CREATE INDEX outbox_batch_idx ON outbox (batch_id);

-- Malformed events that the coordinator terminated, newest by id.
CREATE TABLE rejected_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     text        NOT NULL,
    reason      text        NOT NULL,
    sequence    numeric(20) NOT NULL,
    data        bytea,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
