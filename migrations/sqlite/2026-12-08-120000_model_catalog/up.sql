-- The owner's model catalog entries: each a patch (a JSON object of the fields it gives) over
-- the catalog shipped in the binary, or an entry of its own for a model it does not know.
CREATE TABLE model_catalog (
    id TEXT PRIMARY KEY NOT NULL,
    fields TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
