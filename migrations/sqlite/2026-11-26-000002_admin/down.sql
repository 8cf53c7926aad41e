DROP INDEX idx_request_logs_endpoint;
DROP TABLE usage_hourly;
DROP TABLE sessions;
