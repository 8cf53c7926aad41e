-- Every index is paid on every logged request. These two served nothing:
-- the key and model filters match substrings (LIKE '%x%'), which cannot use
-- an index, and per-key / per-model stats read the hourly rollup.
DROP INDEX idx_request_logs_key_id;
DROP INDEX idx_request_logs_model;
