-- Lookups by patient and by actor move out of the access log's own indexes into a file of
-- their own (`salus-access-lookup.db`, see access.rs), written in bulk a little later by a
-- thread of its own: an index keyed by patient takes a random page for every entry, and
-- writing those pages with every commit made each read wait for several times the bytes of
-- its own entry. Here stays the list of tenants with entries, from which a start rebuilds
-- the lookups a crash left unwritten.
DROP INDEX access_log_patient;
DROP INDEX access_log_actor;

CREATE TABLE access_tenants (
    tenant_id  BLOB PRIMARY KEY
) WITHOUT ROWID;

INSERT INTO access_tenants (tenant_id) SELECT DISTINCT tenant_id FROM access_log;
