-- What the admin pages keep between requests, in the database every instance shares (a
-- load balancer may send the next request to another instance).

-- Failed admin logins per client address in the current window: wrong passwords count
-- across instances.
CREATE TABLE login_failures (
    address TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    window_start BIGINT NOT NULL
);

-- An import's results, shown on the page the browser is sent to after the import
-- (post/redirect/get), to the session that made it, for ten minutes.
CREATE TABLE import_reports (
    token TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    html TEXT NOT NULL
);
