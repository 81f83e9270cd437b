CREATE TABLE alerts (
    organization   TEXT NOT NULL,
    connection     TEXT NOT NULL,
    rule           TEXT NOT NULL,
    subject        TEXT NOT NULL,
    state          TEXT NOT NULL,
    severity       TEXT NOT NULL,
    detail         TEXT NOT NULL,
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL,
    resolved_at    TEXT,
    notified_state TEXT,
    PRIMARY KEY (organization, connection, rule, subject)
);
