-- Model aliases: names clients ask for (claude-*, gpt-*) and the SiliconFlow
-- model each calls, in order (the first pattern that matches wins).
CREATE TABLE model_aliases (
    position INTEGER PRIMARY KEY NOT NULL,
    pattern TEXT NOT NULL,
    model TEXT NOT NULL
);
-- The name the caller asked for, when an alias changed it (`model` is what
-- was called upstream).
ALTER TABLE request_logs ADD COLUMN requested_model TEXT;
