//! Read replicas: the room and the supervisor may read from one while every
//! write still goes to the primary.

use anyhow::{Context, Result, bail};

/// Connect to a replica: no migrations (it is read-only), the same session settings.
pub async fn connect_replica(url: &str, max: u32) -> Result<sqlx::PgPool> {
    let opts: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| "the replica URL is not a valid postgres:// URL".to_string())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max)
        .connect_with(opts.options([("jit", "off"), ("search_path", super::SEARCH_PATH)]))
        .await
        .context("connecting to the replica")?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('backstop.seals') IS NOT NULL")
        .fetch_one(&pool)
        .await?;
    if !migrated {
        bail!("the replica has no backstop schema: is it a replica of this database?");
    }
    Ok(pool)
}
