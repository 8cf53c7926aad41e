//! The client API (`/v1/*`): routes, client auth, forwarding with failover,
//! account affinity, merged lists, header rules, usage metering and the
//! request log.

pub mod affinity;
pub mod alias;
pub mod auth;
pub mod body;
pub mod errors;
pub mod failover;
pub mod forward;
pub mod headers;
pub mod merge;
pub mod multipart;
pub mod quiet_log;
pub mod record;
pub mod resources;
pub mod responses;
pub mod usage;
pub mod user_info;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};

use affinity::ResourceKind;
use errors::{Dialect, ErrorKind, ProxyError};
use forward::{forward, BodyKind, Route};
use merge::ListKind;

/// Declares a handler that forwards with a fixed route.
macro_rules! forwarder {
    ($name:ident, $route:expr) => {
        async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<crate::state::AppState>,
            upstream: web::Data<crate::state::Upstream>,
        ) -> HttpResponse {
            forward(req, payload, state, upstream, $route).await
        }
    };
}

/// Declares a handler that merges one list across the pool's accounts.
macro_rules! lister {
    ($name:ident, $kind:expr, $path:expr) => {
        async fn $name(
            req: HttpRequest,
            state: web::Data<crate::state::AppState>,
            upstream: web::Data<crate::state::Upstream>,
        ) -> HttpResponse {
            merge::merged(req, state, upstream, $kind, $path).await
        }
    };
}

const fn upload(path: &'static str, creates: Option<ResourceKind>) -> Route {
    // A file kept upstream (batch input) names no model; the other uploads run one.
    let names_model = !matches!(creates, Some(ResourceKind::File));
    Route { upstream_path: path, dialect: Dialect::OpenAi, body: BodyKind::Upload { names_model }, creates }
}

forwarder!(chat_completions, Route::json("/v1/chat/completions"));
// Fill-in-the-middle for code models (`prompt` + `suffix`): editors' completion plugins.
forwarder!(completions, Route::json("/v1/completions"));
forwarder!(messages, Route { dialect: Dialect::Anthropic, ..Route::json("/v1/messages") });
forwarder!(embeddings, Route::json("/v1/embeddings"));
forwarder!(rerank, Route::json("/v1/rerank"));
forwarder!(images, Route::json("/v1/images/generations"));
forwarder!(transcriptions, upload("/v1/audio/transcriptions", None));
forwarder!(voice_upload, upload("/v1/uploads/audio/voice", Some(ResourceKind::Voice)));
forwarder!(file_upload, upload("/v1/files", Some(ResourceKind::File)));
forwarder!(all_models, Route { body: BodyKind::Empty, ..Route::json("/v1/models") });

/// `GET /v1/models`: a client with a model list sees only its models; the
/// aliases are listed too (each with the model it calls, when the caller may
/// use that model), so that a tool that checks a name against the list finds it.
async fn models(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<crate::state::AppState>,
    upstream: web::Data<crate::state::Upstream>,
) -> HttpResponse {
    let client = auth::caller(&req).filter(|c| c.models.is_some());
    let aliases = state.aliases.snapshot();
    let catalog = state.catalog.snapshot();
    let resp = all_models(req, payload, state, upstream).await;
    if resp.status() != actix_web::http::StatusCode::OK
        || (client.is_none() && aliases.is_empty() && catalog.is_empty())
    {
        return resp;
    }
    let allowed = |id: &str| client.as_ref().is_none_or(|c| c.allows_model(id));
    let mut answer = HttpResponse::build(resp.status());
    for (name, value) in resp.headers() {
        if name != actix_web::http::header::CONTENT_LENGTH
            && name != actix_web::http::header::TRANSFER_ENCODING
        {
            answer.append_header((name.clone(), value.clone()));
        }
    }
    let body = match actix_web::body::to_bytes(resp.into_body()).await {
        Ok(b) => b,
        Err(e) => {
            let e = ProxyError::new(ErrorKind::BadGateway, format!("the model list could not be read: {e}"));
            return e.response(Dialect::OpenAi);
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut list) => {
            if let Some(data) = list.get_mut("data").and_then(|d| d.as_array_mut()) {
                data.retain(|m| m.get("id").and_then(|id| id.as_str()).is_some_and(allowed));
                for a in aliases.rules().iter().filter(|a| allowed(&a.model)) {
                    if !data.iter().any(|m| m.get("id").and_then(|id| id.as_str()) == Some(&a.pattern)) {
                        data.push(serde_json::json!({
                            "id": a.pattern, "object": "model", "created": 0, "owned_by": "alias", "root": a.model,
                        }));
                    }
                }
                // What the catalog knows, under OpenRouter's names (several
                // clients read them); an alias carries its target's.
                for m in data.iter_mut() {
                    let Some(obj) = m.as_object_mut() else { continue };
                    let id = obj
                        .get("root")
                        .or_else(|| obj.get("id"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string);
                    let Some(entry) = id.and_then(|id| catalog.get(&id).cloned()) else { continue };
                    if let Some(w) = entry.context_window {
                        obj.insert("context_length".into(), w.into());
                    }
                    if let Some(o) = entry.max_output_tokens {
                        obj.insert("max_output_tokens".into(), o.into());
                    }
                }
            }
            answer.json(list)
        }
        // Not the list we know: nothing is shown rather than every model.
        Err(_) => answer.json(serde_json::json!({"object": "list", "data": []})),
    }
}
/// `POST /v1/messages/count_tokens`: an estimate made here (see
/// `dialects::count_tokens`); no pool key, no upstream call, no log row. It
/// costs nothing upstream, so the client's daily quotas neither refuse nor
/// count it, but its model list and rate hold (a caller must not get an
/// unmetered endpoint for any model), and its body has a small limit of its
/// own (`COUNT_TOKENS_BODY_BYTES`), read in one pass without a tree of it.
async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<crate::state::AppState>,
) -> HttpResponse {
    let counted = async {
        let limit = state.config.count_tokens_body_bytes;
        if headers::content_length(req.headers()).is_some_and(|len| len > limit as u64) {
            return Err(count_tokens_too_large(limit));
        }
        let body = match body::read_body(payload, limit, state.config.body_read_timeout).await {
            Ok(b) => b,
            Err(e) if e.kind == ErrorKind::TooLarge => return Err(count_tokens_too_large(limit)),
            Err(e) => return Err(e),
        };
        let p = forward::probe(&body, false)?;
        let requested = p.model.as_deref().unwrap_or("");
        // The model an alias names is the one the caller's list must allow.
        let aliases = state.aliases.snapshot();
        let model = aliases.resolve(requested).model;
        if let Err(e) = auth::admit_unmetered(auth::caller(&req).as_ref(), model).await {
            state.metrics.refused(match e.kind {
                ErrorKind::Forbidden => crate::metrics::Refused::Model,
                _ => crate::metrics::Refused::Limit,
            });
            return Err(e);
        }
        crate::dialects::count_tokens::count_request(&body).map_err(ProxyError::bad_request)
    };
    match counted.await {
        Ok(n) => HttpResponse::Ok().json(serde_json::json!({ "input_tokens": n })),
        Err(e) => e.response(Dialect::Anthropic),
    }
}

fn count_tokens_too_large(limit: usize) -> ProxyError {
    ProxyError::new(
        ErrorKind::TooLarge,
        format!("a count_tokens body is at most {limit} bytes (COUNT_TOKENS_BODY_BYTES)"),
    )
}

lister!(voice_list, ListKind::Voices, "/v1/audio/voice/list");
lister!(file_list, ListKind::Files, "/v1/files");
lister!(batch_list, ListKind::Batches, "/v1/batches");

/// A `/v1/...` route the proxy does not serve: 404 in the caller's dialect,
/// counted, and said in the log at most once a minute per path, so that an
/// owner can see what a client is missing.
async fn not_found(req: HttpRequest, state: web::Data<crate::state::AppState>) -> HttpResponse {
    let dialect = Dialect::for_path(req.path());
    state.metrics.refused(crate::metrics::Refused::UnknownEndpoint);
    let path: String = req.path().chars().take(200).collect();
    if quiet_log::unknown_paths().first_in_a_minute(&path, std::time::Instant::now()) {
        let client = auth::caller(&req).map(|c| c.name.to_string()).unwrap_or_else(|| "-".into());
        log::warn!("unknown endpoint {} {path} (client {client}): answered 404", req.method());
    }
    ProxyError::new(ErrorKind::NotFound, format!("Unknown endpoint: {} {}", req.method(), req.path()))
        .response(dialect)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(from_fn(auth::require_client_key))
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/completions", web::post().to(completions))
            .route("/messages", web::post().to(messages))
            .route("/messages/count_tokens", web::post().to(count_tokens))
            .route("/responses", web::post().to(responses::create))
            .route("/responses/{id}", web::to(responses::not_stored))
            .route("/responses/{id}/{action}", web::to(responses::not_stored))
            .route("/embeddings", web::post().to(embeddings))
            .route("/rerank", web::post().to(rerank))
            .route("/images/generations", web::post().to(images))
            .route("/image/generations", web::post().to(images))
            .route("/audio/speech", web::post().to(resources::speech))
            .route("/audio/transcriptions", web::post().to(transcriptions))
            .route("/audio/reference", web::post().to(voice_upload))
            .route("/uploads/audio/voice", web::post().to(voice_upload))
            .route("/audio/reference", web::get().to(voice_list))
            .route("/audio/voice/list", web::get().to(voice_list))
            .route("/audio/reference/delete", web::post().to(resources::voice_delete))
            .route("/audio/voice/deletions", web::post().to(resources::voice_delete))
            .route("/video/generations", web::post().to(resources::video_submit))
            .route("/video/submit", web::post().to(resources::video_submit))
            .route("/video/status", web::post().to(resources::video_status))
            .route("/files", web::post().to(file_upload))
            .route("/files", web::get().to(file_list))
            .route("/batches", web::post().to(resources::batch_create))
            .route("/batches", web::get().to(batch_list))
            .route("/batches/{id}", web::get().to(resources::batch_get))
            .route("/batches/{id}/cancel", web::post().to(resources::batch_cancel))
            .route("/models", web::get().to(models))
            .route("/user/models", web::get().to(models))
            .route("/user/info", web::get().to(user_info::user_info))
            .default_service(web::to(not_found)),
    );
}
