-- API keys (hashed) and the log of every read of patient data (see the SQLite migration of the
-- same number).
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    organization   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    label          TEXT,
    secret_hash    TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ
);
CREATE INDEX api_keys_by_org ON api_keys (organization, created_at);

CREATE TABLE access_log (
    id             BIGSERIAL PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL,
    organization   TEXT NOT NULL,
    principal      TEXT NOT NULL,
    action         TEXT NOT NULL,
    route          TEXT NOT NULL,
    patient        TEXT,
    resource_types TEXT NOT NULL,
    count          BIGINT NOT NULL,
    client_addr    TEXT
);
CREATE INDEX access_log_by_org ON access_log (organization, id);
CREATE INDEX access_log_by_patient ON access_log (organization, patient, id);
