//! `/admin`: the dashboard page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::*;
use crate::admin::error::PageError;
use crate::admin::page::{page_session, warnings};
use crate::admin::views::charts::{bar_chart, hbar_chart, thousands, Axis, BarSeries};
use crate::admin::views::{card, layout, page, Chrome};
use crate::db::queries::stats::{self as sq};
use crate::db::{self, now_ms};
use crate::state::AppState;

pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    let s = page_session(&req, &state).await?;
    let tz = state.config.timezone;
    let now = now_ms();
    let (hours, days) = (Buckets::last_24_hours(&tz, now), Buckets::last_30_days(&tz, now));
    let o = overview(&state).await?;
    let day = load_series(&state, hours.clone()).await?;
    let month = load_series(&state, days).await?;
    let from = hours.start_ms;
    let outcomes = db::run(&state.db, move |conn| sq::outcomes_by_hour(conn, from)).await?;
    let [ok, failed_over, client, upstream] = outcome_series(&hours, &outcomes);
    let hour_axis = Axis { labels: &day.labels, titles: &day.titles, every: 3 };
    let day_axis = Axis { labels: &month.labels, titles: &month.titles, every: 5 };
    let k = &o.keys;
    let none = o.calls_month == 0;
    let content = html! {
        h1 { "Dashboard" }
        div.cards {
            (card("Keys", thousands(o.key_count as i64), Some(format!("{} active · {} cooling · {} exhausted · {} invalid · {} disabled", k.active, k.cooling, k.exhausted, k.invalid, k.disabled))))
            (balance_card(&o))
            (card("Calls today", thousands(o.calls_today), Some(format!("{} tokens", thousands(o.tokens_today)))))
            (card("Calls this month", thousands(o.calls_month), Some(format!("{} tokens", thousands(o.tokens_month)))))
            @if none {
                (card("Success rate", "—".into(), Some("no calls this month".into())))
                (card("Mean latency", "—".into(), Some("no calls this month".into())))
            } @else {
                (card("Success rate", format!("{:.1}%", o.success_rate * 100.0), Some(format!("{} error{} this month", thousands(o.errors_month), if o.errors_month == 1 { "" } else { "s" }))))
                (card("Mean latency", format!("{} ms", thousands(o.mean_latency_ms.round() as i64)), Some("this month".into())))
            }
        }
        div.charts {
            (bar_chart("Outcomes by hour, last 24 hours", "calls", &hour_axis, &[
                BarSeries { name: "success", values: &ok, class: "bar-ok" },
                BarSeries { name: "after failover", values: &failed_over, class: "bar-failover" },
                BarSeries { name: "client errors", values: &client, class: "bar-client" },
                BarSeries { name: "upstream errors", values: &upstream, class: "bar-upstream" },
            ]))
            (bar_chart("Tokens by hour, last 24 hours", "tokens", &hour_axis, &[
                BarSeries { name: "input", values: &day.input_tokens, class: "bar1" },
                BarSeries { name: "output", values: &day.output_tokens, class: "bar2" },
            ]))
            (bar_chart("Calls by day, last 30 days", "calls", &day_axis, &[BarSeries { name: "calls", values: &month.calls, class: "bar1" }]))
            (bar_chart("Tokens by day, last 30 days", "tokens", &day_axis, &[
                BarSeries { name: "input", values: &month.input_tokens, class: "bar1" },
                BarSeries { name: "output", values: &month.output_tokens, class: "bar2" },
            ]))
            (hbar_chart("Tokens by model, last 30 days (top 10)", "tokens",
                &month.model_labels.iter().cloned().zip(month.model_tokens.iter().copied()).collect::<Vec<_>>()))
            (hbar_chart("Calls by key, this month (top 15)", "calls",
                &o.calls_by_key.iter().take(15).map(|c| (c.key.clone(), c.calls)).collect::<Vec<_>>()))
            (hbar_chart("Calls by client, this month (top 10)", "calls",
                &o.calls_by_client.iter().take(10).map(|c| (c.client.clone(), c.calls)).collect::<Vec<_>>()))
            (hbar_chart("Tokens by client, this month (top 10)", "tokens", &{
                let mut by_tokens: Vec<(String, i64)> = o.calls_by_client.iter().map(|c| (c.client.clone(), c.tokens)).collect();
                by_tokens.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                by_tokens.truncate(10);
                by_tokens
            }))
        }
        p.muted { "Times in " (o.timezone) " (TIMEZONE). All-time: " (thousands(o.total_calls)) " calls, " (thousands(o.total_tokens)) " tokens." }
    };
    let chrome = Chrome {
        title: "Dashboard",
        nav: "dashboard",
        csrf: Some(&s.csrf),
        warnings: warnings(&state),
        notice: None,
    };
    Ok(page(StatusCode::OK, layout(chrome, content)))
}

/// The pool's balance: what is known, and how much is not.
fn balance_card(o: &Overview) -> Markup {
    let (known, unknown) = (o.balance_known_accounts, o.balance_unknown_accounts);
    match o.total_balance {
        None if unknown == 0 => card("Total balance", "—".into(), Some("no usable key".into())),
        None => card(
            "Total balance",
            "unknown".into(),
            Some(if unknown == 1 {
                "SiliconFlow does not report this account's balance; exhaustion is learned from calls".into()
            } else {
                format!("SiliconFlow does not report balances of these {unknown} accounts; exhaustion is learned from calls")
            }),
        ),
        Some(t) if unknown == 0 => {
            card("Total balance", format!("¥{t:.2}"), Some("each account counted once".into()))
        }
        Some(t) => card(
            "Known balance",
            format!("¥{t:.2}"),
            Some(format!("{known} of {} accounts; {unknown} unknown (not counted)", known + unknown)),
        ),
    }
}
