-- Account-bound resources (files, batches, video jobs, custom voices) and the
-- key that created each: later calls naming the resource go to that key's account.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    key_id BIGINT NOT NULL,
    account TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, resource_id)
);
CREATE INDEX idx_resources_key ON resources (key_id);

-- The two halves of a balance, for the pooled /v1/user/info.
ALTER TABLE api_keys ADD COLUMN gift_balance DOUBLE;
ALTER TABLE api_keys ADD COLUMN charge_balance DOUBLE;
