//! Every SiliconFlow endpoint beyond chat: binary and multipart pass-through,
//! account-bound resources, merged lists, pooled user info.

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::fake::{fnv, multipart, speech_audio, Mode};
use crate::helpers::{spawn_app_with, start_with_env, TestApp, CLIENT_KEY};
use crate::{KA, KB, KC};

/// Two accounts: KA (acct-a, richer at first) and KB (acct-b).
async fn two_accounts(overrides: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_with(overrides).await;
    app.fake.add_key(KA, "acct-a", "50", Mode::Ok);
    app.fake.add_key(KB, "acct-b", "20", Mode::Ok);
    assert_eq!(app.import(&[KA, KB]).await["added"], 2);
    app.fake.clear_seen();
    app
}

impl TestApp {
    async fn get_v1(&self, path: &str) -> crate::helpers::Resp {
        let req =
            self.client.get(self.url(path)).insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")));
        self.send(req, None).await
    }

    async fn upload(&self, path: &str, boundary: &str, body: Vec<u8>) -> crate::helpers::Resp {
        self.upload_as(CLIENT_KEY, path, boundary, body).await
    }

    /// Makes `key` the richest, so the balance strategy prefers it from now on.
    async fn prefer(&self, key: &str, balance: &str) {
        self.fake.set_balance(key, balance);
        assert_eq!(self.admin_post("/refresh", json!({})).await.status, 200);
    }
}

#[actix_web::test]
async fn images_both_paths_go_to_images_generations_and_are_logged() {
    let app = two_accounts(&[]).await;
    for path in ["/v1/images/generations", "/v1/image/generations"] {
        let r = app
            .call(path, json!({"model": "Kwai-Kolors/Kolors", "prompt": "a cat", "image_size": "1024x1024"}))
            .await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["seed"], 42);
    }
    assert_eq!(app.fake.seen().iter().filter(|s| s.path == "/v1/images/generations").count(), 2);
    let logs = app.logs().await;
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|l| l.model == "Kwai-Kolors/Kolors" && l.total_tokens == 0 && l.status == 200));
    assert_eq!(logs[1].endpoint, "/v1/image/generations");
}

#[actix_web::test]
async fn speech_audio_streams_back_byte_for_byte() {
    let app = two_accounts(&[]).await;
    let req = app
        .client
        .post(app.url("/v1/audio/speech"))
        .insert_header(("Authorization", format!("Bearer {CLIENT_KEY}")))
        .insert_header(("Content-Type", "application/json"));
    let mut resp = req
        .send_body(json!({"model": "FunAudioLLM/CosyVoice2-0.5B", "input": "hello", "voice": "FunAudioLLM/CosyVoice2-0.5B:alex"}).to_string())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").unwrap(), "audio/mpeg");
    let mut audio = Vec::new();
    let mut reads = 0;
    while let Some(chunk) = resp.next().await {
        audio.extend_from_slice(&chunk.unwrap());
        reads += 1;
    }
    assert!(reads > 1, "streamed");
    assert_eq!(audio.len(), speech_audio().len());
    assert!(audio == speech_audio(), "byte-exact audio");
    let l = &app.logs().await[0];
    assert_eq!((l.endpoint.as_str(), l.status, l.total_tokens), ("/v1/audio/speech", 200, 0));
}

#[actix_web::test]
async fn transcription_uploads_pass_through_byte_exact_small_and_streamed() {
    // Uploads above 1 MiB stream straight through; the limit is 40 MiB.
    let app = two_accounts(&[("FAILOVER_BUFFER_BYTES", "1048576"), ("MAX_BODY_BYTES", "41943040")]).await;
    for size in [1_000usize, 12 << 20] {
        let file: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let boundary = "----sfp-boundary-7MA4YWxkTrZu0gW";
        let body = multipart(boundary, &[("model", "FunAudioLLM/SenseVoiceSmall")], ("file", "a.wav", &file));
        let (len, hash) = (body.len(), fnv(&body));
        let r = app.upload("/v1/audio/transcriptions", boundary, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        assert_eq!(j["bytes"], len, "size {size}");
        assert_eq!(j["hash"], hash.to_string(), "byte-exact upload of {size} bytes");
        assert_eq!(j["content_type"], format!("multipart/form-data; boundary={boundary}"), "boundary kept");
    }
    let logs = app.logs().await;
    assert_eq!(logs.len(), 2);
    assert!(
        logs.iter().all(|l| l.model == "FunAudioLLM/SenseVoiceSmall"),
        "model read from the multipart body"
    );

    // Beyond the limit: 413 in the OpenAI shape, nothing sent upstream.
    app.fake.clear_seen();
    let big = vec![0u8; 41 << 20];
    let r = app.upload("/v1/audio/transcriptions", "b", big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert!(app.fake.seen().is_empty());
}

#[actix_web::test]
async fn small_uploads_fail_over_and_big_ones_go_once() {
    let app = spawn_app_with(&[("FAILOVER_BUFFER_BYTES", "1048576")]).await;
    app.fake.add_key(KA, "acct-a", "50", Mode::Ok);
    app.fake.add_key(KB, "acct-b", "20", Mode::Ok);
    app.import(&[KA, KB]).await;
    app.fake.set_mode(KA, Mode::Overloaded);
    app.fake.clear_seen();
    let body = multipart("bnd", &[("model", "m")], ("file", "a.wav", b"abc"));
    assert_eq!(app.upload("/v1/audio/transcriptions", "bnd", body).await.status, 200);
    assert_eq!(
        app.fake.keys_for("/v1/audio/transcriptions"),
        vec![KA, KB],
        "held, so retried on another key"
    );
    app.fake.clear_seen();
    let body = multipart("bnd", &[("model", "m")], ("file", "a.wav", &vec![1u8; 2 << 20]));
    assert_eq!(app.upload("/v1/audio/transcriptions", "bnd", body).await.status, 503);
    assert_eq!(app.fake.keys_for("/v1/audio/transcriptions"), vec![KA], "streamed once: no replay");
}

#[actix_web::test]
async fn custom_voices_stay_with_their_account_and_lists_merge() {
    let app = two_accounts(&[]).await;
    // Upload on acct-a (richest) by multipart through one alias ...
    let body = multipart(
        "vb",
        &[("model", "FunAudioLLM/CosyVoice2-0.5B"), ("customName", "alice"), ("text", "hi")],
        ("file", "a.mp3", b"ID3"),
    );
    let r = app.upload("/v1/audio/reference", "vb", body).await;
    assert_eq!(r.status, 200);
    let uri_a = r.json()["uri"].as_str().unwrap().to_string();
    assert!(uri_a.contains("acct-a"));
    // ... then acct-b becomes the preferred key; upload as JSON through the other alias.
    app.prefer(KB, "500").await;
    let r = app
        .call("/v1/uploads/audio/voice", json!({"model": "FunAudioLLM/CosyVoice2-0.5B", "customName": "bob", "text": "hi", "audio": "data:audio/mpeg;base64,SUQz"}))
        .await;
    let uri_b = r.json()["uri"].as_str().unwrap().to_string();
    assert!(uri_b.contains("acct-b"));

    // Both list paths show both accounts' voices.
    for path in ["/v1/audio/voice/list", "/v1/audio/reference"] {
        let r = app.get_v1(path).await;
        assert_eq!(r.status, 200);
        let uris: Vec<String> = r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["uri"].as_str().unwrap().to_string())
            .collect();
        assert!(uris.contains(&uri_a) && uris.contains(&uri_b), "{path}: {uris:?}");
    }
    // Speech with acct-a's voice goes to KA although KB is preferred now.
    app.fake.clear_seen();
    let r = app
        .call(
            "/v1/audio/speech",
            json!({"model": "FunAudioLLM/CosyVoice2-0.5B", "input": "x", "voice": uri_a}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.fake.keys_for("/v1/audio/speech"), vec![KA]);
    // Delete through both aliases, each to its owner.
    let r = app.call("/v1/audio/reference/delete", json!({"uri": uri_a})).await;
    assert_eq!(r.status, 200);
    let r = app.call("/v1/audio/voice/deletions", json!({"uri": uri_b})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.fake.keys_for("/v1/audio/voice/deletions"), vec![KA, KB]);
    let r = app.call("/v1/audio/voice/deletions", json!({})).await;
    assert_eq!((r.status, r.json()["error"]["message"].as_str()), (400, Some("`uri` is required")));
}

#[actix_web::test]
async fn video_status_follows_the_submitting_account_across_a_restart() {
    let app = two_accounts(&[]).await;
    let r = app
        .call("/v1/video/generations", json!({"model": "Wan-AI/Wan2.2-T2V-A14B", "prompt": "waves"}))
        .await;
    assert_eq!(r.status, 200);
    let id_a = r.json()["requestId"].as_str().unwrap().to_string();
    app.prefer(KB, "500").await;
    let r = app.call("/v1/video/submit", json!({"model": "Wan-AI/Wan2.2-T2V-A14B", "prompt": "sky"})).await;
    let id_b = r.json()["requestId"].as_str().unwrap().to_string();
    assert_eq!(app.fake.keys_for("/v1/video/submit"), vec![KA, KB]);

    let r = app.call("/v1/video/status", json!({"requestId": id_a})).await;
    assert_eq!((r.status, r.json()["account"].as_str()), (200, Some("acct-a")));

    // Restart on the same database: the owner is remembered.
    let TestApp { fake, dir, handle, .. } = app;
    handle.stop(true).await;
    let env = crate::helpers::base_env(&fake, &dir);
    let app = start_with_env(fake, dir, env).await;
    app.fake.clear_seen();
    for (id, key) in [(&id_a, KA), (&id_b, KB)] {
        let r = app.call("/v1/video/status", json!({"requestId": id})).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "Succeed");
        assert_eq!(app.fake.keys_for("/v1/video/status").last().unwrap(), key);
    }
    let r = app.call("/v1/video/status", json!({"requestId": "req-nobody"})).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("req-nobody"), "names the resource");
}

#[actix_web::test]
async fn files_and_batches_stay_on_the_account_that_uploaded_the_file() {
    let app = two_accounts(&[]).await;
    let jsonl = br#"{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
    let r = app
        .upload("/v1/files", "fb", multipart("fb", &[("purpose", "batch")], ("file", "batch.jsonl", jsonl)))
        .await;
    assert_eq!(r.status, 200);
    let file_a = r.json()["data"]["id"].as_str().unwrap().to_string();
    app.prefer(KB, "500").await;
    let r = app
        .upload("/v1/files", "fb", multipart("fb", &[("purpose", "batch")], ("file", "batch.jsonl", jsonl)))
        .await;
    let file_b = r.json()["data"]["id"].as_str().unwrap().to_string();

    // A batch on acct-a's file is created with KA, though KB is preferred.
    app.fake.clear_seen();
    let r = app
        .call(
            "/v1/batches",
            json!({"input_file_id": file_a, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let batch_a = r.json()["id"].as_str().unwrap().to_string();
    let r = app
        .call(
            "/v1/batches",
            json!({"input_file_id": file_b, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    let batch_b = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(app.fake.keys_for("/v1/batches"), vec![KA, KB]);

    let r = app.get_v1(&format!("/v1/batches/{batch_a}")).await;
    assert_eq!((r.status, r.json()["account"].as_str()), (200, Some("acct-a")));
    let r = app.call(&format!("/v1/batches/{batch_a}/cancel"), json!({})).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("cancelling")));

    // Merged lists: both accounts' files and batches, in the upstream's shapes.
    let files = app.get_v1("/v1/files?purpose=batch").await.json();
    assert_eq!(files["code"], 20000);
    let ids: Vec<&str> =
        files["data"]["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&file_a.as_str()) && ids.contains(&file_b.as_str()), "{ids:?}");
    let batches = app.get_v1("/v1/batches").await.json();
    assert_eq!(batches["object"], "list");
    let ids: Vec<&str> =
        batches["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![batch_b.as_str(), batch_a.as_str()], "newest first");
    assert_eq!(batches["first_id"], Value::from(batch_b.clone()));

    // Unknown file: a clear 404; a missing input_file_id: 400.
    let r = app.call("/v1/batches", json!({"input_file_id": "file-nope"})).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("file-nope"));
    assert_eq!(app.call("/v1/batches", json!({"endpoint": "x"})).await.status, 400);

    // When the owning key leaves the pool, nobody else is asked.
    let id_a =
        app.keys_json().await.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-aaaa")).unwrap()
            ["id"]
            .as_i64()
            .unwrap();
    let r = app
        .send(
            app.client
                .delete(app.url(&format!("/api/keys/{id_a}")))
                .insert_header(("Authorization", crate::helpers::basic("admin", crate::helpers::ADMIN_PASS))),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    app.fake.clear_seen();
    let r = app.get_v1(&format!("/v1/batches/{batch_a}")).await;
    assert_eq!(r.status, 503);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&batch_a) && msg.contains("deleted"), "{msg}");
    assert!(app.fake.seen().is_empty(), "not sent to a stranger");
}

#[actix_web::test]
async fn another_key_of_the_same_account_may_serve_its_resources() {
    let app = spawn_app_with(&[]).await;
    app.fake.add_key(KA, "acct-a", "50", Mode::Ok);
    app.fake.add_key(KC, "acct-a", "10", Mode::Ok);
    app.import(&[KA, KC]).await;
    let id = app.call("/v1/video/submit", json!({"model": "m", "prompt": "p"})).await.json()["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let id_a =
        app.keys_json().await.iter().find(|k| k["key"].as_str().unwrap().starts_with("sk-aaaa")).unwrap()
            ["id"]
            .as_i64()
            .unwrap();
    app.admin_post(&format!("/api/keys/{id_a}/disable"), json!({})).await;
    app.fake.clear_seen();
    let r = app.call("/v1/video/status", json!({"requestId": id})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.fake.keys_for("/v1/video/status"), vec![KC]);
}

#[actix_web::test]
async fn batch_ids_are_validated() {
    let app = two_accounts(&[]).await;
    for bad in ["a.b", "a%2Fb", "..", "a%00b", "a%20b"] {
        let r = app.get_v1(&format!("/v1/batches/{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("invalid batch id"), "{bad}");
    }
    let r = app.get_v1("/v1/batches/batch_unknown").await;
    assert_eq!(r.status, 404);
    assert!(app.fake.seen().is_empty());
}

#[actix_web::test]
async fn user_info_is_the_pool_as_one_account_and_leaks_nothing() {
    let app = spawn_app_with(&[]).await;
    app.fake.add_key(KA, "acct-a", "50.5", Mode::Ok);
    app.fake.add_key(KC, "acct-a", "50.5", Mode::Ok);
    app.fake.add_key(KB, "acct-b", "20", Mode::Ok);
    app.import(&[KA, KB, KC]).await;
    app.fake.clear_seen();
    let r = app.get_v1("/v1/user/info").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!((j["code"].as_i64(), j["status"].as_bool()), (Some(20000), Some(true)));
    assert_eq!(j["data"]["totalBalance"], "70.50", "one account counted once");
    assert_eq!(j["data"]["chargeBalance"], "70.50");
    assert_eq!(j["data"]["accountCount"], 2);
    assert_eq!(j["data"]["keyCount"], 3);
    let text = String::from_utf8_lossy(&r.body);
    for secret in ["acct-a", "acct-b", "name-acct", "secret@example.com", KA, KB, KC] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(app.fake.seen().is_empty(), "answered by the proxy");
    let r = app.send(app.client.get(app.url("/v1/user/info")), None).await;
    assert_eq!(r.status, 401);
}
