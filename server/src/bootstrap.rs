//! Users outside the web UI: the first admin on first start, and the `user` subcommands.
use crate::passwords;
use crate::store::Db;
use anyhow::{Context, bail};
use app::model::Role;

/// Usernames are case-insensitive and kept in lower case; the message names the rule broken.
pub fn normalize_username(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 64 {
        return Err("must be at most 64 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "contains '{bad}'; use letters, digits and . _ - @ only"
        ));
    }
    Ok(name)
}

/// On a database without users, creates `admin` with `TRIALFLOW_ADMIN_PASSWORD` or a generated
/// password printed once to standard output. Returns the password it generated, if any.
pub async fn ensure_first_admin(
    db: &Db,
    configured: Option<String>,
) -> anyhow::Result<Option<String>> {
    if db.user_count().await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match configured.filter(|p| !p.is_empty()) {
        Some(p) => {
            passwords::check_strength(&p)
                .map_err(|e| anyhow::anyhow!("TRIALFLOW_ADMIN_PASSWORD {e}"))?;
            (p, false)
        }
        None => (passwords::generate(), true),
    };
    let hash = passwords::hash(password.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    match db.insert_user("admin", &hash, Role::Admin).await {
        Ok(_) => {}
        // Another server process sharing the database created it first.
        Err(e) if e.is_unique_violation() => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    db.audit(
        "system",
        "user.create",
        "admin",
        serde_json::json!({"role": "admin", "first_start": true}),
    )
    .await?;
    Ok(generated.then_some(password))
}

/// `trialflow user add`: creates a user; prints a generated password once when none is given.
pub async fn add_user(
    db: &Db,
    username: &str,
    role: Role,
    password: Option<String>,
) -> anyhow::Result<Option<String>> {
    let username = normalize_username(username).map_err(|e| anyhow::anyhow!("username {e}"))?;
    let (password, generated) = choose_password(password)?;
    let hash = passwords::hash(password.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    match db.insert_user(&username, &hash, role).await {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => bail!("a user named '{username}' already exists"),
        Err(e) => return Err(e.into()),
    }
    db.audit(
        "cli",
        "user.create",
        &username,
        serde_json::json!({"role": role}),
    )
    .await?;
    Ok(generated.then_some(password))
}

/// `trialflow user reset-password`: sets a new password and ends the user's sessions.
pub async fn reset_password(
    db: &Db,
    username: &str,
    password: Option<String>,
) -> anyhow::Result<Option<String>> {
    let username = normalize_username(username).map_err(|e| anyhow::anyhow!("username {e}"))?;
    let user = db
        .user_by_name(&username)
        .await?
        .with_context(|| format!("no user named '{username}'"))?;
    let (password, generated) = choose_password(password)?;
    let hash = passwords::hash(password.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    db.set_password_hash(user.id, &hash).await?;
    db.audit(
        "cli",
        "user.reset_password",
        &username,
        serde_json::json!({}),
    )
    .await?;
    Ok(generated.then_some(password))
}

fn choose_password(given: Option<String>) -> anyhow::Result<(String, bool)> {
    match given.filter(|p| !p.is_empty()) {
        Some(p) => {
            passwords::check_strength(&p).map_err(|e| anyhow::anyhow!("password {e}"))?;
            Ok((p, false))
        }
        None => Ok((passwords::generate(), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_username;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username("  Alice ").as_deref(), Ok("alice"));
        assert!(normalize_username("").is_err());
        assert!(normalize_username("bad name").unwrap_err().contains("' '"));
    }
}
