-- Search rows v2: one b-tree instead of two, with short keys.
--
-- Every (tenant, resource type, parameter) gets a small integer (`pid`), so an index key
-- is (pid, value, resource id, system) instead of repeating the tenant, the type and the
-- parameter name in every entry. The rows of a resource are found for replacement
-- through the list kept in `resources.search_keys` (a JSON array of [param, value,
-- system]), not through a second index clustered by resource.

CREATE TABLE search_params (
    pid            INTEGER PRIMARY KEY,
    tenant_id      BLOB NOT NULL,
    resource_type  TEXT NOT NULL,
    param          TEXT NOT NULL,
    UNIQUE (tenant_id, resource_type, param)
);

CREATE TABLE search_rows (
    pid          INTEGER NOT NULL,
    value        TEXT NOT NULL,
    resource_id  BLOB NOT NULL,
    system       TEXT NOT NULL,
    PRIMARY KEY (pid, value, resource_id, system)
) WITHOUT ROWID;

ALTER TABLE resources ADD COLUMN search_keys TEXT NOT NULL DEFAULT '[]';

INSERT INTO search_params (tenant_id, resource_type, param)
    SELECT DISTINCT tenant_id, resource_type, param FROM search_index ORDER BY 1, 2, 3;

INSERT INTO search_rows (pid, value, resource_id, system)
    SELECT p.pid, s.value, s.resource_id, s.system
    FROM search_index s JOIN search_params p
      ON p.tenant_id = s.tenant_id AND p.resource_type = s.resource_type AND p.param = s.param;

UPDATE resources SET search_keys = (
    SELECT json_group_array(json_array(s.param, s.value, s.system))
    FROM (SELECT param, value, system FROM search_index
          WHERE resource_id = resources.id AND tenant_id = resources.tenant_id
            AND resource_type = resources.resource_type
          ORDER BY param, value, system) s
) WHERE EXISTS (SELECT 1 FROM search_index WHERE resource_id = resources.id);

DROP TABLE search_index;

-- Stream heads are looked up by stream id only; listing a tenant's heads (audit verify)
-- reads the table through, which is not worth an index entry on every stream.
DROP INDEX streams_tenant;
