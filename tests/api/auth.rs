use bytes::Bytes;
use serde_json::json;

use crate::fake::Mode;
use crate::helpers::{basic, spawn_app, spawn_app_with, CLIENT_KEY};
use crate::KA;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
    ("GET", "/v1/models"),
    ("GET", "/v1/user/models"),
    ("GET", "/v1/no/such/route"),
];

#[actix_web::test]
async fn every_v1_route_requires_the_client_key_get_included() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let body = json!({"model": "m", "max_tokens": 5, "messages": [], "input": "x", "query": "q", "documents": ["a"]}).to_string();
    for (method, path) in ROUTES {
        let mk = || match *method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)).insert_header(("Content-Type", "application/json")),
        };
        let payload = (*method == "POST").then(|| Bytes::from(body.clone()));
        let r = app.send(mk(), payload.clone()).await;
        assert_eq!(r.status, 401, "{method} {path} without a key");
        let j = r.json();
        if *path == "/v1/messages" {
            assert_eq!(
                (j["type"].as_str(), j["error"]["type"].as_str()),
                (Some("error"), Some("authentication_error"))
            );
        } else {
            assert_eq!(j["error"]["type"], "authentication_error", "{path}: {j}");
        }
        let r = app.send(mk().insert_header(("Authorization", "Bearer wrong")), payload.clone()).await;
        assert_eq!(r.status, 401, "{method} {path} with a wrong key");
        let r = app.send(mk().insert_header(("x-api-key", CLIENT_KEY)), payload.clone()).await;
        let expected = if path.contains("no/such") { 404 } else { 200 };
        assert_eq!(
            r.status,
            expected,
            "{method} {path} with x-api-key: {}",
            String::from_utf8_lossy(&r.body)
        );
        let r =
            app.send(mk().insert_header(("Authorization", format!("Bearer {CLIENT_KEY}"))), payload).await;
        assert_eq!(r.status, expected, "{method} {path} with Bearer");
    }
    assert!(app.fake.seen().iter().all(|s| s.key != "wrong"));
}

#[actix_web::test]
async fn several_client_keys_and_an_open_proxy() {
    let app = spawn_app_with(&[("API_KEY", "k-one, k-two")]).await;
    for (k, status) in [("k-one", 503), ("k-two", 503), ("k-three", 401)] {
        let req = app
            .client
            .post(app.url("/v1/chat/completions"))
            .insert_header(("Authorization", format!("Bearer {k}")));
        assert_eq!(app.send(req, Some(json!({"model": "m"}).to_string().into())).await.status, status, "{k}");
    }
    let app = spawn_app_with(&[("API_KEY", "")]).await;
    let keyless = || {
        app.send(
            app.client.post(app.url("/v1/chat/completions")),
            Some(json!({"model": "m"}).to_string().into()),
        )
    };
    assert_eq!(keyless().await.status, 503, "open proxy: no key needed, no pool key either");
    // The admin says so; once a client key exists the proxy is not open,
    // and the admin stops saying it is.
    let cookie = app.login("admin", crate::helpers::ADMIN_PASS).await.unwrap();
    let open = "this proxy is open";
    assert!(crate::admin_ui::text(&app.page("/admin/keys", &cookie).await).contains(open));
    let r = app.admin_post("/api/clients", json!({"name": "first"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(keyless().await.status, 401, "a client key exists: no longer open");
    assert!(!crate::admin_ui::text(&app.page("/admin/keys", &cookie).await).contains(open));
}

#[actix_web::test]
async fn bad_input_gets_400_or_413_in_the_callers_dialect() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "2000")]).await;
    app.fake.add_key(KA, "a1", "5", Mode::Ok);
    app.import(&[KA]).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/chat/completions", "{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", "", 400, "JSON object"),
        ("/v1/chat/completions", r#"{"messages":[]}"#, 400, "`model` is required"),
        ("/v1/chat/completions", r#"{"model":""}"#, 400, "`model` is required"),
        ("/v1/chat/completions", r#"{"model":5}"#, 400, "invalid request body"),
        ("/v1/chat/completions", r#"{"model":"m","stream":"yes"}"#, 400, "invalid request body"),
        ("/v1/embeddings", r#"["a"]"#, 400, "invalid request body"),
        ("/v1/messages", "{not json", 400, "not valid JSON"),
        ("/v1/messages", r#"{"max_tokens":5}"#, 400, "`model` is required"),
    ];
    for (path, body, status, text) in cases {
        let r = app.call_raw(path, body).await;
        assert_eq!(r.status, *status, "{path} {body}");
        let j = r.json();
        let message = if *path == "/v1/messages" {
            assert_eq!(j["type"], "error");
            assert_eq!(j["error"]["type"], "invalid_request_error");
            j["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert_eq!(j["error"]["type"], "invalid_request_error");
            j["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains(text), "{path} {body}: {message}");
    }
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();
    let r = app.call_raw("/v1/chat/completions", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    let r = app.call_raw("/v1/messages", &big).await;
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (413, Some("request_too_large")));
    assert!(app.fake.keys_for("/v1/chat/completions").is_empty(), "nothing bad reached the upstream");
    assert_eq!(app.logs().await.len(), cases.len() + 2, "rejected requests are logged too");
}

#[actix_web::test]
async fn admin_endpoints_require_the_admin_credentials() {
    let app = spawn_app().await;
    for path in ["/api/keys", "/export_keys", "/logs"] {
        let r = app.send(app.client.get(app.url(path)), None).await;
        assert_eq!(r.status, 401, "{path}");
        let r = app
            .send(
                app.client.get(app.url(path)).insert_header(("Authorization", basic("admin", "wrong"))),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{path}");
        let r = app
            .send(
                app.client
                    .get(app.url(path))
                    .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}"))),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{path}: the client key is not an admin credential");
    }
    for path in ["/import_keys", "/refresh", "/clear_logs", "/api/keys/1/disable"] {
        let r = app
            .send(app.client.post(app.url(path)), Some(Bytes::from_static(b"{\"keys\":\"sk-xxxxxxxxxx\"}")))
            .await;
        assert_eq!(r.status, 401, "{path}");
    }
    let r = app.admin_post("/import_keys", json!({"nothing": 1})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("keys"));
}
