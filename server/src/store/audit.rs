//! Who did what, when: every state-changing action, as a tamper-evident hash chain.
//!
//! Each entry stores the hash of the entry before it and its own hash over a canonical
//! encoding of its fields and that link; `audit_head` holds the newest hash, so removing the
//! latest entries is caught too. Entries are appended under the head's row lock and never
//! updated or deleted (triggers refuse it); [`Db::verify_audit`] recomputes the chain.
use super::{Db, StoreResult, on_pool};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// Empty for entries written before the chain existed.
    pub prev_hash: String,
    pub hash: String,
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub entries: i64,
    /// Entries from before the chain existed (no hash), all older than the first chained one.
    pub unchained: i64,
    pub head: String,
    pub broken: Option<ChainBreak>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainBreak {
    /// The first entry that does not verify (0: the chain's head record).
    pub id: i64,
    pub reason: String,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

const CHAIN_PAGE: i64 = 1000;

/// The hash of one entry: SHA-256 over a versioned JSON array of its fields and the previous
/// hash (JSON escaping makes the encoding unambiguous; the id is left out so the chain, not
/// the numbering, fixes the order).
pub fn entry_hash(
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        "trialflow-audit-v1",
        at,
        actor,
        action,
        target,
        detail,
        prev_hash
    ]);
    crate::export::hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends one entry inside `$tx`: takes the head's row lock (SQLite already holds the write
/// lock), links to the head, moves the head.
macro_rules! append {
    ($tx:ident, $at:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {{
        let prev: String =
            sqlx::query_scalar("UPDATE audit_head SET hash = hash WHERE id = 1 RETURNING hash")
                .fetch_one(&mut *$tx)
                .await?;
        let hash = entry_hash($at, $actor, $action, $target, $detail, &prev);
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($at)
        .bind($actor)
        .bind($action)
        .bind($target)
        .bind($detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&hash)
            .execute(&mut *$tx)
            .await?;
    }};
}

impl Db {
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        let at = super::now_ms();
        let detail = detail.to_string();
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                append!(tx, at, actor, action, target, &detail);
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                append!(tx, at, actor, action, target, &detail);
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Newest first.
    pub async fn audit_entries(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        self.audit_page(None, limit, 0).await
    }

    /// Newest first, optionally only one action prefix (`run.`, `connection.`…).
    pub async fn audit_page(
        &self,
        action_prefix: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let prefix = action_prefix.map(|p| format!("{p}%"));
        let rows = on_pool!(self, pool => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE ($1 IS NULL OR action LIKE $1) ORDER BY id DESC LIMIT $2 OFFSET $3")
            .bind(&prefix).bind(limit).bind(offset).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Oldest first, after `after_id`: the order the chain is checked and exported in.
    pub async fn audit_after(&self, after_id: i64, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        let rows = on_pool!(self, pool => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id).bind(limit).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// The hash of the newest entry with this action and target (e.g. the trigger of a run).
    pub async fn audit_hash_of(&self, action: &str, target: &str) -> StoreResult<Option<String>> {
        let hash = on_pool!(self, pool => sqlx::query_scalar::<_, String>(
            "SELECT hash FROM audit_log WHERE action = $1 AND target = $2 ORDER BY id DESC LIMIT 1")
            .bind(action).bind(target).fetch_optional(pool).await)?;
        Ok(hash.filter(|h| !h.is_empty()))
    }

    /// The newest entry's hash, and how many entries predate the chain.
    pub async fn audit_head(&self) -> StoreResult<(String, i64)> {
        let head = on_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(
            "SELECT hash, unchained FROM audit_head WHERE id = 1").fetch_one(pool).await)?;
        Ok(head)
    }

    /// Recomputes every entry's hash and link, oldest first, and names the first entry that
    /// does not verify: changed (its hash no longer matches its fields), removed or reordered
    /// (its link does not match the entry before it), or the newest entries removed (the head
    /// does not match the last entry).
    pub async fn verify_audit(&self) -> StoreResult<ChainReport> {
        let (head, unchained_at_start) = self.audit_head().await?;
        let mut report = ChainReport {
            entries: 0,
            unchained: 0,
            head: head.clone(),
            broken: None,
        };
        let mut prev = String::new();
        let mut after = 0;
        loop {
            let page = self.audit_after(after, CHAIN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for e in page {
                report.entries += 1;
                if report.broken.is_some() {
                    continue;
                }
                if e.hash.is_empty() && prev.is_empty() && report.unchained < unchained_at_start {
                    report.unchained += 1;
                    continue;
                }
                let reason = if e.prev_hash != prev {
                    Some(
                        "its link does not match the entry before it: an entry before it was removed or changed, or it was moved",
                    )
                } else if e.hash
                    != entry_hash(
                        e.at,
                        &e.actor,
                        &e.action,
                        &e.target,
                        &e.detail,
                        &e.prev_hash,
                    )
                {
                    Some("its content no longer matches its hash: it was edited")
                } else {
                    None
                };
                match reason {
                    Some(reason) => {
                        report.broken = Some(ChainBreak {
                            id: e.id,
                            reason: reason.to_string(),
                        })
                    }
                    None => prev = e.hash,
                }
            }
        }
        if report.broken.is_none() && head != prev {
            report.broken = Some(ChainBreak {
                id: 0,
                reason: format!(
                    "the chain's head is {head:?} but the newest entry hashes to {prev:?}: the newest entries were removed"
                ),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::entry_hash;

    #[test]
    fn the_hash_covers_every_field_and_the_link() {
        let base = entry_hash(1, "ann", "run.trigger", "p run 1", "{}", "");
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            entry_hash(1, "ann", "run.trigger", "p run 1", "{}", "")
        );
        for other in [
            entry_hash(2, "ann", "run.trigger", "p run 1", "{}", ""),
            entry_hash(1, "bob", "run.trigger", "p run 1", "{}", ""),
            entry_hash(1, "ann", "run.cancel", "p run 1", "{}", ""),
            entry_hash(1, "ann", "run.trigger", "p run 2", "{}", ""),
            entry_hash(1, "ann", "run.trigger", "p run 1", "{\"a\":1}", ""),
            entry_hash(1, "ann", "run.trigger", "p run 1", "{}", "00"),
            // Field boundaries are unambiguous: moving text between fields changes the hash.
            entry_hash(1, "ann\",\"run.trigger", "", "p run 1", "{}", ""),
        ] {
            assert_ne!(base, other);
        }
    }
}
