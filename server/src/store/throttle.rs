//! Counting failed sign-ins per account and per address, in the database so that several
//! server processes share the count.
use super::{Db, StoreResult, execute_on, now_ms, on_pool};

/// How failures turn into lock-outs for one kind of key.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed inside `window_ms` before the key is locked.
    pub free_failures: i64,
    pub window_ms: i64,
    /// First lock-out; doubles with every further failure, up to `max_lock_ms`.
    pub base_lock_ms: i64,
    pub max_lock_ms: i64,
}

impl ThrottlePolicy {
    pub const ACCOUNT: ThrottlePolicy = ThrottlePolicy {
        free_failures: 5,
        window_ms: 15 * 60_000,
        base_lock_ms: 30_000,
        max_lock_ms: 15 * 60_000,
    };
    /// Addresses may be shared by many people, so they get more room.
    pub const ADDRESS: ThrottlePolicy = ThrottlePolicy {
        free_failures: 20,
        window_ms: 15 * 60_000,
        base_lock_ms: 30_000,
        max_lock_ms: 15 * 60_000,
    };

    /// Lock duration after `failures` failures inside the window (0 = not locked).
    pub fn lock_after(&self, failures: i64) -> i64 {
        let over = failures - self.free_failures;
        if over < 0 {
            return 0;
        }
        let doublings = u32::try_from(over.min(20)).unwrap_or(20);
        self.base_lock_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.max_lock_ms)
    }
}

impl Db {
    /// Milliseconds until `key` may try again, or 0.
    pub async fn throttle_wait_ms(&self, key: &str) -> StoreResult<i64> {
        let locked_until: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT locked_until FROM login_throttle WHERE key = $1")
            .bind(key).fetch_optional(pool).await)?;
        Ok(locked_until.map_or(0, |t| (t - now_ms()).max(0)))
    }

    /// Records one failure for `key`; returns the lock-out now in force in milliseconds.
    pub async fn throttle_record_failure(
        &self,
        key: &str,
        policy: ThrottlePolicy,
    ) -> StoreResult<i64> {
        let now = now_ms();
        // A window that has expired starts counting afresh.
        let failures: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "INSERT INTO login_throttle (key, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN login_throttle.window_start < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
               window_start = CASE WHEN login_throttle.window_start < $3 THEN $2 ELSE login_throttle.window_start END \
             RETURNING failures")
            .bind(key).bind(now).bind(now - policy.window_ms).fetch_one(pool).await)?;
        let lock = policy.lock_after(failures);
        if lock > 0 {
            execute_on!(self, pool => sqlx::query("UPDATE login_throttle SET locked_until = $2 WHERE key = $1")
                .bind(key).bind(now + lock).execute(pool).await)?;
        }
        Ok(lock)
    }

    pub async fn throttle_clear(&self, key: &str) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(pool).await)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ThrottlePolicy;

    #[test]
    fn lockout_grows_then_caps() {
        let p = ThrottlePolicy::ACCOUNT;
        assert_eq!(p.lock_after(4), 0);
        assert_eq!(p.lock_after(5), 30_000);
        assert_eq!(p.lock_after(6), 60_000);
        assert_eq!(p.lock_after(50), p.max_lock_ms);
    }
}
