//! Data shapes shared by the server and the browser.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Roles with Airflow's meanings; each one includes everything the roles before it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything that is not a secret.
    Viewer,
    /// Also triggers, clears, marks and cancels runs.
    User,
    /// Also manages connections and pools.
    Op,
    /// Also manages users.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::User, Role::Op, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Op => "op",
            Role::Admin => "admin",
        }
    }

    /// Whether a holder of `self` may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "user" => Ok(Role::User),
            "op" => Ok(Role::Op),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}': expected one of viewer, user, op, admin"
            )),
        }
    }
}

/// The signed-in user, as the server resolved it for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

/// What the authentication middleware learned about a request; read by pages and server functions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthContext {
    pub user: Option<CurrentUser>,
    /// The request carried a session cookie that no longer names a live session.
    pub session_expired: bool,
}

/// A user as the Users page shows it. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `/healthz` and the dashboard report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub database: DatabaseHealth,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseHealth {
    pub backend: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// Outcome of an admin's password reset: the new password is shown exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    pub username: String,
    pub one_time_password: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin.allows(Role::Op));
        assert!(Role::Op.allows(Role::User));
        assert!(Role::User.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::User));
        assert!(!Role::Op.allows(Role::Admin));
    }

    #[test]
    fn role_parsing_names_the_bad_value() {
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.contains("'root'"), "{err}");
    }
}
