// Handlers and guards return a ready `HttpResponse` as their error (the
// answer to send), which is large by design; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod aliases;
pub mod catalog;
pub mod clients;
pub mod commands;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod db;
pub mod dialects;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod names;
pub mod net;
pub mod pool;
pub mod proxy;
pub mod sse;
pub mod startup;
pub mod state;
pub mod upstream;
pub mod vault;
