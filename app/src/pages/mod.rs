//! One file per page.
pub mod connections;
pub mod dashboard;
pub mod login;
pub mod not_found;
pub mod pipelines;
pub mod placeholders;
pub mod users;
