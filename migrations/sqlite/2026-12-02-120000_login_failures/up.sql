-- Failed admin logins per client address in the current window, shared by
-- every instance on the database: wrong passwords count across instances.
CREATE TABLE login_failures (
    address TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    window_start BIGINT NOT NULL
);
