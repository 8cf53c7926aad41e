//! SiliconFlow as it is today: `/v1/user/info` answers 410 on the China host,
//! so keys are validated with `/v1/models`, balances are unknown (not zero),
//! exhaustion is learned from calls and undone by a trial call; and where the
//! endpoint still answers, balances keep being read and used.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::{Mode, FIM_STREAM_USAGE, FIM_USAGE};
use crate::helpers::{poll, spawn_app, spawn_app_with, TestApp, ADMIN_PASS};
use crate::{KA, KB, KC, KD};

impl TestApp {
    async fn key_json(&self, masked_prefix: &str) -> Value {
        let keys = self.keys_json().await;
        keys.into_iter()
            .find(|k| k["key"].as_str().unwrap_or("").starts_with(masked_prefix))
            .unwrap_or_else(|| panic!("no key {masked_prefix}"))
    }

    async fn key_id(&self, masked_prefix: &str) -> i64 {
        self.key_json(masked_prefix).await["id"].as_i64().unwrap()
    }

    async fn admin_patch(&self, path: &str, body: Value) -> crate::helpers::Resp {
        let req = self
            .client
            .request(awc::http::Method::PATCH, self.url(path))
            .insert_header(("Authorization", crate::helpers::basic("admin", ADMIN_PASS)))
            .insert_header(("Content-Type", "application/json"));
        self.send(req, Some(body.to_string().into())).await
    }

    async fn user_info(&self) -> Value {
        let req = self
            .client
            .get(self.url("/v1/user/info"))
            .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)));
        let r = self.send(req, None).await;
        assert_eq!(r.status, 200);
        r.json()["data"].clone()
    }
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[actix_web::test]
async fn without_user_info_keys_are_validated_with_the_model_list_and_balances_stay_unknown() {
    let app = spawn_app().await;
    app.fake.set_info_gone(true);
    app.fake.add_key(KA, "acct-1", "10.00", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "5.00", Mode::Ok);
    app.fake.add_key(KD, "acct-4", "0.00", Mode::Broke);
    // KC is unknown to the fake: 401, on the model list too.
    let body = app.import(&[KA, KB, KC, KD]).await;
    assert_eq!(
        (&body["added"], &body["invalid"], &body["failed"], &body["duplicates"]),
        (&json!(3), &json!(1), &json!(0), &json!(0)),
        "{body}"
    );
    for r in body["results"].as_array().unwrap() {
        assert!(r.get("balance").is_none(), "a balance was invented: {r}");
    }
    // One scout asked /v1/user/info; the 410 was remembered, so the others
    // went straight to the model list.
    assert_eq!(app.fake.count("/v1/user/info"), 1);
    // Four checks, and one read of the model list (the metrics' model labels).
    assert_eq!(app.fake.count("/v1/models"), 4 + 1);

    for k in ["sk-aaaa", "sk-bbbb", "sk-dddd"] {
        let v = app.key_json(k).await;
        // The model list answers at zero balance too: KD serves until a call says otherwise.
        assert_eq!(v["state"], "active", "{v}");
        assert_eq!(v["balance"], Value::Null, "unknown is not zero: {v}");
        assert_eq!(v["last_error"], Value::Null, "an unreadable balance is no error: {v}");
    }
    assert_eq!(app.key_state("sk-cccc").await, "invalid");

    // A refresh asks the model list, not the retired endpoint, and shows no error.
    let r = app.admin_post("/refresh", json!({})).await;
    assert_eq!(r.status, 200);
    let summary = r.json();
    assert_eq!((summary["active"].as_i64(), summary["invalid"].as_i64()), (Some(3), Some(1)), "{summary}");
    assert_eq!(summary["unchanged"], 0, "{summary}");
    assert_eq!(app.fake.count("/v1/user/info"), 1, "the retired endpoint is not asked again");
    assert_eq!(app.key_json("sk-aaaa").await["last_error"], Value::Null);

    // The pooled account view: balances unknown, not "0.00".
    let info = app.user_info().await;
    for f in ["totalBalance", "balance", "chargeBalance"] {
        assert_eq!(info[f], Value::Null, "{f}: {info}");
    }
    assert_eq!(info["balanceUnknownAccounts"], 3, "{info}");
    assert_eq!(info["balanceKnownAccounts"], 0, "{info}");
    let o = app.admin_get("/api/stats/overview").await.json();
    assert_eq!(o["total_balance"], Value::Null, "{o}");
    assert_eq!(o["balance_unknown_accounts"], 3, "{o}");

    // The keys page and the dashboard say so in words.
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    let keys_page = crate::admin_ui::text(&app.page("/admin/keys", &cookie).await);
    assert!(keys_page.contains(">unknown<"), "keys page shows no 'unknown'");
    assert!(keys_page.contains("/v1/user/info is gone"), "no hint why");
    let dash = crate::admin_ui::text(&app.page("/admin", &cookie).await);
    assert!(dash.contains("does not report balances of these 3 accounts"), "dashboard: {dash}");
}

#[actix_web::test]
async fn where_user_info_answers_balances_are_read_and_a_known_zero_is_exhausted() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "10.50", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "0.00", Mode::Ok);
    let body = app.import(&[KA, KB]).await;
    assert_eq!(body["added"], 2, "{body}");
    // One read of the model list (the metrics' model labels); no check fell back to it.
    assert_eq!(app.fake.count("/v1/models"), 1, "no fallback while user info answers");
    assert_eq!(app.key_json("sk-aaaa").await["balance"], 10.5);
    assert_eq!(app.key_state("sk-bbbb").await, "exhausted");
    let info = app.user_info().await;
    assert_eq!(info["totalBalance"], "10.50", "{info}");
    assert_eq!(info["balanceKnownAccounts"], 2, "{info}");

    // The endpoint retires while the proxy runs: the next refresh validates
    // with the model list and forgets the balances it can no longer confirm.
    app.fake.set_info_gone(true);
    let r = app.admin_post("/refresh", json!({})).await.json();
    assert_eq!(r["unchanged"], 0, "{r}");
    let a = app.key_json("sk-aaaa").await;
    assert_eq!(
        (a["state"].as_str(), &a["balance"], &a["last_error"]),
        (Some("active"), &Value::Null, &Value::Null)
    );
    assert_eq!(app.user_info().await["totalBalance"], Value::Null);
}

/// Calls `n` chats; the keys the fake saw for them, as masked prefixes.
async fn chats(app: &TestApp, model: &str, n: usize) -> Vec<String> {
    app.fake.clear_seen();
    for _ in 0..n {
        let r = app.call("/v1/chat/completions", chat_body(model)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    app.fake.keys_for("/v1/chat/completions").into_iter().map(|k| k[..7].to_string()).collect()
}

#[actix_web::test]
async fn the_balance_strategy_spreads_calls_over_equal_or_unknown_balances_in_both_modes() {
    for gone in [true, false] {
        let app = spawn_app().await;
        app.fake.set_info_gone(gone);
        // Equal balances where they can be read (free-credit keys bought in bulk).
        for (k, acct) in [(KA, "a1"), (KB, "a2"), (KC, "a3")] {
            app.fake.add_key(k, acct, "14.00", Mode::Ok);
        }
        app.import(&[KA, KB, KC]).await;
        let seen = chats(&app, "Qwen/Qwen3-8B", 9).await;
        for k in ["sk-aaaa", "sk-bbbb", "sk-cccc"] {
            assert_eq!(seen.iter().filter(|s| *s == k).count(), 3, "info gone={gone}: {seen:?}");
        }
        if gone {
            // A key known to hold nothing goes last: here every balance is
            // unknown, so a key with a known zero cannot exist; checked in the
            // unit tests of select.rs.
            assert_eq!(app.key_json("sk-aaaa").await["balance"], Value::Null);
        }
    }
}

#[actix_web::test]
async fn an_exhausted_key_gets_one_trial_call_after_the_interval_and_serves_again_once_topped_up() {
    let app = spawn_app_with(&[("EXHAUSTED_RETRY_INTERVAL", "1")]).await;
    app.fake.set_info_gone(true);
    app.fake.add_key(KA, "acct-1", "0", Mode::Broke);
    app.fake.add_key(KB, "acct-2", "0", Mode::Ok);
    app.import(&[KA, KB]).await;
    assert_eq!(app.key_state("sk-aaaa").await, "active", "the model list cannot tell a broke key");

    // The first call meets the 403 30001 and fails over; the key is exhausted.
    let seen = chats(&app, "m", 1).await;
    assert_eq!(seen, ["sk-aaaa", "sk-bbbb"]);
    let a = app.key_json("sk-aaaa").await;
    assert_eq!((a["state"].as_str(), &a["balance"]), (Some("exhausted"), &Value::Null), "{a}");
    // Until the trial is due, nothing goes to it.
    assert_eq!(chats(&app, "m", 3).await, ["sk-bbbb"; 3]);

    // The trial falls due: the next call tries the exhausted key first; it is
    // still broke, so the call fails over and the client never sees it.
    poll(Duration::from_secs(5), || async { (app.state.pool.trials_offered() > 0).then_some(()) }).await;
    let seen = chats(&app, "m", 1).await;
    assert_eq!(seen, ["sk-aaaa", "sk-bbbb"], "one trial, then the usual key");
    let rows = app.logs().await;
    let last = rows.last().unwrap();
    assert_eq!((last.status, last.attempts), (200, 2), "{last:?}");
    assert_eq!(app.key_state("sk-aaaa").await, "exhausted");
    // The next trial waits the interval again.
    assert_eq!(chats(&app, "m", 2).await, ["sk-bbbb"; 2]);

    // At most one trial per key in flight: ten calls at once when it is due.
    app.fake.set_header_delay(Duration::from_millis(300));
    poll(Duration::from_secs(5), || async { (app.state.pool.trials_offered() > 0).then_some(()) }).await;
    app.fake.clear_seen();
    let calls = (0..10).map(|_| app.call("/v1/chat/completions", chat_body("m")));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 200);
    }
    let seen = app.fake.keys_for("/v1/chat/completions");
    assert_eq!(seen.iter().filter(|k| k.as_str() == KA).count(), 1, "one trial in flight: {seen:?}");
    app.fake.set_header_delay(Duration::ZERO);

    // The account is topped up: the next trial succeeds and the key is back.
    app.fake.set_mode(KA, Mode::Ok);
    poll(Duration::from_secs(5), || async { (app.state.pool.trials_offered() > 0).then_some(()) }).await;
    let seen = chats(&app, "m", 1).await;
    assert_eq!(seen, ["sk-aaaa"], "the trial call served the client");
    poll(Duration::from_secs(5), || async {
        let a = app.key_json("sk-aaaa").await;
        (a["state"] == "active" && a["last_error"].is_null()).then_some(())
    })
    .await;
    let seen = chats(&app, "m", 4).await;
    assert_eq!(seen.iter().filter(|k| *k == "sk-aaaa").count(), 2, "both keys serve: {seen:?}");
}

#[actix_web::test]
async fn refresh_or_enable_by_the_owner_ends_an_exhaustion_and_a_readable_balance_plans_no_trial() {
    let app = spawn_app_with(&[("EXHAUSTED_RETRY_INTERVAL", "0")]).await;
    app.fake.set_info_gone(true);
    app.fake.add_key(KA, "acct-1", "0", Mode::Broke);
    app.fake.add_key(KB, "acct-2", "0", Mode::Ok);
    app.import(&[KA, KB]).await;
    let id = app.key_id("sk-aaaa").await;
    chats(&app, "m", 1).await;
    assert_eq!(app.key_state("sk-aaaa").await, "exhausted");
    assert_eq!(app.state.pool.next_trial_ms.load(std::sync::atomic::Ordering::Relaxed), 0, "0 = never");

    let r = app.admin_post(&format!("/api/keys/{id}/refresh"), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["key"]["state"], "active", "the owner's refresh ends it");
    chats(&app, "m", 1).await;
    assert_eq!(app.key_state("sk-aaaa").await, "exhausted", "broke again at the next call");
    let r = app.admin_post(&format!("/api/keys/{id}/enable"), json!({})).await;
    assert_eq!(r.json()["key"]["state"], "active", "the owner's enable ends it");

    // Where a balance can be read, an exhausted key waits for a refresh that
    // shows money, not for a trial call.
    let app = spawn_app_with(&[("EXHAUSTED_RETRY_INTERVAL", "1")]).await;
    app.fake.add_key(KA, "acct-1", "5.00", Mode::Ok);
    app.fake.add_key(KB, "acct-2", "5.00", Mode::Ok);
    app.import(&[KA, KB]).await;
    app.fake.set_mode(KA, Mode::Broke);
    app.fake.set_balance(KA, "0.00");
    chats(&app, "m", 1).await;
    // The known balance drops to zero in the pool actor, after the answer: poll for it.
    let a = crate::helpers::poll(Duration::from_secs(5), || async {
        let a = app.key_json("sk-aaaa").await;
        (a["balance"] == json!(0.0)).then_some(a)
    })
    .await;
    assert_eq!((a["state"].as_str(), &a["balance"]), (Some("exhausted"), &json!(0.0)), "{a}");
    assert_eq!(
        app.state.pool.next_trial_ms.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no trial planned"
    );
    app.fake.set_mode(KA, Mode::Ok);
    app.fake.set_balance(KA, "3.00");
    app.admin_post("/refresh", json!({})).await;
    assert_eq!(app.key_state("sk-aaaa").await, "active", "a positive balance ends it");
}

#[actix_web::test]
async fn keys_grouped_by_hand_share_one_accounts_cooldowns() {
    let app = spawn_app().await;
    app.fake.set_info_gone(true);
    for k in [KA, KB, KC] {
        app.fake.add_key(k, "own", "0", Mode::Ok);
    }
    // KA and KB are one account (the owner says so); KC another.
    let r = app.admin_post("/import_keys", json!({"keys": [KA, KB], "account": " team "})).await;
    assert_eq!(r.json()["added"], 2);
    app.import(&[KC]).await;
    assert_eq!(app.key_json("sk-aaaa").await["account_label"], "team");
    app.fake.set_mode(KA, Mode::RateLimited("TPM"));

    // KA's 429 cools the whole group for this model: the call goes to KC, not KB.
    assert_eq!(chats(&app, "m1", 1).await, ["sk-aaaa", "sk-cccc"]);
    assert_eq!(chats(&app, "m1", 2).await, ["sk-cccc"; 2]);
    assert_eq!(app.key_state("sk-bbbb").await, "cooling");
    // Another model is not affected.
    app.fake.set_mode(KA, Mode::Ok);
    let seen = chats(&app, "m2", 3).await;
    assert!(seen.contains(&"sk-bbbb".to_string()), "{seen:?}");

    // An edit on the key puts KC in the group too: now m1 has nothing left.
    let id = app.key_id("sk-cccc").await;
    let r = app.admin_patch(&format!("/api/keys/{id}"), json!({"account": "team"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["key"]["account_label"], "team");
    let r = app.call("/v1/chat/completions", chat_body("m1")).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    // And out of it again.
    let r = app.admin_patch(&format!("/api/keys/{id}"), json!({"account": null})).await;
    assert_eq!(r.json()["key"]["account_label"], Value::Null);
    assert_eq!(chats(&app, "m1", 1).await, ["sk-cccc"]);
    // Bad edits are a clear 400.
    let r = app.admin_patch(&format!("/api/keys/{id}"), json!({"account": "x".repeat(65)})).await;
    assert_eq!(r.status, 400);
    let r = app.admin_patch(&format!("/api/keys/{id}"), json!({"label": "x"})).await;
    assert_eq!(r.status, 400);
}

#[actix_web::test]
async fn a_403_is_judged_by_its_code_not_by_numbers_its_text_quotes() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "9.00", Mode::ModelDisabledQuoting);
    app.fake.add_key(KB, "acct-2", "8.00", Mode::Ok);
    app.import(&[KA, KB]).await;
    assert_eq!(chats(&app, "m", 1).await, ["sk-aaaa", "sk-bbbb"]);
    let a = app.key_json("sk-aaaa").await;
    assert_ne!(a["state"], "exhausted", "code 30003 is not 'no funds': {a}");
    assert_eq!(a["balance"], 9.0);
}

#[actix_web::test]
async fn fill_in_the_middle_completions_are_forwarded_streamed_and_metered() {
    let app = spawn_app().await;
    app.fake.set_info_gone(true);
    app.fake.add_key(KA, "acct-1", "0", Mode::Ok);
    app.import(&[KA]).await;
    let model = "Qwen/Qwen2.5-Coder-7B-Instruct";
    let body = json!({"model": model, "prompt": "def add(a, b):\n", "suffix": "\nprint(add(1, 2))", "max_tokens": 32});
    let r = app.call("/v1/completions", body.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].as_str().unwrap().contains("return a + b"));
    let sent = app.fake.seen().into_iter().rfind(|s| s.path == "/v1/completions").unwrap();
    assert_eq!(&sent.body[..], body.to_string().as_bytes(), "forwarded byte for byte");

    for m in [model.to_string(), format!("{model}-final-usage")] {
        let mut b = body.clone();
        b["model"] = json!(m);
        b["stream"] = json!(true);
        let r = app.call("/v1/completions", b).await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(text.contains("ab¢ ") && text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    let rows = app.logs().await;
    let mut fim: Vec<_> = rows.iter().filter(|r| r.endpoint == "/v1/completions").collect();
    // In the order the calls were made (a streamed call's row may be written in flight, first).
    fim.sort_by_key(|r| r.created_at);
    assert_eq!(fim.len(), 3);
    let (p, c, t) = FIM_USAGE;
    assert_eq!(
        (fim[0].input_tokens, fim[0].output_tokens, fim[0].total_tokens, fim[0].stream),
        (p, c, t, false)
    );
    let (p, c, t) = FIM_STREAM_USAGE;
    for row in &fim[1..] {
        // Running totals (the last counts) or one final usage chunk: the same numbers.
        assert_eq!(
            (row.input_tokens, row.output_tokens, row.total_tokens, row.stream),
            (p, c, t, true),
            "{row:?}"
        );
    }
}

#[actix_web::test]
async fn the_import_form_takes_an_account_and_answers_every_line() {
    let app = spawn_app().await;
    app.fake.set_info_gone(true);
    app.fake.add_key(KA, "acct-1", "0", Mode::Ok);
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    let page = app.page("/admin/keys", &cookie).await;
    let csrf = crate::admin_ui::csrf_of(&page);
    let keys = format!("{KA}\n{KA}\nnope");
    let r = app
        .post_form("/admin/keys/import", &cookie, &[("csrf", &csrf), ("keys", &keys), ("account", "team")])
        .await;
    assert_eq!(r.status, 303);
    let html = crate::admin_ui::text(&app.page(&r.header("location").unwrap(), &cookie).await);
    assert!(html.contains("1 added, 1 duplicate, 1 invalid"), "{html}");
    assert!(html.contains("repeated in this import"), "{html}");
    assert_eq!(app.key_json("sk-aaaa").await["account_label"], "team");
}
