-- The access log's lookups (a file beside the log, derived from it): the seqs of each
-- patient's and each actor's entries, and per tenant the last seq they cover (`upto`).
-- Rows and `upto` move in one transaction; entries after `upto` are found by scanning the
-- log's tail. Losing this file loses nothing: a start rebuilds it from the log.
CREATE TABLE access_by_patient (
    tenant_id   BLOB NOT NULL,
    patient_id  BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, patient_id, seq)
) WITHOUT ROWID;

CREATE TABLE access_by_actor (
    tenant_id  BLOB NOT NULL,
    actor_id   BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, actor_id, seq)
) WITHOUT ROWID;

CREATE TABLE access_indexed (
    tenant_id  BLOB PRIMARY KEY,
    upto       INTEGER NOT NULL
) WITHOUT ROWID;
