//! Server functions, grouped by domain. Each one is a thin adapter: check the caller's role,
//! call the backend port, map errors.
//!
//! URL convention, enforced by the server and by the integration tests: every server function
//! lives under `/api/<role>/<name>`, where `<role>` is the least role that may call it
//! (`viewer`, `user`, `op`, `admin`). The server refuses a caller below that role before the
//! arguments are even read, and the function checks again itself. The only exception is
//! `/api/public/whoami`, which answers "nobody" to anonymous callers.
pub mod audit;
pub mod connections;
pub mod flows;
pub mod pools;
pub mod runs;
pub mod session;
pub mod system;
pub mod users;

/// Prefix of the one server function that anonymous callers may reach.
pub const PUBLIC_PREFIX: &str = "/api/public";
