-- The lines of a batch input file (a batch counts as its lines against the
-- client's daily_requests).
ALTER TABLE resources ADD COLUMN lines BIGINT;
