-- Client limits across instances: each instance holds a lease of a
-- client's budget (today's requests or tokens, `period` the day; or a part
-- of its rpm rate, `period` 0) and admits calls only within it; the sum of
-- the leases never passes the limit. `used` is what the instance spent of it, `active` whether the
-- client called there lately, `short_at` when a call there last found the
-- lease spent (0: never), `updated_at` its last round (a silent instance's unused
-- lease is free again).
CREATE TABLE client_leases (
    client_id BIGINT NOT NULL,
    budget TEXT NOT NULL,
    period BIGINT NOT NULL,
    instance TEXT NOT NULL,
    granted BIGINT NOT NULL,
    used BIGINT NOT NULL,
    active BOOLEAN NOT NULL,
    short_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, budget, period, instance)
);
