//! The floor of this stack, for the benchmark: the least an actix-web + awc
//! reverse proxy can do per request (read the body, send it upstream on a
//! pooled connection, stream the answer back), with no auth, no key pool, no
//! usage parsing and no request log. `bench/cpu.sh` compares the proxy's CPU
//! per request against it, so what the framework costs and what our features
//! cost are told apart.
//!
//! Usage: cargo run --release --example floor_proxy -- PORT UPSTREAM_BASE_URL

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use siliconflow_proxy::proxy::headers::content_length;

struct Upstream {
    client: awc::Client,
    base: String,
}

async fn forward(req: HttpRequest, body: Bytes, up: web::Data<Upstream>) -> HttpResponse {
    let url = format!("{}{}", up.base, req.uri());
    let mut out = up.client.request(req.method().clone(), url);
    for name in ["content-type", "authorization"] {
        if let Some(v) = req.headers().get(name) {
            out = out.insert_header((name, v.clone()));
        }
    }
    match out.send_body(body).await {
        Ok(res) => {
            let mut back = HttpResponse::build(res.status());
            if let Some(v) = res.headers().get("content-type") {
                back.insert_header(("content-type", v.clone()));
            }
            // Like the proxy: a known length is kept (no chunked encoding).
            match content_length(res.headers()) {
                Some(n) => back.body(SizedStream::new(n, res)),
                None => back.streaming(res),
            }
        }
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(18099);
    let base = args.get(2).cloned().unwrap_or_else(|| "http://127.0.0.1:18080".into());
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Upstream { client: awc::Client::default(), base: base.clone() }))
            .default_service(web::to(forward))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
