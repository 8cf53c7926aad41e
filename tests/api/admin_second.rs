//! The admin's second edition: its errors, bulk actions, filters and the
//! small things a user meets.

use serde_json::json;
use siliconflow_proxy::db::log_writer::Record;
use siliconflow_proxy::db::models::NewLog;

use crate::admin_ui::{csrf_of, text};
use crate::fake::Mode;
use crate::helpers::{spawn_app, TestApp, ADMIN_PASS};
use crate::{KA, KB, KC};

fn row(created_at: i64, endpoint: &str, status: i32) -> NewLog {
    NewLog {
        created_at,
        key_id: None,
        key_masked: "sk-test...0001".into(),
        model: "m".into(),
        endpoint: endpoint.into(),
        status,
        input_tokens: 1,
        output_tokens: 1,
        total_tokens: 2,
        latency_ms: 5,
        ttfb_ms: None,
        stream: false,
        aborted: false,
        attempts: 1,
        error: None,
        client: None,
    }
}

async fn seed_logs(app: &TestApp) -> i64 {
    let t0 = 1_780_000_000_000; // 2026-05-28T20:26:40Z
    let rows = [
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 429),
        ("/v1/embeddings", 201),
        ("/v1/batches/batch-1", 404),
        ("/v1/batches", 503),
        ("/v1/batchesX", 200),
        ("/v1/files", 0),
    ];
    for (i, (endpoint, status)) in rows.iter().enumerate() {
        app.state.log_writer.do_send(Record(row(t0 + i as i64 * 1000, endpoint, *status)));
    }
    app.flush_logs().await;
    t0
}

async fn statuses(app: &TestApp, query: &str) -> Vec<i64> {
    let r = app.admin_get(&format!("/logs?{query}")).await;
    assert_eq!(r.status, 200, "{query}: {}", text(&r));
    let mut s: Vec<i64> =
        r.json()["logs"].as_array().unwrap().iter().map(|l| l["status"].as_i64().unwrap()).collect();
    s.sort();
    s
}

#[actix_web::test]
async fn logs_filter_by_status_class_and_endpoint_family_and_refuse_a_bad_filter() {
    let app = spawn_app().await;
    seed_logs(&app).await;
    assert_eq!(statuses(&app, "status=2xx").await, vec![200, 200, 201]);
    assert_eq!(statuses(&app, "status=4XX").await, vec![404, 429]);
    assert_eq!(statuses(&app, "status=5xx").await, vec![503]);
    assert_eq!(
        statuses(&app, "status=error").await,
        vec![0, 404, 429, 503],
        "as the statistics count errors"
    );
    assert_eq!(statuses(&app, "status=429").await, vec![429]);
    // An endpoint takes the paths below it, not a longer name.
    assert_eq!(statuses(&app, "endpoint=/v1/batches").await, vec![404, 503]);
    assert_eq!(statuses(&app, "endpoint=/v1/batches&status=4xx").await, vec![404]);
    // A bad filter is a 400 that says why (JSON), never the unfiltered rows.
    for bad in ["status=6xx", "status=abc", "since=yesterday"] {
        let r = app.admin_get(&format!("/logs?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].as_str().unwrap().contains('`'), "{bad}: {}", text(&r));
    }

    // The page: the same filters; a bad one shows its error and no rows.
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let r = app.page("/admin/logs?status=5xx", &cookie).await;
    let html = text(&r);
    let cell = |e: &str| format!(r#"<td class="mono">{e}</td>"#);
    assert!(html.contains(&cell("/v1/batches")) && !html.contains(&cell("/v1/embeddings")), "{html}");
    let r = app.page("/admin/logs?status=6xx", &cookie).await;
    assert_eq!(r.status, 400);
    let html = text(&r);
    assert!(
        html.contains("`status` must be") && !html.contains(&cell("/v1/embeddings")),
        "no rows under the error"
    );
    // The endpoint filter is a list of the proxy's endpoints.
    let html = text(&app.page("/admin/logs", &cookie).await);
    assert!(html.contains(r#"<select name="endpoint">"#) && html.contains(r#"<option value="/v1/rerank">"#));
    // Empty fields (as a GET form sends them) are dropped by a redirect.
    let r = app.page("/admin/logs?model=&key=&status=5xx&endpoint=&since=&until=", &cookie).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/admin/logs?status=5xx"));
    // A page-size choice.
    let html = text(&app.page("/admin/logs?page_size=25", &cookie).await);
    assert!(html.contains(r#"<option value="25" selected>"#), "{html}");
}

#[actix_web::test]
async fn the_csv_is_in_the_pages_time_zone_and_order() {
    let app = crate::helpers::spawn_app_with(&[("TIMEZONE", "+08:00")]).await;
    let t0 = seed_logs(&app).await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let r = app.page("/admin/logs.csv?status=2xx", &cookie).await;
    assert_eq!(r.status, 200);
    let csv = text(&r);
    let times: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    // Newest first, as the page lists them, with the zone's offset.
    assert_eq!(
        times,
        ["2026-05-29T04:26:45+08:00", "2026-05-29T04:26:42+08:00", "2026-05-29T04:26:40+08:00"]
    );
    assert_eq!(t0 % 1000, 0);
    let r = app.page("/admin/logs.csv?status=nope", &cookie).await;
    assert_eq!(r.status, 400);
}

async fn three_keys(app: &TestApp) {
    app.fake.add_key(KA, "a", "5", Mode::Ok);
    app.fake.add_key(KB, "b", "7", Mode::Ok);
    app.fake.add_key(KC, "c", "5", Mode::Unauthorized);
    app.import(&[KA, KB, KC, "sk-unknown-0000000000000000"]).await;
}

#[actix_web::test]
async fn key_actions_answer_404_for_a_missing_key_and_500_for_a_database_failure() {
    let app = spawn_app().await;
    three_keys(&app).await;
    for path in ["/api/keys/999/disable", "/api/keys/abc/enable", "/api/keys/999/refresh"] {
        let r = app.admin_post(path, json!({})).await;
        assert_eq!(r.status, 404, "{path}: {}", text(&r));
        assert!(r.json()["error"].as_str().unwrap().starts_with("no key with id"));
    }
    let r = app
        .send(app.client.delete(app.url("/api/keys/999")).insert_header(("Authorization", app_basic())), None)
        .await;
    assert_eq!(r.status, 404);
    // The page's forms: a 404 page, in the admin's layout.
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let csrf = csrf_of(&app.page("/admin/keys", &cookie).await);
    let r = app.post_form("/admin/keys/999/disable", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 404);
    assert!(text(&r).contains("no key with id") && text(&r).contains("Back to the admin"));
    assert_eq!(app.page("/admin/keys/999/delete", &cookie).await.status, 404);

    // The database fails under a key that exists: 500 with the reason, not 404.
    let mut conn = app.state.db.get().unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query("ALTER TABLE api_keys RENAME TO api_keys_gone"),
        &mut *conn,
    )
    .unwrap();
    let r = app.admin_post("/api/keys/1/disable", json!({})).await;
    assert_eq!(r.status, 500, "{}", text(&r));
    assert!(r.json()["error"].as_str().unwrap().contains("database"), "{}", text(&r));
    let r = app.post_form("/admin/keys/1/disable", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 500);
    diesel::RunQueryDsl::execute(
        diesel::sql_query("ALTER TABLE api_keys_gone RENAME TO api_keys"),
        &mut *conn,
    )
    .unwrap();
    assert_eq!(app.admin_post("/api/keys/1/disable", json!({})).await.status, 200);
}

fn app_basic() -> String {
    crate::helpers::basic("admin", ADMIN_PASS)
}

#[actix_web::test]
async fn invalid_keys_are_deleted_in_bulk_and_exhausted_ones_rechecked() {
    let app = spawn_app().await;
    three_keys(&app).await;
    // Two invalid (KC: 401; an unknown key).
    let del = |q: &'static str| {
        let req = app
            .client
            .delete(app.url(&format!("/api/keys{q}")))
            .insert_header(("Authorization", app_basic()));
        app.send(req, None)
    };
    assert_eq!(del("").await.status, 400, "no state: nothing deleted");
    assert_eq!(del("?state=active").await.status, 400, "active keys are not deleted in bulk");
    assert_eq!(app.keys_json().await.len(), 4);
    let r = del("?state=invalid").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"deleted": 2, "state": "invalid"}));
    assert_eq!(app.keys_json().await.len(), 2);
    assert_eq!(del("?state=invalid").await.json()["deleted"], 0);

    // The page: "Delete N invalid" asks first; "Re-check N exhausted".
    app.fake.add_key(KC, "c", "5", Mode::Unauthorized);
    app.import(&[KC]).await;
    app.fake.set_balance(KB, "0");
    app.admin_post("/refresh", json!({})).await;
    assert_eq!(app.key_state("sk-bbbb").await, "exhausted");
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let page = app.page("/admin/keys", &cookie).await;
    let html = text(&page);
    assert!(html.contains("Delete 1 invalid") && html.contains("Re-check 1 exhausted"), "{html}");
    let confirm = app.page("/admin/keys/bulk/delete-invalid", &cookie).await;
    assert!(text(&confirm).contains("Delete 1 invalid keys?"));
    let r = app.post_form("/admin/keys/bulk/delete-invalid", &cookie, &[("csrf", &csrf_of(&confirm))]).await;
    assert_eq!(r.status, 303);
    let html = text(&app.page(&r.header("location").unwrap(), &cookie).await);
    assert!(html.contains("Deleted 1 key (invalid)."), "{html}");
    app.fake.set_balance(KB, "3");
    let r = app.post_form("/admin/keys/bulk/recheck-exhausted", &cookie, &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(r.status, 303);
    let html = text(&app.page(&r.header("location").unwrap(), &cookie).await);
    assert!(html.contains("Re-checked 1 exhausted key: 1 active again, 0 still exhausted."), "{html}");
    assert_eq!(app.key_state("sk-bbbb").await, "active");
}

#[actix_web::test]
async fn the_keys_page_offers_what_each_state_allows_and_says_the_pool_total() {
    let app = spawn_app().await;
    three_keys(&app).await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin/keys?state=invalid", &cookie).await);
    assert!(!html.contains("/disable\""), "an invalid key offers no Disable: {html}");
    assert!(html.contains("/refresh\"") && html.contains("/delete\""));
    let html = text(&app.page("/admin/keys?state=active", &cookie).await);
    assert!(html.contains("/disable\"") && !html.contains("/enable\""));
    assert!(html.contains("<strong>12.00</strong> (2 keys)"), "the pool's known balance: {html}");
    assert!(html.contains("¥7.00") && html.contains("¥5.00"), "balances with their currency");
    let keys = app.keys_json().await;
    assert!(keys.iter().all(|k| k["currency"] == "CNY"), "{keys:?}");
    let html = text(&app.page("/admin/keys?sort=balance&order=desc", &cookie).await);
    assert!(html.contains("Balance ▼"), "sort direction shown");
    let r = app.page("/admin/keys?q=&state=invalid", &cookie).await;
    assert_eq!(r.header("location").as_deref(), Some("/admin/keys?state=invalid"), "empty fields dropped");
}

#[actix_web::test]
async fn notices_come_from_the_server_never_from_the_query_and_a_failed_login_keeps_the_username() {
    let app = spawn_app().await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin/keys?notice=Your+account+is+locked.+Call+555-0100", &cookie).await);
    assert!(!html.contains("555-0100") && !html.contains("banner info"), "{html}");
    let html = text(&app.page("/admin/logs?notice=logs_cleared&n=7", &cookie).await);
    assert!(html.contains("Deleted 7 log rows."), "{html}");
    let html = text(&app.page("/admin/logs?notice=logs_cleared&n=%3Cb%3E", &cookie).await);
    assert!(!html.contains("Deleted") && !html.contains("<b>"));

    let r = app.login("someone-else", "wrong").await.unwrap_err();
    assert_eq!(r.status, 401);
    let html = text(&r);
    assert!(html.contains(r#"value="someone-else""#) && !html.contains("wrong\""), "{html}");
}

#[actix_web::test]
async fn the_dashboard_shows_the_outcomes_of_the_last_24_hours() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::RateLimited("TPM"));
    app.fake.add_key(KB, "b", "5", Mode::Ok);
    app.import(&[KA, KB]).await;
    assert_eq!(app.chat("m").await.status, 200, "KA (richest) answers 429: KB serves");
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.chat("bad-model").await.status, 400);
    app.flush_logs().await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin", &cookie).await);
    assert!(html.contains("Outcomes by hour, last 24 hours"), "{html}");
    // The current hour's column: its tooltip counts each outcome.
    assert!(
        html.contains("4 calls\nsuccess: 2\nafter failover: 1\nclient errors: 1\nupstream errors: 0"),
        "{html}"
    );
    assert!(html.contains("bar-failover h"), "a bar for the failover");
}
