//! PostgreSQL over TLS with the libpq and OpenSSL built into the binary
//! (no system libpq): `sslmode=require` against the test server, which
//! Debian's PostgreSQL serves with TLS (its snakeoil certificate). Runs in
//! the PostgreSQL pass of the suite (`TEST_POSTGRES`); on SQLite there is no
//! server to talk to.

use diesel::prelude::*;
use serde_json::json;

use crate::fake::Mode;
use crate::helpers::{base_env, start_with_env, test_database_url};
use crate::KA;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[actix_web::test]
async fn the_proxy_talks_to_postgresql_over_tls_when_the_url_requires_it() {
    let Some(base) = std::env::var("TEST_POSTGRES").ok().filter(|b| !b.is_empty()) else {
        eprintln!("TEST_POSTGRES is not set: no PostgreSQL server to require TLS of");
        return;
    };
    let fake = crate::fake::Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let url = test_database_url(&dir);
    let database = url.rsplit('/').next().unwrap().to_string();
    let mut env = base_env(&fake, &dir);
    env.insert("DATABASE_URL".into(), format!("{url}?sslmode=require"));
    let app = start_with_env(fake, dir, env).await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let r = app.call("/v1/chat/completions", json!({"model": "m", "messages": []})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.logs().await.len(), 1, "the row went through the TLS connection");

    // Every connection the proxy holds to its database is encrypted.
    let mut admin = PgConnection::establish(&format!("{base}/postgres?sslmode=require")).unwrap();
    let counts = |sql: &str, admin: &mut PgConnection| {
        diesel::sql_query(sql)
            .bind::<diesel::sql_types::Text, _>(&database)
            .get_result::<Count>(admin)
            .unwrap()
            .n
    };
    let all = counts("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1", &mut admin);
    let tls = counts(
        "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND s.ssl",
        &mut admin,
    );
    assert!(all > 0, "the proxy is connected");
    assert_eq!(tls, all, "{tls} of {all} connections use TLS");
    let mine =
        diesel::sql_query("SELECT count(*) AS n FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl")
            .get_result::<Count>(&mut admin)
            .unwrap()
            .n;
    assert_eq!(mine, 1, "libpq in the test binary speaks TLS too");
}
