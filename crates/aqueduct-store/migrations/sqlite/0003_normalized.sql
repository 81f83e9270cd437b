CREATE TABLE normalized (
    id              INTEGER PRIMARY KEY,
    organization    TEXT NOT NULL,
    connection      TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    logical_id      TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    ordinal         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    patient_id      TEXT,
    effective       TEXT,
    code_system     TEXT,
    code            TEXT,
    display         TEXT,
    resolution      TEXT NOT NULL,
    source_system   TEXT,
    source_code     TEXT,
    source_text     TEXT,
    rules_version   TEXT NOT NULL,
    data            TEXT NOT NULL,
    UNIQUE (organization, connection, resource_type, logical_id, ordinal)
);
CREATE INDEX normalized_by_kind ON normalized (organization, connection, kind, patient_id, effective);
CREATE INDEX normalized_by_resolution ON normalized (organization, resolution, connection, kind);

CREATE TABLE code_mappings (
    organization    TEXT NOT NULL,
    connection      TEXT NOT NULL,
    source_system   TEXT NOT NULL,
    source_code     TEXT NOT NULL,
    target_system   TEXT NOT NULL,
    target_code     TEXT NOT NULL,
    target_display  TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (organization, connection, source_system, source_code)
);
