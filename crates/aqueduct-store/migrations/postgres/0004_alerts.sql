CREATE TABLE alerts (
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    rule           TEXT NOT NULL,
    subject        TEXT NOT NULL,
    state          TEXT NOT NULL,
    severity       TEXT NOT NULL,
    detail         TEXT NOT NULL,
    first_seen     TIMESTAMPTZ NOT NULL,
    last_seen      TIMESTAMPTZ NOT NULL,
    resolved_at    TIMESTAMPTZ,
    notified_state TEXT,
    PRIMARY KEY (organization, connection, rule, subject)
);
