-- Client keys the owner hands out: each with its own name, model list and limits. Only a
-- hash of the secret is kept.
CREATE TABLE clients (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    key_hint TEXT NOT NULL,
    models TEXT,
    rpm INTEGER,
    daily_requests BIGINT,
    daily_tokens BIGINT,
    expires_at BIGINT,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);
-- The client (its name) that made each call; NULL before client keys existed.
ALTER TABLE request_logs ADD COLUMN client TEXT;
-- Calls and tokens per client and hour, upserted additively with each batch of log rows
-- (by every instance), for the dashboard's ranking of clients.
CREATE TABLE usage_clients (
    hour BIGINT NOT NULL,
    client TEXT NOT NULL,
    calls BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (hour, client)
);
-- With several instances on one database: each instance's count of today's calls and tokens
-- per client, published every second, so that every instance holds a client to its limits
-- with the others' calls counted too.
CREATE TABLE client_usage (
    instance TEXT NOT NULL,
    client_id BIGINT NOT NULL,
    day BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (instance, client_id, day)
);
