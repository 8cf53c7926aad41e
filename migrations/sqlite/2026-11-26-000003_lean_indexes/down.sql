CREATE INDEX idx_request_logs_key_id ON request_logs (key_id, created_at);
CREATE INDEX idx_request_logs_model ON request_logs (model, created_at);
