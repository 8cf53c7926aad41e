//! A fake SiliconFlow on a real socket, behaving as ../shared/siliconflow-api.md
//! says: balances as strings, 401 bare-string bodies, 403 code 30001, 429
//! with the limit named, 503 code 50505, SSE with running usage split at odd
//! byte boundaries, slow headers.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Ok,
    /// 401 "Invalid token" everywhere.
    Unauthorized,
    /// 403 code 30001 on calls (user info reports a zero balance).
    Broke,
    /// The same with 402, as seen on .com.
    Broke402,
    /// 429 naming this limit ("TPM", "RPD", ...).
    RateLimited(&'static str),
    /// 503 code 50505 on calls.
    Overloaded,
    /// 403 bare "Forbidden" on calls.
    Forbidden,
    /// 403 code 30003 (model disabled) whose message quotes the request,
    /// which happens to contain "30001" and SiliconFlow's no-funds sentence.
    ModelDisabledQuoting,
    /// This status, with an error text that quotes the request's Authorization header.
    Echo(u16),
    /// 500: the upstream failed, perhaps after running the model.
    ServerError,
}

#[derive(Clone, Debug)]
pub struct KeySpec {
    pub account: String,
    pub balance: String,
    pub mode: Mode,
}

#[derive(Clone, Debug)]
#[allow(dead_code)] // method, query and body are for the endpoint tests that come next
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub at: std::time::Instant,
}

#[derive(Default)]
pub struct FakeState {
    /// (kind, id, owning account, the object as listed).
    owned: Mutex<Vec<(&'static str, String, String, Value)>>,
    counter: Mutex<u64>,
    keys: Mutex<HashMap<String, KeySpec>>,
    seen: Mutex<Vec<Seen>>,
    /// When set, /v1/user/info answers with this status (an outage).
    info_outage: Mutex<Option<u16>>,
    /// /v1/user/info retired, as on api.siliconflow.cn since August 2026: 410 for every key.
    info_gone: Mutex<bool>,
    /// Delay before answering chat calls.
    header_delay: Mutex<Duration>,
    /// Batches the test has completed, with the usage they report (the
    /// documented upstream reports none; OpenAI's batch object does).
    batch_usage: Mutex<HashMap<String, Value>>,
}

pub struct Fake {
    pub url: String,
    pub state: Arc<FakeState>,
}

/// The final usage of every chat stream the fake sends.
pub const STREAM_USAGE: (i64, i64, i64) = (21, 8, 29);
pub const CHAT_USAGE: (i64, i64, i64) = (11, 7, 18);

impl Fake {
    pub fn start() -> Fake {
        let state = Arc::new(FakeState::default());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake upstream");
        let port = listener.local_addr().expect("fake addr").port();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(256 << 20))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen fake upstream")
        .run();
        actix_rt::spawn(server);
        Fake { url: format!("http://127.0.0.1:{port}"), state }
    }

    pub fn add_key(&self, key: &str, account: &str, balance: &str, mode: Mode) {
        self.state.keys.lock().unwrap().insert(
            key.to_string(),
            KeySpec { account: account.to_string(), balance: balance.to_string(), mode },
        );
    }

    pub fn set_mode(&self, key: &str, mode: Mode) {
        if let Some(k) = self.state.keys.lock().unwrap().get_mut(key) {
            k.mode = mode;
        }
    }

    pub fn set_balance(&self, key: &str, balance: &str) {
        if let Some(k) = self.state.keys.lock().unwrap().get_mut(key) {
            k.balance = balance.to_string();
        }
    }

    pub fn set_info_outage(&self, status: Option<u16>) {
        *self.state.info_outage.lock().unwrap() = status;
    }

    /// Retires (or brings back) /v1/user/info: 410 for every key, as the .cn host does now.
    pub fn set_info_gone(&self, gone: bool) {
        *self.state.info_gone.lock().unwrap() = gone;
    }

    /// How many calls reached `path`.
    pub fn count(&self, path: &str) -> usize {
        self.state.seen.lock().unwrap().iter().filter(|s| s.path == path).count()
    }

    pub fn set_header_delay(&self, d: Duration) {
        *self.state.header_delay.lock().unwrap() = d;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The keys used for calls to `path`, in order.
    pub fn keys_for(&self, path: &str) -> Vec<String> {
        self.seen().into_iter().filter(|s| s.path == path).map(|s| s.key).collect()
    }

    /// The batch `id` reports itself completed, with this `usage`.
    pub fn complete_batch(&self, id: &str, usage: Value) {
        self.state.batch_usage.lock().unwrap().insert(id.to_string(), usage);
    }

    pub fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

fn bearer(req: &HttpRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

fn trace(resp: &mut actix_web::HttpResponseBuilder, req: &HttpRequest) {
    resp.insert_header(("x-siliconcloud-trace-id", "fake-trace-1"));
    if let Some(t) = req.headers().get("x-trace-id") {
        resp.insert_header(("x-echo-trace-id", t.clone()));
    }
}

/// The error answer this key's mode calls for, if any.
fn mode_error(spec: Option<&KeySpec>, req: &HttpRequest) -> Option<HttpResponse> {
    let mut b;
    let spec = match spec {
        None => {
            b = HttpResponse::Unauthorized();
            return Some(b.content_type("application/json").body("\"Invalid token\""));
        }
        Some(s) => s,
    };
    let body = match spec.mode {
        Mode::Ok => return None,
        Mode::Unauthorized => {
            b = HttpResponse::Unauthorized();
            "\"Api key is invalid\"".to_string()
        }
        Mode::Broke => {
            b = HttpResponse::Forbidden();
            json!({"code":30001,"message":"Sorry, your account balance is insufficient","data":null})
                .to_string()
        }
        Mode::Broke402 => {
            b = HttpResponse::PaymentRequired();
            json!({"code":30001,"message":"Sorry, your account balance is insufficient","data":null})
                .to_string()
        }
        Mode::RateLimited(limit) => {
            b = HttpResponse::TooManyRequests();
            json!({"code":50602,"message":format!("Request was rejected due to rate limiting. If you want more, please contact contact@siliconflow.cn. Details:{limit} limit reached."),"data":"limit"}).to_string()
        }
        Mode::Overloaded => {
            b = HttpResponse::ServiceUnavailable();
            json!({"code":50505,"message":"Model service overloaded. Please try again later.","data":"busy"})
                .to_string()
        }
        Mode::Forbidden => {
            b = HttpResponse::Forbidden();
            "\"Forbidden\"".to_string()
        }
        Mode::Echo(status) => {
            b = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            json!({"code":20015,"message":format!("invalid request header 'Authorization: {auth}'"),"data":null}).to_string()
        }
        Mode::ServerError => {
            b = HttpResponse::InternalServerError();
            json!({"code":50000,"message":"Internal server error","data":null}).to_string()
        }
        Mode::ModelDisabledQuoting => {
            b = HttpResponse::Forbidden();
            json!({"code":30003,"message":"Model disabled for this request: 'why does code 30001 say your account balance is insufficient?'","data":null}).to_string()
        }
    };
    trace(&mut b, req);
    Some(b.content_type("application/json").body(body))
}

/// Splits `text` into pieces of odd, varying sizes (1, 2, 5, 11, ...), so that
/// events and even UTF-8 sequences straddle reads.
fn odd_chunks(text: String) -> Vec<Bytes> {
    let bytes = Bytes::from(text);
    let sizes = [1usize, 2, 5, 11, 3, 17, 7, 29, 13];
    let mut out = Vec::new();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        let len = sizes[n % sizes.len()].min(bytes.len() - i);
        out.push(bytes.slice(i..i + len));
        i += len;
        n += 1;
    }
    out
}

fn sse_response(req: &HttpRequest, chunks: Vec<Bytes>, delay: Duration) -> HttpResponse {
    sse_paced(req, chunks, move |_| delay)
}

/// An SSE answer that waits `gap(i)` before sending chunk `i`.
fn sse_paced(
    req: &HttpRequest,
    chunks: Vec<Bytes>,
    gap: impl Fn(usize) -> Duration + 'static,
) -> HttpResponse {
    let gap = std::rc::Rc::new(gap);
    let stream = futures_util::stream::unfold((0usize, chunks.into_iter()), move |(i, mut it)| {
        let gap = gap.clone();
        async move {
            let next = it.next()?;
            let delay = gap(i);
            if !delay.is_zero() {
                actix_rt::time::sleep(delay).await;
            }
            Some((Ok::<_, actix_web::Error>(next), (i + 1, it)))
        }
    });
    let mut b = HttpResponse::Ok();
    trace(&mut b, req);
    b.content_type("text/event-stream; charset=utf-8").streaming(stream)
}

/// The full text of the fake's OpenAI-style chat stream: running usage in every chunk.
pub fn chat_stream_text(model: &str, pieces: usize) -> String {
    let (p, c, _) = STREAM_USAGE;
    let mut s = String::new();
    for i in 0..pieces {
        let done = i + 1 == pieces;
        let completion = if done { c } else { (i as i64 + 1).min(c - 1) };
        let chunk = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": if done { "" } else { "héllo " }}, "finish_reason": if done { json!("stop") } else { Value::Null }}],
            "usage": {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion},
        });
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    s.push_str("data: [DONE]\n\n");
    s
}

pub const FIM_USAGE: (i64, i64, i64) = (17, 9, 26);
/// The final usage of the fake's FIM streams.
pub const FIM_STREAM_USAGE: (i64, i64, i64) = (23, 6, 29);

/// A FIM stream: `choices[].text` pieces; running usage in every chunk
/// (SiliconFlow), or only in a last chunk with no choices (`final_only`).
pub fn fim_stream_text(model: &str, pieces: usize, final_only: bool) -> String {
    let (p, c, _) = FIM_STREAM_USAGE;
    let mut s = String::new();
    for i in 0..pieces {
        let done = i + 1 == pieces;
        let completion = if done { c } else { (i as i64 + 1).min(c - 1) };
        let mut chunk = json!({
            "id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": if done { "" } else { "ab¢ " }, "finish_reason": if done { json!("stop") } else { Value::Null }}],
        });
        if !final_only {
            chunk["usage"] =
                json!({"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion});
        }
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    if final_only {
        let chunk = json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model, "choices": [],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    s.push_str("data: [DONE]\n\n");
    s
}

pub fn messages_stream_text(model: &str) -> String {
    let events = [
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_fake","type":"message","role":"assistant","content":[],"model":model,"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":31,"output_tokens":1}}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ("ping", json!({"type":"ping"})),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}),
        ),
        ("content_block_stop", json!({"type":"content_block_stop","index":0})),
        (
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}),
        ),
        ("message_stop", json!({"type":"message_stop"})),
    ];
    events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect()
}

async fn handle(req: HttpRequest, body: Bytes, state: web::Data<FakeState>) -> HttpResponse {
    let key = bearer(&req);
    let path = req.path().to_string();
    state.seen.lock().unwrap().push(Seen {
        at: std::time::Instant::now(),
        method: req.method().to_string(),
        path: path.clone(),
        query: req.query_string().to_string(),
        key: key.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        // Large uploads are checked by hash, not kept.
        body: if body.len() <= 1 << 20 { body.clone() } else { Bytes::new() },
    });
    let spec = state.keys.lock().unwrap().get(&key).cloned();

    if path == "/v1/user/info" {
        if *state.info_gone.lock().unwrap() {
            return HttpResponse::Gone().content_type("application/json").body(
                json!({"code":20410,"message":"This API has been deprecated","data":null}).to_string(),
            );
        }
        if let Some(status) = *state.info_outage.lock().unwrap() {
            let code = actix_web::http::StatusCode::from_u16(status).unwrap();
            return HttpResponse::build(code).content_type("application/json").body(
                json!({"code":50505,"message":"Model service overloaded. Please try again later.","data":null}).to_string(),
            );
        }
        let Some(spec) = spec else {
            return HttpResponse::Unauthorized().content_type("application/json").body("\"Invalid token\"");
        };
        if spec.mode == Mode::Unauthorized {
            return HttpResponse::Unauthorized().content_type("application/json").body("\"Invalid token\"");
        }
        return HttpResponse::Ok().json(json!({"code":20000,"message":"OK","status":true,"data":{
            "id": spec.account, "name": format!("name-{}", spec.account), "image":"", "email":"secret@example.com",
            "isAdmin": false, "balance": "0.00", "status":"normal", "introduction":"", "role":"",
            "chargeBalance": spec.balance, "totalBalance": spec.balance}}));
    }

    let delay = *state.header_delay.lock().unwrap();
    if !delay.is_zero() && path != "/v1/models" {
        actix_rt::time::sleep(delay).await;
    }
    // The model list answers a valid key even at zero balance (SiliconFlow does).
    let zero_balance_ok =
        path == "/v1/models" && matches!(spec.as_ref().map(|s| &s.mode), Some(Mode::Broke | Mode::Broke402));
    if !zero_balance_ok {
        if let Some(err) = mode_error(spec.as_ref(), &req) {
            return err;
        }
    }
    if let Some(resp) = account_bound(&req, &path, &body, spec.as_ref(), &state) {
        return resp;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = parsed.get("model").and_then(Value::as_str).unwrap_or("").to_string();
    let stream = parsed.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // SiliconFlow serves its own ids only: any other name is 20012, on every route.
    if model == "bad-model" || model.starts_with("gpt-") || model.starts_with("claude-") {
        let mut b = HttpResponse::BadRequest();
        trace(&mut b, &req);
        return b.json(
            json!({"code":20012,"message":"Model does not exist. Please check it carefully.","data":null}),
        );
    }
    // "Qwen/tiny-window": a 1,024-token window, past which SiliconFlow
    // answers 20015 in its two wordings (the second with max_tokens), on
    // chat, completions and messages; /v1/messages in Anthropic's shape.
    if model == "Qwen/tiny-window" {
        let size = body.len() as u64 / 4;
        if size > 1024 {
            let message = match parsed.get("max_tokens").and_then(Value::as_u64) {
                Some(m) => format!(
                    "max_total_tokens ({}) must be less than or equal to max_seq_len (1024)",
                    size + m
                ),
                None => format!("length of prompt_tokens ({size}) must be less than max_seq_len (1024)."),
            };
            let mut b = HttpResponse::BadRequest();
            trace(&mut b, &req);
            return if path == "/v1/messages" {
                b.json(json!({"type":"error","error":{"type":"invalid_request_error","message": message}}))
            } else {
                b.json(json!({"code":20015,"message": message,"data":null}))
            };
        }
    }
    if path == "/v1/chat/completions" && parsed.get("tools").is_some() {
        return agent_answer(&req, &parsed, &model, stream);
    }
    let mut ok = HttpResponse::Ok();
    trace(&mut ok, &req);
    match path.as_str() {
        // "steady-stream": an event every 700 ms; "stall-stream": two events,
        // then silence for 30 s. For the stream idle timeout.
        "/v1/chat/completions" if stream && (model == "steady-stream" || model == "stall-stream") => {
            let text = chat_stream_text(&model, 4);
            let events: Vec<Bytes> =
                text.split_inclusive("\n\n").map(|s| Bytes::from(s.to_string())).collect();
            if model == "steady-stream" {
                sse_paced(&req, events, |i| if i == 0 { Duration::ZERO } else { Duration::from_millis(700) })
            } else {
                sse_paced(&req, events, |i| if i == 2 { Duration::from_secs(30) } else { Duration::ZERO })
            }
        }
        // "Qwen/usage-at-end": usage only in the last chunk (some SiliconFlow
        // models do), the sixth of six deltas 3 s after the fifth.
        "/v1/chat/completions" if stream && model == "Qwen/usage-at-end" => {
            let (p, c, _) = STREAM_USAGE;
            let mut events: Vec<Bytes> = (0..6)
                .map(|_| {
                    let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                        "choices": [{"index": 0, "delta": {"content": "héllo "}, "finish_reason": null}]});
                    Bytes::from(format!("data: {chunk}\n\n"))
                })
                .collect();
            let last = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
            events.push(Bytes::from(format!("data: {last}\n\ndata: [DONE]\n\n")));
            sse_paced(&req, events, |i| if i == 5 { Duration::from_secs(3) } else { Duration::ZERO })
        }
        // "cut-stream": the upstream dies after 5 of 20 events (no last chunk).
        "/v1/chat/completions" if stream && model == "cut-stream" => {
            let text = chat_stream_text(&model, 19);
            let events: Vec<Bytes> =
                text.split_inclusive("\n\n").map(|s| Bytes::from(s.to_string())).collect();
            // Paced, so that the head and the five events leave before the end.
            let five = futures_util::stream::unfold(events.into_iter().take(5), |mut it| async move {
                let next = it.next()?;
                actix_rt::time::sleep(Duration::from_millis(5)).await;
                Some((Ok::<_, actix_web::Error>(next), it))
            });
            let die = futures_util::stream::once(async {
                actix_rt::time::sleep(Duration::from_millis(30)).await;
                Err::<Bytes, _>(actix_web::error::ErrorInternalServerError("upstream process killed"))
            });
            let mut b = HttpResponse::Ok();
            trace(&mut b, &req);
            b.content_type("text/event-stream").streaming(futures_util::StreamExt::chain(five, die))
        }
        // "short-body": declares 1000 bytes, sends 12, closes.
        "/v1/chat/completions" if model == "short-body" => {
            let twelve = futures_util::stream::unfold(0, |i| async move {
                // A pause after the 12 bytes, so they leave before the close.
                actix_rt::time::sleep(Duration::from_millis(20)).await;
                (i == 0).then(|| (Ok::<_, actix_web::Error>(Bytes::from_static(b"{\"id\":\"chatc")), 1))
            });
            ok.content_type("application/json").body(actix_web::body::SizedStream::new(1000, twelve))
        }
        "/v1/chat/completions" if stream => {
            // "slow-stream": a long stream, for clients that walk away.
            let (pieces, delay) = if model == "slow-stream" {
                (400, Duration::from_millis(25))
            } else {
                (12, Duration::from_millis(1))
            };
            let text = chat_stream_text(&model, pieces);
            let chunks = if model == "slow-stream" {
                text.split_inclusive("\n\n").map(|s| Bytes::from(s.to_string())).collect()
            } else {
                odd_chunks(text)
            };
            sse_response(&req, chunks, delay)
        }
        "/v1/chat/completions" => {
            let (mut p, c, mut t) = CHAT_USAGE;
            // "words": a tokenizer of one token a word, so that usage follows the prompt.
            if model == "Qwen/words" {
                let words: usize = parsed["messages"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .filter_map(|m| m["content"].as_str())
                            .map(|c| c.split_whitespace().count())
                            .sum()
                    })
                    .unwrap_or(0);
                p = words as i64 + 3;
                t = p + c;
            }
            ok.json(json!({"id":"chatcmpl-fake","object":"chat.completion","created":1,"model":model,
                "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":p,"completion_tokens":c,"total_tokens":t},"system_fingerprint":""}))
        }
        // Fill-in-the-middle. "final-usage" models behave like other
        // OpenAI-compatible upstreams: usage only in one last chunk with no choices.
        "/v1/completions" if stream => {
            let final_only = model.contains("final-usage");
            sse_response(&req, odd_chunks(fim_stream_text(&model, 6, final_only)), Duration::from_millis(1))
        }
        "/v1/completions" => {
            let suffix = parsed.get("suffix").and_then(Value::as_str).unwrap_or("");
            let (p, c, t) = FIM_USAGE;
            ok.json(json!({"id":"cmpl-fake","object":"text_completion","created":1,"model":model,
                "choices":[{"index":0,"text":format!("    return a + b  # before {suffix:?}"),"finish_reason":"stop"}],
                "usage":{"prompt_tokens":p,"completion_tokens":c,"total_tokens":t}}))
        }
        "/v1/messages" if stream => {
            sse_response(&req, odd_chunks(messages_stream_text(&model)), Duration::from_millis(1))
        }
        "/v1/messages" => ok.json(json!({"id":"msg_fake","type":"message","role":"assistant",
            "content":[{"type":"text","text":"Hello from the fake"}],"model":model,"stop_reason":"end_turn",
            "stop_sequence":null,"usage":{"input_tokens":13,"output_tokens":4}})),
        "/v1/embeddings" => ok.json(json!({"object":"list","model":model,
            "data":[{"object":"embedding","embedding":[0.1,0.2,0.3],"index":0}],
            "usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}})),
        "/v1/rerank" => ok.json(json!({"id":"rerank-fake","results":[{"index":0,"relevance_score":0.9}],
            "tokens":{"input_tokens":9,"output_tokens":0}})),
        "/v1/models" => ok.json(json!({"object":"list","query":req.query_string(),
            "data":[{"id":"Qwen/Qwen3-8B","object":"model","created":0,"owned_by":""},
                    {"id":"deepseek-ai/DeepSeek-V3","object":"model","created":0,"owned_by":""}]})),
        _ => HttpResponse::NotFound().body("404 page not found"),
    }
}

/// Usage of the fake agent's answers: a turn that calls tools, and the
/// turn after the tools' outputs came back.
pub const TOOL_CALL_USAGE: (i64, i64, i64) = (40, 12, 52);
pub const TOOL_FINAL_USAGE: (i64, i64, i64) = (60, 6, 66);

fn bad_request_20015(req: &HttpRequest, message: &str) -> HttpResponse {
    let mut b = HttpResponse::BadRequest();
    trace(&mut b, req);
    b.json(json!({"code": 20015, "message": message, "data": null}))
}

/// A thinking model with tools, as SiliconFlow serves one: the first turn
/// reasons (`reasoning_content`, content null) and calls the first tool
/// (twice when parallel calls are allowed), arguments built from the tool's
/// schema and streamed in pieces; once the outputs come back it answers
/// with text that quotes them. Like DeepSeek's thinking models, it refuses a
/// tool-calling assistant turn sent back without its `reasoning_content`,
/// calls split over several assistant messages, and non-string tool output.
fn agent_answer(req: &HttpRequest, parsed: &Value, model: &str, stream: bool) -> HttpResponse {
    let messages = parsed["messages"].as_array().cloned().unwrap_or_default();
    let mut previous_role = "";
    for m in &messages {
        let role = m["role"].as_str().unwrap_or("");
        if role == "assistant" && m.get("tool_calls").is_some() {
            if m["reasoning_content"].as_str().is_none_or(str::is_empty) {
                return bad_request_20015(
                    req,
                    "The reasoning_content of an assistant message with tool_calls must be passed back",
                );
            }
            if previous_role == "assistant" {
                return bad_request_20015(
                    req,
                    "An assistant message with tool_calls must be followed by tool messages",
                );
            }
        }
        if role == "tool" && !m["content"].is_string() {
            return bad_request_20015(req, "messages.content: Input should be a valid string");
        }
        previous_role = role;
    }
    let outputs: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    let mut chunks: Vec<Value> = Vec::new();
    let final_turn = !outputs.is_empty();
    if final_turn {
        let text = format!("Result: {}", outputs.join(" | "));
        let (a, b) = text.split_at(text.len() / 2);
        chunks.push(json!({"role": "assistant", "content": "", "reasoning_content": "Read the output."}));
        chunks.push(json!({"content": a}));
        chunks.push(json!({"content": b}));
    } else {
        let tool = &parsed["tools"][0]["function"];
        let name = tool["name"].as_str().unwrap_or("tool");
        let props = tool["parameters"]["properties"].as_object().cloned().unwrap_or_default();
        let args = |n: usize| {
            let mut a = serde_json::Map::new();
            for (k, v) in &props {
                let value = match (k.as_str(), v["type"].as_str()) {
                    ("input", _) => {
                        json!(format!("*** Begin Patch\n*** Add File: n{n}.txt\n+\"quoted\"\n*** End Patch"))
                    }
                    (_, Some("string")) => json!(format!("echo call-{n}")),
                    (_, Some("integer" | "number")) => json!(1000),
                    (_, Some("boolean")) => json!(false),
                    (_, Some("array")) => json!(["bash", "-lc", format!("echo call-{n}")]),
                    _ => json!(null),
                };
                a.insert(k.clone(), value);
            }
            Value::Object(a).to_string()
        };
        chunks.push(json!({"role": "assistant", "content": null, "reasoning_content": "I should "}));
        chunks.push(json!({"content": null, "reasoning_content": "run a command."}));
        let calls = if parsed["parallel_tool_calls"] == json!(false) { 1 } else { 2 };
        for n in 0..calls {
            chunks.push(json!({"content": null, "tool_calls": [{"index": n, "id": format!("call_fake_{n}"), "type": "function",
                "function": {"name": name, "arguments": ""}}]}));
            let full = args(n);
            let cut = [full.len() / 3, 2 * full.len() / 3];
            for piece in [&full[..cut[0]], &full[cut[0]..cut[1]], &full[cut[1]..]] {
                chunks.push(json!({"tool_calls": [{"index": n, "function": {"arguments": piece}}]}));
            }
        }
    }
    let (p, c, _) = if final_turn { TOOL_FINAL_USAGE } else { TOOL_CALL_USAGE };
    let finish = if final_turn { "stop" } else { "tool_calls" };
    let mut ok = HttpResponse::Ok();
    trace(&mut ok, req);
    if !stream {
        let mut message = json!({"role": "assistant", "content": null, "reasoning_content": ""});
        let mut calls: Vec<Value> = Vec::new();
        for d in &chunks {
            for field in ["content", "reasoning_content"] {
                if let Some(t) = d[field].as_str() {
                    let joined = format!("{}{t}", message[field].as_str().unwrap_or(""));
                    message[field] = json!(joined);
                }
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let n = tc["index"].as_u64().unwrap() as usize;
                if calls.len() <= n {
                    calls.push(json!({"id": tc["id"], "type": "function", "function": {"name": tc["function"]["name"], "arguments": ""}}));
                }
                let joined = format!(
                    "{}{}",
                    calls[n]["function"]["arguments"].as_str().unwrap(),
                    tc["function"]["arguments"].as_str().unwrap_or("")
                );
                calls[n]["function"]["arguments"] = json!(joined);
            }
        }
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        return ok.json(
            json!({"id": "chatcmpl-agent", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                      "completion_tokens_details": {"reasoning_tokens": 3}}}),
        );
    }
    let n = chunks.len();
    let mut text = String::new();
    for (i, delta) in chunks.into_iter().enumerate() {
        let last = i + 1 == n;
        let done = if last { c } else { (i as i64 + 1).min(c - 1) };
        let chunk = json!({"id": "chatcmpl-agent", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": if last { json!(finish) } else { Value::Null }}],
            "usage": {"prompt_tokens": p, "completion_tokens": done, "total_tokens": p + done,
                      "completion_tokens_details": {"reasoning_tokens": 3}}});
        text.push_str(&format!("data: {chunk}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    sse_response(req, odd_chunks(text), Duration::from_millis(1))
}

/// FNV-1a over the bytes: the fake echoes it so tests can prove byte-exact uploads.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The fake's speech audio: deterministic bytes that are not valid UTF-8.
pub fn speech_audio() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

fn not_found_for(account: &str, what: &str, id: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"code": 20404, "message": format!("{what} {id} not found for account {account}"), "data": null}))
}

/// Files, batches, video jobs and voices: each belongs to the account whose
/// key created it; another account's key gets a 404, as the real service would.
fn account_bound(
    req: &HttpRequest,
    path: &str,
    body: &Bytes,
    spec: Option<&KeySpec>,
    state: &FakeState,
) -> Option<HttpResponse> {
    let account = spec?.account.clone();
    let next = || {
        let mut c = state.counter.lock().unwrap();
        *c += 1;
        *c
    };
    let owner_of = |kind: &str, id: &str| {
        state
            .owned
            .lock()
            .unwrap()
            .iter()
            .find(|(k, i, _, _)| *k == kind && i == id)
            .map(|(_, _, a, _)| a.clone())
    };
    let list = |kind: &str| -> Vec<Value> {
        state
            .owned
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, a, _)| *k == kind && *a == account)
            .map(|(_, _, _, v)| v.clone())
            .collect()
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let method = req.method().as_str();
    let content_type =
        req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let resp = match (method, path) {
        ("POST", "/v1/images/generations") => HttpResponse::Ok().json(json!({"images":[{"url":"https://example.invalid/img.png"}],"timings":{"inference":0.5},"seed":42})),
        ("POST", "/v1/audio/speech") => {
            if let Some(voice) = parsed.get("voice").and_then(Value::as_str).filter(|v| v.starts_with("speech:")) {
                if owner_of("voice", voice).as_deref() != Some(account.as_str()) {
                    return Some(not_found_for(&account, "voice", voice));
                }
            }
            let audio = speech_audio();
            let chunks: Vec<Bytes> = audio.chunks(7_777).map(Bytes::copy_from_slice).collect();
            let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, actix_web::Error>));
            HttpResponse::Ok().content_type("audio/mpeg").streaming(stream)
        }
        ("POST", "/v1/audio/transcriptions") => HttpResponse::Ok().json(json!({
            "text": "transcribed", "bytes": body.len(), "hash": fnv(body).to_string(), "content_type": content_type, "account": account})),
        ("POST", "/v1/uploads/audio/voice") => {
            let name = crate::fake::multipart_text(body, "customName")
                .or_else(|| parsed.get("customName").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "voice".into());
            let uri = format!("speech:{name}:{account}:{}", next());
            let item = json!({"model":"FunAudioLLM/CosyVoice2-0.5B","customName":name,"text":"hi","uri":uri});
            state.owned.lock().unwrap().push(("voice", uri.clone(), account.clone(), item));
            HttpResponse::Ok().json(json!({"uri": uri}))
        }
        ("GET", "/v1/audio/voice/list") => HttpResponse::Ok().json(json!({"results": list("voice")})),
        ("POST", "/v1/audio/voice/deletions") => {
            let uri = parsed.get("uri").and_then(Value::as_str).unwrap_or("").to_string();
            if owner_of("voice", &uri).as_deref() != Some(account.as_str()) {
                return Some(not_found_for(&account, "voice", &uri));
            }
            state.owned.lock().unwrap().retain(|(k, i, _, _)| !(*k == "voice" && *i == uri));
            HttpResponse::Ok().json(json!({}))
        }
        ("POST", "/v1/video/submit") => {
            let id = format!("req-{}", next());
            state.owned.lock().unwrap().push(("video", id.clone(), account.clone(), Value::Null));
            HttpResponse::Ok().json(json!({"requestId": id}))
        }
        ("POST", "/v1/video/status") => {
            let id = parsed.get("requestId").and_then(Value::as_str).unwrap_or("").to_string();
            if owner_of("video", &id).as_deref() != Some(account.as_str()) {
                return Some(not_found_for(&account, "video", &id));
            }
            HttpResponse::Ok().json(json!({"status":"Succeed","reason":"","results":{"videos":[{"url":"https://example.invalid/v.mp4"}],"timings":{"inference":9},"seed":1},"account":account}))
        }
        ("POST", "/v1/files") => {
            let id = format!("file-{}", next());
            let item = json!({"id": id, "object": "file", "bytes": body.len(), "created_at": 1, "filename": "batch.jsonl", "purpose": "batch", "line_count": 1});
            state.owned.lock().unwrap().push(("file", id.clone(), account.clone(), item));
            HttpResponse::Ok().json(json!({"code":20000,"message":"Ok","status":true,"data":{"id": id, "object":"file","bytes": body.len(),"createdAt":1,"filename":"batch.jsonl","purpose":"batch"}}))
        }
        ("GET", "/v1/files") => HttpResponse::Ok().json(json!({"code":20000,"message":"Ok","status":true,"data":{"data": list("file"), "object":"list"}})),
        ("POST", "/v1/batches") => {
            let file = parsed.get("input_file_id").and_then(Value::as_str).unwrap_or("").to_string();
            if owner_of("file", &file).as_deref() != Some(account.as_str()) {
                return Some(not_found_for(&account, "file", &file));
            }
            let n = next();
            let id = format!("batch_{n}");
            let item = json!({"id": id, "object":"batch","endpoint":"/v1/chat/completions","input_file_id": file,"status":"in_queue","created_at": n});
            state.owned.lock().unwrap().push(("batch", id.clone(), account.clone(), item.clone()));
            HttpResponse::Ok().json(item)
        }
        ("GET", "/v1/batches") => HttpResponse::Ok().json(json!({"object":"list","data": list("batch"),"first_id":null,"last_id":null,"has_more":false})),
        ("GET", p) | ("POST", p) if p.starts_with("/v1/batches/") => {
            let rest = &p["/v1/batches/".len()..];
            let (id, cancel) = match rest.strip_suffix("/cancel") {
                Some(id) => (id.to_string(), true),
                None => (rest.to_string(), false),
            };
            if owner_of("batch", &id).as_deref() != Some(account.as_str()) {
                return Some(not_found_for(&account, "batch", &id));
            }
            if let (false, Some(usage)) = (cancel, state.batch_usage.lock().unwrap().get(&id).cloned()) {
                return Some(HttpResponse::Ok().json(json!({"id": id, "object":"batch","status":"completed","request_counts":{"total":1,"completed":1,"failed":0},"output_file_id":"file-out","usage": usage,"account": account})));
            }
            HttpResponse::Ok().json(json!({"id": id, "object":"batch","status": if cancel { "cancelling" } else { "in_progress" },"account": account}))
        }
        _ => return None,
    };
    Some(resp)
}

/// A text field of a multipart body.
pub fn multipart_text(body: &[u8], name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"\r\n\r\n");
    let text = body.windows(needle.len()).position(|w| w == needle.as_bytes())?;
    let rest = &body[text + needle.len()..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// Builds a multipart body with text fields and one file.
pub fn multipart(boundary: &str, fields: &[(&str, &str)], file: (&str, &str, &[u8])) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    let (field, filename, bytes) = file;
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(bytes);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}
