-- Refresh requests become a work queue the engine consumes (see the SQLite migration of the
-- same number): claims under a lease, coalescing, retry times, outcomes; whole-connection
-- requests have no patient key.
ALTER TABLE refresh_requests ALTER COLUMN patient_key DROP NOT NULL;
ALTER TABLE refresh_requests
    ADD COLUMN claimed_by     TEXT,
    ADD COLUMN lease_until    TIMESTAMPTZ,
    ADD COLUMN not_before     TIMESTAMPTZ,
    ADD COLUMN attempts       INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN outcome        TEXT,
    ADD COLUMN detail         TEXT,
    ADD COLUMN run_ids        TEXT,
    ADD COLUMN coalesced_into BIGINT;

CREATE TABLE schedules (
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    last_due       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization, connection)
);

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
