DROP TABLE model_aliases;
ALTER TABLE request_logs DROP COLUMN requested_model;
