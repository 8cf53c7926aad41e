-- A call still running when the log writer's batch went out is written
-- early, marked by `call_id` (its writer's name and the call's number); its
-- end fills the row in and clears the mark. A row whose writer died keeps
-- the mark until it is settled as interrupted.
ALTER TABLE request_logs ADD COLUMN call_id TEXT;
CREATE INDEX request_logs_in_flight ON request_logs (call_id) WHERE call_id IS NOT NULL;
