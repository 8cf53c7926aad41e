DROP INDEX resources_by_client;
ALTER TABLE resources DROP COLUMN client_id;
