//! The Redis connection: one node or a Cluster behind one type, every call
//! under a short budget and a circuit breaker.
//!
//! redis-rs gives both a reconnecting multiplexed connection
//! (`ConnectionManager`, one node) and a cluster connection that follows
//! slot moves and failovers; both resubscribe after a reconnect and deliver
//! pub/sub messages as RESP3 pushes to one unbounded channel, which lives as
//! long as the connection (a push sender that fails would stop redis-rs's
//! reconnect task). One node uses plain pub/sub, a Cluster sharded pub/sub
//! (`SSUBSCRIBE`/`SPUBLISH`: each shard's channel lives on the node that
//! owns its stream); on one node the two behave alike.
//!
//! redis-rs's default response timeout is 500 ms, far too long to wait on a
//! cache: every call here is bounded by its budget (see `budget`: a reader
//! waits at most the adaptive budget, from `REDIS_TIMEOUT` up to four
//! times it; writers and background steps get the ceiling), and after a
//! few consecutive failures the breaker skips Redis for a cooldown, so a
//! Redis that is down or paused costs a request at most one budget, and
//! usually nothing.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    Cmd, ErrorKind, FromRedisValue, Pipeline, PushInfo, RedisError, RedisFuture, ScriptInvocation,
    ServerErrorKind, Value,
};
use tokio::sync::{mpsc::UnboundedSender, OnceCell};

use super::{
    budget::{Budget, Patience},
    target::Target,
};
use crate::breaker::{CircuitBreaker, CircuitState};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Consecutive failures that open the breaker, and how long it stays open.
const BREAKER_THRESHOLD: u32 = 3;
const BREAKER_COOLDOWN: Duration = Duration::from_millis(500);

/// Either kind of connection, as one `ConnectionLike`.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a Redis call gave nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisCallError {
    #[error("Redis skipped: its circuit is open")]
    Open,
    #[error("Redis not connected yet")]
    NotConnected,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis slower than the reader's budget ({0:?}): the reader went on without it")]
    Slow(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
}

/// The connection's budget, breaker and counters: shared with the calls a
/// reader stopped waiting for, which finish (and are counted) in a task of
/// their own.
pub(crate) struct Health {
    pub(crate) budget: Budget,
    breaker: CircuitBreaker,
    pub(crate) commands: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Calls with no answer within their whole budget (a subset of the
    /// failures): the misses that say Redis may be away.
    pub(crate) timeouts: AtomicU64,
    /// Readers' calls answered after the reader stopped waiting (it went
    /// to the database): slow, not failed; a load signal only.
    pub(crate) slow: AtomicU64,
    /// How long calls took, as this process saw them (µs).
    pub(crate) latency: parking_lot::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Health {
    /// Counts one call's outcome (within `budget`, started at `started`)
    /// and feeds the budget and the breaker.
    fn settle<T>(
        &self,
        outcome: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
        budget: Duration,
        started: std::time::Instant,
    ) -> Result<T, RedisCallError> {
        let result = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisCallError::Redis(e)),
            Err(_) => Err(RedisCallError::Timeout(budget)),
        };
        match &result {
            Ok(_) => self.budget.observe(started.elapsed()),
            Err(RedisCallError::Timeout(_)) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                self.budget.observe(budget);
            }
            Err(_) => {}
        }
        match &result {
            // A command Redis refused (a wrong type, say) says nothing
            // about its health; a timeout or a broken connection does.
            Err(RedisCallError::Redis(e))
                if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) =>
            {
                self.breaker.on_success()
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.on_failure();
            }
            Ok(_) => self.breaker.on_success(),
        }
        let us = started.elapsed().as_micros() as u64;
        self.latency.lock().saturating_record(us.max(1));
        result
    }
}

/// The connection and its health.
pub(crate) struct Redis {
    target: Target,
    push: UnboundedSender<PushInfo>,
    conn: OnceCell<Conn>,
    pub(crate) health: Arc<Health>,
}

impl Redis {
    /// A connection to `target`, opened on first use; pushes go to `push`.
    pub(crate) fn new(target: Target, budget: Budget, push: UnboundedSender<PushInfo>) -> Self {
        Self {
            target,
            push,
            conn: OnceCell::new(),
            health: Arc::new(Health {
                budget,
                breaker: CircuitBreaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN),
                commands: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                slow: AtomicU64::new(0),
                latency: parking_lot::Mutex::new(crate::metrics::histogram()),
            }),
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn circuit(&self) -> CircuitState {
        self.health.breaker.state()
    }

    async fn open(&self) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Single(url) => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let client = redis::Client::open(format!("{url}{sep}protocol=resp3"))?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.health.budget.longest()))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200))
                    .set_push_sender(self.push.clone())
                    .set_automatic_resubscription();
                Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(self.push.clone())
                    .response_timeout(self.health.budget.longest())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait(50)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Opens the connection if it is not open yet (within a second). Called
    /// by the bus's heartbeat only: a request never waits for a connect.
    pub(crate) async fn connect(&self) -> Result<(), RedisCallError> {
        let open = tokio::time::timeout(CONNECT_TIMEOUT * 4, self.open());
        self.conn
            .get_or_try_init(|| async {
                match open.await {
                    Ok(r) => r.map_err(RedisCallError::Redis),
                    Err(_) => Err(RedisCallError::Timeout(CONNECT_TIMEOUT * 4)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Runs `f` on the connection within the budget `patience` gives it,
    /// through the breaker.
    async fn run<T, F, Fut>(&self, patience: Patience, f: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if self.health.breaker.admit().is_err() {
            return Err(RedisCallError::Open);
        }
        self.run_probe(patience, f).await
    }

    /// [`run`](Self::run) whatever the breaker says, its outcome still
    /// counted: the heartbeat's calls, which are the probe that closes it.
    async fn run_probe<T, F, Fut>(&self, patience: Patience, f: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let Some(conn) = self.conn.get().cloned() else {
            return Err(RedisCallError::NotConnected);
        };
        self.health.commands.fetch_add(1, Ordering::Relaxed);
        let budget = self.health.budget.for_call(patience);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(budget, f(conn)).await;
        self.health.settle(outcome, budget, started)
    }

    /// A reader's call, through the breaker: the reader waits at most the
    /// adaptive budget; if that passes, it goes on without Redis but the
    /// call is not cancelled: it finishes in a task of its own within the
    /// ceiling, and only a call with no answer by then counts as a timeout
    /// (for the breaker too). So a machine too busy to poll a healthy Redis
    /// in time sends some readers to the database, and never declares
    /// Redis away.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'static,
        T: Send + 'static,
    {
        let health = &self.health;
        if health.breaker.admit().is_err() {
            return Err(RedisCallError::Open);
        }
        let Some(conn) = self.conn.get().cloned() else {
            return Err(RedisCallError::NotConnected);
        };
        health.commands.fetch_add(1, Ordering::Relaxed);
        let budget = health.budget.for_call(Patience::Patient);
        let wait = health.budget.current();
        let started = std::time::Instant::now();
        let mut call = Box::pin(tokio::time::timeout(budget, f(conn)));
        match tokio::time::timeout(wait, &mut call).await {
            Ok(outcome) => health.settle(outcome, budget, started),
            Err(_) => {
                health.slow.fetch_add(1, Ordering::Relaxed);
                let health = health.clone();
                tokio::spawn(async move {
                    let outcome = call.await;
                    let _ = health.settle(outcome, budget, started);
                });
                Err(RedisCallError::Slow(wait))
            }
        }
    }

    /// One command.
    pub(crate) async fn query<T: FromRedisValue + Send + 'static>(
        &self,
        patience: Patience,
        cmd: &Cmd,
    ) -> Result<T, RedisCallError> {
        if patience == Patience::Reader {
            let cmd = cmd.clone();
            return self
                .read(|mut c| async move { cmd.query_async(&mut c).await })
                .await;
        }
        self.run(
            patience,
            |mut c| async move { cmd.query_async(&mut c).await },
        )
        .await
    }

    /// One command of the heartbeat (not stopped by the breaker).
    pub(crate) async fn probe<T: FromRedisValue + Send>(
        &self,
        cmd: &Cmd,
    ) -> Result<T, RedisCallError> {
        self.run_probe(Patience::Heartbeat, |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// A pipeline (all its commands must hash to one slot on a Cluster).
    pub(crate) async fn pipeline<T: FromRedisValue + Send + 'static>(
        &self,
        patience: Patience,
        pipe: &Pipeline,
    ) -> Result<T, RedisCallError> {
        if patience == Patience::Reader {
            let pipe = pipe.clone();
            return self
                .read(|mut c| async move { pipe.query_async(&mut c).await })
                .await;
        }
        self.run(
            patience,
            |mut c| async move { pipe.query_async(&mut c).await },
        )
        .await
    }

    /// A Lua script (its keys must hash to one slot on a Cluster).
    pub(crate) async fn run_script<T: FromRedisValue + Send>(
        &self,
        patience: Patience,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, RedisCallError> {
        self.run(patience, |mut c| async move {
            script.invoke_async(&mut c).await
        })
        .await
    }

    /// A Lua script of the heartbeat (not stopped by the breaker).
    pub(crate) async fn probe_script<T: FromRedisValue + Send>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, RedisCallError> {
        self.run_probe(Patience::Heartbeat, |mut c| async move {
            script.invoke_async(&mut c).await
        })
        .await
    }

    /// Subscribes to a bus channel (sharded on a Cluster).
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(), RedisCallError> {
        self.run_probe(Patience::Heartbeat, |c| async move {
            match c {
                Conn::Single(mut m) => m.subscribe(channel).await,
                Conn::Cluster(mut m) => m.ssubscribe(channel).await,
            }
        })
        .await
    }

    /// The command that publishes `payload` on a bus channel.
    pub(crate) fn publish_cmd(&self, channel: &str, payload: &str) -> Cmd {
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(channel).arg(payload);
        cmd
    }

    /// The name of the publishing command: sharded on a Cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.target.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}
