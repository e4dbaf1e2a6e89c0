-- Full-text index over text that resources choose to expose (clinical notes), with the
-- "simple" configuration: text is folded (lower case, accents removed) by the server first.
CREATE TABLE text_index (
    tenant_id      uuid NOT NULL,
    resource_type  text NOT NULL,
    resource_id    uuid NOT NULL PRIMARY KEY,
    tsv            tsvector NOT NULL
);
CREATE INDEX text_index_tsv ON text_index USING gin (tsv);
CREATE INDEX text_index_tenant ON text_index (tenant_id, resource_type);
ALTER TABLE text_index ENABLE ROW LEVEL SECURITY;
ALTER TABLE text_index FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON text_index USING (tenant_id = ANY (salus_current_tenants()))
    WITH CHECK (tenant_id = ANY (salus_current_tenants()));
