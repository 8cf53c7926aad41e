DROP TABLE usage_hourly;
DROP TABLE sessions;
DROP TABLE resources;
DROP TABLE settings;
DROP TABLE request_logs;
DROP TABLE cooldowns;
DROP TABLE api_keys;
