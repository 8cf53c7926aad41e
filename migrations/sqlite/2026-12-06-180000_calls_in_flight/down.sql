DROP INDEX request_logs_in_flight;
ALTER TABLE request_logs DROP COLUMN call_id;
