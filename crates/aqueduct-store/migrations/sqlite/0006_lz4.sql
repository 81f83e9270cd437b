-- Version 6 switches PostgreSQL's raw columns to lz4 compression; SQLite stores them as they
-- are, so there is nothing to do here. Kept so that both backends share version numbers.
SELECT 1;
