//! `/admin/connect`: what `siliconflow-proxy connect` prints, for each agent,
//! with the live catalog's window for the model chosen: the agent, the
//! model (a client's list narrows the choice), the proxy's address as the
//! browser reached it, and a client key pasted in (sent by POST, never put
//! in a link; keys are shown only when made or rotated, so none is filled
//! in here). Each configuration has a copy button (`/static/copy.js`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use crate::admin::error::PageError;
use crate::admin::page::{page_session, posted_form, warnings};
use crate::admin::session::Session;
use crate::admin::views::{csrf_field, layout, page, Chrome};
use crate::connect::{render as config_of, Agent, Options, KEY_PLACEHOLDER};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct ConnectQuery {
    model: Option<String>,
    client: Option<i64>,
    key: Option<String>,
}

/// The address clients reach the proxy at, as this browser did.
fn url_of(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

fn render(req: &HttpRequest, state: &AppState, s: &Session, q: &ConnectQuery) -> HttpResponse {
    let catalog = state.catalog.snapshot();
    let clients = state.clients.snapshot();
    let chosen = q.client.and_then(|id| clients.get(crate::ids::ClientId(id)).cloned());
    let allowed = |id: &str| chosen.as_ref().is_none_or(|c| c.allows_model(id));
    let mut models: Vec<String> = catalog
        .entries()
        .iter()
        .filter(|e| e.max_output_tokens.is_some() && allowed(&e.id))
        .map(|e| e.id.clone())
        .collect();
    for a in state.aliases.snapshot().rules() {
        if !a.pattern.contains('*') && allowed(&a.model) {
            models.push(a.pattern.clone());
        }
    }
    let model = q
        .model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| models.iter().find(|m| *m == crate::commands::CONNECT_MODEL).cloned())
        .or_else(|| models.first().cloned())
        .unwrap_or_else(|| crate::commands::CONNECT_MODEL.to_string());
    let target = state.aliases.snapshot().resolve(&model).model.to_string();
    let entry = catalog.get(&target).map(|e| (**e).clone());
    let key = q.key.clone().filter(|k| !k.trim().is_empty());
    let options = Options { url: url_of(req), key, model: model.clone() };
    let mut sorted: Vec<_> = clients.all();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let content = html! {
        h1 { "Connect an agent" }
        p.muted { "What each coding agent needs to work through this proxy, with the model's window from the "
            a href="/admin/models" { "catalog" } ". The same as " code { "siliconflow-proxy connect AGENT --model M --key K" } " prints. "
            "A client's key is shown only when it is made or rotated: paste it here to have it filled in (it is not stored)." }
        section.panel {
            form method="post" action="/admin/connect" {
                (csrf_field(&s.csrf))
                div.fields {
                    label { "Client (narrows the models)"
                        select name="client" {
                            option value="" { "any" }
                            @for c in &sorted { option value=(c.id.0) selected[q.client == Some(c.id.0)] { (c.name) } }
                        }
                    }
                    label { "Model"
                        input name="model" list="connect-models" value=(model) size="36";
                        datalist id="connect-models" { @for m in &models { option value=(m) {} } }
                    }
                    label { "Client key" input type="password" name="key" autocomplete="off" value=[q.key.as_deref()] placeholder=(KEY_PLACEHOLDER); }
                }
                button type="submit" { "Show" }
            }
            @match &entry {
                Some(e) => p.muted { (target) ": window " (e.context_window.map(|w| w.to_string()).unwrap_or("?".into())) " tokens, largest output "
                    (e.max_output_tokens.map(|w| w.to_string()).unwrap_or("?".into())) "." },
                None => div.banner.warn { (target) " is not in the catalog: the agents' windows are left for you to set." },
            }
        }
        @for agent in Agent::ALL { (section(agent, &options, entry.as_ref())) }
        script src="/static/copy.js" {}
    };
    let chrome = Chrome {
        title: "Connect",
        nav: "models",
        csrf: Some(&s.csrf),
        warnings: warnings(state),
        notice: None,
    };
    page(StatusCode::OK, layout(chrome, content))
}

fn section(agent: Agent, o: &Options, entry: Option<&crate::catalog::Entry>) -> Markup {
    let id = format!("connect-{}", agent.name());
    html! {
        section.panel {
            h2 { (agent.name()) " " span.muted { "→ " (agent.target()) } }
            @match config_of(agent, o, entry) {
                Ok(text) => {
                    button.secondary type="button" data-copy=(id) { "Copy" }
                    pre.config id=(id) { (text) }
                }
                Err(why) => p.muted { (why) },
            }
        }
    }
}

pub async fn connect_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<ConnectQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    // A key never comes by a link.
    let q = ConnectQuery { key: None, ..q.into_inner() };
    Ok(render(&req, &state, &s, &q))
}

pub async fn connect_post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    #[derive(Deserialize, Default)]
    struct Form {
        model: Option<String>,
        client: Option<String>,
        key: Option<String>,
    }
    let f = serde_urlencoded::from_bytes::<Form>(&body).unwrap_or_default();
    let q = ConnectQuery { model: f.model, client: f.client.and_then(|c| c.parse().ok()), key: f.key };
    Ok(render(&req, &state, &s, &q))
}

/// The copy buttons (the pages run no inline script).
pub async fn copy_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(COPY_JS)
}

const COPY_JS: &str = r#"document.addEventListener('click', function (e) {
  var b = e.target.closest('button[data-copy]');
  if (!b) return;
  var t = document.getElementById(b.getAttribute('data-copy'));
  if (!t) return;
  var done = function () { b.textContent = 'Copied'; setTimeout(function () { b.textContent = 'Copy'; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(t.textContent).then(done);
  } else {
    var r = document.createRange(); r.selectNodeContents(t);
    var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
    try { document.execCommand('copy'); done(); } catch (_) {}
  }
});
"#;
