-- Short leases between processes sharing a store: a rotating refresh token must be spent by one
-- process only, or the server takes the second use for theft and the connection needs a human.
CREATE TABLE leases (
    organization  TEXT NOT NULL,
    connection    TEXT NOT NULL,
    name          TEXT NOT NULL,
    holder        TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (organization, connection, name)
);
