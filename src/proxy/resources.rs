//! Routes whose calls name an account-bound resource: speech with a custom
//! voice, voice deletion, video status, batch creation from an uploaded file,
//! batch reads and cancels. Each goes to the key (account) that owns it.

use actix_web::{web, HttpRequest, HttpResponse};

use super::affinity::{self, ResourceKind};
use super::errors::{Dialect, ProxyError};
use super::forward::{
    answer_read, dispatch, probe, read_body, read_small_answer, reject, Answer, OutBody, Outgoing, Probe,
    Target,
};
use super::record::Pending;
use super::usage::Usage;
use crate::db::queries::resources as resources_q;
use crate::state::{AppState, Upstream};

/// Which resource a JSON body names, if any; an error when it must name one.
type OwnerOf = fn(&Probe) -> Result<Option<(ResourceKind, String)>, ProxyError>;

struct JsonCall {
    path: &'static str,
    model_required: bool,
    owner_of: OwnerOf,
    creates: Option<ResourceKind>,
}

async fn json_call(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    call: JsonCall,
) -> HttpResponse {
    let pending = Pending::new(&state, &req);
    let body = match read_body(payload, state.config.max_body_bytes, state.config.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return reject(pending, e, Dialect::OpenAi),
    };
    let (model, stream, named) = match probe(&body, call.model_required).and_then(|p| {
        let named = (call.owner_of)(&p)?;
        Ok((p.model.as_deref().unwrap_or("").to_string(), p.stream.unwrap_or(false), named))
    }) {
        Ok(v) => v,
        Err(e) => return reject(pending, e, Dialect::OpenAi),
    };
    let mut pending = pending;
    let target = match named {
        None => Target::Pool,
        Some((kind, id)) => match affinity::owner(&state, kind, &id, pending.client.as_deref()).await {
            Ok(k) => {
                if call.creates == Some(ResourceKind::Batch) {
                    // A batch counts as the lines of its input file.
                    pending.weight = affinity::lines(&state, &id).await.unwrap_or(1).max(1) as u64;
                }
                Target::Pinned(k)
            }
            Err(e) => return reject(pending, e, Dialect::OpenAi),
        },
    };
    let out = Outgoing {
        path: call.path.to_string(),
        body: OutBody::Bytes(body),
        model,
        stream,
        target,
        creates: call.creates,
        dialect: Dialect::OpenAi,
        answer: Answer::AsIs,
    };
    dispatch(&req, out, pending, &state, &upstream).await
}

fn custom_voice(p: &Probe) -> Result<Option<(ResourceKind, String)>, ProxyError> {
    // System voices ("FunAudioLLM/CosyVoice2-0.5B:alex") belong to nobody;
    // a custom one ("speech:...") to its creator, however it is written.
    Ok(p.voice
        .as_deref()
        .map(str::trim)
        .filter(|v| v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("speech:")))
        .map(|v| (ResourceKind::Voice, v.to_string())))
}

fn required(
    field: &'static str,
    kind: ResourceKind,
    value: Option<&str>,
) -> Result<Option<(ResourceKind, String)>, ProxyError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some((kind, v.to_string()))),
        None => Err(ProxyError::bad_request(format!("`{field}` is required"))),
    }
}

/// Declares a handler for a JSON route that may name an owned resource.
macro_rules! json_route {
    ($name:ident, $call:expr) => {
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<AppState>,
            upstream: web::Data<Upstream>,
        ) -> HttpResponse {
            json_call(req, payload, state, upstream, $call).await
        }
    };
}

json_route!(
    speech,
    JsonCall { path: "/v1/audio/speech", model_required: true, owner_of: custom_voice, creates: None }
);
json_route!(
    voice_delete,
    JsonCall {
        path: "/v1/audio/voice/deletions",
        model_required: false,
        owner_of: |p| required("uri", ResourceKind::Voice, p.uri.as_deref()),
        creates: None,
    }
);
json_route!(
    video_submit,
    JsonCall {
        path: "/v1/video/submit",
        model_required: true,
        owner_of: |_| Ok(None),
        creates: Some(ResourceKind::Video),
    }
);
json_route!(
    video_status,
    JsonCall {
        path: "/v1/video/status",
        model_required: false,
        owner_of: |p| required("requestId", ResourceKind::Video, p.request_id.as_deref()),
        creates: None,
    }
);
json_route!(
    batch_create,
    JsonCall {
        path: "/v1/batches",
        model_required: false,
        owner_of: |p| required("input_file_id", ResourceKind::File, p.input_file_id.as_deref()),
        creates: Some(ResourceKind::Batch),
    }
);

/// GET /v1/batches/{id} and POST /v1/batches/{id}/cancel.
async fn batch_call(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    id: String,
    cancel: bool,
) -> HttpResponse {
    let pending = Pending::new(&state, &req);
    let key = match affinity::owner(&state, ResourceKind::Batch, &id, pending.client.as_deref()).await {
        Ok(k) => k,
        Err(e) => return reject(pending, e, Dialect::OpenAi),
    };
    let body = if cancel {
        match read_body(payload, state.config.max_body_bytes, state.config.body_read_timeout).await {
            Ok(b) => OutBody::Bytes(b),
            Err(e) => return reject(pending, e, Dialect::OpenAi),
        }
    } else {
        OutBody::Empty
    };
    let path = if cancel { format!("/v1/batches/{id}/cancel") } else { format!("/v1/batches/{id}") };
    let out = Outgoing {
        path,
        body,
        model: String::new(),
        stream: false,
        target: Target::Pinned(key),
        creates: None,
        dialect: Dialect::OpenAi,
        answer: Answer::Batch(id),
    };
    dispatch(&req, out, pending, &state, &upstream).await
}

pub async fn batch_get(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    batch_call(req, payload, state, upstream, path.into_inner(), false).await
}

pub async fn batch_cancel(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    batch_call(req, payload, state, upstream, path.into_inner(), true).await
}

/// A batch object, passed on as the upstream sent it. The first time it
/// reports itself completed with its usage, those tokens are recorded, once
/// (whichever instance or caller reads it first), on this call's log row and
/// against the client that created the batch: its daily tokens and the
/// stats count them.
pub(super) async fn batch_answer<S>(
    mut resp: awc::ClientResponse<S>,
    pending: Pending,
    state: &AppState,
    id: String,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    let (body, mut pending) = match read_small_answer(&mut resp, pending, 4 << 20).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let mut usage = Usage::default();
    if let Some(reported) = super::usage::completed_batch_usage(&body) {
        let total = reported.totals().2;
        let recorded =
            crate::db::run(&state.db, move |conn| resources_q::record_batch_tokens(conn, &id, total)).await;
        match recorded {
            Ok(Some(owner)) => {
                usage = reported;
                // Counted against the client that created it, whoever read it.
                let owner =
                    owner.and_then(|o| state.clients.snapshot().get(crate::ids::ClientId(o)).cloned());
                if let Some(owner) = owner {
                    pending.client = Some(owner);
                }
            }
            Ok(None) => {}
            // Not recorded: the next read of the batch tries again.
            Err(e) => log::error!("could not record a batch's tokens: {e}"),
        }
    }
    answer_read(&resp, pending, usage, body)
}
