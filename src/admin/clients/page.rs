//! `/admin/clients`: the clients page, its create and edit forms and its buttons.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::*;
use crate::admin::error::PageError;
use crate::admin::page::{
    confirm_page, page_session, posted_form, see_other, warnings, Confirm, Notice, NoticeQuery,
};
use crate::admin::views::{badge, csrf_field, layout, page, when, Chrome};

/// The create/edit form's fields, as the browser sends them: an empty field
/// is "no limit" (or "every model").
#[derive(Debug, Default, Deserialize)]
pub struct ClientForm {
    name: Option<String>,
    models: Option<String>,
    rpm: Option<String>,
    daily_requests: Option<String>,
    daily_tokens: Option<String>,
    expires_at: Option<String>,
}

impl ClientForm {
    fn input(&self, tz: &chrono::FixedOffset) -> Result<ClientInput, AdminError> {
        let text =
            |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let number = |o: &Option<String>, name: &str| -> Result<Option<u64>, AdminError> {
            match text(o) {
                None => Ok(None),
                Some(s) => s.replace([',', '_', ' '], "").parse::<u64>().map(Some).map_err(|_| {
                    bad(format!("{name}: {s:?} is not a whole number (leave it empty for no limit)"))
                }),
            }
        };
        let models = text(&self.models).map(|m| {
            m.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        let expires_at = match text(&self.expires_at) {
            None => None,
            Some(s) => Some(
                crate::admin::logs::parse_time(&s, tz)
                    .and_then(|ms| iso(Some(ms)))
                    .ok_or_else(|| bad(format!("Expires: {s:?} is not a date and time")))?,
            ),
        };
        Ok(ClientInput {
            name: Some(self.name.clone().unwrap_or_default()),
            models: Some(models),
            rpm: Some(number(&self.rpm, "Requests per minute")?),
            daily_requests: Some(number(&self.daily_requests, "Requests per day")?),
            daily_tokens: Some(number(&self.daily_tokens, "Tokens per day")?),
            expires_at: Some(expires_at),
            enabled: None,
        })
    }

    fn of(c: &ClientView, tz: &chrono::FixedOffset) -> ClientForm {
        let n = |v: Option<i64>| v.map(|n| n.to_string());
        ClientForm {
            name: Some(c.name.clone()),
            models: c.models.as_ref().map(|m| m.join("\n")),
            rpm: n(c.rpm.map(i64::from)),
            daily_requests: n(c.daily_requests),
            daily_tokens: n(c.daily_tokens),
            expires_at: c
                .expires_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(tz).format("%Y-%m-%dT%H:%M").to_string()),
        }
    }
}

fn form_fields(f: &ClientForm, tz: &chrono::FixedOffset) -> Markup {
    html! {
        div.fields {
            label { "Name" input name="name" required maxlength="64" value=[f.name.as_deref()] placeholder="e.g. alice, ci-bot"; }
            label { "Requests per minute" input name="rpm" inputmode="numeric" size="8" value=[f.rpm.as_deref()] placeholder="no limit"; }
            label { "Requests per day" input name="daily_requests" inputmode="numeric" size="8" value=[f.daily_requests.as_deref()] placeholder="no limit"; }
            label { "Tokens per day" input name="daily_tokens" inputmode="numeric" size="10" value=[f.daily_tokens.as_deref()] placeholder="no limit"; }
            label { "Expires (" (tz.to_string()) ")" input type="datetime-local" name="expires_at" value=[f.expires_at.as_deref()]; }
        }
        label.block { "Models — exact names or prefix/*, one per line; empty: every model"
            textarea name="models" rows="3" placeholder="Qwen/*\ndeepseek-ai/DeepSeek-V3" { (f.models.clone().unwrap_or_default()) }
        }
    }
}

fn limit_text(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "—".into())
}

/// The page: every client, and a form for a new one. `secret`: a key to
/// show once (just created or rotated).
async fn render(
    state: &AppState,
    s: &crate::admin::session::Session,
    status: StatusCode,
    error: Option<String>,
    secret: Option<(String, String)>,
    form: ClientForm,
    notice: Option<String>,
) -> Result<HttpResponse, PageError> {
    let tz = state.config.timezone;
    let clients = client_views(state).await?;
    let content = html! {
        h1 { "Clients" }
        p.muted { "Hand each person, app or script its own key, with the models it may call and how much. "
            "API_KEY keeps working as the unlimited client " code { "env" } "." }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        @if let Some((name, key)) = &secret {
            div.banner.info role="status" {
                strong { "The key of " (name) ": " } code.secret { (key) }
                br; "Copy it now: it is not shown again (only a hash of it is kept). Rotate the client for a new one."
            }
        }
        div.scroll { table.clients {
            thead { tr {
                th { "#" } th { "Name" } th { "Key" } th { "Models" } th.num { "RPM" } th.num { "Req/day" } th.num { "Tokens/day" }
                th { "Expires" } th.num { "Today" } th { "State" } th {}
            } }
            tbody {
                @if clients.is_empty() { tr { td colspan="11" .muted { "No client keys yet: every caller uses API_KEY." } } }
                @for c in &clients {
                    tr {
                        td.num { (c.id) }
                        td.nowrap { (c.name) }
                        td.mono.nowrap { (c.key) }
                        td { @match &c.models { None => span.muted { "every model" }, Some(m) => span.mono { (m.join(", ")) } } }
                        td.num { (limit_text(c.rpm.map(i64::from))) }
                        td.num { (limit_text(c.daily_requests)) }
                        td.num { (limit_text(c.daily_tokens)) }
                        td.nowrap { @match &c.expires_at {
                            None => span.muted { "never" },
                            Some(t) => (when(chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp_millis()), &tz)),
                        } }
                        td.num.nowrap { (c.requests_today) (if c.requests_today == 1 { " call · " } else { " calls · " }) (c.tokens_today) (if c.tokens_today == 1 { " token" } else { " tokens" }) }
                        td { @if !c.enabled { (badge("disabled", None)) } @else if c.expired { (badge("expired", None)) } @else { (badge("active", None)) } }
                        td { div.actions {
                            a.button.secondary href=(format!("/admin/clients/{}/edit", c.id)) { "Edit" }
                            form.inline method="post" action=(format!("/admin/clients/{}/rotate", c.id)) {
                                (csrf_field(&s.csrf)) button.secondary type="submit" { "Rotate" } }
                            form.inline method="post" action=(format!("/admin/clients/{}/{}", c.id, if c.enabled { "disable" } else { "enable" })) {
                                (csrf_field(&s.csrf)) button.secondary type="submit" { (if c.enabled { "Disable" } else { "Enable" }) } }
                            a.button.secondary href=(format!("/admin/clients/{}/delete", c.id)) { "Delete" }
                        } }
                    }
                }
            }
        } }
        section.panel {
            h2 { "New client" }
            form method="post" action="/admin/clients" {
                (csrf_field(&s.csrf))
                (form_fields(&form, &tz))
                button type="submit" { "Create" }
            }
        }
    };
    let chrome =
        Chrome { title: "Clients", nav: "clients", csrf: Some(&s.csrf), warnings: warnings(state), notice };
    Ok(page(status, layout(chrome, content)))
}

pub async fn clients_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let notice = Notice::text_of(&q);
    render(&state, &s, StatusCode::OK, None, None, ClientForm::default(), notice).await
}

/// Creates a client from the form: the page, with its key shown once.
pub async fn clients_create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let form = serde_urlencoded::from_bytes::<ClientForm>(&body).unwrap_or_default();
    let created = async {
        let fields = form.input(&state.config.timezone)?.apply(None)?;
        let name = fields.name.clone();
        let (_, secret) = create_client(&state, fields).await?;
        Ok::<_, AdminError>((name, secret))
    }
    .await;
    match created {
        Ok(secret) => {
            render(&state, &s, StatusCode::OK, None, Some(secret), ClientForm::default(), None).await
        }
        Err(e @ (AdminError::BadRequest(_) | AdminError::Conflict(_))) => {
            let status = if matches!(e, AdminError::Conflict(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            render(&state, &s, status, Some(e.to_string()), None, form, None).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn edit_page(
    state: &AppState,
    s: &crate::admin::session::Session,
    id: ClientId,
    form: ClientForm,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let tz = state.config.timezone;
    let content = html! {
        h1 { "Edit client #" (id) }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        section.panel {
            form method="post" action=(format!("/admin/clients/{id}/edit")) {
                (csrf_field(&s.csrf))
                (form_fields(&form, &tz))
                button type="submit" { "Save" } " " a href="/admin/clients" { "Cancel" }
            }
        }
    };
    let chrome = Chrome {
        title: "Edit client",
        nav: "clients",
        csrf: Some(&s.csrf),
        warnings: warnings(state),
        notice: None,
    };
    Ok(page(status, layout(chrome, content)))
}

pub async fn client_edit_page(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let id = client_id(&path)?;
    let c = view(row(&state, id).await?, &state);
    edit_page(&state, &s, id, ClientForm::of(&c, &state.config.timezone), StatusCode::OK, None).await
}

pub async fn client_edit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let id = client_id(&path)?;
    let form = serde_urlencoded::from_bytes::<ClientForm>(&body).unwrap_or_default();
    let saved = async {
        let old = row(&state, id).await?;
        let fields = form.input(&state.config.timezone)?.apply(Some(&old))?;
        store(&state, Some(id), fields, None).await?;
        changed(&state).await
    }
    .await;
    match saved {
        Ok(()) => Ok(see_other(&Notice::ClientSaved(id.0 as u64).link("/admin/clients"))),
        Err(e @ (AdminError::BadRequest(_) | AdminError::Conflict(_))) => {
            edit_page(&state, &s, id, form, StatusCode::BAD_REQUEST, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Rotate, enable, disable, delete, from the page's buttons.
pub async fn client_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, _) = posted_form(&req, payload, &state).await?;
    let (id, action) = path.into_inner();
    let id = client_id(&id)?;
    let old = row(&state, id).await?;
    let set_enabled = |on: bool| ClientInput { enabled: Some(on), ..Default::default() };
    let notice = match action.as_str() {
        "rotate" => {
            let shown = Some((old.name.clone(), rotate_client(&state, id).await?));
            return render(&state, &s, StatusCode::OK, None, shown, ClientForm::default(), None).await;
        }
        "enable" | "disable" => {
            let on = action == "enable";
            store(&state, Some(id), set_enabled(on).apply(Some(&old))?, None).await?;
            changed(&state).await?;
            if on {
                Notice::ClientEnabled(id.0 as u64)
            } else {
                Notice::ClientDisabled(id.0 as u64)
            }
        }
        "delete" => {
            delete_client(&state, id).await?;
            Notice::ClientDeleted(id.0 as u64)
        }
        other => return Err(AdminError::NotFound(format!("no client action {other:?}")).into()),
    };
    Ok(see_other(&notice.link("/admin/clients")))
}

pub async fn client_delete_confirm(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let id = client_id(&path)?;
    let c = row(&state, id).await?;
    let message = html! { "Delete the client " strong { (c.name) } "? Its key stops working at once. Its request log rows stay." };
    let confirm = Confirm {
        title: "Delete client",
        nav: "clients",
        heading: format!("Delete client #{id}?"),
        action: format!("/admin/clients/{id}/delete"),
        button: "Delete",
        cancel: "/admin/clients",
    };
    Ok(confirm_page(&s, confirm, message))
}
