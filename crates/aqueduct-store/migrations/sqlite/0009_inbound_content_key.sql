-- A control id is not an identity: senders reset their counters after a restart and test
-- systems reuse MSG00001. A resend is the same sender, the same control id AND the same content,
-- so the content hash joins the key (SQLite cannot drop a UNIQUE constraint: the table is
-- rebuilt). Messages stored before this version keep a NULL hash and are compared by their bytes.
CREATE TABLE inbound_messages_v9 (
    id             INTEGER PRIMARY KEY,
    organization   TEXT NOT NULL,
    sender         TEXT NOT NULL,
    control_id     TEXT NOT NULL,
    content_hash   TEXT,
    message_type   TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    raw            BLOB NOT NULL,
    processed_at   TEXT,
    process_error  TEXT,
    UNIQUE (organization, sender, control_id, content_hash)
);
INSERT INTO inbound_messages_v9
    (id, organization, sender, control_id, content_hash, message_type, received_at, raw, processed_at, process_error)
SELECT id, organization, sender, control_id, NULL, message_type, received_at, raw, processed_at, process_error
FROM inbound_messages;
DROP TABLE inbound_messages;
ALTER TABLE inbound_messages_v9 RENAME TO inbound_messages;
