//! One file per page.
pub mod audit;
pub mod connections;
pub mod dashboard;
pub mod flows;
pub mod login;
pub mod not_found;
pub mod pipelines;
pub mod pools;
pub mod runs;
pub mod users;
