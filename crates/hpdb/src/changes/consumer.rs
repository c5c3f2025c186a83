//! [`ChangeStream`]: the consumer, on a thread of its own. One per
//! database across every instance: each instance runs one, the holder of
//! the leader lock consumes, the others retry the lock every `retry` and
//! take over when it goes away.
//!
//! Invariants:
//! - The slot's position (`confirmed_flush_lsn`) moves past a transaction
//!   only after its tags were invalidated (in process, in the shared level
//!   and on the bus): a consumer that dies re-reads what it had not
//!   finished, so no change is lost (at least once).
//! - Between transactions a keepalive's WAL position is confirmed too, so
//!   an idle database, or one whose writes all go to other databases, does
//!   not make the slot retain WAL.
//! - A transaction carrying our own-write mark is skipped whole: its
//!   writer updated the caches itself.
//! - Nothing is looked up or invalidated for a transaction before a
//!   snapshot sees it (`visible`): a fill that follows an invalidation
//!   reads a snapshot with the change.
//! - A slot that was created, or recreated after PostgreSQL invalidated
//!   it, missed changes: every cached entry is dropped (on every instance)
//!   before its stream is read.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use sqlx::{Connection, PgConnection};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    config::ChangesConfig,
    error::ChangeError,
    mapping::{Mapping, Row},
    pgoutput::{Change, Decoder},
    slot::{self, SlotState},
    state::{ChangeMode, ChangeState, ChangeStatus},
    visible::Visibility,
};
use crate::control::Control;

/// Rows a transaction may buffer before it is treated as "everything
/// changed" (a bulk backfill drops the whole cache instead of its rows'
/// tags one by one, and memory stays bounded).
const MAX_ROWS_PER_TRANSACTION: usize = 10_000;

/// Transactions whose invalidations may run at once. Their positions are
/// confirmed in commit order, each once it and all before it are done.
const MAX_IN_FLIGHT: usize = 64;

/// How long to wait before trying again when the database cannot stream.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(60);

/// The consumer of one database's change stream; stops when dropped.
///
/// It runs on a thread of its own, with its own runtime: on a machine
/// whose cores the requests saturate, a task on the server's runtime waits
/// behind every queued request at each of its awaits, and the consumer
/// awaits several times per transaction (the stream, the visibility check,
/// the lookups, the invalidation). A thread that mostly sleeps is woken
/// at once by the kernel instead.
pub struct ChangeStream {
    /// Dropped to stop the thread.
    _stop: oneshot::Sender<()>,
    state: Arc<ChangeState>,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream")
            .field("status", &self.state.status())
            .finish_non_exhaustive()
    }
}

impl ChangeStream {
    /// Starts the consumer for `control`'s manager: it invalidates the
    /// tags `mapping` finds in the rows other writers change. Its figures
    /// are in [`Status::changes`](crate::Status::changes).
    pub fn spawn(control: &Control, config: ChangesConfig, mapping: Mapping) -> ChangeStream {
        let state = control.core.changes.clone();
        state.set_mode(ChangeMode::Starting, None);
        state.update(|s| s.slot = Some(config.slot.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let control = control.clone();
        let thread = std::thread::Builder::new()
            .name("hpdb-changes".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "change stream: cannot build its runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        _ = run(control, config, mapping) => {}
                        _ = stopped => {}
                    }
                });
            });
        if let Err(e) = thread {
            tracing::error!(error = %e, "change stream: cannot start its thread");
            state.set_mode(ChangeMode::Starting, Some(format!("no thread: {e}")));
        }
        ChangeStream { _stop: stop, state }
    }

    /// Records that `control`'s database cannot stream its changes (SQLite,
    /// say): one log line, and [`ChangeMode::Unavailable`] with `why` in
    /// its status.
    pub fn unavailable(control: &Control, why: &str) {
        tracing::warn!("change stream unavailable: {why}");
        control
            .core
            .changes
            .set_mode(ChangeMode::Unavailable, Some(why.to_string()));
    }

    /// The consumer's figures now.
    pub fn status(&self) -> ChangeStatus {
        self.state.status()
    }

    /// Stops the consumer (its connections close; another instance takes
    /// over within its retry interval).
    pub fn stop(self) {}
}

async fn run(control: Control, config: ChangesConfig, mapping: Mapping) {
    let state = control.core.changes.clone();
    let mut told = false;
    loop {
        let failure = session(&control, &config, &mapping).await;
        let wait = match failure {
            ChangeError::Unavailable(why) => {
                if !told {
                    tracing::warn!(
                        "change stream unavailable: writes made around this server stay \
                         cached until their TTL ({why})"
                    );
                    told = true;
                }
                state.set_mode(ChangeMode::Unavailable, Some(why));
                UNAVAILABLE_RETRY
            }
            other => {
                tracing::warn!(error = %other, "change stream interrupted; retrying");
                state.set_mode(ChangeMode::Starting, Some(other.to_string()));
                config.retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One session: checks, the leader lock, the slot, then the stream until
/// it fails. Returns why it ended.
async fn session(control: &Control, config: &ChangesConfig, mapping: &Mapping) -> ChangeError {
    match lead_and_stream(control, config, mapping).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn lead_and_stream(
    control: &Control,
    config: &ChangesConfig,
    mapping: &Mapping,
) -> Result<std::convert::Infallible, ChangeError> {
    let state = control.core.changes.clone();
    let mut conn = PgConnection::connect(&config.url)
        .await
        .map_err(|e| ChangeError::sql("connect", e))?;
    let checks = slot::check(&mut conn).await?;
    if checks.wal_keep_unbounded && !state.status().wal_keep_unbounded {
        tracing::warn!(
            "max_slot_wal_keep_size is -1: a replication slot nobody advances can fill the \
             database's disk; set a bound (ALTER SYSTEM SET max_slot_wal_keep_size = '1GB')"
        );
    }
    state.update(|s| s.wal_keep_unbounded = checks.wal_keep_unbounded);
    while !slot::try_lead(&mut conn, &config.slot).await? {
        state.set_mode(ChangeMode::Standby, None);
        tokio::time::sleep(config.retry).await;
    }
    slot::ensure_publication(&mut conn, &config.publication, &mapping.tables()).await?;
    let made = slot::ensure_slot(&mut conn, &config.slot).await?;
    if made != SlotState::Ready {
        tracing::warn!(slot = %config.slot, state = ?made, "replication slot (re)created: dropping every cached entry");
        control.clear_cache().await;
        state.update(|s| {
            s.epochs += 1;
            s.slots_recreated += u64::from(made == SlotState::Recreated);
        });
    }
    let application = format!("hpdb-changes-{}", config.slot);
    let mut client = ReplicationClient::connect(replication_config(config, &application)?)
        .await
        .map_err(ChangeError::replication)?;
    client
        .wait_started()
        .await
        .map_err(ChangeError::replication)?;
    state.set_mode(ChangeMode::Leader, None);
    state.update(|s| s.sessions += 1);
    tracing::info!(slot = %config.slot, "change stream: this instance consumes");

    let visible = Visibility::new(&config.url).map_err(|e| ChangeError::sql("connect", e))?;
    let mut consumer = Consumer {
        control: control.clone(),
        visible,
        config,
        mapping: mapping.clone(),
        state: state.clone(),
        decoder: Decoder::default(),
        txn: None,
        in_flight: VecDeque::new(),
    };
    let mut tick = tokio::time::interval(config.status_interval);
    loop {
        tokio::select! {
            event = client.recv() => {
                let event = event.map_err(ChangeError::replication)?;
                let Some(event) = event else {
                    return Err(ChangeError::Replication("the stream ended".into()));
                };
                if let Some(lsn) = consumer.handle(event).await? {
                    client.update_applied_lsn(lsn);
                }
                if let Some(lsn) = consumer.settled() {
                    client.update_applied_lsn(lsn);
                }
            }
            _ = tick.tick() => {
                if let Some(lsn) = consumer.settled() {
                    client.update_applied_lsn(lsn);
                }
                let (bytes, seconds) = slot::lag(&mut conn, &config.slot, &application).await?;
                state.update(|s| {
                    s.lag_bytes = bytes;
                    s.lag_seconds = seconds;
                });
            }
        }
    }
}

/// The replication session's settings, from the direct URL.
fn replication_config(
    config: &ChangesConfig,
    application: &str,
) -> Result<ReplicationConfig, ChangeError> {
    let url = url::Url::parse(&config.url)
        .map_err(|e| ChangeError::Replication(format!("bad URL: {e}")))?;
    // `url` keeps its parts percent-encoded; its own decoder gives them back.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = match url.username() {
        "" => "postgres".to_string(),
        u => decode(u),
    };
    let password = url.password().map(decode).unwrap_or_default();
    let database = url.path().trim_start_matches('/');
    let database = if database.is_empty() {
        user.clone()
    } else {
        decode(database)
    };
    let host = url.host_str().unwrap_or("localhost").to_string();
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        config.slot.clone(),
        config.publication.clone(),
    )
    .with_port(url.port().unwrap_or(5432))
    .with_status_interval(config.status_interval)
    .with_wakeup_interval(config.status_interval)
    .with_application_name(application))
}

/// One transaction being read.
#[derive(Default)]
struct Txn {
    /// Its id (32 bits, as the stream gives it).
    xid: u32,
    rows: Vec<Row>,
    /// Everything must go (a truncate, too many rows).
    everything: bool,
    /// Carries our own-write mark.
    own: bool,
}

struct Consumer<'a> {
    control: Control,
    visible: Visibility,
    config: &'a ChangesConfig,
    mapping: Mapping,
    state: Arc<ChangeState>,
    decoder: Decoder,
    txn: Option<Txn>,
    /// Committed transactions being invalidated, in commit order, with the
    /// position to confirm once each (and all before it) is done.
    in_flight: VecDeque<(Lsn, JoinHandle<()>)>,
}

impl Consumer<'_> {
    /// Handles one event; returns the position that may be confirmed.
    async fn handle(&mut self, event: ReplicationEvent) -> Result<Option<Lsn>, ChangeError> {
        match event {
            ReplicationEvent::Begin { xid, .. } => {
                self.txn = Some(Txn {
                    xid,
                    ..Txn::default()
                })
            }
            ReplicationEvent::XLogData { data, .. } => {
                let change = self.decoder.decode(&data)?;
                let Some(txn) = self.txn.as_mut() else {
                    return Ok(None);
                };
                match change {
                    Change::Rows(rows) if !txn.everything => {
                        txn.rows.extend(rows);
                        if txn.rows.len() > MAX_ROWS_PER_TRANSACTION {
                            txn.everything = true;
                            txn.rows = Vec::new();
                        }
                    }
                    Change::Truncate(_) => {
                        txn.everything = true;
                        txn.rows = Vec::new();
                    }
                    Change::Rows(_) | Change::Ignored => {}
                }
            }
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                ..
            } if prefix == self.config.own_prefix => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.own = true;
                }
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let txn = self.txn.take().unwrap_or_default();
                let committed = commit_instant(commit_time_micros);
                if let Some(at) = committed {
                    self.state.received.record(at.elapsed().unwrap_or_default());
                }
                let (control, mapping) = (self.control.clone(), self.mapping.clone());
                let task = tokio::spawn(apply(
                    control,
                    (mapping, self.visible.clone()),
                    self.state.clone(),
                    txn,
                    (committed, end_lsn),
                ));
                self.in_flight.push_back((end_lsn, task));
                if self.in_flight.len() >= MAX_IN_FLIGHT {
                    if let Some((lsn, oldest)) = self.in_flight.pop_front() {
                        // A panicked invalidation is not retried: its
                        // position moves on like the others'.
                        let _ = oldest.await;
                        return Ok(Some(lsn));
                    }
                }
            }
            // Between transactions, with every one applied, everything
            // sent was applied: confirm the server's position, so an idle
            // slot retains no WAL.
            ReplicationEvent::KeepAlive { wal_end, .. }
                if self.txn.is_none() && self.in_flight.is_empty() =>
            {
                return Ok(Some(wal_end));
            }
            _ => {}
        }
        Ok(None)
    }

    /// The position of the last transaction whose invalidations, and all
    /// before it, are done (if that moved).
    fn settled(&mut self) -> Option<Lsn> {
        let mut last = None;
        while self.in_flight.front().is_some_and(|(_, t)| t.is_finished()) {
            last = self.in_flight.pop_front().map(|(lsn, _)| lsn);
        }
        last
    }
}

/// PostgreSQL's timestamps count microseconds from 2000-01-01 UTC.
const POSTGRES_EPOCH_UNIX_SECONDS: u64 = 946_684_800;

/// A commit's time on this machine's clock (`None` if out of range).
fn commit_instant(micros: i64) -> Option<SystemTime> {
    let since = Duration::from_micros(u64::try_from(micros).ok()?);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(POSTGRES_EPOCH_UNIX_SECONDS) + since)
}

/// Invalidates what a committed transaction changed (its end position is
/// the tags' replica floor), once it is visible to new snapshots (see
/// `visible`); records the time from its commit when it changed anything
/// of ours.
async fn apply(
    control: Control,
    (mapping, visible): (Mapping, Visibility),
    state: Arc<ChangeState>,
    txn: Txn,
    (committed, end): (Option<SystemTime>, Lsn),
) {
    if txn.own {
        state.update(|s| {
            s.transactions += 1;
            s.own_skipped += 1;
        });
        return;
    }
    if txn.everything || !txn.rows.is_empty() {
        visible.wait(txn.xid).await;
    }
    let mut everything = txn.everything;
    let mut tags = BTreeSet::new();
    let mut failures = 0;
    for row in &txn.rows {
        if everything {
            break;
        }
        match mapping.tags(row).await {
            Ok(found) => tags.extend(found),
            Err(e) => {
                tracing::warn!(error = %e, "a changed row's tags are unknown: dropping every cached entry");
                failures += 1;
                everything = true;
            }
        }
    }
    let end = end.as_u64();
    if everything {
        control.clear_cache_at(end).await;
    } else {
        let control = &control;
        futures::future::join_all(tags.iter().map(|t| control.invalidate_tag_at(t, end))).await;
    }
    if everything || !tags.is_empty() {
        if let Some(at) = committed {
            state.invalidated.record(at.elapsed().unwrap_or_default());
        }
    }
    state.update(|s| {
        s.transactions += 1;
        s.mapping_failures += failures;
        if everything {
            s.epochs += 1;
        } else {
            s.tags_invalidated += tags.len() as u64;
        }
    });
}
