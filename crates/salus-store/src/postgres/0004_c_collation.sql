-- Keys compared byte-wise: the text columns of primary keys and indexes are identifiers
-- (resource types, parameter names, unique-key scopes and values, idempotency keys), so
-- their order carries no meaning, and under a database's linguistic collation every
-- b-tree comparison on them went through strcoll. search_index.value is "C" already.
ALTER TABLE resources ALTER COLUMN resource_type TYPE text COLLATE "C";
ALTER TABLE search_index ALTER COLUMN resource_type TYPE text COLLATE "C";
ALTER TABLE search_index ALTER COLUMN param TYPE text COLLATE "C";
ALTER TABLE unique_keys ALTER COLUMN scope TYPE text COLLATE "C";
ALTER TABLE unique_keys ALTER COLUMN value TYPE text COLLATE "C";
ALTER TABLE idempotency ALTER COLUMN key TYPE text COLLATE "C";

-- Streams are read by id; listing a tenant's streams (audit verify) scans.
DROP INDEX streams_tenant;
