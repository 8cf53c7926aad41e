-- The tokens a batch used, once the upstream reported them (recorded once,
-- against the client that created it; NULL: not yet).
ALTER TABLE resources ADD COLUMN tokens BIGINT;
