//! `/admin/models`: the catalog as a table (window, largest output, input,
//! tools, reasoning, prices, where each entry comes from), and a form that
//! sets the owner's entry for a model (the fields left empty keep the
//! shipped figures) or drops it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{put, reset};
use crate::admin::error::PageError;
use crate::admin::page::{page_session, posted_form, see_other, warnings, Notice, NoticeQuery};
use crate::admin::session::Session;
use crate::admin::views::{csrf_field, layout, page, Chrome};
use crate::catalog::{Entry, Micros, Source};
use crate::state::AppState;

fn price(p: Option<Micros>) -> String {
    p.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
}

fn tokens(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) if n >= 1024 && n % 1024 == 0 => format!("{}K", n / 1024),
        Some(n) => n.to_string(),
    }
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

fn table(entries: &[std::sync::Arc<Entry>], csrf: &str) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th { "Model" } th.num { "Window" } th.num { "Max output" } th { "Input" } th { "Tools" } th { "Reasoning" }
                th.num title="CNY per million tokens" { "In" } th.num title="CNY per million tokens" { "Out" }
                th.num title="CNY per million cached input tokens" { "Cached" } th { "Source" } th {}
            } }
            tbody {
                @for e in entries {
                    tr {
                        td.mono { (e.id) }
                        td.num { (tokens(e.context_window)) } td.num { (tokens(e.max_output_tokens)) }
                        td { (e.input.join(", ")) } td { (yes_no(e.tools)) } td { (yes_no(e.reasoning)) }
                        td.num { (price(e.price.input)) } td.num { (price(e.price.output)) } td.num { (price(e.price.cached_input)) }
                        td { @if e.source == Source::Custom { span.mark { "yours" } } @else { "default" } }
                        td.nowrap {
                            a href=(format!("/admin/models?edit={}", urlencode(&e.id))) { "Edit" }
                            @if e.source == Source::Custom {
                                form.inline method="post" action="/admin/models/reset" {
                                    (csrf_field(csrf))
                                    input type="hidden" name="id" value=(e.id);
                                    button.link type="submit" title="Drop your entry: back to the shipped figures, or gone if there are none" { "Reset" }
                                }
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_string()
}

/// The form's fields, as the owner typed them.
#[derive(Deserialize, Default, Clone)]
struct ModelForm {
    id: Option<String>,
    context_window: Option<String>,
    max_output_tokens: Option<String>,
    input: Option<String>,
    tools: Option<String>,
    reasoning: Option<String>,
    price_input: Option<String>,
    price_output: Option<String>,
    price_cached_input: Option<String>,
    price_per_image: Option<String>,
    price_per_video: Option<String>,
    price_per_million_characters: Option<String>,
}

fn field(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ModelForm {
    fn of(e: &Entry) -> Self {
        let n = |v: Option<u64>| v.map(|n| n.to_string());
        let p = |v: Option<Micros>| v.map(|m| m.to_string());
        let b = |v: Option<bool>| v.map(|b| if b { "yes" } else { "no" }.to_string());
        ModelForm {
            id: Some(e.id.clone()),
            context_window: n(e.context_window),
            max_output_tokens: n(e.max_output_tokens),
            input: Some(e.input.join(", ")),
            tools: b(e.tools),
            reasoning: b(e.reasoning),
            price_input: p(e.price.input),
            price_output: p(e.price.output),
            price_cached_input: p(e.price.cached_input),
            price_per_image: p(e.price.per_image),
            price_per_video: p(e.price.per_video),
            price_per_million_characters: p(e.price.per_million_characters),
        }
    }

    /// The entry's fields the form gives (an empty field: not given).
    fn fields(&self) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        let number = |name: &str, v: &str| -> Result<Value, String> {
            v.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(|n| {
                    if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f >= 0.0) {
                        Value::from(n.as_f64().unwrap_or(0.0) as u64)
                    } else {
                        Value::Number(n)
                    }
                })
                .ok_or_else(|| format!("{name} must be a number, not {v:?}"))
        };
        for (name, v) in
            [("context_window", &self.context_window), ("max_output_tokens", &self.max_output_tokens)]
        {
            if let Some(v) = field(v) {
                out.insert(name.into(), number(name, &v.replace(['_', ','], ""))?);
            }
        }
        if let Some(v) = field(&self.input) {
            let kinds: Vec<Value> =
                v.split(',').map(|k| Value::from(k.trim().to_lowercase())).filter(|k| k != "").collect();
            out.insert("input".into(), Value::Array(kinds));
        }
        for (name, v) in [("tools", &self.tools), ("reasoning", &self.reasoning)] {
            match field(v) {
                Some("yes") => out.insert(name.into(), Value::Bool(true)),
                Some("no") => out.insert(name.into(), Value::Bool(false)),
                _ => None,
            };
        }
        let mut prices = Map::new();
        for (name, v) in [
            ("input", &self.price_input),
            ("output", &self.price_output),
            ("cached_input", &self.price_cached_input),
            ("per_image", &self.price_per_image),
            ("per_video", &self.price_per_video),
            ("per_million_characters", &self.price_per_million_characters),
        ] {
            if let Some(v) = field(v) {
                prices.insert(name.into(), number(&format!("the {name} price"), v)?);
            }
        }
        if !prices.is_empty() {
            out.insert("price".into(), Value::Object(prices));
        }
        Ok(out)
    }
}

fn form(f: &ModelForm, csrf: &str) -> Markup {
    let v = |x: &Option<String>| x.clone().unwrap_or_default();
    let choice = |name: &'static str, current: &Option<String>| {
        let current = current.clone().unwrap_or_default();
        html! {
            label { (name)
                select name=(name) {
                    option value="" selected[current.is_empty()] { "(unchanged)" }
                    option value="yes" selected[current == "yes"] { "yes" }
                    option value="no" selected[current == "no"] { "no" }
                }
            }
        }
    };
    html! {
        form method="post" action="/admin/models" {
            (csrf_field(csrf))
            div.fields {
                label { "Model id" input type="text" name="id" value=(v(&f.id)) required placeholder="deepseek-ai/DeepSeek-V3.2"; }
                label { "Window (tokens)" input type="text" inputmode="numeric" name="context_window" value=(v(&f.context_window)) placeholder="131072"; }
                label { "Max output (tokens)" input type="text" inputmode="numeric" name="max_output_tokens" value=(v(&f.max_output_tokens)); }
                label { "Input" input type="text" name="input" value=(v(&f.input)) placeholder="text, image"; }
                (choice("tools", &f.tools))
                (choice("reasoning", &f.reasoning))
            }
            div.fields {
                label { "In (CNY/M)" input type="text" inputmode="decimal" name="price_input" value=(v(&f.price_input)); }
                label { "Out (CNY/M)" input type="text" inputmode="decimal" name="price_output" value=(v(&f.price_output)); }
                label { "Cached in (CNY/M)" input type="text" inputmode="decimal" name="price_cached_input" value=(v(&f.price_cached_input)); }
                label { "Per image" input type="text" inputmode="decimal" name="price_per_image" value=(v(&f.price_per_image)); }
                label { "Per video" input type="text" inputmode="decimal" name="price_per_video" value=(v(&f.price_per_video)); }
                label { "Per M chars" input type="text" inputmode="decimal" name="price_per_million_characters" value=(v(&f.price_per_million_characters)); }
            }
            button type="submit" { "Save entry" }
        }
    }
}

fn render(
    state: &AppState,
    s: &Session,
    status: StatusCode,
    f: &ModelForm,
    error: Option<String>,
    notice: Option<String>,
) -> HttpResponse {
    let (shipped, _) = crate::catalog::shipped();
    let entries = state.catalog.snapshot().entries();
    let content = html! {
        h1 { "Models" }
        p.muted { "What the proxy knows of each model: its window and largest output (the agents' configuration from "
            code { "siliconflow-proxy connect" } " and " code { "/v1/models" } " carry them), what it takes in, and its prices in CNY. "
            "Yours replace the fields you give; saved here, in effect at once on every instance. " code { "?" } " is unknown. "
            a href="/admin/connect" { "Connect an agent →" } }
        details.panel {
            summary { "The shipped figures: of " (shipped.date) ", from " (shipped.sources.len()) " sources" }
            ul { @for src in &shipped.sources { li { a href=(src.url) rel="noreferrer" { (src.name) } @if !src.retrieved_as.is_empty() { " — " span.muted { (src.retrieved_as) } } } } }
            @if !shipped.notes.is_empty() { p.muted { (shipped.notes) } }
        }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        section.panel { h2 { "Set an entry" } (form(f, &s.csrf)) }
        section.panel { h2 { (entries.len()) " models" } (table(&entries, &s.csrf)) }
    };
    let chrome =
        Chrome { title: "Models", nav: "models", csrf: Some(&s.csrf), warnings: warnings(state), notice };
    page(status, layout(chrome, content))
}

#[derive(Deserialize)]
pub struct ModelsQuery {
    edit: Option<String>,
    notice: Option<String>,
    n: Option<String>,
}

pub async fn models_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<ModelsQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let notice = Notice::text_of(&NoticeQuery { notice: q.notice.clone(), n: q.n.clone() });
    let f = match q.edit.as_deref().and_then(|id| state.catalog.snapshot().get(id).cloned()) {
        Some(e) => ModelForm::of(&e),
        None => ModelForm { id: q.edit.clone(), ..Default::default() },
    };
    Ok(render(&state, &s, StatusCode::OK, &f, None, notice))
}

pub async fn models_save(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let f = serde_urlencoded::from_bytes::<ModelForm>(&body).unwrap_or_default();
    let Some(id) = field(&f.id).map(str::to_string) else {
        return Ok(render(
            &state,
            &s,
            StatusCode::BAD_REQUEST,
            &f,
            Some("A model id is needed.".into()),
            None,
        ));
    };
    let fields = match f.fields() {
        Ok(fields) => fields,
        Err(e) => return Ok(render(&state, &s, StatusCode::BAD_REQUEST, &f, Some(e), None)),
    };
    match put(&state, id, Value::Object(fields)).await {
        Ok(_) => Ok(see_other(&Notice::ModelSaved(1).link("/admin/models"))),
        Err(crate::admin::error::AdminError::BadRequest(e)) => {
            Ok(render(&state, &s, StatusCode::BAD_REQUEST, &f, Some(e), None))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, Default)]
struct ResetForm {
    id: Option<String>,
}

pub async fn models_reset(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (_s, body) = posted_form(&req, payload, &state).await?;
    let id = serde_urlencoded::from_bytes::<ResetForm>(&body).unwrap_or_default().id.unwrap_or_default();
    let gone = reset(&state, id).await?;
    Ok(see_other(&Notice::ModelReset(u64::from(gone)).link("/admin/models")))
}
