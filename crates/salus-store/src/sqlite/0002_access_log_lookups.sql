-- Lookups by patient and by actor move out of the access log's own indexes into tables the
-- writer fills a little later, in bulk (see access.rs): an index keyed by patient takes a
-- random page for every entry, and writing those pages with every commit made each read
-- wait for several times the bytes of its own entry. `access_indexed.upto` is the last seq
-- of a tenant whose lookups are written; the entries after it are found by scanning the
-- log's tail. Every tenant with entries has a row here (written with its first entry).
DROP INDEX access_log_patient;
DROP INDEX access_log_actor;

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

INSERT INTO access_by_patient (tenant_id, patient_id, seq)
    SELECT tenant_id, patient_id, seq FROM access_log;
INSERT INTO access_by_actor (tenant_id, actor_id, seq)
    SELECT tenant_id, actor_id, seq FROM access_log;
INSERT INTO access_indexed (tenant_id, upto)
    SELECT tenant_id, MAX(seq) FROM access_log GROUP BY tenant_id;
