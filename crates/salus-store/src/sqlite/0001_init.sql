-- Salus schema v1 (SQLite). Ids are 16-byte UUID blobs, instants are microseconds since
-- the Unix epoch (UTC), JSON is text.

CREATE TABLE tenants (
    tenant_id   BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- The event log: append-only. (tenant_id, seq) is the ledger order, (stream_id, version)
-- is optimistic concurrency.
CREATE TABLE events (
    tenant_id       BLOB NOT NULL,
    seq             INTEGER NOT NULL,
    event_id        BLOB NOT NULL UNIQUE,
    stream_type     TEXT NOT NULL,
    stream_id       BLOB NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    actor_id        BLOB NOT NULL,
    correlation_id  BLOB NOT NULL,
    causation_id    BLOB,
    occurred_at     INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    prev_hash       BLOB NOT NULL,
    hash            BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (stream_id, version)
) WITHOUT ROWID;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE streams (
    stream_id    BLOB PRIMARY KEY,
    tenant_id    BLOB NOT NULL,
    stream_type  TEXT NOT NULL,
    version      INTEGER NOT NULL,
    hash         BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX streams_tenant ON streams (tenant_id);

CREATE TABLE ledger_heads (
    tenant_id  BLOB PRIMARY KEY,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tree_heads (
    tenant_id   BLOB NOT NULL,
    tree_size   INTEGER NOT NULL,
    root_hash   BLOB NOT NULL,
    signed_at   INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tree_size)
) WITHOUT ROWID;

CREATE TABLE resources (
    tenant_id      BLOB NOT NULL,
    resource_type  TEXT NOT NULL,
    id             BLOB NOT NULL,
    version        INTEGER NOT NULL,
    doc            TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id)
) WITHOUT ROWID;

-- Clustered by resource (rows are replaced per resource on update); the lookup index
-- serves searches.
CREATE TABLE search_index (
    resource_id    BLOB NOT NULL,
    param          TEXT NOT NULL,
    value          TEXT NOT NULL,
    system         TEXT NOT NULL,
    tenant_id      BLOB NOT NULL,
    resource_type  TEXT NOT NULL,
    PRIMARY KEY (resource_id, param, value, system)
) WITHOUT ROWID;
CREATE INDEX search_index_lookup ON search_index (tenant_id, resource_type, param, value, resource_id);

CREATE TABLE unique_keys (
    tenant_id  BLOB NOT NULL,
    scope      TEXT NOT NULL,
    value      TEXT NOT NULL,
    stream_id  BLOB NOT NULL,
    PRIMARY KEY (tenant_id, scope, value)
) WITHOUT ROWID;

CREATE TABLE idempotency (
    tenant_id         BLOB NOT NULL,
    key               TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    status            INTEGER NOT NULL,
    body              TEXT NOT NULL,
    resource_version  INTEGER,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
