ALTER TABLE client_usage DROP COLUMN recent_requests;
