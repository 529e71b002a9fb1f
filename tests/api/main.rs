//! Integration tests: the real application on port 0 with a fresh database, spoken to over HTTP.
mod helpers;

mod alerts;
mod audit;
mod auth;
mod connections;
mod console;
mod crash;
mod demo_s3;
mod engine;
mod exports;
mod flows;
mod hostile_input;
mod imednet_client;
mod limits;
mod no_leak;
mod route_roles;
mod s3;
mod server_fn_roles;
mod storage;
mod storms;
mod traversal;
