-- Salus schema v1 (PostgreSQL). Every table carries tenant_id and row-level security;
-- the server runs as the role salus_app (no BYPASSRLS) and sets `salus.tenants` per
-- transaction. Text that is searched by range uses the "C" collation (byte order).

CREATE OR REPLACE FUNCTION salus_current_tenants() RETURNS uuid[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(string_to_array(NULLIF(current_setting('salus.tenants', true), ''), ',')::uuid[], '{}'::uuid[])
$$;

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL
);

CREATE TABLE events (
    tenant_id       uuid NOT NULL,
    seq             bigint NOT NULL,
    event_id        uuid NOT NULL UNIQUE,
    stream_type     text NOT NULL,
    stream_id       uuid NOT NULL,
    version         bigint NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL,
    payload         jsonb NOT NULL,
    actor_id        uuid NOT NULL,
    correlation_id  uuid NOT NULL,
    causation_id    uuid,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (stream_id, version)
);

CREATE OR REPLACE FUNCTION salus_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION salus_refuse_change();

CREATE TABLE streams (
    stream_id    uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    stream_type  text NOT NULL,
    version      bigint NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX streams_tenant ON streams (tenant_id);

CREATE TABLE ledger_heads (
    tenant_id  uuid PRIMARY KEY,
    seq        bigint NOT NULL
);

CREATE TABLE tree_heads (
    tenant_id   uuid NOT NULL,
    tree_size   bigint NOT NULL,
    root_hash   bytea NOT NULL,
    signed_at   timestamptz NOT NULL,
    key_id      text NOT NULL,
    signature   text NOT NULL,
    PRIMARY KEY (tenant_id, tree_size)
);

CREATE TABLE resources (
    tenant_id      uuid NOT NULL,
    resource_type  text NOT NULL,
    id             uuid NOT NULL,
    version        bigint NOT NULL,
    doc            jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id)
);

CREATE TABLE search_index (
    tenant_id      uuid NOT NULL,
    resource_type  text NOT NULL,
    param          text NOT NULL,
    value          text COLLATE "C" NOT NULL,
    system         text NOT NULL,
    resource_id    uuid NOT NULL
);
CREATE INDEX search_index_lookup ON search_index (tenant_id, resource_type, param, value, resource_id);
CREATE INDEX search_index_resource ON search_index (resource_id);

CREATE TABLE unique_keys (
    tenant_id  uuid NOT NULL,
    scope      text NOT NULL,
    value      text NOT NULL,
    stream_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, scope, value)
);

CREATE TABLE idempotency (
    tenant_id         uuid NOT NULL,
    key               text NOT NULL,
    request_hash      text NOT NULL,
    status            integer NOT NULL,
    body              jsonb NOT NULL,
    resource_version  bigint,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);

-- Row-level security on every table. FORCE makes it apply to the table owner too; only a
-- superuser or a BYPASSRLS role (never the server's) sees across tenants.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events','streams','ledger_heads','tree_heads','resources',
                             'search_index','unique_keys','idempotency']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = ANY (salus_current_tenants())) WITH CHECK (tenant_id = ANY (salus_current_tenants()))', t);
    END LOOP;
END $$;

-- The tenant directory is readable by the server (it names tenants, it holds no patient
-- data); creating a tenant still requires the new tenant to be the one set.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_directory_read ON tenants FOR SELECT USING (true);
CREATE POLICY tenant_directory_write ON tenants FOR INSERT WITH CHECK (tenant_id = ANY (salus_current_tenants()));
