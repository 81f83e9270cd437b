-- Refresh requests become a work queue the engine consumes: a request is claimed by one holder
-- under a lease (renewed by a heartbeat, reclaimed when it expires), coalesced with the other
-- pending requests for the same patient and connection, retried after `not_before`, and closed
-- with its outcome, a detail and the sync runs it caused. A request for a whole connection (a
-- schedule firing) has no patient key: the table is rebuilt because SQLite cannot drop NOT NULL.
CREATE TABLE refresh_requests_v10 (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    patient_key    TEXT,
    connection     TEXT,
    reason         TEXT NOT NULL,
    source         TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    handled_at     TEXT,
    claimed_by     TEXT,
    lease_until    TEXT,
    not_before     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    outcome        TEXT,
    detail         TEXT,
    run_ids        TEXT,
    coalesced_into INTEGER
);
INSERT INTO refresh_requests_v10 (id, organization, patient_key, connection, reason, source, requested_at, handled_at)
SELECT id, organization, patient_key, connection, reason, source, requested_at, handled_at FROM refresh_requests;
DROP TABLE refresh_requests;
ALTER TABLE refresh_requests_v10 RENAME TO refresh_requests;
CREATE INDEX refresh_requests_pending ON refresh_requests (organization, handled_at, id);

-- The last slot each connection's schedule fired for: advanced by compare-and-set, so several
-- processes sharing the store fire a slot once, and a slot missed during downtime fires once.
CREATE TABLE schedules (
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    last_due       TEXT NOT NULL,
    PRIMARY KEY (organization, connection)
);

-- Business identifiers (system, value) of normalized resources, replaced with their rows: how
-- an event that names a patient by MRN finds the connections holding that patient.
CREATE TABLE resource_identifiers (
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    logical_id     TEXT NOT NULL,
    system         TEXT NOT NULL,
    value          TEXT NOT NULL,
    PRIMARY KEY (organization, connection, resource_type, logical_id, system, value)
);
CREATE INDEX resource_identifiers_lookup ON resource_identifiers (organization, resource_type, system, value);
