-- Patient identity per organization (see the SQLite migration of the same number).
CREATE TABLE identity_persons (
    organization   TEXT NOT NULL,
    person         BIGINT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization, person)
);

CREATE TABLE identity_records (
    organization   TEXT NOT NULL,
    record         TEXT NOT NULL,
    person         BIGINT NOT NULL,
    content_hash   TEXT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization, record),
    FOREIGN KEY (organization, person) REFERENCES identity_persons (organization, person)
);
CREATE INDEX identity_records_by_person ON identity_records (organization, person, record);

CREATE TABLE identity_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization   TEXT NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    kind           TEXT NOT NULL,
    persons        TEXT NOT NULL,
    records        TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX identity_events_by_org ON identity_events (organization, id);

CREATE TABLE match_decisions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    verdict        TEXT NOT NULL,
    reviewer       TEXT NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    note           TEXT
);
CREATE INDEX match_decisions_by_org ON match_decisions (organization, id);

CREATE TABLE match_forced (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    source         TEXT NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    UNIQUE (organization, record_a, record_b, source)
);

CREATE TABLE match_review (
    organization   TEXT NOT NULL,
    record_a       TEXT NOT NULL,
    record_b       TEXT NOT NULL,
    weight         DOUBLE PRECISION NOT NULL,
    evidence       TEXT NOT NULL,
    queued_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization, record_a, record_b)
);
CREATE INDEX match_review_by_b ON match_review (organization, record_b);
CREATE INDEX match_review_by_weight ON match_review (organization, weight DESC);

CREATE TABLE match_models (
    organization   TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    records        BIGINT NOT NULL,
    trained_at     TIMESTAMPTZ NOT NULL
);
