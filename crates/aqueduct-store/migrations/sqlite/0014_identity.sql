-- Patient identity per organization (schema 14): persons, each record's person, identity events
-- with their evidence, reviewer decisions, hard evidence from sources, the review queue and the
-- trained match model. Evidence and models are JSON the store keeps without reading.
CREATE TABLE identity_persons (
    organization   TEXT NOT NULL,
    person         INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (organization, person)
);

CREATE TABLE identity_records (
    organization   TEXT NOT NULL,
    record         TEXT NOT NULL,
    person         INTEGER NOT NULL,
    content_hash   TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (organization, record),
    FOREIGN KEY (organization, person) REFERENCES identity_persons (organization, person)
);
CREATE INDEX identity_records_by_person ON identity_records (organization, person, record);

CREATE TABLE identity_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    organization   TEXT NOT NULL,
    at             TEXT NOT NULL,
    kind           TEXT NOT NULL,
    persons        TEXT NOT NULL,
    records        TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX identity_events_by_org ON identity_events (organization, id);

CREATE TABLE match_decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    verdict        TEXT NOT NULL,
    reviewer       TEXT NOT NULL,
    at             TEXT NOT NULL,
    note           TEXT
);
CREATE INDEX match_decisions_by_org ON match_decisions (organization, id);

CREATE TABLE match_forced (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    source         TEXT NOT NULL,
    at             TEXT NOT NULL,
    UNIQUE (organization, record_a, record_b, source)
);

CREATE TABLE match_review (
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    weight         REAL NOT NULL,
    evidence       TEXT NOT NULL,
    queued_at      TEXT NOT NULL,
    PRIMARY KEY (organization, record_a, record_b)
);
CREATE INDEX match_review_by_b ON match_review (organization, record_b);
CREATE INDEX match_review_by_weight ON match_review (organization, weight DESC);

CREATE TABLE match_models (
    organization   TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    records        INTEGER NOT NULL,
    trained_at     TEXT NOT NULL
);
