-- An account set by hand, for keys whose upstream gives no account id (no
-- /v1/user/info): keys with the same label share cooldowns, affinity and
-- exhaustion as the keys of one account do.
ALTER TABLE api_keys ADD COLUMN account_label TEXT;
