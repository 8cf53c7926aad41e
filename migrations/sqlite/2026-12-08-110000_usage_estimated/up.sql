-- The row's tokens were estimated here (the call was cut before the upstream reported its usage: the prompt estimated from the request, the answer from the text that passed), not reported by the upstream.
ALTER TABLE request_logs ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT 0;
