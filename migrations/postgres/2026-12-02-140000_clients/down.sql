DROP TABLE client_usage;
DROP TABLE usage_clients;
ALTER TABLE request_logs DROP COLUMN client;
DROP TABLE clients;
