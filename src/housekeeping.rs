//! What every long-running Backstop process does in the background: seal the
//! rows committed since the last seal (about every second), apply the expiry
//! of held actions, create log partitions ahead of need, and prune the
//! cumulative rule's per-minute totals that no window reads any more. All
//! are safe to run from many processes at once. Sealing is done only by
//! processes that run as the owner.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

pub const SEAL_EVERY: Duration = Duration::from_secs(1);
pub const EXPIRE_EVERY: Duration = Duration::from_secs(5);
pub const PRUNE_EVERY: Duration = Duration::from_secs(300);

pub fn spawn(pool: PgPool) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Sealing is the owner's: a process under a duty's login leaves it
        // to one that runs as the owner (`backstop seal`, or any process started
        // under the owner's login).
        let may_seal: bool = sqlx::query_scalar("SELECT has_function_privilege('backstop.seal(integer)', 'EXECUTE')")
            .fetch_one(&pool)
            .await
            .unwrap_or(false);
        // Partitions likewise: making one locks the whole log until it commits.
        let may_partition: bool =
            sqlx::query_scalar("SELECT has_function_privilege('backstop.ensure_log_partitions()', 'EXECUTE')")
                .fetch_one(&pool)
                .await
                .unwrap_or(false);
        let mut seal = tokio::time::interval(SEAL_EVERY);
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = seal.tick(), if may_seal => { let _ = crate::contract::seal_all(&pool).await; }
                _ = expire.tick() => {
                    let _ = crate::contract::expire_held(&pool).await;
                    // Log partitions ahead of need (a lookup when there is nothing to do).
                    if may_partition {
                        let _ = sqlx::query("SELECT backstop.ensure_log_partitions()").execute(&pool).await;
                    }
                }
                // The cumulative rule's totals no window reads any more.
                _ = prune.tick() => {
                    let _ = sqlx::query("SELECT backstop.prune_value_minutes()").execute(&pool).await;
                }
            }
        }
    })
}
