-- The client that created a resource (a file, batch, video job or voice):
-- other clients neither reach nor list it. 0 is API_KEY's client; NULL, a
-- resource made through an open proxy or before clients owned resources
-- (only API_KEY's client and an open proxy reach those).
ALTER TABLE resources ADD COLUMN client_id BIGINT;
CREATE INDEX resources_by_client ON resources (client_id, kind);
