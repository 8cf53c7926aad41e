//! Keys in the admin: single and bulk actions, their errors, and what the
//! keys page offers for each state.

use serde_json::json;

use crate::admin_ui::{csrf_of, text};
use crate::fake::Mode;
use crate::helpers::{spawn_app, TestApp, ADMIN_PASS};
use crate::{KA, KB, KC};

async fn three_keys(app: &TestApp) {
    app.fake.add_key(KA, "a", "5", Mode::Ok);
    app.fake.add_key(KB, "b", "7", Mode::Ok);
    app.fake.add_key(KC, "c", "5", Mode::Unauthorized);
    app.import(&[KA, KB, KC, "sk-unknown-0000000000000000"]).await;
}

fn app_basic() -> String {
    crate::helpers::basic("admin", ADMIN_PASS)
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
