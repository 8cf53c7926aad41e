//! `/admin/aliases`: the alias table as text, one `pattern = model` a line,
//! edited and saved whole.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;

use super::replace;
use crate::admin::error::PageError;
use crate::admin::page::{page_session, posted_form, see_other, warnings, Notice, NoticeQuery};
use crate::admin::session::Session;
use crate::admin::views::{csrf_field, layout, page, Chrome};
use crate::aliases::Aliases;
use crate::state::AppState;

/// The table as the form shows it.
fn as_text(table: &Aliases) -> String {
    table.rules().iter().map(|a| format!("{} = {}\n", a.pattern, a.model)).collect()
}

fn render(
    state: &AppState,
    s: &Session,
    status: StatusCode,
    text: &str,
    error: Option<String>,
    notice: Option<String>,
) -> HttpResponse {
    let content = html! {
        h1 { "Model aliases" }
        p.muted { "Names clients ask for, and the SiliconFlow model each calls: one " code { "pattern = model" }
            " a line, where " code { "*" } " is any run of characters (case is ignored). The first pattern that "
            "matches wins; a client's model list applies to the model called; answers and the log show the name asked for. "
            "Saved here, in effect at once on every instance." }
        @if let Some(e) = &error { div.banner.error role="alert" { (e) } }
        section.panel {
            form method="post" action="/admin/aliases" {
                (csrf_field(&s.csrf))
                label { "Aliases"
                    textarea name="aliases" rows="12" spellcheck="false" placeholder="claude-*haiku* = Qwen/Qwen3-8B\nclaude-* = deepseek-ai/DeepSeek-V3.2\ngpt-* = deepseek-ai/DeepSeek-V3.2" { (text) }
                }
                button type="submit" { "Save" }
            }
        }
    };
    let chrome =
        Chrome { title: "Aliases", nav: "aliases", csrf: Some(&s.csrf), warnings: warnings(state), notice };
    page(status, layout(chrome, content))
}

pub async fn aliases_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let notice = Notice::text_of(&q);
    let text = as_text(&state.aliases.snapshot());
    Ok(render(&state, &s, StatusCode::OK, &text, None, notice))
}

#[derive(Deserialize, Default)]
struct AliasForm {
    aliases: Option<String>,
}

pub async fn aliases_save(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (s, body) = posted_form(&req, payload, &state).await?;
    let text =
        serde_urlencoded::from_bytes::<AliasForm>(&body).unwrap_or_default().aliases.unwrap_or_default();
    // One rule a line; a line without `=` is the owner's mistake, said back.
    let list: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let table = match Aliases::parse_list(&list.join("\n")) {
        Ok(t) => t,
        Err(e) => return Ok(render(&state, &s, StatusCode::BAD_REQUEST, &text, Some(e), None)),
    };
    let n = table.rules().len() as u64;
    replace(&state, table).await?;
    Ok(see_other(&Notice::AliasesSaved(n).link("/admin/aliases")))
}
