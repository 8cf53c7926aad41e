ALTER TABLE sessions DROP COLUMN generation;
DROP INDEX api_keys_key_hash;
ALTER TABLE api_keys DROP COLUMN key_hash;
ALTER TABLE api_keys RENAME COLUMN sealed_key TO key;
