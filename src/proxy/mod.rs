//! The client API (`/v1/*`): routes, client auth, forwarding with failover,
//! header rules, usage metering and the request log.

pub mod auth;
pub mod errors;
pub mod failover;
pub mod forward;
pub mod headers;
pub mod record;
pub mod usage;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};

use errors::{Dialect, ErrorKind, ProxyError};
use forward::{forward, Route};

/// Declares a handler that forwards with a fixed route.
macro_rules! forwarder {
    ($name:ident, $path:expr, $dialect:expr, $json_model:expr) => {
        async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<crate::state::AppState>,
            upstream: web::Data<crate::state::Upstream>,
        ) -> HttpResponse {
            forward(
                req,
                payload,
                state,
                upstream,
                Route { upstream_path: $path, dialect: $dialect, json_model: $json_model },
            )
            .await
        }
    };
}

forwarder!(chat_completions, "/v1/chat/completions", Dialect::OpenAi, true);
forwarder!(messages, "/v1/messages", Dialect::Anthropic, true);
forwarder!(embeddings, "/v1/embeddings", Dialect::OpenAi, true);
forwarder!(rerank, "/v1/rerank", Dialect::OpenAi, true);
forwarder!(models, "/v1/models", Dialect::OpenAi, false);

async fn not_found(req: HttpRequest) -> HttpResponse {
    let dialect = Dialect::for_path(req.path());
    ProxyError::new(ErrorKind::NotFound, format!("Unknown endpoint: {} {}", req.method(), req.path()))
        .response(dialect)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(from_fn(auth::require_client_key))
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/messages", web::post().to(messages))
            .route("/embeddings", web::post().to(embeddings))
            .route("/rerank", web::post().to(rerank))
            .route("/models", web::get().to(models))
            .route("/user/models", web::get().to(models))
            .default_service(web::to(not_found)),
    );
}
