-- The data-access log: one dense seq and one hash chain per tenant, written by its own
-- connection; never updated or deleted; row-level security like every table.
CREATE TABLE access_log (
    tenant_id      uuid NOT NULL,
    seq            bigint NOT NULL,
    entry_id       uuid NOT NULL UNIQUE,
    actor_id       uuid NOT NULL,
    patient_id     uuid NOT NULL,
    resource_type  text COLLATE "C" NOT NULL,
    resource_id    uuid,
    action         text COLLATE "C" NOT NULL,
    purpose        text COLLATE "C" NOT NULL,
    justification  text,
    break_glass    boolean NOT NULL,
    client         text,
    request_id     uuid NOT NULL,
    recorded_at    timestamptz NOT NULL,
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX access_log_patient ON access_log (tenant_id, patient_id, seq);
CREATE INDEX access_log_actor ON access_log (tenant_id, actor_id, seq);
CREATE INDEX access_log_break_glass ON access_log (tenant_id, seq) WHERE break_glass;

CREATE OR REPLACE FUNCTION salus_refuse_access_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the access log is append-only';
END $$;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION salus_refuse_access_change();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION salus_refuse_access_change();

ALTER TABLE access_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON access_log
    USING (tenant_id = ANY (salus_current_tenants()))
    WITH CHECK (tenant_id = ANY (salus_current_tenants()));
