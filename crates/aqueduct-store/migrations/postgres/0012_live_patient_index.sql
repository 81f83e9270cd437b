-- Queries by patient read live resources only: a partial index answers counts and pages of a
-- patient's resources of a type without visiting each row (see the SQLite migration).
DROP INDEX resources_by_patient;
CREATE INDEX resources_by_patient ON resources (organization, connection, patient_id, resource_type, logical_id COLLATE "C")
    WHERE deleted_at IS NULL;
