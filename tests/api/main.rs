//! Integration tests: the real server on a real socket, against a fake
//! SiliconFlow that the tests start.

mod admin_dashboard;
mod admin_keys;
mod admin_login;
mod admin_logs;
mod admin_requests;
mod admin_ui;
mod agents;
mod aliases;
mod auth;
mod catalog;
mod clients;
mod endpoints;
mod fake;
mod forwarding;
mod hardening;
mod health;
mod helpers;
mod import;
mod instances;
mod layers;
mod metrics;
mod no_balance;
mod postgres_tls;
mod processes;
mod responses;
mod secrets;
mod shutdown;
mod streaming;
mod upstream_failures;

pub const KA: &str = "sk-aaaa-0000000000000000000001";
pub const KB: &str = "sk-bbbb-0000000000000000000002";
pub const KC: &str = "sk-cccc-0000000000000000000003";
pub const KD: &str = "sk-dddd-0000000000000000000004";
