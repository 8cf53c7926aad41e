ALTER TABLE request_logs DROP COLUMN usage_estimated;
