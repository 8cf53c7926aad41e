-- Admin sessions: the cookie holds a random token; only its hash is stored,
-- so a database copy yields no usable session, and logout deletes the row.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Hourly rollup of the request log, kept in the same transaction as the rows,
-- so the stats are fast on a large log and always equal the logged rows.
CREATE TABLE usage_hourly (
    hour BIGINT NOT NULL,           -- epoch hour (UTC): created_at / 3600000
    model TEXT NOT NULL,
    key_id BIGINT NOT NULL,         -- 0 when no key served the request
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,        -- status >= 400
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,    -- sum, for the mean
    PRIMARY KEY (hour, model, key_id)
);

INSERT INTO usage_hourly (hour, model, key_id, calls, errors, input_tokens, output_tokens, latency_ms)
SELECT created_at / 3600000, model, COALESCE(key_id, 0), COUNT(*),
       SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
       SUM(input_tokens), SUM(output_tokens), SUM(latency_ms)
FROM request_logs GROUP BY created_at / 3600000, model, COALESCE(key_id, 0);

CREATE INDEX idx_request_logs_endpoint ON request_logs (endpoint, created_at);
