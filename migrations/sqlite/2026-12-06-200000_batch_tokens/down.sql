ALTER TABLE resources DROP COLUMN tokens;
