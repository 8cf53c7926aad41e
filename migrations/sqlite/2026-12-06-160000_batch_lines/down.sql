ALTER TABLE resources DROP COLUMN lines;
