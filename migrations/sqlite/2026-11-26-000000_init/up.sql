-- Times are Unix epoch milliseconds (UTC).
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    -- active | exhausted | invalid | disabled ("cooling" is derived from cooldowns)
    state TEXT NOT NULL DEFAULT 'active',
    balance DOUBLE,
    account_id TEXT,
    account_name TEXT,
    base_url TEXT,
    usage_count BIGINT NOT NULL DEFAULT 0,
    last_used BIGINT,
    last_checked BIGINT,
    last_error TEXT,
    state_changed_at BIGINT,
    created_at BIGINT NOT NULL
);

-- A 429 cools an account (all keys of it) for one model ('*' = every model).
CREATE TABLE cooldowns (
    account TEXT NOT NULL,
    model TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    strikes INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (account, model)
);

CREATE TABLE request_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    created_at BIGINT NOT NULL,
    key_id BIGINT,
    key_masked TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttfb_ms BIGINT,
    stream BOOLEAN NOT NULL,
    aborted BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX idx_request_logs_created_at ON request_logs (created_at);
CREATE INDEX idx_request_logs_key_id ON request_logs (key_id, created_at);
CREATE INDEX idx_request_logs_model ON request_logs (model, created_at);
CREATE INDEX idx_request_logs_status ON request_logs (status, created_at);

CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
