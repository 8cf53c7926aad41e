-- Pool keys at rest: `sealed_key` holds the key sealed with AES-256-GCM
-- (`enc1:...`, written by the application, which holds the encryption key);
-- duplicates are found by `key_hash`, a keyed hash (HMAC) of the key, never by
-- its text. Rows from before are sealed at the first start with a key, in one
-- transaction.
--
-- The column is renamed so that an older instance still running on the same
-- PostgreSQL database (a rolling upgrade) fails to read it, and keeps serving
-- from the keys it holds, instead of taking sealed text for keys (every call a
-- 401, every key marked invalid) or storing a new key in plain text.
ALTER TABLE api_keys RENAME COLUMN key TO sealed_key;
ALTER TABLE api_keys ADD COLUMN key_hash TEXT;
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

-- The admin password a session was opened under (a keyed tag of it): a
-- session of another password is not accepted.
ALTER TABLE sessions ADD COLUMN generation TEXT NOT NULL DEFAULT '';
