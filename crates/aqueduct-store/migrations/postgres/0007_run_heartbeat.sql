-- A running sync writes a heartbeat; a 'running' run whose heartbeat stopped was killed or lost,
-- and the next sync of the connection closes it as failed instead of leaving it running forever.
ALTER TABLE sync_runs ADD COLUMN heartbeat_at TIMESTAMPTZ;
