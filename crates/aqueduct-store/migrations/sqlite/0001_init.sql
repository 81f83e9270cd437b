CREATE TABLE organizations (
    name          TEXT PRIMARY KEY,
    display_name  TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE connections (
    organization  TEXT NOT NULL REFERENCES organizations(name),
    name          TEXT NOT NULL,
    base_url      TEXT NOT NULL,
    profile       TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (organization, name)
);

CREATE TABLE resources (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    logical_id     TEXT NOT NULL,
    version_id     TEXT,
    last_updated   TEXT,
    fetched_at     TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    source_url     TEXT NOT NULL,
    patient_id     TEXT,
    parse_status   TEXT NOT NULL,
    parse_error    TEXT,
    version_seq    INTEGER NOT NULL,
    deleted_at     TEXT,
    raw            BLOB NOT NULL,
    UNIQUE (organization, connection, resource_type, logical_id)
);
CREATE INDEX resources_by_patient ON resources (organization, connection, patient_id, resource_type);

CREATE TABLE resource_history (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    logical_id     TEXT NOT NULL,
    version_id     TEXT,
    last_updated   TEXT,
    fetched_at     TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    source_url     TEXT NOT NULL,
    patient_id     TEXT,
    parse_status   TEXT NOT NULL,
    parse_error    TEXT,
    version_seq    INTEGER NOT NULL,
    deleted_at     TEXT,
    raw            BLOB NOT NULL,
    superseded_at  TEXT NOT NULL
);
CREATE INDEX resource_history_by_key ON resource_history (organization, connection, resource_type, logical_id, version_seq);

CREATE TABLE sync_runs (
    id            INTEGER PRIMARY KEY,
    organization  TEXT NOT NULL,
    connection    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT NOT NULL,
    summary       TEXT,
    error         TEXT
);
CREATE INDEX sync_runs_by_connection ON sync_runs (organization, connection, id);

CREATE TABLE sync_requests (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES sync_runs(id),
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    at             TEXT NOT NULL,
    method         TEXT NOT NULL,
    url_template   TEXT NOT NULL,
    url            TEXT NOT NULL,
    resource_type  TEXT,
    patient_id     TEXT,
    status         INTEGER,
    duration_ms    REAL NOT NULL,
    bytes          INTEGER NOT NULL,
    resources      INTEGER NOT NULL,
    error_kind     TEXT,
    page_complete  INTEGER NOT NULL,
    attempt        INTEGER NOT NULL
);
CREATE INDEX sync_requests_by_run ON sync_requests (run_id);
CREATE INDEX sync_requests_by_connection ON sync_requests (organization, connection, at);

CREATE TABLE checkpoints (
    organization  TEXT NOT NULL,
    connection    TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (organization, connection, key)
);

CREATE TABLE credentials (
    organization  TEXT NOT NULL,
    connection    TEXT NOT NULL,
    name          TEXT NOT NULL,
    ciphertext    BLOB NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (organization, connection, name)
);

CREATE TABLE auth_events (
    id            INTEGER PRIMARY KEY,
    organization  TEXT NOT NULL,
    connection    TEXT NOT NULL,
    at            TEXT NOT NULL,
    event         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT
);
CREATE INDEX auth_events_by_connection ON auth_events (organization, connection, id);

CREATE TABLE findings (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    run_id         INTEGER,
    at             TEXT NOT NULL,
    kind           TEXT NOT NULL,
    severity       TEXT NOT NULL,
    resource_type  TEXT,
    detail         TEXT NOT NULL
);
CREATE INDEX findings_by_connection ON findings (organization, connection, id);
