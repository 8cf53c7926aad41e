//! `POST /v1/responses` (Codex's API) through the real server: translated to
//! the fake SiliconFlow's chat completions and back, plain and streamed,
//! with tool round trips, failover, upstream errors in OpenAI's shape, cut
//! streams ending in `response.failed`, and one log row per call.

use serde_json::{json, Value};

use crate::fake::{Mode, CHAT_USAGE, STREAM_USAGE, TOOL_CALL_USAGE, TOOL_FINAL_USAGE};
use crate::helpers::{spawn_app, Resp, TestApp};
use crate::{KA, KB};

const THINKING: &str = "deepseek-ai/DeepSeek-V3.2";

async fn app_with(keys: &[(&str, Mode)]) -> TestApp {
    let app = spawn_app().await;
    for (i, (k, mode)) in keys.iter().enumerate() {
        app.fake.add_key(k, &format!("acct{i}"), "5", mode.clone());
    }
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    app.import(&names).await;
    app
}

/// The data of every event of a Responses stream, checked on the way: each
/// `event:` line names its data's type, and the numbers run from 0.
fn events(r: &Resp) -> Vec<Value> {
    let text = std::str::from_utf8(&r.body).unwrap();
    let evs: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (event, data) = e.split_once('\n').unwrap_or_else(|| panic!("event without data: {e}"));
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(event.strip_prefix("event: ").unwrap(), v["type"]);
            v
        })
        .collect();
    for (n, e) in evs.iter().enumerate() {
        assert_eq!(e["sequence_number"], n as u64, "{e}");
    }
    evs
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The chat request the fake received last.
fn last_chat(app: &TestApp) -> Value {
    let seen = app.fake.seen();
    let last = seen.iter().rev().find(|s| s.path == "/v1/chat/completions").expect("a chat call upstream");
    serde_json::from_slice(&last.body).unwrap()
}

fn exec_tool() -> Value {
    json!({"type": "function", "name": "exec_command", "description": "Runs a command.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}})
}

#[actix_web::test]
async fn a_plain_request_is_a_chat_call_and_a_response_object() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    let r = app
        .call("/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi", "instructions": "Be brief."}))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let o = r.json();
    assert!(o["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        (o["object"].as_str(), o["status"].as_str(), o["model"].as_str()),
        (Some("response"), Some("completed"), Some("Qwen/Qwen3-8B"))
    );
    assert_eq!(o["output"][0]["type"], "message");
    assert_eq!(o["output"][0]["content"][0]["text"], "Hello from the fake");
    let (p, c, t) = CHAT_USAGE;
    assert_eq!(
        (
            o["usage"]["input_tokens"].as_i64(),
            o["usage"]["output_tokens"].as_i64(),
            o["usage"]["total_tokens"].as_i64()
        ),
        (Some(p), Some(c), Some(t))
    );
    assert_eq!(o["instructions"], "Be brief.");
    assert_eq!(r.header("x-siliconcloud-trace-id").as_deref(), Some("fake-trace-1"), "trace headers pass");
    assert_eq!(
        last_chat(&app)["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    let logs = app.logs().await;
    assert_eq!(logs.len(), 1);
    let l = &logs[0];
    assert_eq!(
        (l.endpoint.as_str(), l.model.as_str(), l.status, l.stream),
        ("/v1/responses", "Qwen/Qwen3-8B", 200, false)
    );
    assert_eq!((l.input_tokens, l.output_tokens, l.total_tokens), CHAT_USAGE);
}

#[actix_web::test]
async fn a_streamed_request_gets_the_responses_event_sequence_and_its_usage_is_logged() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    let r = app.call("/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi", "stream": true})).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let evs = events(&r);
    assert_eq!(
        types(&evs),
        [
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ],
            vec!["response.output_text.delta"; 11],
            vec![
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        ]
        .concat()
    );
    let done = &evs.last().unwrap()["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "héllo ".repeat(11));
    assert_eq!(done["id"], evs[0]["response"]["id"]);
    let (p, c, _) = STREAM_USAGE;
    assert_eq!(
        (done["usage"]["input_tokens"].as_i64(), done["usage"]["output_tokens"].as_i64()),
        (Some(p), Some(c))
    );
    let chat = last_chat(&app);
    assert_eq!(
        (chat["stream"].as_bool(), chat["stream_options"]["include_usage"].as_bool()),
        (Some(true), Some(true))
    );
    let l = &app.logs().await[0];
    assert_eq!((l.endpoint.as_str(), l.stream, l.aborted), ("/v1/responses", true, false));
    assert_eq!((l.input_tokens, l.output_tokens, l.total_tokens), STREAM_USAGE);
    assert!(l.ttfb_ms.is_some());
}

/// The loop an agent runs: the model calls tools; their outputs go back with
/// the calls and the reasoning; the model answers.
#[actix_web::test]
async fn a_tool_round_trip_keeps_parallel_calls_in_one_message_and_reasoning_for_the_next_turn() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    let ask = json!({"model": THINKING, "stream": true, "tools": [exec_tool(), {"type": "web_search"}],
        "tool_choice": "auto", "parallel_tool_calls": true, "store": false,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]}]});
    let r = app.call("/v1/responses", ask.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let evs = events(&r);
    let added = evs.iter().filter(|e| e["type"] == "response.output_item.added").count();
    let closed = evs.iter().filter(|e| e["type"] == "response.output_item.done").count();
    assert_eq!((added, closed), (3, 3), "reasoning and two calls, each opened and closed");
    let first = &evs.last().unwrap()["response"];
    assert_eq!(evs.last().unwrap()["type"], "response.completed");
    let output = first["output"].as_array().unwrap().clone();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[0]["summary"][0]["text"], "I should run a command.");
    for (n, call) in output[1..].iter().enumerate() {
        assert_eq!(
            (call["type"].as_str(), call["name"].as_str()),
            (Some("function_call"), Some("exec_command"))
        );
        assert_eq!(call["call_id"], format!("call_fake_{n}"));
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"cmd": format!("echo call-{n}")}));
    }
    let chat = last_chat(&app);
    assert_eq!(chat["tools"].as_array().unwrap().len(), 1, "the built-in web_search is not sent upstream");

    // Codex sends the items back as it got them (without ids), then the outputs.
    let mut input = ask["input"].as_array().unwrap().clone();
    for item in &output {
        let mut item = item.clone();
        item.as_object_mut().unwrap().remove("id");
        input.push(item);
    }
    input.push(json!({"type": "function_call_output", "call_id": "call_fake_0", "output": "one"}));
    input.push(json!({"type": "function_call_output", "call_id": "call_fake_1", "output": [{"type": "input_text", "text": "two"}]}));
    let mut follow = ask.clone();
    follow["input"] = json!(input);
    let r = app.call("/v1/responses", follow).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = &events(&r).last().unwrap()["response"].clone();
    let text_item =
        done["output"].as_array().unwrap().iter().find(|i| i["type"] == "message").unwrap().clone();
    assert_eq!(text_item["content"][0]["text"], "Result: one | two");
    let chat = last_chat(&app);
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[1]["reasoning_content"], "I should run a command.");
    assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2, "both calls in one assistant message");
    assert_eq!(messages[2], json!({"role": "tool", "content": "one", "tool_call_id": "call_fake_0"}));
    assert_eq!(messages[3], json!({"role": "tool", "content": "two", "tool_call_id": "call_fake_1"}));

    let logs = app.logs().await;
    assert_eq!(logs.len(), 2);
    assert_eq!((logs[0].input_tokens, logs[0].output_tokens, logs[0].total_tokens), TOOL_CALL_USAGE);
    assert_eq!((logs[1].input_tokens, logs[1].output_tokens, logs[1].total_tokens), TOOL_FINAL_USAGE);
    assert!(logs.iter().all(|l| l.endpoint == "/v1/responses" && l.status == 200 && !l.aborted));
}

#[actix_web::test]
async fn a_custom_tool_call_comes_back_with_its_raw_input_plain_and_streamed() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    let patch = "*** Begin Patch\n*** Add File: n0.txt\n+\"quoted\"\n*** End Patch";
    for stream in [false, true] {
        let r = app
            .call("/v1/responses", json!({"model": THINKING, "stream": stream, "parallel_tool_calls": false, "input": "patch it",
                "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.",
                           "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}}]}))
            .await;
        assert_eq!(r.status, 200);
        let o = if stream { events(&r).last().unwrap()["response"].clone() } else { r.json() };
        let call = &o["output"][1];
        assert_eq!(
            (call["type"].as_str(), call["name"].as_str(), call["input"].as_str()),
            (Some("custom_tool_call"), Some("apply_patch"), Some(patch)),
            "{o}"
        );
        assert_eq!(o["usage"]["output_tokens_details"]["reasoning_tokens"], 3);
    }
}

#[actix_web::test]
async fn failover_and_upstream_errors_before_the_first_byte_are_openai_errors() {
    // The first key is dead: the second serves, as for chat.
    let app = app_with(&[(KA, Mode::Unauthorized), (KB, Mode::Ok)]).await;
    for _ in 0..2 {
        let r = app.call("/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi"})).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(app.key_state("sk-aaaa").await, "invalid");

    // A model SiliconFlow does not serve: its 400 code 20012, in OpenAI's shape.
    let r = app.call("/v1/responses", json!({"model": "gpt-5", "input": "hi"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert_eq!(r.json()["error"]["message"], "Model does not exist. Please check it carefully.");

    // Rate-limited: 429 with the code Codex and the SDK read, the key cooled.
    app.fake.set_mode(KB, Mode::RateLimited("TPM"));
    let r = app.call("/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi", "stream": true})).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (r.json()["error"]["type"].as_str(), r.json()["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("TPM limit reached"));
    let r = app.call("/v1/responses", json!({"model": "Qwen/Qwen3-8B", "input": "hi"})).await;
    assert_eq!(r.status, 429, "cooling: the proxy answers without calling");
    assert!(r.header("retry-after").is_some());
    let logs = app.logs().await;
    assert!(logs.iter().all(|l| l.endpoint == "/v1/responses"));
}

#[actix_web::test]
async fn a_stream_cut_upstream_ends_in_response_failed_never_completed() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    let r = app.call("/v1/responses", json!({"model": "cut-stream", "input": "hi", "stream": true})).await;
    assert_eq!(r.status, 200);
    let evs = events(&r);
    let t = types(&evs);
    assert!(!t.contains(&"response.completed"), "{t:?}");
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(t.contains(&"response.output_text.delta"), "what came before the cut was passed on");
    let l = &app.logs().await[0];
    assert!(l.aborted, "logged as cut");
    assert!(l.error.as_deref().unwrap_or("").contains("upstream"), "{:?}", l.error);
}

#[actix_web::test]
async fn what_the_proxy_cannot_honour_is_refused_by_name_and_never_sent() {
    let app = app_with(&[(KA, Mode::Ok)]).await;
    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("conversation", json!("conv_1")),
        ("background", json!(true)),
    ] {
        let mut body = json!({"model": "Qwen/Qwen3-8B", "input": "hi"});
        body[field] = value;
        let r = app.call("/v1/responses", body).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(field));
    }
    let r = app.call_raw("/v1/responses", "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(app.fake.count("/v1/chat/completions"), 0);
    let req = app
        .client
        .get(app.url("/v1/responses/resp_abc"))
        .insert_header(("Authorization", format!("Bearer {}", crate::helpers::CLIENT_KEY)));
    let r = app.send(req, None).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("stores no responses"));
    let r = app.send(app.client.post(app.url("/v1/responses")), Some("{}".into())).await;
    assert_eq!(r.status, 401, "the client key is needed here too");
}

#[actix_web::test]
async fn an_upstream_that_falls_silent_mid_stream_ends_in_response_failed() {
    let app = crate::helpers::spawn_app_with(&[("STREAM_IDLE_TIMEOUT", "1")]).await;
    app.fake.add_key(KA, "acct0", "5", Mode::Ok);
    app.import(&[KA]).await;
    let r = app.call("/v1/responses", json!({"model": "stall-stream", "input": "hi", "stream": true})).await;
    assert_eq!(r.status, 200);
    let evs = events(&r);
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{:?}", types(&evs));
    assert!(last["response"]["error"]["message"].as_str().unwrap().contains("sent nothing for 1 s"));
    assert!(!types(&evs).contains(&"response.completed"));
    let l = &app.logs().await[0];
    assert!(l.aborted && l.error.as_deref().unwrap_or("").contains("sent nothing"));
}
