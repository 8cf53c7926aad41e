//! The Responses translation's own cost, without the network: the request
//! of bench/responses.lua translated, the canned completion of
//! bench_upstream rewritten as a response object, and a 20-chunk chat
//! stream rewritten as events, each timed over many runs beside the parse
//! the chat route does anyway (its baseline in the same run).
//!
//! cargo run --release --example responses_translate [ITERATIONS]

use std::hint::black_box;
use std::time::Instant;

use siliconflow_proxy::dialects::responses::{translate, Translator};

const REQUEST: &str = r#"{"model":"Qwen/Qwen3-8B","instructions":"You are a concise assistant.","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"In two sentences, explain why an API gateway should add as little latency as possible to each request it forwards."}]}],"temperature":0.7,"max_output_tokens":256,"store":false,"stream":false}"#;
const CHAT: &str = r#"{"model":"Qwen/Qwen3-8B","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"In two sentences, explain why an API gateway should add as little latency as possible to each request it forwards."}],"temperature":0.7,"max_tokens":256,"stream":false}"#;
const COMPLETION: &str = r#"{"id":"chatcmpl-bench-0001","object":"chat.completion","created":1764000000,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. This canned answer stands in for a short completion of about fifty tokens, so that the benchmark measures the gateway and not the model.","reasoning_content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":48,"total_tokens":90},"system_fingerprint":""}"#;

fn stream() -> Vec<String> {
    let mut chunks = Vec::new();
    for i in 0..20 {
        let done = i + 1 == 20;
        chunks.push(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":{}}}],\"usage\":{{\"prompt_tokens\":42,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            if done { "\"stop\"" } else { "null" },
            i + 1,
            43 + i
        ));
    }
    chunks.push("data: [DONE]\n\n".to_string());
    chunks
}

fn time(name: &str, n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<58} {:>8.2} µs", ns / 1000.0);
    ns
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let chunks = stream();
    let base = time("baseline: chat request parsed as a serde_json::Value", n, || {
        black_box(serde_json::from_str::<serde_json::Value>(black_box(CHAT)).ok());
    });
    let request = bytes::Bytes::from_static(REQUEST.as_bytes());
    let req = time("request: Responses -> chat body", n, || {
        black_box(translate(black_box(&request), "abcdefghijklmnopqrstuvwx", 1).ok());
    });
    let t = translate(&request, "abcdefghijklmnopqrstuvwx", 1).expect("translates");
    let plain = time("answer: chat completion -> response object", n, || {
        let mut tr = Translator::new(t.context.clone(), false);
        tr.completion(black_box(COMPLETION.as_bytes())).ok();
        black_box(tr.response());
    });
    let streamed = time("stream: 20 chat chunks -> Responses events", n / 10, || {
        let mut tr = Translator::new(t.context.clone(), true);
        for c in &chunks {
            black_box(tr.feed(black_box(c.as_bytes())));
        }
        black_box(tr.finish());
    });
    println!(
        "per request: plain {:.2} µs ({:.1}x the baseline parse), streamed {:.2} µs ({:.2} µs a chunk)",
        (req + plain) / 1000.0,
        (req + plain) / base,
        (req + streamed) / 1000.0,
        streamed / 21_000.0
    );
}
