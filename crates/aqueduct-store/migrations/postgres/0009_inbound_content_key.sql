-- A control id is not an identity: senders reset their counters after a restart and test
-- systems reuse MSG00001. A resend is the same sender, the same control id AND the same content,
-- so the content hash joins the key. Messages stored before this version keep a NULL hash and
-- are compared by their bytes.
ALTER TABLE inbound_messages ADD COLUMN content_hash TEXT;
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'inbound_messages'::regclass AND contype = 'u'
    LOOP
        EXECUTE format('ALTER TABLE inbound_messages DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE inbound_messages
    ADD CONSTRAINT inbound_messages_resend_key UNIQUE (organization, sender, control_id, content_hash);
