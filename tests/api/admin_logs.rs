//! The request log in the admin: filters, pages, the CSV export.

use serde_json::json;
use siliconflow_proxy::db::log_writer::Record;
use siliconflow_proxy::db::models::NewLog;

use crate::admin_ui::text;
use crate::fake::Mode;
use crate::helpers::{spawn_app, TestApp, ADMIN_PASS};
use crate::KA;

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
        requested_model: None,
        call_id: None,
        usage_estimated: false,
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

#[actix_web::test]
async fn csv_cells_that_a_spreadsheet_would_run_as_formulas_are_defused() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "acct-1", "5", Mode::Ok);
    app.import(&[KA]).await;
    for model in ["=HYPERLINK(\"http://x\")", "+1+cmd", "-2+3", "@SUM(A1)"] {
        assert_eq!(
            app.call("/v1/chat/completions", json!({"model": model, "messages": []})).await.status,
            200
        );
    }
    // A model name with a control character in it never reaches a row: refused.
    for model in ["\t=1+1", "\r=1+1"] {
        let r = app.call("/v1/chat/completions", json!({"model": model, "messages": []})).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    }
    app.flush_logs().await;
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    let csv = crate::admin_ui::text(&app.page("/admin/logs.csv", &cookie).await);
    for bad in ["=HYPERLINK", "+1+cmd", "-2+3", "@SUM"] {
        let at = csv.find(bad).unwrap_or_else(|| panic!("{bad:?} missing from {csv:?}"));
        let before = &csv[..at];
        assert!(before.ends_with(",'") || before.ends_with(",\"'"), "{bad:?} not defused: {csv:?}");
    }
}

/// A call that runs longer than a flush interval is in the log while it
/// runs (`in_flight`), and its end fills that same row in: one row, one
/// call in the stats, its tokens counted.
#[actix_web::test]
async fn a_long_call_is_logged_in_flight_and_its_end_fills_the_same_row() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::Ok);
    app.import(&[KA]).await;
    app.fake.set_header_delay(std::time::Duration::from_millis(1500));
    let call = {
        let (client, url) = (app.client.clone(), app.url("/v1/chat/completions"));
        actix_rt::spawn(async move {
            let mut r = client
                .post(url)
                .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)))
                .insert_header(("Content-Type", "application/json"))
                .send_body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .await
                .unwrap();
            (r.status().as_u16(), r.body().await.unwrap().len())
        })
    };
    let flying = crate::helpers::poll(std::time::Duration::from_secs(5), || async {
        let logs = app.admin_get("/logs").await.json();
        logs["logs"].as_array().and_then(|rows| rows.first().cloned()).filter(|r| r["in_flight"] == true)
    })
    .await;
    assert_eq!(flying["status"], 0, "{flying}");
    assert_eq!(flying["model"], "m");
    let (status, _) = call.await.unwrap();
    assert_eq!(status, 200);
    let row = crate::helpers::poll(std::time::Duration::from_secs(5), || async {
        let logs = app.admin_get("/logs").await.json();
        logs["logs"].as_array().and_then(|rows| rows.first().cloned()).filter(|r| r["in_flight"] == false)
    })
    .await;
    let logs = app.admin_get("/logs").await.json();
    assert_eq!(logs["total"], 1, "one row for one call: {logs}");
    assert_eq!(row["id"], flying["id"], "the same row, filled in");
    assert_eq!(row["status"], 200);
    assert!(row["total_tokens"].as_i64().unwrap() > 0, "{row}");
    assert!(row["error"].is_null(), "{row}");
    let stats = app.admin_get("/api/stats/overview").await.json();
    assert_eq!(stats["total_calls"], 1, "{stats}");
    assert_eq!(stats["total_tokens"], row["total_tokens"], "{stats}");
}
