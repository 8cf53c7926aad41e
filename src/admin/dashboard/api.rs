//! `/api/stats/*`: the dashboard's figures in JSON.

use actix_web::{web, HttpResponse};

use super::*;
use crate::admin::error::AdminError;
use crate::admin::session::Admin;
use crate::state::AppState;

pub async fn overview_json(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(overview(&state).await?))
}

pub async fn daily_json(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(daily_series(&state).await?))
}

pub async fn monthly_json(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(monthly_series(&state).await?))
}
