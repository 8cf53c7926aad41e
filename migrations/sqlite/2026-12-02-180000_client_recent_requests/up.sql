-- Calls a client made on this instance in the last 60 s (as of updated_at): with
-- several instances, each adds the others' to its own for the client's rpm.
ALTER TABLE client_usage ADD COLUMN recent_requests BIGINT NOT NULL DEFAULT 0;
