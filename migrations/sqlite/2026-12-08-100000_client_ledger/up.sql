-- What each client used, by client name and quarter of an hour (epoch ms / 900000: every
-- time zone's midnight falls on one), added to with every batch of log rows (by every
-- instance) in the same transaction. Clearing the log or its retention never touches it:
-- a client's counted usage (its daily limits after a restart) outlives the log's rows.
CREATE TABLE client_ledger (
    client TEXT NOT NULL,
    slot BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (client, slot)
);
INSERT INTO client_ledger (client, slot, calls, tokens)
SELECT client, created_at / 900000, COUNT(*), COALESCE(SUM(total_tokens), 0)
FROM request_logs WHERE client IS NOT NULL GROUP BY client, created_at / 900000;
-- The log was cleared of every call that started before this (epoch ms): a row of such a
-- call still queued anywhere is not written.
INSERT OR IGNORE INTO settings (name, value) VALUES ('log_cleared_before', '0');
