//! A small, fast fake SiliconFlow for the benchmark (bench/run.sh):
//! `/v1/user/info`, a canned ~500-byte chat completion, and a streaming
//! variant of 64 SSE chunks 20 ms apart carrying running usage.
//!
//! Usage: cargo run --release --example bench_upstream -- PORT [CHUNKS] [GAP_MS]

use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;

const USER_INFO: &str = r#"{"code":20000,"message":"OK","status":true,"data":{"id":"bench-account","name":"bench","image":"","email":"","isAdmin":false,"balance":"0.00","status":"normal","introduction":"","role":"","chargeBalance":"1000.00","totalBalance":"1000.00"}}"#;

/// About 500 bytes, like a short real completion.
pub const COMPLETION: &str = r#"{"id":"chatcmpl-bench-0001","object":"chat.completion","created":1764000000,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. This canned answer stands in for a short completion of about fifty tokens, so that the benchmark measures the gateway and not the model.","reasoning_content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":48,"total_tokens":90},"system_fingerprint":""}"#;

#[derive(Clone, Copy)]
struct Stream {
    chunks: usize,
    gap: Duration,
}

async fn chat(req: HttpRequest, body: Bytes, s: web::Data<Stream>) -> HttpResponse {
    let streaming = memchr::memmem::find(&body, b"\"stream\":true").is_some()
        || req.headers().contains_key("x-bench-stream");
    if !streaming {
        return HttpResponse::Ok().content_type("application/json").body(COMPLETION);
    }
    let Stream { chunks, gap } = **s;
    let events = futures_util::stream::unfold(0usize, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 0 {
            actix_web::rt::time::sleep(gap).await;
        }
        let data = if i == chunks {
            "data: [DONE]\n\n".to_string()
        } else {
            let done = i + 1 == chunks;
            format!(
                "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":{}}}],\"usage\":{{\"prompt_tokens\":42,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
                if done { "\"stop\"" } else { "null" },
                i + 1,
                43 + i
            )
        };
        Some((Ok::<_, actix_web::Error>(Bytes::from(data)), i + 1))
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(events)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(18_080);
    let chunks: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(64);
    let gap_ms: u64 = args.next().and_then(|p| p.parse().ok()).unwrap_or(20);
    let stream = web::Data::new(Stream { chunks, gap: Duration::from_millis(gap_ms) });
    HttpServer::new(move || {
        App::new()
            .app_data(stream.clone())
            // Requests as large as the proxy takes (bench/memory.sh sends 40 MB).
            .app_data(web::PayloadConfig::new(64 << 20))
            .route(
                "/v1/user/info",
                web::get()
                    .to(|| async { HttpResponse::Ok().content_type("application/json").body(USER_INFO) }),
            )
            .route("/v1/chat/completions", web::post().to(chat))
    })
    .workers(1)
    .backlog(4096)
    .max_connections(100_000)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
