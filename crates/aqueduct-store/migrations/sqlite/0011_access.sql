-- Who may read: API keys bound to one organization, stored as the SHA-256 of their secret half
-- (shown once, at creation), and the log of every read of patient data through the API and
-- the FHIR facade.
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    organization   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    label          TEXT,
    secret_hash    TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT
);
CREATE INDEX api_keys_by_org ON api_keys (organization, created_at);

CREATE TABLE access_log (
    id             INTEGER PRIMARY KEY,
    at             TEXT NOT NULL,
    organization   TEXT NOT NULL,
    principal      TEXT NOT NULL,
    action         TEXT NOT NULL,
    route          TEXT NOT NULL,
    patient        TEXT,
    resource_types TEXT NOT NULL,
    count          INTEGER NOT NULL,
    client_addr    TEXT
);
CREATE INDEX access_log_by_org ON access_log (organization, id);
CREATE INDEX access_log_by_patient ON access_log (organization, patient, id);
