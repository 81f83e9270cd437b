CREATE TABLE inbound_messages (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    sender         TEXT NOT NULL,
    control_id     TEXT NOT NULL,
    message_type   TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    raw            BLOB NOT NULL,
    processed_at   TEXT,
    process_error  TEXT,
    UNIQUE (organization, sender, control_id)
);

CREATE TABLE refresh_requests (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    patient_key    TEXT NOT NULL,
    connection     TEXT,
    reason         TEXT NOT NULL,
    source         TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    handled_at     TEXT
);
CREATE INDEX refresh_requests_pending ON refresh_requests (organization, handled_at, id);
