//! What every long-running Backstop process does in the background: seal the
//! rows committed since the last seal (about every second), apply the expiry
//! of held actions, and create log partitions ahead of need. All are safe to
//! run from many processes at once.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

pub const SEAL_EVERY: Duration = Duration::from_secs(1);
pub const EXPIRE_EVERY: Duration = Duration::from_secs(5);

pub fn spawn(pool: PgPool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seal = tokio::time::interval(SEAL_EVERY);
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tokio::select! {
                _ = seal.tick() => { let _ = crate::contract::seal_all(&pool).await; }
                _ = expire.tick() => {
                    let _ = crate::contract::expire_held(&pool).await;
                    // Log partitions ahead of need (a lookup when there is nothing to do).
                    let _ = sqlx::query("SELECT backstop.ensure_log_partitions()").execute(&pool).await;
                }
            }
        }
    })
}
