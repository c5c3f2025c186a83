//! The SQL side of the change stream, on an ordinary connection: whether
//! the database can stream its changes at all, the leader lock, the
//! publication and the slot (created, or recreated when PostgreSQL
//! invalidated it), and the slot's lag.
//!
//! Invariant: the slot is created, dropped or recreated only by the
//! holder of the leader lock, so two instances never race on it.

use sqlx::{Connection, PgConnection};

use super::error::ChangeError;

/// What the start-up checks found.
pub(crate) struct Checks {
    /// `max_slot_wal_keep_size` is -1: nothing bounds the WAL a slot keeps.
    pub(crate) wal_keep_unbounded: bool,
}

/// Whether this database and user can stream logical changes with
/// logical messages (PostgreSQL 14 or later, `wal_level = logical`, a
/// user with the REPLICATION attribute or a superuser).
pub(crate) async fn check(conn: &mut PgConnection) -> Result<Checks, ChangeError> {
    let version: String = scalar(conn, "SHOW server_version_num").await?;
    if version.parse::<u32>().unwrap_or(0) < 140_000 {
        return Err(ChangeError::Unavailable(format!(
            "PostgreSQL {version} is older than 14 (no logical messages in pgoutput)"
        )));
    }
    let level: String = scalar(conn, "SHOW wal_level").await?;
    if level != "logical" {
        return Err(ChangeError::Unavailable(format!(
            "wal_level is `{level}`, not `logical` (ALTER SYSTEM SET wal_level = 'logical', then restart)"
        )));
    }
    let may: bool = scalar(
        conn,
        "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .await?;
    if !may {
        return Err(ChangeError::Unavailable(
            "the user has neither the REPLICATION attribute nor superuser".into(),
        ));
    }
    let keep: String = scalar(conn, "SHOW max_slot_wal_keep_size").await?;
    Ok(Checks {
        wal_keep_unbounded: keep.trim() == "-1",
    })
}

async fn scalar<T>(conn: &mut PgConnection, sql: &'static str) -> Result<T, ChangeError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar::<_, T>(sql)
        .fetch_one(conn)
        .await
        .map_err(|e| ChangeError::sql("start-up checks", e))
}

/// Tries once to become the leader for `slot`: a session-level advisory
/// lock, held as long as `conn` lives (a process killed outright closes
/// its socket; PostgreSQL then ends the session and frees the lock).
pub(crate) async fn try_lead(conn: &mut PgConnection, slot: &str) -> Result<bool, ChangeError> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("hpdb.changes:{slot}"))
        .fetch_one(conn)
        .await
        .map_err(|e| ChangeError::sql("leader lock", e))
}

/// Creates the publication of `tables`, or sets its tables to them.
pub(crate) async fn ensure_publication(
    conn: &mut PgConnection,
    name: &str,
    tables: &[String],
) -> Result<(), ChangeError> {
    let err = |e| ChangeError::sql("publication", e);
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(err)?;
    let list: Vec<String> = tables.iter().map(|t| quote(t)).collect();
    let sql = if exists {
        format!(
            "ALTER PUBLICATION {} SET TABLE {}",
            quote(name),
            list.join(", ")
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote(name),
            list.join(", ")
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map_err(err)?;
    Ok(())
}

/// What [`ensure_slot`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// The slot was there and usable.
    Ready,
    /// There was none: created (changes before now were not captured).
    Created,
    /// PostgreSQL had invalidated it (`wal_status` lost): dropped and
    /// created again (changes in between were lost).
    Recreated,
}

/// Makes sure the logical slot `name` (pgoutput) exists and is usable.
pub(crate) async fn ensure_slot(
    conn: &mut PgConnection,
    name: &str,
) -> Result<SlotState, ChangeError> {
    let err = |e| ChangeError::sql("slot", e);
    let found: Option<(Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT wal_status, active_pid FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(err)?;
    let state = match found {
        None => SlotState::Created,
        Some((status, _)) if status.as_deref() != Some("lost") => return Ok(SlotState::Ready),
        Some((_, pid)) => {
            if let Some(pid) = pid {
                // A walsender of a consumer that lost the lock: ours to end.
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
            }
            drop_slot(conn, name).await?;
            SlotState::Recreated
        }
    };
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(name)
        .execute(conn)
        .await
        .map_err(err)?;
    Ok(state)
}

/// Drops the slot `name` if it exists and no session uses it (tests and
/// operators tidying up; a slot left behind keeps WAL).
pub async fn drop_slot(conn: &mut PgConnection, name: &str) -> Result<(), ChangeError> {
    sqlx::query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = $1",
    )
    .bind(name)
    .execute(conn)
    .await
    .map_err(|e| ChangeError::sql("slot", e))?;
    Ok(())
}

/// Drops the slot `name` and the publication `publication` on a
/// connection of their own, waiting up to 5 s for the slot's session to
/// end (tests, and operators removing the stream).
pub async fn drop_stream(url: &str, slot: &str, publication: &str) -> Result<(), ChangeError> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| ChangeError::sql("connect", e))?;
    let mut last = Ok(());
    for _ in 0..50 {
        last = drop_slot(&mut conn, slot).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    last?;
    let sql = format!("DROP PUBLICATION IF EXISTS {}", quote(publication));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .map_err(|e| ChangeError::sql("publication", e))?;
    Ok(())
}

/// The slot's lag: retained WAL in bytes and the walsender's replay lag
/// in seconds; an error if PostgreSQL invalidated the slot meanwhile.
pub(crate) async fn lag(
    conn: &mut PgConnection,
    slot: &str,
    application: &str,
) -> Result<(Option<u64>, Option<f64>), ChangeError> {
    let err = |e| ChangeError::sql("lag", e);
    let row: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, wal_status \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(err)?;
    let Some((bytes, status)) = row else {
        return Err(ChangeError::SlotLost("the slot is gone".into()));
    };
    if status.as_deref() == Some("lost") {
        return Err(ChangeError::SlotLost(
            "PostgreSQL invalidated the slot (max_slot_wal_keep_size)".into(),
        ));
    }
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(epoch FROM replay_lag), 0)::float8 \
         FROM pg_stat_replication WHERE application_name = $1 LIMIT 1",
    )
    .bind(application)
    .fetch_optional(conn)
    .await
    .map_err(err)?;
    Ok((bytes.map(|b| b.max(0) as u64), seconds))
}

/// An identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
