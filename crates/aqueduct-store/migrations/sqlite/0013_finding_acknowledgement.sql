-- A finding someone has looked at: who acknowledged it, when, and why (schema 13). The finding
-- itself is never changed or removed; an acknowledged finding no longer counts as open.
ALTER TABLE findings ADD COLUMN acknowledged_at TEXT;
ALTER TABLE findings ADD COLUMN acknowledged_by TEXT;
ALTER TABLE findings ADD COLUMN acknowledgement_note TEXT;
