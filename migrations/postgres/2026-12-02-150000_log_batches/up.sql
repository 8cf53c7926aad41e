-- One row per batch of request log rows, written in the batch's transaction. When a write
-- fails in a way that leaves its outcome unknown (the connection cut while committing), the
-- writer looks its batch up before writing the rows again: never twice, never lost.
CREATE TABLE log_batches (
    writer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (writer, seq)
);
