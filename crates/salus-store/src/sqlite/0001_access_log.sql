-- The data-access log (its own file, beside the main database): one dense seq and one
-- hash chain per tenant; rows are never updated or deleted.
CREATE TABLE access_log (
    tenant_id      BLOB NOT NULL,
    seq            INTEGER NOT NULL,
    entry_id       BLOB NOT NULL UNIQUE,
    actor_id       BLOB NOT NULL,
    patient_id     BLOB NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    BLOB,
    action         TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    justification  TEXT,
    break_glass    INTEGER NOT NULL,
    client         TEXT,
    request_id     BLOB NOT NULL,
    recorded_at    INTEGER NOT NULL,
    prev_hash      BLOB NOT NULL,
    hash           BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
CREATE INDEX access_log_patient ON access_log (tenant_id, patient_id, seq);
CREATE INDEX access_log_actor ON access_log (tenant_id, actor_id, seq);
CREATE INDEX access_log_break_glass ON access_log (tenant_id, seq) WHERE break_glass = 1;

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
