//! The tail reader: one way for every consumer (the room, the supervisor, the
//! sealer's checks) to follow the log without skipping or repeating a row.
//!
//! Sequence numbers are taken at insert, not at commit, so "seq greater than
//! the last one seen" skips a row whose transaction commits late. Instead the
//! reader works in snapshot windows, as PgQ does: each poll delivers the rows
//! whose writing transaction is visible in a new snapshot `upto` but was not
//! visible in the previous one, `after`. Every committed transaction becomes
//! visible in exactly one such window, so every committed row is delivered
//! exactly once; a rolled-back row is never visible and never delivered.
//!
//! Ordering: windows arrive in the order they were taken; within a window
//! rows are ordered by (transaction id, seq), so one transaction's rows stay
//! together. Consumers that display by seq sort within a window themselves.
//!
//! The cursor is plain data (two snapshot texts and a position). A consumer
//! that keeps it across a dropped connection, or stores it in the database
//! next to its own progress, resumes exactly where it stopped.

use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};

use super::{LOG_COLUMNS, LogRow, Result, refine};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailCursor {
    /// Snapshot whose visible rows have all been delivered.
    pub after: String,
    /// The snapshot of the window being delivered, when it was cut short by the batch size.
    pub upto: Option<String>,
    /// Position inside the current window: (txid, seq) of the last row delivered.
    pub after_txid: String,
    pub after_seq: i64,
}

impl TailCursor {
    /// A cursor before every row of the log.
    pub fn beginning() -> TailCursor {
        TailCursor {
            after: "1:1:".to_string(),
            upto: None,
            after_txid: "0".to_string(),
            after_seq: 0,
        }
    }

    /// A cursor after every row visible in `snapshot`.
    pub fn at_snapshot(snapshot: String) -> TailCursor {
        TailCursor {
            after: snapshot,
            upto: None,
            after_txid: "0".to_string(),
            after_seq: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tail {
    cursor: TailCursor,
    batch: i64,
}

impl Tail {
    pub fn new(cursor: TailCursor, batch: i64) -> Tail {
        Tail {
            cursor,
            batch: batch.max(1),
        }
    }

    /// A tail that starts now: rows already committed are not delivered.
    pub async fn from_now<'e, E: PgExecutor<'e>>(ex: E, batch: i64) -> Result<Tail> {
        let snap: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(ex)
            .await
            .map_err(refine)?;
        Ok(Tail::new(TailCursor::at_snapshot(snap), batch))
    }

    /// The most recent `history` rows (oldest first) and a tail that starts
    /// exactly after them: both come from one snapshot, so nothing committed
    /// in between is lost or shown twice.
    pub async fn with_history(pool: &PgPool, history: i64, batch: i64) -> Result<(Vec<LogRow>, Tail)> {
        let mut tx = pool.begin().await.map_err(refine)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(refine)?;
        let snap: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(refine)?;
        let rows = super::recent_log(&mut *tx, history).await?;
        tx.commit().await.map_err(refine)?;
        Ok((rows, Tail::new(TailCursor::at_snapshot(snap), batch)))
    }

    pub fn cursor(&self) -> &TailCursor {
        &self.cursor
    }

    /// The next rows, possibly none. On error the cursor is unchanged, so the
    /// caller can retry on a new connection without losing or repeating rows.
    pub async fn poll(&mut self, pool: &PgPool) -> Result<Vec<LogRow>> {
        let mut conn = pool.acquire().await.map_err(refine)?;
        self.poll_with(&mut conn).await
    }

    /// Poll on a given connection, possibly inside the caller's transaction
    /// (so the cursor can be stored with the work the rows cause).
    pub async fn poll_with(&mut self, conn: &mut sqlx::PgConnection) -> Result<Vec<LogRow>> {
        let upto = match &self.cursor.upto {
            Some(u) => u.clone(),
            None => sqlx::query_scalar("SELECT pg_current_snapshot()::text")
                .fetch_one(&mut *conn)
                .await
                .map_err(refine)?,
        };
        let rows: Vec<LogRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {LOG_COLUMNS} FROM backstop.tail($1::pg_snapshot, $2::pg_snapshot, $3::xid8, $4, $5::int)"
        )))
        .bind(&self.cursor.after)
        .bind(&upto)
        .bind(&self.cursor.after_txid)
        .bind(self.cursor.after_seq)
        .bind(self.batch)
        .fetch_all(&mut *conn)
        .await
        .map_err(refine)?;
        if (rows.len() as i64) < self.batch {
            // The window is complete: the next one starts at its snapshot.
            self.cursor = TailCursor::at_snapshot(upto);
        } else if let Some(last) = rows.last() {
            self.cursor.upto = Some(upto);
            self.cursor.after_txid = last.txid.clone();
            self.cursor.after_seq = last.seq;
        }
        Ok(rows)
    }

    /// Whether the last poll stopped inside a window (more rows are ready now).
    pub fn behind(&self) -> bool {
        self.cursor.upto.is_some()
    }
}
