-- Reconciliation lists a patient's ids of one type in id order; with logical_id in the index
-- the query is answered from it instead of scanning every row of the type.
DROP INDEX resources_by_patient;
CREATE INDEX resources_by_patient ON resources (organization, connection, patient_id, resource_type, logical_id);
