//! Waiting until a transaction read from the stream is visible to new
//! snapshots on the primary, before anything reads on its behalf.
//!
//! PostgreSQL writes and flushes a transaction's commit record, and only
//! then removes the transaction from the running set that snapshots
//! consult; the walsender may decode and send the commit in between. A
//! read started at once (the refresh of a changed tag, or a reader's fill
//! right after the invalidation) can take a snapshot without the
//! transaction and store the old value under a stamp taken after the
//! change: stale until the TTL. Found with `gistfans bench --scenario
//! changes`: an experiment that read each changed profile again at once
//! lost 2 writes in about 2,000 on a saturated machine (where the
//! committing backend can be descheduled in that gap). So each
//! transaction that names tags is checked first: its xid visible in a
//! snapshot (`pg_current_snapshot()`: the last one taken if it already
//! sees it, else one query shared by every transaction waiting at the
//! time, again while it does not), on one connection of the consumer's
//! own.

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::sync::Mutex;

/// The longest wait for one transaction; past it the consumer goes on
/// (logged): a transaction still invisible that long is not one whose
/// commit merely raced its decoding.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);
/// Pause before taking another snapshot when one did not see the
/// transaction yet.
const RECHECK: Duration = Duration::from_millis(1);

/// A snapshot's bounds and running transactions (`xid8`s), as
/// `pg_current_snapshot()` prints them: `xmin:xmax:xip,…`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
}

impl Snapshot {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(Self {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether the snapshot sees the committed transaction whose 32-bit id
    /// the stream gave: widened to the `xid8` of `xmax`'s epoch (the one
    /// before if its low bits are above `xmax`'s: the counter wrapped
    /// since it was assigned).
    fn sees(&self, xid: u32) -> bool {
        let epoch = self.xmax >> 32;
        let epoch = match u64::from(xid) <= self.xmax & 0xffff_ffff {
            true => epoch,
            false => epoch.saturating_sub(1),
        };
        let full = (epoch << 32) | u64::from(xid);
        full < self.xmin || (full < self.xmax && !self.running.contains(&full))
    }
}

/// Checks transactions' visibility, one snapshot query for every
/// transaction waiting at the time. Cheap to clone.
#[derive(Clone)]
pub(super) struct Visibility {
    pool: PgPool,
    /// The last snapshot taken; locked while a new one is taken, so that
    /// waiters share it.
    last: Arc<Mutex<Option<Snapshot>>>,
}

impl Visibility {
    /// A lazy pool of one connection to `url` (the direct URL).
    pub(super) fn new(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(VISIBLE_WITHIN)
            .connect_lazy(url)?;
        Ok(Self {
            pool,
            last: Arc::default(),
        })
    }

    /// Whether `xid` is visible: to the last snapshot taken, if it sees it
    /// (visibility never goes back, so an earlier snapshot that sees a
    /// transaction proves it visible now), else to a new one. Waiters
    /// queue on the lock while a snapshot is taken, and most find the
    /// next one already sees them: one query for all of them.
    async fn seen(&self, xid: u32) -> Result<bool, sqlx::Error> {
        let mut last = self.last.lock().await;
        if last.as_ref().is_some_and(|snap| snap.sees(xid)) {
            return Ok(true);
        }
        let text: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(&self.pool)
            .await?;
        let snap = Snapshot::parse(&text)
            .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected snapshot {text:?}")))?;
        let sees = snap.sees(xid);
        *last = Some(snap);
        Ok(sees)
    }

    /// Waits until transaction `xid`, received by now, is visible to new
    /// snapshots (at most [`VISIBLE_WITHIN`]); false if it could not be
    /// seen so (the caller goes on: the invalidation must not be held back
    /// for ever).
    pub(super) async fn wait(&self, xid: u32) -> bool {
        let check = async {
            loop {
                match self.seen(xid).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => tokio::time::sleep(RECHECK).await,
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let why = match tokio::time::timeout(VISIBLE_WITHIN, check).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e,
            Err(_) => format!("not visible within {VISIBLE_WITHIN:?}"),
        };
        tracing::warn!(
            xid,
            why,
            "cannot see a streamed transaction visible; going on"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::{Snapshot, Visibility};

    /// Against the real server: a transaction still open is not seen, and
    /// is once committed (the xid widened from its 32 bits as the stream
    /// gives it).
    #[tokio::test]
    async fn an_open_transaction_is_not_seen_and_a_committed_one_is() {
        let url = testkit::pg::url();
        let visibility = Visibility::new(&url).unwrap();
        let mut writer = PgConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
        let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut writer)
            .await
            .unwrap();
        let xid = (xid & 0xffff_ffff) as u32;
        assert!(!visibility.seen(xid).await.unwrap(), "still running");
        sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
        assert!(visibility.seen(xid).await.unwrap(), "committed");
        assert!(visibility.wait(xid).await);
    }

    #[test]
    fn a_snapshot_sees_what_ended_before_it_in_the_right_epoch() {
        let s = Snapshot::parse("100:110:103,105").unwrap();
        assert_eq!(s.running, [103, 105]);
        assert!(s.sees(99) && s.sees(104) && s.sees(109));
        assert!(!s.sees(103) && !s.sees(105) && !s.sees(110) && !s.sees(200));
        assert!(Snapshot::parse("7:7:").unwrap().running.is_empty());
        // Epoch 1: 2^32 + 10 … 2^32 + 20; a low xid above xmax's low bits
        // is the previous epoch's, long finished.
        let e = Snapshot::parse("4294967306:4294967316:4294967306").unwrap();
        assert!(e.sees(12) && e.sees(16) && !e.sees(10) && !e.sees(20));
        assert!(e.sees(25) && e.sees(4_000_000_000), "epoch 0, before xmin");
        assert!(Snapshot::parse("1:2:x").is_none());
    }
}
