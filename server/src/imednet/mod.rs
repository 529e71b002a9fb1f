//! iMednet EDC REST API: a deterministic simulator (axum) and a typed client (reqwest).
//!
//! Layout: `model` (wire types, dates), `filter` (filter-expression parser), `generator`
//! (seeded data), `simulator` (router + state), `faults` (fault injection), `client`, `error`.

pub mod bench;
pub mod client;
pub mod error;
pub mod faults;
pub mod filter;
pub mod generator;
pub mod model;
pub mod simulator;

pub use client::{ClientConfig, ImednetClient, ListParams, Secret, quote_value};
pub use error::ImednetError;
pub use faults::{FaultKind, FaultRule, Faults};
pub use generator::Profile;
pub use simulator::{DEMO_API_KEY, DEMO_SECURITY_KEY, SimConfig, SimState, router};
