-- Every query by patient reads live resources only (deleted_at IS NULL). With the condition in
-- a partial index, counting and paging a patient's resources of a type (the FHIR facade's
-- searches) is answered from the index, without visiting each row; tombstones leave it.
DROP INDEX resources_by_patient;
-- (deleted_at is in the index too: SQLite counts from an index only when it holds every column
-- the query names, the partial index's own condition included.)
CREATE INDEX resources_by_patient ON resources (organization, connection, patient_id, resource_type, logical_id, deleted_at)
    WHERE deleted_at IS NULL;
