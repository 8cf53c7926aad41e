//! Two instances of the proxy on one PostgreSQL database (run with
//! `TEST_POSTGRES` set; on SQLite there is one instance per file and these
//! tests say so and pass).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake::{Fake, Mode};
use crate::helpers::{base_env, poll, start_with_env, TestApp, ADMIN_PASS};
use crate::{KA, KB};

/// A and B: two applications, each with its own fake upstream (knowing the
/// same keys), sharing A's database.
async fn two_instances() -> Option<(TestApp, TestApp)> {
    two_instances_with(&[]).await.map(|(a, b, _)| (a, b))
}

type Env = std::collections::HashMap<String, String>;

/// As `two_instances`, with settings for both, and B's settings (to restart it).
async fn two_instances_with(overrides: &[(&str, &str)]) -> Option<(TestApp, TestApp, Env)> {
    if std::env::var("TEST_POSTGRES").map_or(true, |v| v.is_empty()) {
        eprintln!("skipped: two instances share a PostgreSQL database (set TEST_POSTGRES)");
        return None;
    }
    let (fake_a, fake_b) = (Fake::start(), Fake::start());
    for fake in [&fake_a, &fake_b] {
        fake.add_key(KA, "acct-a", "20", Mode::Ok);
        fake.add_key(KB, "acct-b", "10", Mode::Ok);
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut env_a = base_env(&fake_a, &dir_a);
    let mut env_b = base_env(&fake_b, &dir_b);
    for (k, v) in overrides {
        env_a.insert(k.to_string(), v.to_string());
        env_b.insert(k.to_string(), v.to_string());
    }
    env_b.insert("DATABASE_URL".into(), env_a["DATABASE_URL"].clone());
    let a = start_with_env(fake_a, dir_a, env_a).await;
    let b = start_with_env(fake_b, dir_b, env_b.clone()).await;
    Some((a, b, env_b))
}

#[actix_web::test]
async fn a_key_imported_disabled_or_cooled_on_one_instance_is_seen_by_the_other() {
    let Some((a, b)) = two_instances().await else { return };
    assert_eq!(b.chat("m").await.status, 503, "B has no key yet");

    // Imported on A: B serves with it.
    a.import(&[KA, KB]).await;
    let t = Instant::now();
    poll(Duration::from_secs(5), || async { (b.chat("m").await.status == 200).then_some(()) }).await;
    let seen = t.elapsed();
    assert!(seen < Duration::from_secs(2), "B served the imported key after {seen:?}");
    assert_eq!(b.fake.keys_for("/v1/chat/completions").last().map(String::as_str), Some(KA), "the richest");

    // A 429 on A cools that account for the model on B too.
    a.fake.set_mode(KA, Mode::RateLimited("TPM"));
    assert_eq!(a.chat("m").await.status, 200, "A fails over to KB");
    poll(Duration::from_secs(5), || async { (b.key_state("sk-aaaa").await == "cooling").then_some(()) })
        .await;
    b.fake.clear_seen();
    assert_eq!(b.chat("m").await.status, 200);
    assert_eq!(b.fake.keys_for("/v1/chat/completions"), vec![KB.to_string()], "B skips the cooling account");
    assert_eq!(b.chat("other-model").await.status, 200);
    assert_eq!(
        b.fake.keys_for("/v1/chat/completions").last().map(String::as_str),
        Some(KA),
        "only that model cools"
    );

    // Disabled on A: B stops using it; deleted on A: B forgets it.
    let id_b =
        a.keys_json().await.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-bbbb")).unwrap()["id"]
            .as_i64()
            .unwrap();
    assert_eq!(a.admin_post(&format!("/api/keys/{id_b}/disable"), json!({})).await.status, 200);
    poll(Duration::from_secs(5), || async { (b.key_state("sk-bbbb").await == "disabled").then_some(()) })
        .await;
    let r = a
        .send(
            a.client
                .delete(a.url(&format!("/api/keys/{id_b}")))
                .insert_header(("Authorization", crate::helpers::basic("admin", ADMIN_PASS))),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    poll(Duration::from_secs(5), || async { (b.keys_json().await.len() == 1).then_some(()) }).await;
}

#[actix_web::test]
async fn a_session_made_on_one_instance_works_on_the_other_and_stats_count_both() {
    let Some((a, b)) = two_instances().await else { return };
    let cookie = a.login("admin", ADMIN_PASS).await.unwrap();
    assert_eq!(b.page("/admin", &cookie).await.status, 200, "the session is in the shared database");
    a.import(&[KA]).await;
    poll(Duration::from_secs(5), || async { (b.chat("m").await.status == 200).then_some(()) }).await;
    assert_eq!(a.chat("m").await.status, 200);
    a.flush_logs().await;
    b.flush_logs().await;
    let on_a = a.admin_get("/api/stats/overview").await.json()["total_calls"].as_i64().unwrap();
    let on_b = b.admin_get("/api/stats/overview").await.json()["total_calls"].as_i64().unwrap();
    assert_eq!(on_a, on_b, "the stats are the rows of both instances");
    assert!(on_a >= 2, "{on_a}");
}

/// A notification names what changed, and the other instance reads only
/// that: a row changed behind both instances' backs (no notification) stays
/// as B last read it while B takes A's change to another key. (A reload of
/// everything would take both; it comes every 30 s as a safety net.)
#[actix_web::test]
async fn an_instance_rereads_only_the_keys_a_notification_names() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA, KB]).await;
    poll(Duration::from_secs(5), || async { (b.keys_json().await.len() == 2).then_some(()) }).await;
    let id_of = |keys: &[serde_json::Value], prefix: &str| {
        keys.iter().find(|k| k["key"].as_str().unwrap().starts_with(prefix)).unwrap()["id"].as_i64().unwrap()
    };
    let keys = a.keys_json().await;
    let (id_a, id_b) = (id_of(&keys, "sk-aaaa"), id_of(&keys, "sk-bbbb"));
    // Behind everyone's back: KA disabled in the database, nobody told.
    let mut conn = a.state.db.get().unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("UPDATE api_keys SET state = 'disabled' WHERE id = {id_a}")),
        &mut *conn,
    )
    .unwrap();
    drop(conn);
    // KB disabled through A: B is told about KB.
    assert_eq!(a.admin_post(&format!("/api/keys/{id_b}/disable"), json!({})).await.status, 200);
    poll(Duration::from_secs(5), || async { (b.key_state("sk-bbbb").await == "disabled").then_some(()) })
        .await;
    assert_eq!(b.key_state("sk-aaaa").await, "active", "B read KB's row, not every row");
    assert_eq!(b.chat("m").await.status, 200, "B still serves with KA");
}

/// An import through A's page redirects to the keys page, which a load
/// balancer may send to B: B shows the results (to that session only).
#[actix_web::test]
async fn an_imports_results_page_can_be_served_by_the_other_instance() {
    let Some((a, b)) = two_instances().await else { return };
    let cookie = a.login("admin", ADMIN_PASS).await.unwrap();
    let csrf = crate::admin_ui::csrf_of(&a.page("/admin/keys", &cookie).await);
    let r = a
        .post_form("/admin/keys/import", &cookie, &[("csrf", &csrf), ("keys", &format!("{KA}\n{KB}"))])
        .await;
    assert_eq!(r.status, 303);
    let location = r.header("location").unwrap();
    let page = crate::admin_ui::text(&b.page(&location, &cookie).await);
    assert!(page.contains("Import: 2 added"), "{page}");
    assert!(page.contains("sk-aaaa") && !page.contains(KA), "masked keys only");
    let other = b.login("admin", ADMIN_PASS).await.unwrap();
    let page = crate::admin_ui::text(&b.page(&location, &other).await);
    assert!(!page.contains("Import: 2 added"), "another session does not see them");
}

async fn chat_as(app: &TestApp, key: String) -> u16 {
    let req = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .insert_header(("Content-Type", "application/json"));
    app.send(req, Some(bytes::Bytes::from(json!({"model": "m", "messages": []}).to_string()))).await.status
}

/// A client key made on A works on B within a poll; rotated on A, its old
/// secret stops on B too.
#[actix_web::test]
async fn client_keys_made_or_rotated_on_one_instance_hold_on_the_other() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA]).await;
    let r = a.admin_post("/api/clients", json!({"name": "shared"})).await;
    assert_eq!(r.status, 201);
    let (id, secret) = (r.json()["id"].as_i64().unwrap(), r.json()["key"].as_str().unwrap().to_string());
    let t = Instant::now();
    poll(Duration::from_secs(5), || async { (chat_as(&b, secret.clone()).await == 200).then_some(()) }).await;
    assert!(t.elapsed() < Duration::from_secs(1), "B took the new client after {:?}", t.elapsed());
    let r = a
        .send(
            a.client
                .post(a.url(&format!("/api/clients/{id}/rotate")))
                .insert_header(("Authorization", crate::helpers::basic("admin", ADMIN_PASS))),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    poll(Duration::from_secs(5), || async { (chat_as(&b, secret.clone()).await == 401).then_some(()) }).await;
}

async fn today(app: &TestApp) -> i64 {
    let r = app.admin_get("/api/clients").await;
    r.json()["clients"][0]["requests_today"].as_i64().unwrap()
}

/// A client's daily limit holds across instances: each publishes its count
/// every second and counts the others'.
#[actix_web::test]
async fn a_clients_daily_limit_counts_the_calls_of_every_instance() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA]).await;
    let r = a.admin_post("/api/clients", json!({"name": "limited", "daily_requests": 4})).await;
    let secret = r.json()["key"].as_str().unwrap().to_string();
    poll(Duration::from_secs(5), || async { (chat_as(&b, secret.clone()).await == 200).then_some(()) }).await;
    for _ in 0..2 {
        assert_eq!(chat_as(&a, secret.clone()).await, 200);
    }
    // Within about a second, B knows of A's two calls (and A of B's one).
    poll(Duration::from_secs(5), || async { (today(&b).await == 3 && today(&a).await == 3).then_some(()) })
        .await;
    assert_eq!(chat_as(&b, secret.clone()).await, 200, "the fourth");
    assert_eq!(chat_as(&b, secret.clone()).await, 429, "the fifth, on B, counting A's calls");
    poll(Duration::from_secs(5), || async { (today(&a).await == 4).then_some(()) }).await;
    assert_eq!(chat_as(&a, secret.clone()).await, 429, "and on A, counting B's");
}

/// A client's rpm counts the calls of every instance in the last minute
/// (each publishes its count every second).
#[actix_web::test]
async fn a_clients_rpm_counts_the_calls_of_every_instance() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA]).await;
    let r = a.admin_post("/api/clients", json!({"name": "paced", "rpm": 4})).await;
    let secret = r.json()["key"].as_str().unwrap().to_string();
    poll(Duration::from_secs(5), || async { b.state.clients.find(&secret).is_some().then_some(()) }).await;
    for _ in 0..3 {
        assert_eq!(chat_as(&a, secret.clone()).await, 200);
    }
    // Within about a second, B knows of A's three calls.
    poll(Duration::from_secs(5), || async { (today(&b).await == 3).then_some(()) }).await;
    let req = b
        .client
        .post(b.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {secret}")))
        .insert_header(("Content-Type", "application/json"));
    let r = b.send(req, Some(bytes::Bytes::from(json!({"model": "m", "messages": []}).to_string()))).await;
    assert_eq!(r.status, 200, "the fourth of the minute: {}", String::from_utf8_lossy(&r.body));
    let r = b
        .send(
            b.client
                .post(b.url("/v1/chat/completions"))
                .insert_header(("Authorization", format!("Bearer {secret}")))
                .insert_header(("Content-Type", "application/json")),
            Some(json!({"model": "m", "messages": []}).to_string().into()),
        )
        .await;
    assert_eq!(r.status, 429, "the fifth, on B, counting A's calls");
    assert!(String::from_utf8_lossy(&r.body).contains("4 requests per minute (rpm)"));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // And A, once B's call is published, is at four too.
    poll(Duration::from_secs(5), || async { (today(&a).await == 4).then_some(()) }).await;
    assert_eq!(chat_as(&a, secret.clone()).await, 429);
}

/// A burst split across both instances, all at once: the limits hold
/// (leases), where each instance counting the other's calls a second late
/// let 20 through of 10.
#[actix_web::test]
async fn a_burst_split_across_instances_stays_within_the_clients_limits() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA]).await;
    for (name, limit) in [("daily", json!({"daily_requests": 10})), ("paced", json!({"rpm": 10}))] {
        let mut body = limit.clone();
        body["name"] = json!(name);
        let r = a.admin_post("/api/clients", body).await;
        let secret = r.json()["key"].as_str().unwrap().to_string();
        poll(Duration::from_secs(5), || async { b.state.clients.find(&secret).is_some().then_some(()) })
            .await;
        let burst = (0..20).map(|i| chat_as(if i % 2 == 0 { &a } else { &b }, secret.clone()));
        let statuses = futures_util::future::join_all(burst).await;
        let served = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        eprintln!("{name} {limit}: {served} served, {refused} refused");
        assert_eq!(served + refused, 20, "{statuses:?}");
        assert!(served <= 10, "{name}: {served} served of a limit of 10");
        assert!(served >= 2, "{name}: each instance serves its share: {statuses:?}");
        // And later calls, on either, are refused: the limit is spent.
        if served == 10 {
            assert_eq!(chat_as(&a, secret.clone()).await, 429);
            assert_eq!(chat_as(&b, secret.clone()).await, 429);
        }
    }
}

#[actix_web::test]
async fn wrong_passwords_count_across_instances() {
    let Some((a, b, _)) = two_instances_with(&[("LOGIN_MAX_FAILURES", "4")]).await else { return };
    for _ in 0..2 {
        assert_eq!(a.login("admin", "nope").await.unwrap_err().status, 401);
        assert_eq!(b.login("admin", "nope").await.unwrap_err().status, 401);
    }
    // Two wrong guesses on each: the fifth, on either, waits.
    for app in [&a, &b] {
        let r = app.login("admin", ADMIN_PASS).await.unwrap_err();
        assert_eq!(r.status, 429, "the address used its guesses across the two instances");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // HTTP Basic shares the count.
    assert_eq!(b.admin_get("/api/keys").await.status, 429);
}

/// Key checks a fake upstream has seen (the scheduled refresh's calls).
fn checks(app: &TestApp) -> usize {
    app.fake.count("/v1/user/info")
}

#[actix_web::test]
async fn one_instance_runs_the_scheduled_refresh_and_another_takes_over_when_it_is_gone() {
    let Some((a, b, _)) = two_instances_with(&[("AUTO_REFRESH_INTERVAL", "1")]).await else { return };
    a.import(&[KA]).await;
    a.fake.clear_seen();
    b.fake.clear_seen();
    // Refreshes every second, on one instance only.
    poll(Duration::from_secs(10), || async { (checks(&a) + checks(&b) >= 3).then_some(()) }).await;
    let (on_a, on_b) = (checks(&a), checks(&b));
    assert!(on_a == 0 || on_b == 0, "one refresh per interval, not two: A {on_a}, B {on_b}");
    let (leader, other) = if on_a > 0 { (a, b) } else { (b, a) };
    // The leader's threads end (as when it is killed): its lock goes with its
    // connection, and the other instance takes the jobs over.
    let TestApp { background, fake: _leader_fake, .. } = leader;
    drop(background);
    other.fake.clear_seen();
    poll(Duration::from_secs(15), || async { (checks(&other) >= 1).then_some(()) }).await;
}

#[actix_web::test]
async fn an_exhausted_keys_trial_is_given_by_one_instance_only() {
    let overrides = [("EXHAUSTED_RETRY_INTERVAL", "1")];
    let Some((a, b, env_b)) = two_instances_with(&overrides).await else { return };
    for app in [&a, &b] {
        // No readable balance: an exhausted key waits for a trial call.
        app.fake.set_info_gone(true);
        app.fake.set_mode(KA, Mode::Broke);
    }
    a.import(&[KA, KB]).await;
    poll(Duration::from_secs(5), || async {
        assert_eq!(a.chat("m").await.status, 200);
        (a.key_state("sk-aaaa").await == "exhausted").then_some(())
    })
    .await;
    // B starts (again) with the key exhausted in the database: both plan its trial.
    let TestApp { fake, dir, background, handle, .. } = b;
    drop(background);
    handle.stop(false).await;
    let b = start_with_env(fake, dir, env_b).await;
    assert_eq!(b.key_state("sk-aaaa").await, "exhausted");
    a.fake.clear_seen();
    b.fake.clear_seen();
    // Traffic on both for 4 s: the trials (one a second) come from one instance.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(a.chat("m").await.status, 200);
        assert_eq!(b.chat("m").await.status, 200);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let trials =
        |app: &TestApp| app.fake.keys_for("/v1/chat/completions").iter().filter(|k| *k == KA).count();
    let (on_a, on_b) = (trials(&a), trials(&b));
    assert!(on_a + on_b >= 2, "trials were given: A {on_a}, B {on_b}");
    assert!(on_a == 0 || on_b == 0, "by one instance: A {on_a}, B {on_b}");
}

#[actix_web::test]
async fn an_alias_changed_on_one_instance_is_used_by_the_other_within_a_second() {
    let Some((a, b)) = two_instances().await else { return };
    a.import(&[KA]).await;
    poll(Duration::from_secs(5), || async { (b.chat("Qwen/Qwen3-8B").await.status == 200).then_some(()) })
        .await;
    assert_eq!(b.chat("claude-opus-4-8").await.status, 400, "no alias yet: SiliconFlow's 20012");
    let put = a
        .admin_send(
            "PUT",
            "/api/aliases",
            Some(json!({"aliases": [{"pattern": "claude-*", "model": "Qwen/Qwen3-8B"}]})),
        )
        .await;
    assert_eq!(put.status, 200);
    let t = Instant::now();
    let r = poll(Duration::from_secs(5), || async {
        let r = b.chat("claude-opus-4-8").await;
        (r.status == 200).then_some(r)
    })
    .await;
    let seen = t.elapsed();
    assert!(seen < Duration::from_secs(1), "B used the alias after {seen:?}");
    assert_eq!(r.json()["model"], "claude-opus-4-8");
    assert_eq!(b.admin_get("/api/aliases").await.json()["aliases"][0]["model"], "Qwen/Qwen3-8B");
}
