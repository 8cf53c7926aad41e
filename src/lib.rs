pub mod admin;
pub mod config;
pub mod db;
pub mod health;
pub mod pool;
pub mod proxy;
pub mod startup;
pub mod state;
