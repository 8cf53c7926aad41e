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
