use std::time::Duration;

use serde_json::json;

use crate::fake::Mode;
use crate::helpers::{base_env, spawn_app, start_with_env, TestApp};
use crate::{KA, KB, KC, KD};

fn assert_no_full_key(text: &str) {
    for k in [KA, KB, KC, KD] {
        assert!(!text.contains(k), "full key {k} leaked in: {text}");
    }
}

#[actix_web::test]
async fn import_counts_valid_duplicate_and_invalid_keys_and_masks_them() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "10.50", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "0.00", Mode::Ok);
    // KC is unknown to the fake: 401.
    let r = app.admin_post("/import_keys", json!({"keys": format!(" {KA}\n{KB}, {KC}\n{KA}\n")})).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["added"], 2, "{body}");
    assert_eq!(body["invalid"], 1, "{body}");
    assert_eq!(body["duplicates"], 1, "a key repeated in one import is one duplicate: {body}");
    // Every piece of the input has its line in the answer, in the input's order.
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["added", "added", "invalid", "duplicate"], "{body}");
    assert_eq!(results[3]["key"], "sk-aaaa...0001");
    assert_eq!(results[3]["message"], "repeated in this import");
    assert_no_full_key(&String::from_utf8_lossy(&r.body));

    // Again, as a list: all three are known now.
    let r = app.admin_post("/import_keys", json!({"keys": [KA, KB, KC]})).await;
    let body = r.json();
    assert_eq!((body["added"].as_i64(), body["duplicates"].as_i64()), (Some(0), Some(3)), "{body}");

    assert_eq!(app.key_state("sk-aaaa").await, "active");
    assert_eq!(app.key_state("sk-bbbb").await, "exhausted", "zero balance");
    assert_eq!(app.key_state("sk-cccc").await, "invalid");
    let keys = app.keys_json().await;
    let a = keys.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-aaaa")).unwrap();
    assert_eq!(a["balance"], 10.5);
    assert_eq!(a["account_id"], "acct-1");
    assert_no_full_key(&serde_json::to_string(&keys).unwrap());

    // Form import works too.
    app.fake.add_key(KD, "acct-1", "3", Mode::Ok);
    let req = app
        .client
        .post(app.url("/import_keys"))
        .insert_header(("Authorization", crate::helpers::basic("admin", crate::helpers::ADMIN_PASS)))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
    let r = app.send(req, Some(format!("keys={KD}").into())).await;
    assert_eq!(r.json()["added"], 1);

    // Export: full keys, one a line, invalid ones only with ?all=1.
    let r = app.admin_get("/export_keys").await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(r.header("content-disposition").unwrap().contains("attachment"));
    assert!(text.lines().any(|l| l == KA) && text.lines().any(|l| l == KB) && text.lines().any(|l| l == KD));
    assert!(!text.contains(KC));
    let r = app.admin_get("/export_keys?all=1").await;
    assert!(String::from_utf8_lossy(&r.body).lines().any(|l| l == KC));
}

#[actix_web::test]
async fn import_during_an_outage_keeps_the_keys_as_unconfirmed() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.fake.set_info_outage(Some(503));
    let body = app.import(&[KA]).await;
    assert_eq!(body["failed"], 1, "{body}");
    let keys = app.keys_json().await;
    assert_eq!(keys.len(), 1, "the key is kept");
    assert_eq!(keys[0]["state"], "active");
    assert!(keys[0]["last_error"].as_str().unwrap().contains("503"));
    app.fake.set_info_outage(None);
    let r = app.admin_post("/refresh", json!({})).await;
    assert_eq!(r.json()["active"], 1);
    assert_eq!(app.keys_json().await[0]["balance"], 5.0);
}

async fn three_keys() -> TestApp {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "10", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "20", Mode::Ok);
    app.fake.add_key(KC, "acct-3", "30", Mode::Ok);
    assert_eq!(app.import(&[KA, KB, KC]).await["added"], 3);
    app
}

#[actix_web::test]
async fn refresh_survives_upstream_outages_with_every_key_intact() {
    let app = three_keys().await;
    for status in [503, 504, 429, 500] {
        app.fake.set_info_outage(Some(status));
        let r = app.admin_post("/refresh", json!({})).await;
        assert_eq!(r.status, 200);
        let summary = r.json();
        assert_eq!(summary["unchanged"], 3, "{status}: {summary}");
        assert_eq!(summary["invalid"], 0);
        let keys = app.keys_json().await;
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| k["state"] == "active"), "{status}: {keys:?}");
        assert!(keys.iter().all(|k| k["balance"].as_f64().unwrap() >= 10.0), "balances kept");
    }
    let health = app.send(app.client.get(app.url("/health")), None).await.json();
    assert!(health["auto_refresh"]["last_error"].as_str().unwrap().contains("3 of 3"));
    app.fake.set_info_outage(None);

    // Only a 401 invalidates; a zero balance exhausts; money brings it back.
    app.fake.set_mode(KA, Mode::Unauthorized);
    app.fake.set_balance(KB, "-0.01");
    let summary = app.admin_post("/refresh", json!({})).await.json();
    assert_eq!(
        (summary["invalid"].as_i64(), summary["exhausted"].as_i64(), summary["active"].as_i64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(app.key_state("sk-aaaa").await, "invalid");
    assert_eq!(app.key_state("sk-bbbb").await, "exhausted");
    app.fake.set_balance(KB, "7.5");
    app.fake.set_mode(KA, Mode::Ok);
    let summary = app.admin_post("/refresh", json!({})).await.json();
    assert_eq!(summary["active"], 3, "{summary}");
    assert_eq!(app.key_state("sk-bbbb").await, "active");
    assert_eq!(app.key_state("sk-aaaa").await, "active", "an invalid key is re-checked, not forgotten");
}

#[actix_web::test]
async fn scheduled_refresh_rechecks_invalid_keys_less_often() {
    // Refresh every second: count the user/info calls per key.
    let fake = crate::fake::Fake::start();
    fake.add_key(KA, "acct-1", "10", Mode::Ok);
    fake.add_key(KB, "acct-2", "10", Mode::Unauthorized);
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("AUTO_REFRESH_INTERVAL".into(), "1".into());
    let app = start_with_env(fake, dir, env).await;
    let body = app.import(&[KA, KB]).await;
    assert_eq!(body["invalid"], 1);
    app.fake.clear_seen();
    crate::helpers::poll(Duration::from_secs(10), || async {
        (app.fake.keys_for("/v1/user/info").iter().filter(|k| *k == KA).count() >= 2).then_some(())
    })
    .await;
    let invalid_checks = app.fake.keys_for("/v1/user/info").iter().filter(|k| *k == KB).count();
    assert_eq!(invalid_checks, 0, "the invalid key waits for INVALID_RECHECK_INTERVAL");
    assert_eq!(app.keys_json().await.len(), 2, "nothing deleted");
}

#[actix_web::test]
async fn key_states_and_cooldowns_survive_a_restart() {
    let fake = crate::fake::Fake::start();
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(&fake, &dir);
    fake.add_key(KA, "acct-1", "10", Mode::Ok);
    fake.add_key(KB, "acct-2", "20", Mode::Ok);
    fake.add_key(KC, "acct-3", "30", Mode::Ok);
    let app = start_with_env(fake, dir, env.clone()).await;
    app.import(&[KA, KB, KC]).await;
    // KC (richest) rate-limits, KB gets disabled by the owner.
    app.fake.set_mode(KC, Mode::RateLimited("TPM"));
    assert_eq!(app.chat("m1").await.status, 200);
    let id_b =
        app.keys_json().await.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-bbbb")).unwrap()
            ["id"]
            .as_i64()
            .unwrap();
    assert_eq!(app.admin_post(&format!("/api/keys/{id_b}/disable"), json!({})).await.status, 200);
    assert_eq!(app.logs().await.len(), 1);
    app.handle.stop(true).await;

    let TestApp { fake, dir, .. } = app;
    fake.clear_seen();
    fake.set_mode(KC, Mode::Ok);
    let app = start_with_env(fake, dir, env).await;
    assert_eq!(app.key_state("sk-bbbb").await, "disabled");
    assert_eq!(app.key_state("sk-cccc").await, "cooling");
    assert_eq!(app.chat("m1").await.status, 200);
    assert_eq!(
        app.fake.keys_for("/v1/chat/completions"),
        vec![KA.to_string()],
        "cooling and disabled keys skipped after restart"
    );
    let keys = app.keys_json().await;
    let a = keys.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-aaaa")).unwrap();
    assert!(a["usage_count"].as_i64().unwrap() >= 1, "usage persisted: {a}");
}

#[actix_web::test]
async fn per_key_enable_disable_refresh_and_delete() {
    let app = three_keys().await;
    let keys = app.keys_json().await;
    let id_c = keys.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-cccc")).unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(app.admin_post(&format!("/api/keys/{id_c}/disable"), json!({})).await.status, 200);
    app.chat("m").await;
    assert_eq!(app.fake.keys_for("/v1/chat/completions"), vec![KB.to_string()], "disabled key not used");
    assert_eq!(app.admin_post(&format!("/api/keys/{id_c}/enable"), json!({})).await.status, 200);
    app.fake.set_balance(KC, "99");
    let r = app.admin_post(&format!("/api/keys/{id_c}/refresh"), json!({})).await;
    assert_eq!(r.json()["key"]["balance"], 99.0);
    let r = app
        .send(
            app.client
                .delete(app.url(&format!("/api/keys/{id_c}")))
                .insert_header(("Authorization", crate::helpers::basic("admin", crate::helpers::ADMIN_PASS))),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.keys_json().await.len(), 2);
    assert_eq!(app.admin_post("/api/keys/9999/disable", json!({})).await.status, 404);
    assert_eq!(app.admin_post("/api/keys/abc/enable", json!({})).await.status, 404);
    // Search, filter and sort over all keys.
    let r = app.admin_get("/api/keys?sort=balance&order=desc&page_size=1").await.json();
    assert_eq!(r["total"], 2);
    assert!(r["keys"][0]["key"].as_str().unwrap().starts_with("sk-bbbb"));
    let r = app.admin_get("/api/keys?q=acct-1").await.json();
    assert_eq!(r["total"], 1);
}

#[actix_web::test]
async fn calls_per_key_reach_the_database_from_the_pool_actor() {
    use diesel::prelude::*;
    use siliconflow_proxy::db::schema::api_keys;
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    for _ in 0..3 {
        assert_eq!(app.chat("m").await.status, 200);
    }
    app.flush_logs().await;
    // What a stop does: the actor writes the counts it holds.
    app.state.pool_actor.send(siliconflow_proxy::pool::Drain).await.unwrap();
    let mut conn = app.state.db.get().unwrap();
    let (uses, last): (i64, Option<i64>) =
        api_keys::table.select((api_keys::usage_count, api_keys::last_used)).first(&mut conn).unwrap();
    assert_eq!(uses, 3);
    assert!(last.is_some_and(|t| t > 0));
    // Written once: a second write adds nothing.
    app.state.pool_actor.send(siliconflow_proxy::pool::Drain).await.unwrap();
    let uses: i64 = api_keys::table.select(api_keys::usage_count).first(&mut conn).unwrap();
    assert_eq!(uses, 3);
}

#[actix_web::test]
async fn a_page_chosen_from_the_pool_matches_the_page_a_search_over_every_row_gives() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "3.50", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "0.00", Mode::Ok);
    app.fake.add_key(KD, "acct-4", "9.25", Mode::Ok);
    app.import(&[KA, KB, KC, KD]).await;
    app.chat("m").await;
    app.chat("m").await;
    for sort in ["id", "balance", "usage_count", "last_used", "state"] {
        for order in ["asc", "desc"] {
            for state in ["", "active", "invalid"] {
                for (page, size) in [(1, 2), (2, 2), (1, 50)] {
                    let q = format!("sort={sort}&order={order}&state={state}&page={page}&page_size={size}");
                    let fast = app.admin_get(&format!("/api/keys?{q}")).await.json();
                    // `q=sk-` matches every key: the path that reads every row.
                    let slow = app.admin_get(&format!("/api/keys?{q}&q=sk-")).await.json();
                    let ids = |v: &serde_json::Value| {
                        v["keys"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|k| k["id"].as_i64().unwrap())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(ids(&fast), ids(&slow), "{q}");
                    assert_eq!(fast["total"], slow["total"], "{q}");
                    assert_eq!(fast["keys"], slow["keys"], "{q}");
                }
            }
        }
    }
}

#[actix_web::test]
async fn a_refresh_of_every_key_is_paced_runs_once_and_answers_202_while_it_runs() {
    // REFRESH_RATE=20: the checks of a refresh of every key start 50 ms apart.
    let fake = crate::fake::Fake::start();
    let keys: Vec<String> = (0..12).map(|i| format!("sk-pace{i:02}-0000000000000000")).collect();
    for k in &keys {
        fake.add_key(k, k, "5", Mode::Ok);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(&fake, &dir);
    env.insert("REFRESH_RATE".into(), "20".into());
    let app = start_with_env(fake, dir, env).await;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(app.import(&refs).await["added"], 12);
    app.fake.clear_seen();

    // wait=0: the answer does not wait for the checks; it says how far they are.
    let r = app.admin_post("/refresh?wait=0", json!({})).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["running"]["total"], 12, "{}", r.json());
    assert!(r.json()["running"]["started"].as_str().is_some_and(|t| t.ends_with('Z')), "an RFC 3339 time");
    let health: serde_json::Value = app.send(app.client.get(app.url("/health")), None).await.json();
    assert_eq!(health["auto_refresh"]["running"]["total"], 12, "{health}");
    // A second request joins the run under way and gets its summary.
    let r = app.admin_post("/refresh", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["checked"], 12, "{}", r.json());

    let checks: Vec<_> = app.fake.seen().into_iter().filter(|s| s.path == "/v1/user/info").collect();
    let distinct: std::collections::HashSet<_> = checks.iter().map(|s| s.key.clone()).collect();
    assert_eq!((checks.len(), distinct.len()), (12, 12), "each key checked once, not once per request");
    let span = checks[11].at.duration_since(checks[0].at);
    assert!(span >= Duration::from_millis(500), "12 checks at 20/s take 550 ms, took {span:?}");
    let health: serde_json::Value = app.send(app.client.get(app.url("/health")), None).await.json();
    assert!(health["auto_refresh"]["running"].is_null(), "{health}");
    assert!(health["auto_refresh"]["last_run"].is_string(), "{health}");
}
