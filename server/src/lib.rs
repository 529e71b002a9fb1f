//! Everything behind the UI's port: configuration, HTTP, storage, users and the modes of the
//! `trialflow` binary.
pub mod backend;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod connections;
pub mod engine;
pub mod export;
pub mod http;
pub mod imednet;
pub mod objstore;
pub mod operators;
pub mod passwords;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
