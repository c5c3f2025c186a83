//! Opening one connection through sqlx's pool without waiting out sqlx's
//! retries of a refused connect ([`open_connection`]); shared by the
//! primary's pool and the replicas' (`crate::replica`).

use std::time::Duration;

use sqlx::{pool::PoolConnection, ConnectOptions, Connection, Database, Pool};
use tokio::time::sleep;

/// How long a connection may take to open before a direct attempt checks
/// whether the database refuses connections. A connect on a local network
/// takes a few milliseconds; this is long enough that a healthy database is
/// rarely probed, short enough that an outage is known within a second.
const REFUSAL_PROBE_AFTER: Duration = Duration::from_millis(100);

/// Opens a connection through sqlx's pool, failing fast when the database
/// refuses connections.
///
/// sqlx retries a refused connect with backoff until its acquire timeout (it
/// assumes the server is starting up), so the caller would wait the whole
/// timeout to learn that the database is down, and the circuit breaker
/// would hear nothing until then. If the pool's open has not finished after
/// [`REFUSAL_PROBE_AFTER`], one direct connection attempt outside the pool
/// tells refused from slow: its error ends the open at once; its success
/// means the database is up but slow, and the pool's open goes on.
pub(crate) async fn open_connection<DB: Database>(
    pool: &Pool<DB>,
) -> Result<PoolConnection<DB>, sqlx::Error> {
    let open = pool.acquire();
    tokio::pin!(open);
    tokio::select! {
        r = &mut open => return r,
        _ = sleep(REFUSAL_PROBE_AFTER) => {}
    }
    let options = pool.connect_options();
    let probe = options.connect();
    tokio::select! {
        r = &mut open => r,
        probed = probe => match probed {
            Ok(conn) => {
                // Closed politely, off the caller's path.
                tokio::spawn(async move {
                    let _ = conn.close().await;
                });
                open.await
            }
            Err(e) => {
                tracing::debug!(error = %e, "a direct connection attempt failed: ending the open");
                Err(e)
            }
        },
    }
}
