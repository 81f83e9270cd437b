-- Raw resources are stored compressed once they pass ~2 KB; lz4 costs a fraction of pglz's CPU
-- (pglz was a quarter of the server's time on bulk writes). Servers built without lz4, or
-- older than 14, keep pglz: the data is the same either way.
DO $$
BEGIN
    ALTER TABLE resources ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE resource_history ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE inbound_messages ALTER COLUMN raw SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression unavailable (%), keeping the default', SQLERRM;
END
$$;
