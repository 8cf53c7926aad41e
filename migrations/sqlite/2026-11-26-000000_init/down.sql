DROP TABLE settings;
DROP TABLE request_logs;
DROP TABLE cooldowns;
DROP TABLE api_keys;
