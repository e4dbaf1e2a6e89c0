-- Search rows are found again for replacement through the list each resource keeps
-- (`resources.search_keys`, a JSON array of [param, value, system]), so the second index
-- on search_index (by resource id), one more index entry per row written, goes.
--
-- The copy runs as the table owner; row-level security is forced on the owner too, so it
-- is lifted for the copy and forced again after it, inside this migration's transaction.

ALTER TABLE resources ADD COLUMN search_keys jsonb NOT NULL DEFAULT '[]';

ALTER TABLE resources NO FORCE ROW LEVEL SECURITY;
ALTER TABLE search_index NO FORCE ROW LEVEL SECURITY;
UPDATE resources r SET search_keys = k.keys
FROM (
    SELECT tenant_id, resource_type, resource_id,
           jsonb_agg(jsonb_build_array(param, value, system) ORDER BY param, value, system) AS keys
    FROM search_index
    GROUP BY tenant_id, resource_type, resource_id
) k
WHERE r.tenant_id = k.tenant_id AND r.resource_type = k.resource_type AND r.id = k.resource_id;
ALTER TABLE resources FORCE ROW LEVEL SECURITY;
ALTER TABLE search_index FORCE ROW LEVEL SECURITY;

DROP INDEX search_index_resource;
